//! `pack-weights`: every `linear %x, (fake_quant @W, @S)` becomes
//! `packed_linear{bits, cols} %x, @<module>.qweight, @S`, where `qweight : u8[rows, bytes]` holds
//! the integer codes in the runtime's block format for that width and `S` (the ParetoQ scale
//! `weight_clip_val`, [rows, 1]) stays the per-row scale. The latent weight `@W` and the
//! `fake_quant` go. Width-16 projections are plain `linear`s and stay as they are.
//!
//! On a module with tensors the pass also computes the codes (`pack::pack_values`) into the
//! module's packed tensors; the latent weights stay in its tensors, unread by the graph.

use crate::ir::op::packed_format;
use crate::ir::{DType, Dim, Graph, NodeId, Op, Stage, TensorType};
use crate::module::Module;
use crate::pack::codes_name;
use crate::pass::{Changed, Pass, PassError};
use crate::quant::Bits;

pub struct PackWeights;

/// A `linear` whose weight is a fake-quantized param: what this pass rewrites.
struct Site {
    linear: NodeId,
    x: NodeId,
    fake_quant: NodeId,
    weight: NodeId,
    scale: NodeId,
    bits: Bits,
}

impl Pass for PackWeights {
    fn name(&self) -> &'static str {
        "pack-weights"
    }

    fn stage_after(&self) -> Option<Stage> {
        Some(Stage::Packed)
    }

    fn run(&mut self, m: &mut Module) -> Result<Changed, PassError> {
        if m.has_values() {
            let packed = crate::pack::pack_values(&m.graph, &m.weights)
                .map_err(|e| PassError::failed("pack-weights", e))?;
            m.packed.extend(packed);
        }
        let g = &mut m.graph;
        let sites = find_sites(g)?;
        for site in &sites {
            rewrite(g, site)?;
        }
        Ok(if sites.is_empty() {
            Changed::No
        } else {
            Changed::Yes
        })
    }
}

fn find_sites(g: &Graph) -> Result<Vec<Site>, PassError> {
    let order = g
        .topo_order()
        .map_err(|_| PassError::failed("pack-weights", "the graph has a cycle"))?;
    let mut sites = vec![];
    for linear in order {
        if g.node(linear).op != Op::Linear {
            continue;
        }
        let [x, fq] = g.operands(linear)[..] else {
            continue;
        };
        let Op::FakeQuant { bits } = g.node(fq).op else {
            continue;
        };
        let [weight, scale] = g.operands(fq)[..] else {
            continue;
        };
        let is_param = |id| matches!(g.node(id).op, Op::Param { .. });
        if !is_param(weight) || !is_param(scale) {
            return Err(PassError::failed(
                "pack-weights",
                "fake_quant must read a param weight and a param scale to be packed",
            ));
        }
        sites.push(Site {
            linear,
            x,
            fake_quant: fq,
            weight,
            scale,
            bits,
        });
    }
    Ok(sites)
}

fn rewrite(g: &mut Graph, s: &Site) -> Result<(), PassError> {
    let fail = |m: String| PassError::failed("pack-weights", m);
    let Op::Param { name } = &g.node(s.weight).op else {
        unreachable!("checked by find_sites")
    };
    let name = name.clone();
    let dims = g.node(s.weight).ty.fixed_dims();
    let Some([rows, cols]) = dims.as_deref().and_then(|d| <[usize; 2]>::try_from(d).ok()) else {
        return Err(fail(format!("{name}: weight must have fixed [rows, cols]")));
    };
    let format =
        packed_format(s.bits).ok_or_else(|| fail(format!("{name}: 16 bits has no packed form")))?;
    let codes_ty = TensorType::new(
        DType::U8,
        vec![Dim::Fixed(rows), Dim::Fixed(format.row_bytes(cols))],
    );
    let codes_name = codes_name(&name).ok_or_else(|| fail(format!("{name}: not a .weight")))?;
    let codes = g.param(&codes_name, codes_ty);
    let packed = g
        .add(
            Op::PackedLinear { bits: s.bits, cols },
            &[s.x, codes, s.scale],
        )
        .map_err(|m| fail(format!("{name}: {m}")))?;
    g.replace_all_uses(s.linear, packed);
    g.remove(s.linear);
    if g.users(s.fake_quant).is_empty() {
        g.remove(s.fake_quant);
    }
    if g.users(s.weight).is_empty() {
        g.remove(s.weight);
    }
    Ok(())
}
