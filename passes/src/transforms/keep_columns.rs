//! `keep-columns`: every `linear %x, (fake_quant @M.weight, ..)` of a module M whose tensors hold
//! kept columns (`@M.keep_select`, `@M.keep_delta`; `crate::keep`) becomes
//! `add(linear %x, .., linear(linear(%x, @M.keep_select), @M.keep_delta))`: the quantized
//! product plus the f32 correction of the kept columns. Modules without them, and graphs that
//! already read `@M.keep_select`, are left as they are.

use crate::ir::{Graph, Op, TensorType};
use crate::keep::{delta_name, kept_modules, select_name};
use crate::module::Module;
use crate::pass::{Changed, Pass, PassError};

pub struct KeepColumns;

impl Pass for KeepColumns {
    fn name(&self) -> &'static str {
        "keep-columns"
    }

    fn run(&mut self, m: &mut Module) -> Result<Changed, PassError> {
        let shapes: Vec<(String, Vec<usize>, Vec<usize>)> = kept_modules(&m.weights)
            .into_iter()
            .map(|module| {
                let shape = |n: String| m.weights.get(&n).map(|t| t.shape.clone());
                match (shape(select_name(&module)), shape(delta_name(&module))) {
                    (Some(s), Some(d)) => Ok((module, s, d)),
                    _ => Err(PassError::failed(
                        "keep-columns",
                        format!("{module}: keep_select without keep_delta"),
                    )),
                }
            })
            .collect::<Result<_, _>>()?;
        let mut changed = Changed::No;
        for (module, select, delta) in shapes {
            if rewrite(&mut m.graph, &module, &select, &delta)? {
                changed = Changed::Yes;
            }
        }
        Ok(changed)
    }
}

/// Adds the correction to the quantized product of `module`, if the graph has one and does not
/// read the correction yet.
fn rewrite(
    g: &mut Graph,
    module: &str,
    select: &[usize],
    delta: &[usize],
) -> Result<bool, PassError> {
    let fail = |m: String| PassError::failed("keep-columns", format!("{module}: {m}"));
    if g.param_id(&select_name(module)).is_some() {
        return Ok(false);
    }
    let Some(w) = g.param_id(&format!("{module}.weight")) else {
        return Ok(false);
    };
    let Some(fq) = g
        .users(w)
        .into_iter()
        .find(|&u| matches!(g.node(u).op, Op::FakeQuant { .. }))
    else {
        return Ok(false);
    };
    let linears: Vec<_> = g
        .users(fq)
        .into_iter()
        .filter(|&u| g.node(u).op == Op::Linear)
        .collect();
    for linear in linears {
        let x = g.operands(linear)[0];
        let sel = g.param(&select_name(module), TensorType::f32(select));
        let d = g.param(&delta_name(module), TensorType::f32(delta));
        let picked = g.add(Op::Linear, &[x, sel]).map_err(fail)?;
        let correction = g.add(Op::Linear, &[picked, d]).map_err(fail)?;
        let users = g.users(linear);
        let sum = g.add(Op::Add, &[linear, correction]).map_err(fail)?;
        for u in users {
            g.replace_operand(u, linear, sum);
        }
        let outputs: Vec<_> = g
            .outputs()
            .iter()
            .map(|&o| if o == linear { sum } else { o })
            .collect();
        g.set_outputs(outputs);
    }
    Ok(true)
}
