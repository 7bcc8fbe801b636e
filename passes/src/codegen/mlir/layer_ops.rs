//! The decoder layer's non-matmul ops as MLIR (func/scf/vector/arith/math/memref), specialised
//! to one model's shapes: RMSNorm, residual add fused with the RMSNorm that follows it, RoPE,
//! SiLU-gate and attention of one head over the KV cache (scores, softmax, weighted sum).
//!
//! Every function takes `memref<?xf32>` buffers of whole rows (the row count is the buffer's
//! length divided by the row width, a constant here) and carries `llvm.emit_c_interface`, so
//! the runtime calls `_mlir_ciface_<name>` with pointers to memref descriptors. The arithmetic
//! follows the runtime's Rust reference (`paretoqc_runtime::kernels::ops`) operation by
//! operation; only the order of the sums differs (vector lanes, then a reduction).
//!
//! The text is built from templates with `${NAME}` holes; floats enter as their bit patterns
//! (`0x3727C5AC : f32`), so no decimal round trip can change a constant.

use paretoqc_runtime::manifest::ModelConfig;
use paretoqc_runtime::role::{Kind, Role};

/// One generated op: the role the manifest records, and the function's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerOp {
    pub role: Role,
    pub function: String,
}

impl LayerOp {
    /// The C-interface symbol the runtime loads.
    pub fn symbol(&self) -> String {
        format!("_mlir_ciface_{}", self.function)
    }
}

/// The shapes the ops are specialised to.
#[derive(Clone, Copy, Debug)]
pub struct LayerShapes {
    pub hidden: usize,
    pub q_width: usize,
    pub kv_width: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub rms_norm_eps: f32,
}

impl LayerShapes {
    pub fn of(c: &ModelConfig) -> LayerShapes {
        LayerShapes {
            hidden: c.hidden_size,
            q_width: c.num_attention_heads * c.head_dim,
            kv_width: c.num_key_value_heads * c.head_dim,
            head_dim: c.head_dim,
            intermediate: c.intermediate_size,
            rms_norm_eps: c.rms_norm_eps as f32,
        }
    }
}

/// The MLIR module of every op for these shapes, and the ops it defines.
pub fn layer_ops_module(s: &LayerShapes) -> (String, Vec<LayerOp>) {
    let mut ops = Vec::new();
    let mut text = String::from("module {\n");
    let mut add = |role: Role, function: String, body: String| {
        text.push_str(&body);
        ops.push(LayerOp { role, function });
    };
    let h = s.hidden;
    add(
        Role::op(Kind::RmsNorm, h),
        format!("pqc_rms_norm_{h}"),
        rms_norm(h, s.rms_norm_eps),
    );
    add(
        Role::op(Kind::AddRmsNorm, h),
        format!("pqc_add_rms_norm_{h}"),
        add_rms_norm(h, s.rms_norm_eps),
    );
    let mut widths = vec![s.q_width, s.kv_width];
    widths.dedup();
    for w in widths {
        let d = s.head_dim;
        add(
            Role::op2(Kind::Rope, w, d),
            format!("pqc_rope_{w}x{d}"),
            rope(w, d),
        );
    }
    let n = s.intermediate;
    add(
        Role::op(Kind::SiluMul, n),
        format!("pqc_silu_mul_{n}"),
        silu_mul(n),
    );
    let (d, kvw) = (s.head_dim, s.kv_width);
    add(
        Role::op2(Kind::Attention, d, kvw),
        format!("pqc_attention_{d}x{kvw}"),
        attention(d, kvw),
    );
    text.push_str("}\n");
    (text, ops)
}

/// The widest vector (16, 8, 4, 2 or 1 lanes) that divides `n`.
fn lanes(n: usize) -> usize {
    [16, 8, 4, 2, 1]
        .into_iter()
        .find(|l| n.is_multiple_of(*l))
        .unwrap_or(1)
}

/// An f32 constant as its exact bit pattern.
fn f32_bits(v: f32) -> String {
    format!("0x{:08X}", v.to_bits())
}

/// Fills `${NAME}` holes; every hole must be given.
fn fill(template: &str, holes: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in holes {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    debug_assert!(!out.contains("${"), "unfilled hole in\n{out}");
    out
}

/// Constants every function declares: index 0/1, the row width `N` and the vector width `L`.
const PRELUDE: &str = r#"    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %cn = arith.constant ${N} : index
    %cl = arith.constant ${L} : index
    %len = memref.dim %x, %c0 : memref<?xf32>
    %rows = arith.divui %len, %cn : index
"#;

/// The second half of RMSNorm, shared by the plain and the fused op: `inv = 1 / sqrt(ss / N +
/// eps)`, then `out = w * (x * inv)`.
const NORMALISE: &str = r#"      %ss = vector.reduction <add>, %acc : vector<${L}xf32> into f32
      %ms = arith.divf %ss, %nf : f32
      %mse = arith.addf %ms, %eps : f32
      %rt = math.sqrt %mse : f32
      %inv = arith.divf %one, %rt : f32
      %invv = vector.broadcast %inv : f32 to vector<${L}xf32>
      scf.for %i = %c0 to %cn step %cl {
        %j = arith.addi %base, %i : index
        %v = vector.load %x[%j] : memref<?xf32>, vector<${L}xf32>
        %wv = vector.load %w[%i] : memref<?xf32>, vector<${L}xf32>
        %s = arith.mulf %v, %invv : vector<${L}xf32>
        %o = arith.mulf %wv, %s : vector<${L}xf32>
        vector.store %o, %out[%j] : memref<?xf32>, vector<${L}xf32>
      }
"#;

const NORM_CONSTANTS: &str = r#"    %zero = arith.constant dense<0.0> : vector<${L}xf32>
    %nf = arith.constant ${NF} : f32
    %eps = arith.constant ${EPS} : f32
    %one = arith.constant 1.0 : f32
"#;

fn norm_holes(n: usize, eps: f32) -> Vec<(&'static str, String)> {
    vec![
        ("N", n.to_string()),
        ("L", lanes(n).to_string()),
        ("NF", f32_bits(n as f32)),
        ("EPS", f32_bits(eps)),
    ]
}

/// `out[r] = w * (x[r] * rsqrt(mean(x[r]²) + eps))` for every row of width `n`.
fn rms_norm(n: usize, eps: f32) -> String {
    let body = format!(
        r#"  func.func @pqc_rms_norm_${{N}}(%x: memref<?xf32>, %w: memref<?xf32>, %out: memref<?xf32>) attributes {{llvm.emit_c_interface}} {{
{PRELUDE}{NORM_CONSTANTS}    scf.for %r = %c0 to %rows step %c1 {{
      %base = arith.muli %r, %cn : index
      %acc = scf.for %i = %c0 to %cn step %cl iter_args(%a = %zero) -> (vector<${{L}}xf32>) {{
        %j = arith.addi %base, %i : index
        %v = vector.load %x[%j] : memref<?xf32>, vector<${{L}}xf32>
        %a2 = vector.fma %v, %v, %a : vector<${{L}}xf32>
        scf.yield %a2 : vector<${{L}}xf32>
      }}
{NORMALISE}    }}
    return
  }}
"#
    );
    fill(&body, &norm_holes(n, eps))
}

/// The residual add fused with the RMSNorm that reads its result: `x[r] += y[r]`, then
/// `out[r] = rms_norm(x[r])`, in one pass over `x` plus the normalising pass.
fn add_rms_norm(n: usize, eps: f32) -> String {
    let body = format!(
        r#"  func.func @pqc_add_rms_norm_${{N}}(%x: memref<?xf32>, %y: memref<?xf32>, %w: memref<?xf32>, %out: memref<?xf32>) attributes {{llvm.emit_c_interface}} {{
{PRELUDE}{NORM_CONSTANTS}    scf.for %r = %c0 to %rows step %c1 {{
      %base = arith.muli %r, %cn : index
      %acc = scf.for %i = %c0 to %cn step %cl iter_args(%a = %zero) -> (vector<${{L}}xf32>) {{
        %j = arith.addi %base, %i : index
        %xv = vector.load %x[%j] : memref<?xf32>, vector<${{L}}xf32>
        %yv = vector.load %y[%j] : memref<?xf32>, vector<${{L}}xf32>
        %v = arith.addf %xv, %yv : vector<${{L}}xf32>
        vector.store %v, %x[%j] : memref<?xf32>, vector<${{L}}xf32>
        %a2 = vector.fma %v, %v, %a : vector<${{L}}xf32>
        scf.yield %a2 : vector<${{L}}xf32>
      }}
{NORMALISE}    }}
    return
  }}
"#
    );
    fill(&body, &norm_holes(n, eps))
}

/// Rotate-half RoPE in place on rows of width `N` (heads of `D`): with `c`, `s` the row's
/// cos/sin table of `D/2` entries, `x[j] = a·c - b·s` and `x[j + D/2] = b·c + a·s`.
fn rope(width: usize, d: usize) -> String {
    let half = d / 2;
    let body = r#"  func.func @pqc_rope_${N}x${D}(%x: memref<?xf32>, %cos: memref<?xf32>, %sin: memref<?xf32>) attributes {llvm.emit_c_interface} {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %cn = arith.constant ${N} : index
    %cd = arith.constant ${D} : index
    %ch = arith.constant ${H} : index
    %cl = arith.constant ${L} : index
    %len = memref.dim %x, %c0 : memref<?xf32>
    %rows = arith.divui %len, %cn : index
    scf.for %r = %c0 to %rows step %c1 {
      %base = arith.muli %r, %cn : index
      %tbase = arith.muli %r, %ch : index
      scf.for %head = %c0 to %cn step %cd {
        %hbase = arith.addi %base, %head : index
        scf.for %j = %c0 to %ch step %cl {
          %ia = arith.addi %hbase, %j : index
          %ib = arith.addi %ia, %ch : index
          %it = arith.addi %tbase, %j : index
          %a = vector.load %x[%ia] : memref<?xf32>, vector<${L}xf32>
          %b = vector.load %x[%ib] : memref<?xf32>, vector<${L}xf32>
          %c = vector.load %cos[%it] : memref<?xf32>, vector<${L}xf32>
          %s = vector.load %sin[%it] : memref<?xf32>, vector<${L}xf32>
          %ac = arith.mulf %a, %c : vector<${L}xf32>
          %bs = arith.mulf %b, %s : vector<${L}xf32>
          %bc = arith.mulf %b, %c : vector<${L}xf32>
          %as = arith.mulf %a, %s : vector<${L}xf32>
          %na = arith.subf %ac, %bs : vector<${L}xf32>
          %nb = arith.addf %bc, %as : vector<${L}xf32>
          vector.store %na, %x[%ia] : memref<?xf32>, vector<${L}xf32>
          vector.store %nb, %x[%ib] : memref<?xf32>, vector<${L}xf32>
        }
      }
    }
    return
  }
"#;
    fill(
        body,
        &[
            ("N", width.to_string()),
            ("D", d.to_string()),
            ("H", half.to_string()),
            ("L", lanes(half).to_string()),
        ],
    )
}

/// The SiLU gate in place: `g = g / (1 + exp(-g)) * u`, over whole rows of width `N`.
fn silu_mul(n: usize) -> String {
    let body = format!(
        r#"  func.func @pqc_silu_mul_${{N}}(%x: memref<?xf32>, %u: memref<?xf32>) attributes {{llvm.emit_c_interface}} {{
{PRELUDE}    %one = arith.constant dense<1.0> : vector<${{L}}xf32>
    %total = arith.muli %rows, %cn : index
    scf.for %i = %c0 to %total step %cl {{
      %g = vector.load %x[%i] : memref<?xf32>, vector<${{L}}xf32>
      %uv = vector.load %u[%i] : memref<?xf32>, vector<${{L}}xf32>
      %ng = arith.negf %g : vector<${{L}}xf32>
      %e = math.exp %ng : vector<${{L}}xf32>
      %den = arith.addf %one, %e : vector<${{L}}xf32>
      %sig = arith.divf %g, %den : vector<${{L}}xf32>
      %o = arith.mulf %sig, %uv : vector<${{L}}xf32>
      vector.store %o, %x[%i] : memref<?xf32>, vector<${{L}}xf32>
    }}
    return
  }}
"#
    );
    fill(&body, &[("N", n.to_string()), ("L", lanes(n).to_string())])
}

/// One query head against the first `visible` cached positions of its key/value head
/// (`kv_offset` floats into each cache row of width `KVW`): `scores[j] = (q · k_j) · D^-½`, the
/// softmax of the scores in place (max subtracted, exp, divided by the sum), then
/// `out = Σ_j p_j · v_j`.
fn attention(d: usize, kv_width: usize) -> String {
    let body = r#"  func.func @pqc_attention_${D}x${KVW}(%q: memref<?xf32>, %keys: memref<?xf32>, %values: memref<?xf32>, %out: memref<?xf32>, %scores: memref<?xf32>, %kv_offset: index, %visible: index) attributes {llvm.emit_c_interface} {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %cd = arith.constant ${D} : index
    %ckv = arith.constant ${KVW} : index
    %cl = arith.constant ${L} : index
    %zero = arith.constant dense<0.0> : vector<${L}xf32>
    %fzero = arith.constant 0.0 : f32
    %scale = arith.constant ${SCALE} : f32
    %ninf = arith.constant 0xFF800000 : f32
    scf.for %j = %c0 to %visible step %c1 {
      %row = arith.muli %j, %ckv : index
      %kbase = arith.addi %row, %kv_offset : index
      %acc = scf.for %i = %c0 to %cd step %cl iter_args(%a = %zero) -> (vector<${L}xf32>) {
        %ki = arith.addi %kbase, %i : index
        %qv = vector.load %q[%i] : memref<?xf32>, vector<${L}xf32>
        %kv = vector.load %keys[%ki] : memref<?xf32>, vector<${L}xf32>
        %a2 = vector.fma %qv, %kv, %a : vector<${L}xf32>
        scf.yield %a2 : vector<${L}xf32>
      }
      %dot = vector.reduction <add>, %acc : vector<${L}xf32> into f32
      %s = arith.mulf %dot, %scale : f32
      memref.store %s, %scores[%j] : memref<?xf32>
    }
    %max = scf.for %j = %c0 to %visible step %c1 iter_args(%m = %ninf) -> (f32) {
      %s = memref.load %scores[%j] : memref<?xf32>
      %m2 = arith.maximumf %m, %s : f32
      scf.yield %m2 : f32
    }
    %sum = scf.for %j = %c0 to %visible step %c1 iter_args(%t = %fzero) -> (f32) {
      %s = memref.load %scores[%j] : memref<?xf32>
      %sm = arith.subf %s, %max : f32
      %e = math.exp %sm : f32
      memref.store %e, %scores[%j] : memref<?xf32>
      %t2 = arith.addf %t, %e : f32
      scf.yield %t2 : f32
    }
    scf.for %j = %c0 to %visible step %c1 {
      %e = memref.load %scores[%j] : memref<?xf32>
      %p = arith.divf %e, %sum : f32
      memref.store %p, %scores[%j] : memref<?xf32>
    }
    scf.for %i = %c0 to %cd step %cl {
      %o = scf.for %j = %c0 to %visible step %c1 iter_args(%a = %zero) -> (vector<${L}xf32>) {
        %p = memref.load %scores[%j] : memref<?xf32>
        %pv = vector.broadcast %p : f32 to vector<${L}xf32>
        %row = arith.muli %j, %ckv : index
        %vbase = arith.addi %row, %kv_offset : index
        %vi = arith.addi %vbase, %i : index
        %v = vector.load %values[%vi] : memref<?xf32>, vector<${L}xf32>
        %pvv = arith.mulf %pv, %v : vector<${L}xf32>
        %a2 = arith.addf %a, %pvv : vector<${L}xf32>
        scf.yield %a2 : vector<${L}xf32>
      }
      vector.store %o, %out[%i] : memref<?xf32>, vector<${L}xf32>
    }
    return
  }
"#;
    fill(
        body,
        &[
            ("D", d.to_string()),
            ("KVW", kv_width.to_string()),
            ("L", lanes(d).to_string()),
            ("SCALE", f32_bits(1.0 / (d as f32).sqrt())),
        ],
    )
}
