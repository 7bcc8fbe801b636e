//! Decode (one new token) by a team of the pool's threads (`crate::team`): each thread keeps
//! its own copy of the residual stream and its norms (the same arithmetic on the same values, so
//! the copies agree bit for bit), computes its share of every product's rows and of the
//! attention heads into shared buffers, and waits at a barrier before anything reads them. Six
//! barriers per layer:
//!
//! 1. q, k, v rows (split across q, k and v together)
//! 2. RoPE of q and k (every thread, privately), this position's keys and values into the cache
//!    (each thread its share of the columns)
//! 3. attention, heads split
//! 4. o rows
//! 5. the residual add and norm (every thread, privately); gate and up rows
//! 6. the SiLU product (every thread, privately, whole width: the generated kernel is one per
//!    width), down rows; then the residual add and the next norm (every thread, privately)
//!
//! Every row and head is computed by the same kernel call as on one thread, so the logits equal
//! the one-thread decode's exactly.

use super::Session;
use crate::kernels::{ops, HeadAttention, QuantizedX};
use crate::manifest::ActivationKind;
use crate::model::Matrix;
use crate::team::{row_share, share, Shared, SpinBarrier};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

/// Rows per unit of a thread's share: whole blocks of the kernels' row groups.
const ROW_GROUP: usize = 16;

/// One team step at a time in the process: two teams sharing a pool could each hold a thread
/// the other waits for.
static TEAM_BUSY: AtomicBool = AtomicBool::new(false);

/// The input of one thread's products: f32, and its int8 form when the artifact's activations
/// are int8 (made once per input, by each thread from the same values).
struct Input<'a> {
    x: &'a [f32],
    q8: Option<QuantizedX>,
}

impl<'a> Input<'a> {
    fn new(x: &'a [f32], act: ActivationKind) -> Input<'a> {
        let q8 = (act == ActivationKind::Int8).then(|| QuantizedX::new(x));
        Input { x, q8 }
    }
}

impl Session<'_> {
    /// The threads of a team decode now: the pool's, or 1 (no team) when the pool has more
    /// threads than the machine has cores (spinning threads would then wait for each other's
    /// time slices).
    pub(super) fn team_size(&self) -> usize {
        let threads = rayon::current_num_threads();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads > cores {
            1
        } else {
            threads
        }
    }

    /// The logits of one new token, computed by every thread of the current pool together; None
    /// when another team step is running (the caller then decodes the usual way).
    pub(super) fn decode_team(&mut self, x0: &[f32], hn0: &[f32]) -> Option<Vec<f32>> {
        if TEAM_BUSY.swap(true, Ordering::Acquire) {
            return None;
        }
        struct Release;
        impl Drop for Release {
            fn drop(&mut self) {
                TEAM_BUSY.store(false, Ordering::Release);
            }
        }
        let _release = Release;
        let (model, kernels) = (self.model, self.kernels);
        let c = &model.config;
        let (h, d, inter) = (c.hidden_size, c.head_dim, c.intermediate_size);
        let (heads, kvh) = (c.num_attention_heads, c.num_key_value_heads);
        let (qw, kvw) = (heads * d, kvh * d);
        let pos = self.pos;
        let (cos, sin) = ops::rope_tables(&self.inv_freq, pos, 1);
        let mut qkv = vec![0f32; qw + 2 * kvw];
        let mut attn = vec![0f32; qw];
        let mut o = vec![0f32; h];
        let mut gate = vec![0f32; inter];
        let mut up = vec![0f32; inter];
        let mut down = vec![0f32; h];
        let mut logits = vec![0f32; c.vocab_size];
        let (s_qkv, s_attn, s_o) = (
            Shared::new(&mut qkv),
            Shared::new(&mut attn),
            Shared::new(&mut o),
        );
        let (s_gate, s_up) = (Shared::new(&mut gate), Shared::new(&mut up));
        let s_down = Shared::new(&mut down);
        let s_logits = Shared::new(&mut logits);
        let caches: Vec<(Shared, Shared)> = self
            .keys
            .iter_mut()
            .zip(self.values.iter_mut())
            .map(|(k, v)| (Shared::new(k), Shared::new(v)))
            .collect();
        let n = rayon::current_num_threads();
        let barrier = SpinBarrier::new(n);
        rayon::broadcast(|ctx| {
            let _member = barrier.member();
            let (me, n) = (ctx.index(), ctx.num_threads());
            let (k, act) = (kernels, model.activations);
            let (mut x, mut hn) = (x0.to_vec(), hn0.to_vec());
            let mut silu = vec![0f32; inter];
            let mut q_rot = vec![0f32; qw];
            let mut k_rot = vec![0f32; kvw];
            let mut scores = vec![0f32; pos + 1];
            let eps = c.rms_norm_eps as f32;
            // q, k and v rows together, in whole row groups.
            let qkv_rows = row_share(qw + 2 * kvw, ROW_GROUP, me, n);
            for (l, layer) in model.layers.iter().enumerate() {
                let input = Input::new(&hn, act);
                for (m, at) in [(&layer.q, 0), (&layer.k, qw), (&layer.v, qw + kvw)] {
                    let mine = clip(&qkv_rows, at, m.rows());
                    // SAFETY: this thread's rows of q, k, v; read after the barrier below.
                    let out = unsafe { s_qkv.part(at + mine.start..at + mine.end) };
                    gemv(k, m, &input, out, mine, act);
                }
                barrier.wait(); // 1

                // SAFETY: written before barrier 1; next written after barrier 6.
                let all = unsafe { s_qkv.all() };
                q_rot.copy_from_slice(&all[..qw]);
                k_rot.copy_from_slice(&all[qw..qw + kvw]);
                k.rope(&mut q_rot, qw, d, &cos, &sin);
                k.rope(&mut k_rot, kvw, d, &cos, &sin);
                let cols = row_share(kvw, d, me, n);
                let (keys, values) = &caches[l];
                let row = pos * kvw;
                // SAFETY: this thread's columns of the cache row at `pos`; read after barrier 2.
                unsafe {
                    keys.part(row + cols.start..row + cols.end)
                        .copy_from_slice(&k_rot[cols.clone()]);
                    values
                        .part(row + cols.start..row + cols.end)
                        .copy_from_slice(&all[qw + kvw + cols.start..qw + kvw + cols.end]);
                }
                barrier.wait(); // 2

                // SAFETY: the cache is written only in step 2, before barrier 2.
                let (keys, values) = unsafe { (keys.all(), values.all()) };
                let group = heads / kvh;
                for hd in share(heads, me, n) {
                    let head = HeadAttention {
                        q: &q_rot[hd * d..(hd + 1) * d],
                        keys,
                        values,
                        kv_width: kvw,
                        kv_offset: (hd / group) * d,
                        visible: pos + 1,
                    };
                    // SAFETY: this thread's heads; read after barrier 3.
                    k.attend(&head, &mut scores, unsafe {
                        s_attn.part(hd * d..(hd + 1) * d)
                    });
                }
                barrier.wait(); // 3

                // SAFETY: written before barrier 3; next written after barrier 2 of the next layer.
                let input = Input::new(unsafe { s_attn.all() }, act);
                let mine = row_share(h, ROW_GROUP, me, n);
                // SAFETY: this thread's rows of o; read after barrier 4.
                gemv(
                    k,
                    &layer.o,
                    &input,
                    unsafe { s_o.part(mine.clone()) },
                    mine,
                    act,
                );
                barrier.wait(); // 4

                // SAFETY: written before barrier 4; next written after barrier 3 of the next layer.
                k.add_rms_norm(
                    &mut x,
                    unsafe { s_o.all() },
                    &layer.post_attention_norm,
                    eps,
                    &mut hn,
                );
                let input = Input::new(&hn, act);
                let mine = row_share(inter, ROW_GROUP, me, n);
                // SAFETY: this thread's rows of gate and up; read after barrier 5.
                let (g, u) = unsafe { (s_gate.part(mine.clone()), s_up.part(mine.clone())) };
                gemv(k, &layer.gate, &input, g, mine.clone(), act);
                gemv(k, &layer.up, &input, u, mine, act);
                barrier.wait(); // 5

                // SAFETY: written before barrier 5; next written after barrier 4 of the next layer.
                silu.copy_from_slice(unsafe { s_gate.all() });
                k.silu_mul(&mut silu, unsafe { s_up.all() }, inter);
                let input = Input::new(&silu, act);
                let mine = row_share(h, ROW_GROUP, me, n);
                // SAFETY: this thread's rows of down; read after barrier 6.
                let out = unsafe { s_down.part(mine.clone()) };
                gemv(k, &layer.down, &input, out, mine.clone(), act);
                if let Some(kept) = &layer.down_kept {
                    kept.add(&silu, out, mine.start);
                }
                barrier.wait(); // 6
                let next_norm = match model.layers.get(l + 1) {
                    Some(next) => &next.input_norm,
                    None => &model.norm,
                };
                // SAFETY: written before barrier 6; next written after barrier 5 of the next layer.
                k.add_rms_norm(&mut x, unsafe { s_down.all() }, next_norm, eps, &mut hn);
            }
            let mine = row_share(c.vocab_size, ROW_GROUP, me, n);
            // SAFETY: this thread's logits; read after the broadcast returns.
            let out = unsafe { s_logits.part(mine.clone()) };
            match &model.lm_head {
                Some(m) => gemv(k, m, &Input::new(&hn, act), out, mine, act),
                None => {
                    for (o, r) in out.iter_mut().zip(mine) {
                        *o = crate::kernels::reference::dot(&model.embed[r * h..(r + 1) * h], &hn);
                    }
                }
            }
        });
        drop(caches);
        self.pos += 1;
        Some(logits)
    }
}

/// The part of `rows` (of a concatenation) that falls in the matrix at `at` with `len` rows, in
/// the matrix's own row numbers.
fn clip(rows: &Range<usize>, at: usize, len: usize) -> Range<usize> {
    let start = rows.start.clamp(at, at + len) - at;
    let end = rows.end.clamp(at, at + len) - at;
    start..end
}

/// `out = rows` of `m · input`, as `linear_from` computes each row for one token.
fn gemv(
    k: &dyn crate::kernels::Kernels,
    m: &Matrix,
    input: &Input,
    out: &mut [f32],
    rows: Range<usize>,
    act: ActivationKind,
) {
    if rows.is_empty() {
        return;
    }
    match m {
        Matrix::Dense { w, .. } => {
            let cols = m.cols();
            for (o, r) in out.iter_mut().zip(rows) {
                *o = crate::kernels::reference::dot(&w[r * cols..(r + 1) * cols], input.x);
            }
        }
        Matrix::Packed(p) => match &input.q8 {
            Some(q8) if act == ActivationKind::Int8 && p.format != crate::format::Format::Int8 => {
                k.packed_gemv_i8(p, q8, out, rows)
            }
            _ => k.packed_gemv(p, input.x, out, rows),
        },
    }
}
