//! The packed matrix-matrix (prefill) kernels: the products of `tokens` activation rows with one
//! packed matrix, each 64-weight block decoded once and applied to a *tile* of tokens whose
//! accumulators stay in registers (`paretoqc_runtime::kernels::native` has the ABI):
//! for t < tokens and r in [row_begin, row_end),
//! `y[t · y_stride + r - row_begin] = factor[r] · Σ_i level(code[r, i]) · x[t · x_stride + i]`.
//!
//! The loops: token tiles outermost (`tile` tokens at a time, then tile/2, …, 1 for the tokens
//! left, so every count of tokens runs with at most log2(tile) smaller tiles), rows inside them,
//! the row's blocks inside that (the same block loop and tail as the matrix-vector kernel).
//!
//! f32 activations (`gemm.<bits>.<rows>x<cols>`): the decoding of `gemv.rs`, segments split to at
//! most 16 lanes, and per token one accumulator per segment width (16, or 12 and 4 for ternary),
//! so a tile of 8 tokens holds 8 vector accumulators. Sums are in a different order than the
//! matrix-vector kernel's (which decodes with `levels.rs` into two accumulators per row): equal
//! to rounding (~1e-7 relative), not bitwise.
//!
//! int8 activations (`gemm_i8.<bits>.<rows>x<cols>`): the codes of a block spread to 64 bytes once
//! (`gemv_int8.rs`), then one integer dot product per token (`vpdpbusd` with VNNI); the integer
//! sums, and so the outputs, equal the matrix-vector kernel's exactly.

use super::decode::{accumulate_segments, segment_widths, Segment};
use super::emit::{
    declare, err, zeroed_accumulators, CodegenError, Emitter, GemvShape, Int8Act, Isa, Result,
};
use super::int8::{level_map, row_output};
use super::loops::{block_loop, RowLoop};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::types::{BasicMetadataTypeEnum, VectorType};
use inkwell::values::{
    BasicValueEnum, FloatValue, FunctionValue, IntValue, PointerValue, VectorValue,
};
use inkwell::AddressSpace;
use inkwell::IntPredicate;
use paretoqc_runtime::format::{Format, BLOCK};
use paretoqc_runtime::role::{Kind as RoleKind, Role};

/// `pqc_gemm_q2_576x576`.
pub fn symbol(shape: &GemvShape) -> String {
    shape.symbol().replacen("pqc_gemv_", "pqc_gemm_", 1)
}

/// `pqc_gemmi8_q2_576x576`.
pub fn symbol_i8(shape: &GemvShape) -> String {
    shape.symbol().replacen("pqc_gemv_", "pqc_gemmi8_", 1)
}

/// Tokens per tile for a CPU's features: 8 with AVX-512 (32 vector registers, one 16-lane
/// accumulator per token), 4 with AVX2 (16 registers, two per 16-lane accumulator).
pub fn token_tile(features: &[String]) -> usize {
    if features.iter().any(|f| f == "avx512f") {
        8
    } else {
        4
    }
}

/// The widest segment the matrix-matrix kernels accumulate (a 512-bit register of f32).
const MAX_LANES: u32 = 16;

/// What the f32 and int8 kernels do differently; the tiling, rows and blocks are shared.
trait Kind<'ctx> {
    /// What a token needs in the row loop (its x row, its scale), computed once per tile.
    type Token;
    fn token(&self, e: &Emitter<'_, 'ctx>, t: IntValue<'ctx>) -> Result<Self::Token>;
    /// One token's accumulators, zeroed where the builder is.
    fn accumulators(
        &self,
        e: &Emitter<'_, 'ctx>,
        f: FunctionValue<'ctx>,
    ) -> Result<Vec<PointerValue<'ctx>>>;
    /// Adds the products of one block (at `p`, weights from `xbase`, `valid` in a tail).
    fn block(
        &self,
        e: &Emitter<'_, 'ctx>,
        p: PointerValue<'ctx>,
        xbase: IntValue<'ctx>,
        valid: Option<usize>,
        tokens: &[(Self::Token, Vec<PointerValue<'ctx>>)],
    ) -> Result<()>;
    /// A token's accumulators as one vector of a power of two lanes (at most 16) whose lane sum
    /// is its dot product.
    fn lanes(
        &self,
        e: &Emitter<'_, 'ctx>,
        accs: &[PointerValue<'ctx>],
    ) -> Result<VectorValue<'ctx>>;
    /// A token's row output before the row factor, from its lane sum.
    fn output(
        &self,
        e: &Emitter<'_, 'ctx>,
        token: &Self::Token,
        sum: BasicValueEnum<'ctx>,
    ) -> Result<FloatValue<'ctx>>;
}

/// f32 activations.
struct F32<'ctx> {
    format: Format,
    x: PointerValue<'ctx>,
    x_stride: IntValue<'ctx>,
    /// Distinct segment widths after the split; `slots[i]` is segment i's accumulator.
    widths: Vec<u32>,
    slots: Vec<usize>,
}

impl<'ctx> F32<'ctx> {
    fn new(format: Format, x: PointerValue<'ctx>, x_stride: IntValue<'ctx>) -> F32<'ctx> {
        let split: Vec<u32> = segment_widths(format)
            .into_iter()
            .flat_map(|w| vec![w.min(MAX_LANES); w.div_ceil(MAX_LANES) as usize])
            .collect();
        let mut widths: Vec<u32> = vec![];
        let slots = split
            .iter()
            .map(|w| match widths.iter().position(|v| v == w) {
                Some(i) => i,
                None => {
                    widths.push(*w);
                    widths.len() - 1
                }
            })
            .collect();
        F32 {
            format,
            x,
            x_stride,
            widths,
            slots,
        }
    }
}

/// `segs` with every segment wider than `MAX_LANES` cut into `MAX_LANES`-lane pieces.
fn split_segments<'ctx>(
    e: &Emitter<'_, 'ctx>,
    segs: Vec<Segment<'ctx>>,
) -> Result<Vec<Segment<'ctx>>> {
    let mut out = vec![];
    for seg in segs {
        let n = seg.levels.get_type().get_size();
        if n <= MAX_LANES {
            out.push(seg);
            continue;
        }
        for k in 0..n / MAX_LANES {
            let idx: Vec<u32> = (k * MAX_LANES..(k + 1) * MAX_LANES).collect();
            let levels = shuffle(e, seg.levels, seg.levels, &idx)?;
            out.push(Segment {
                offset: seg.offset + (k * MAX_LANES) as usize,
                levels,
            });
        }
    }
    Ok(out)
}

/// `base + t · stride` elements of `ty`.
fn row_ptr<'ctx>(
    e: &Emitter<'_, 'ctx>,
    ty: inkwell::types::BasicTypeEnum<'ctx>,
    base: PointerValue<'ctx>,
    t: IntValue<'ctx>,
    stride: IntValue<'ctx>,
) -> Result<PointerValue<'ctx>> {
    let off = e.b.build_int_mul(t, stride, "row.off").map_err(err)?;
    // SAFETY (of the IR): t < tokens, and the caller's buffers hold `tokens` rows of `stride`.
    unsafe { e.b.build_in_bounds_gep(ty, base, &[off], "row.p") }.map_err(err)
}

impl<'ctx> Kind<'ctx> for F32<'ctx> {
    type Token = PointerValue<'ctx>;

    fn token(&self, e: &Emitter<'_, 'ctx>, t: IntValue<'ctx>) -> Result<PointerValue<'ctx>> {
        row_ptr(e, e.ctx.f32_type().into(), self.x, t, self.x_stride)
    }

    fn accumulators(
        &self,
        e: &Emitter<'_, 'ctx>,
        f: FunctionValue<'ctx>,
    ) -> Result<Vec<PointerValue<'ctx>>> {
        zeroed_accumulators(e, f, &self.widths)
    }

    fn block(
        &self,
        e: &Emitter<'_, 'ctx>,
        p: PointerValue<'ctx>,
        xbase: IntValue<'ctx>,
        valid: Option<usize>,
        tokens: &[(PointerValue<'ctx>, Vec<PointerValue<'ctx>>)],
    ) -> Result<()> {
        let segs = split_segments(e, e.decode(self.format, p)?)?;
        let tokens: Vec<_> = tokens.iter().map(|(x, accs)| (*x, accs)).collect();
        accumulate_segments(e, self.format, &segs, &self.slots, &tokens, xbase, valid)
    }

    fn lanes(
        &self,
        e: &Emitter<'_, 'ctx>,
        accs: &[PointerValue<'ctx>],
    ) -> Result<VectorValue<'ctx>> {
        let loaded = self
            .widths
            .iter()
            .zip(accs)
            .map(|(&w, &a)| {
                Ok(e.b
                    .build_load(e.f32v(w), a, "acc.v")
                    .map_err(err)?
                    .into_vector_value())
            })
            .collect::<Result<Vec<_>>>()?;
        concat_padded(e, &loaded)
    }

    fn output(
        &self,
        _: &Emitter<'_, 'ctx>,
        _: &PointerValue<'ctx>,
        sum: BasicValueEnum<'ctx>,
    ) -> Result<FloatValue<'ctx>> {
        Ok(sum.into_float_value())
    }
}

/// int8 activations: per token its i8 row, scale and code sum.
struct Int8<'ctx> {
    format: Format,
    vnni: bool,
    level_map: (f64, f64),
    xq: PointerValue<'ctx>,
    xq_stride: IntValue<'ctx>,
    x_scale: PointerValue<'ctx>,
    x_sum: PointerValue<'ctx>,
}

struct Int8Token<'ctx> {
    xq: PointerValue<'ctx>,
    scale: FloatValue<'ctx>,
    sum: IntValue<'ctx>,
}

impl<'ctx> Kind<'ctx> for Int8<'ctx> {
    type Token = Int8Token<'ctx>;

    fn token(&self, e: &Emitter<'_, 'ctx>, t: IntValue<'ctx>) -> Result<Int8Token<'ctx>> {
        let (f32t, i32t) = (e.ctx.f32_type(), e.ctx.i32_type());
        let one = e.ctx.i64_type().const_int(1, false);
        let xq = row_ptr(e, e.ctx.i8_type().into(), self.xq, t, self.xq_stride)?;
        let sp = row_ptr(e, f32t.into(), self.x_scale, t, one)?;
        let scale = e.b.build_load(f32t, sp, "x.scale").map_err(err)?;
        let qp = row_ptr(e, i32t.into(), self.x_sum, t, one)?;
        let sum = e.b.build_load(i32t, qp, "x.sum").map_err(err)?;
        Ok(Int8Token {
            xq,
            scale: scale.into_float_value(),
            sum: sum.into_int_value(),
        })
    }

    fn accumulators(
        &self,
        e: &Emitter<'_, 'ctx>,
        f: FunctionValue<'ctx>,
    ) -> Result<Vec<PointerValue<'ctx>>> {
        let ty = e.ctx.i32_type().vec_type(16);
        let acc = e.entry_alloca(f, ty.into(), "acc")?;
        e.b.build_store(acc, ty.const_zero()).map_err(err)?;
        Ok(vec![acc])
    }

    fn block(
        &self,
        e: &Emitter<'_, 'ctx>,
        p: PointerValue<'ctx>,
        xbase: IntValue<'ctx>,
        _valid: Option<usize>,
        tokens: &[(Int8Token<'ctx>, Vec<PointerValue<'ctx>>)],
    ) -> Result<()> {
        // Every block, the tail included, is whole: xq is zero past the row's end.
        let u = e.block_codes(self.format, p)?;
        let ty = e.ctx.i32_type().vec_type(16);
        for (tok, accs) in tokens {
            // SAFETY (of the IR): xq holds every block of the row, zero-padded.
            let qp = unsafe {
                e.b.build_in_bounds_gep(e.ctx.i8_type(), tok.xq, &[xbase], "qp")
            }
            .map_err(err)?;
            let q: VectorValue<'ctx> = e.load_vec(e.i8v(BLOCK as u32), qp)?;
            let a = e.b.build_load(ty, accs[0], "a").map_err(err)?;
            let a = e.dot_u8_s8(a.into_vector_value(), u, q, self.vnni)?;
            e.b.build_store(accs[0], a).map_err(err)?;
        }
        Ok(())
    }

    fn lanes(
        &self,
        e: &Emitter<'_, 'ctx>,
        accs: &[PointerValue<'ctx>],
    ) -> Result<VectorValue<'ctx>> {
        let ty = e.ctx.i32_type().vec_type(16);
        Ok(e.b
            .build_load(ty, accs[0], "acc.v")
            .map_err(err)?
            .into_vector_value())
    }

    fn output(
        &self,
        e: &Emitter<'_, 'ctx>,
        tok: &Int8Token<'ctx>,
        sum: BasicValueEnum<'ctx>,
    ) -> Result<FloatValue<'ctx>> {
        row_output(e, sum.into_int_value(), tok.sum, tok.scale, self.level_map)
    }
}

/// `<n x T>` from lanes `idx` of `a ++ b` (an index of n or more picks from `b`).
fn shuffle<'ctx>(
    e: &Emitter<'_, 'ctx>,
    a: VectorValue<'ctx>,
    b: VectorValue<'ctx>,
    idx: &[u32],
) -> Result<VectorValue<'ctx>> {
    let idx: Vec<_> = idx
        .iter()
        .map(|&i| e.ctx.i32_type().const_int(i as u64, false))
        .collect();
    e.b.build_shuffle_vector(a, b, VectorType::const_vector(&idx), "shuf")
        .map_err(err)
}

/// The vectors' lanes one after another, zero-padded to a power of two lanes.
fn concat_padded<'ctx>(
    e: &Emitter<'_, 'ctx>,
    vs: &[VectorValue<'ctx>],
) -> Result<VectorValue<'ctx>> {
    let mut v = vs[0];
    for &next in &vs[1..] {
        let (n, m) = (v.get_type().get_size(), next.get_type().get_size());
        // Both widened to the wider one's lanes (extra lanes zero), then joined.
        let w = n.max(m);
        let widen = |x: VectorValue<'ctx>, k: u32| {
            let zero = x.get_type().const_zero();
            shuffle(
                e,
                x,
                zero,
                &(0..w)
                    .map(|i| if i < k { i } else { k })
                    .collect::<Vec<_>>(),
            )
        };
        let (a, b) = (widen(v, n)?, widen(next, m)?);
        let idx: Vec<u32> = (0..n).chain(w..w + m).collect();
        v = shuffle(e, a, b, &idx)?;
    }
    let n = v.get_type().get_size();
    if n.is_power_of_two() {
        return Ok(v);
    }
    let zero = v.get_type().const_zero();
    let idx: Vec<u32> = (0..n.next_power_of_two()).map(|i| i.min(n)).collect();
    shuffle(e, v, zero, &idx)
}

/// The lane sums of k vectors of the same power-of-two width W ≥ k, as one `<k x T>` vector, by a
/// tree of shuffles and adds: pairs of vectors first fold into one with half the lanes per
/// vector, then the last vector's lanes of each vector fold in halves. Integer sums are exact;
/// f32 sums are in a tree order.
fn lane_sums<'ctx>(
    e: &Emitter<'_, 'ctx>,
    mut vs: Vec<VectorValue<'ctx>>,
) -> Result<VectorValue<'ctx>> {
    let add = |a: VectorValue<'ctx>, b: VectorValue<'ctx>| -> Result<VectorValue<'ctx>> {
        if a.get_type().get_element_type().is_float_type() {
            e.b.build_float_add(a, b, "fold").map_err(err)
        } else {
            e.b.build_int_add(a, b, "fold").map_err(err)
        }
    };
    let w = vs[0].get_type().get_size();
    let k = vs.len() as u32;
    if !k.is_power_of_two() || !w.is_power_of_two() || k > w {
        return Err(format!("cannot fold {k} vectors of {w} lanes"));
    }
    // Lanes per token in each vector.
    let mut lanes = w;
    while vs.len() > 1 {
        let (per, half) = (w / lanes, lanes / 2);
        let pick = |off: u32| -> Vec<u32> {
            (0..2 * per)
                .flat_map(|j| {
                    let base = if j < per { 0 } else { w } + (j % per) * lanes + off;
                    base..base + half
                })
                .collect()
        };
        vs = vs
            .chunks_exact(2)
            .map(|p| {
                add(
                    shuffle(e, p[0], p[1], &pick(0))?,
                    shuffle(e, p[0], p[1], &pick(half))?,
                )
            })
            .collect::<Result<_>>()?;
        lanes = half;
    }
    let mut v = vs[0];
    while lanes > 1 {
        let half = lanes / 2;
        let pick = |off: u32| -> Vec<u32> {
            (0..k)
                .flat_map(|j| j * lanes + off..j * lanes + off + half)
                .collect()
        };
        v = add(shuffle(e, v, v, &pick(0))?, shuffle(e, v, v, &pick(half))?)?;
        lanes = half;
    }
    Ok(v)
}

/// Declares `symbol` with `(codes, factor, <extra>, tokens, y, y_stride, row_begin, row_end)` and
/// emits the tiled loops around `kind` (built from the extra parameters).
fn emit_tiled<'ctx, K: Kind<'ctx>>(
    e: &Emitter<'_, 'ctx>,
    shape: GemvShape,
    symbol: &str,
    tile: usize,
    extra: &[(&str, BasicMetadataTypeEnum<'ctx>)],
    make: impl FnOnce(FunctionValue<'ctx>, &[BasicValueEnum<'ctx>]) -> Result<K>,
) -> Result<FunctionValue<'ctx>> {
    if !tile.is_power_of_two() {
        return Err(format!("token tile {tile} is not a power of two"));
    }
    let ctx = e.ctx;
    let (ptr, i64t) = (ctx.ptr_type(AddressSpace::default()), ctx.i64_type());
    let mut params: Vec<(&str, BasicMetadataTypeEnum<'ctx>)> =
        vec![("codes", ptr.into()), ("factor", ptr.into())];
    params.extend_from_slice(extra);
    params.extend([
        ("tokens", i64t.into()),
        ("y", ptr.into()),
        ("y_stride", i64t.into()),
        ("row_begin", i64t.into()),
        ("row_end", i64t.into()),
    ]);
    let f = declare(e, symbol, &params);
    let p = |i: usize| f.get_nth_param(i as u32).expect("param");
    let (codes, factor) = (p(0).into_pointer_value(), p(1).into_pointer_value());
    let n = extra.len();
    let (tokens, y, y_stride) = (
        p(n + 2).into_int_value(),
        p(n + 3).into_pointer_value(),
        p(n + 4).into_int_value(),
    );
    let rows = (p(n + 5).into_int_value(), p(n + 6).into_int_value());
    let entry = ctx.append_basic_block(f, "entry");
    e.b.position_at_end(entry);
    let extra_values: Vec<BasicValueEnum<'ctx>> = (2..2 + n).map(p).collect();
    let kind = make(f, &extra_values)?;
    let t_slot = e.entry_alloca(f, i64t.into(), "t")?;
    e.b.build_store(t_slot, i64t.const_zero()).map_err(err)?;
    let mut width = tile;
    while width >= 1 {
        let head = ctx.append_basic_block(f, &format!("tile{width}"));
        let body = ctx.append_basic_block(f, &format!("tile{width}.body"));
        let done = ctx.append_basic_block(f, &format!("tile{width}.done"));
        e.b.build_unconditional_branch(head).map_err(err)?;
        e.b.position_at_end(head);
        let t = e.b.build_load(i64t, t_slot, "t").map_err(err)?;
        let t = t.into_int_value();
        let t_end =
            e.b.build_int_add(t, i64t.const_int(width as u64, false), "t.end")
                .map_err(err)?;
        let fits =
            e.b.build_int_compare(IntPredicate::ULE, t_end, tokens, "fits")
                .map_err(err)?;
        e.b.build_conditional_branch(fits, body, done)
            .map_err(err)?;
        e.b.position_at_end(body);
        let mut tile_tokens = vec![];
        let mut ys = vec![];
        for i in 0..width as u64 {
            let ti =
                e.b.build_int_add(t, i64t.const_int(i, false), "ti")
                    .map_err(err)?;
            tile_tokens.push(kind.token(e, ti)?);
            ys.push(row_ptr(e, ctx.f32_type().into(), y, ti, y_stride)?);
        }
        let row = RowLoop::nested(e, f, shape, codes, rows)?;
        let tile_state: Vec<(K::Token, Vec<PointerValue<'ctx>>)> = tile_tokens
            .into_iter()
            .map(|tok| Ok((tok, kind.accumulators(e, f)?)))
            .collect::<Result<_>>()?;
        block_loop(e, f, shape, row.row_codes, |bp, xbase, valid| {
            kind.block(e, bp, xbase, valid, &tile_state)
        })?;
        let lanes = tile_state
            .iter()
            .map(|(_, accs)| kind.lanes(e, accs))
            .collect::<Result<Vec<_>>>()?;
        let sums = lane_sums(e, lanes)?;
        for (i, ((tok, _), yt)) in tile_state.iter().zip(&ys).enumerate() {
            let idx = ctx.i32_type().const_int(i as u64, false);
            let sum = e.b.build_extract_element(sums, idx, "sum").map_err(err)?;
            let value = kind.output(e, tok, sum)?;
            row.store(e, factor, *yt, value)?;
        }
        row.next(e)?;
        e.b.build_store(t_slot, t_end).map_err(err)?;
        e.b.build_unconditional_branch(head).map_err(err)?;
        e.b.position_at_end(done);
        width /= 2;
    }
    e.b.build_return(None).map_err(err)?;
    Ok(f)
}

/// Adds the f32-activation matrix-matrix kernel for `shape` to `module`: `(codes, factor, x,
/// x_stride, tokens, y, y_stride, row_begin, row_end)`.
pub fn emit_gemm<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    shape: GemvShape,
    tile: usize,
) -> Result<FunctionValue<'ctx>> {
    let e = Emitter::new(ctx, module);
    let ptr = ctx.ptr_type(AddressSpace::default()).into();
    let extra = [("x", ptr), ("x_stride", ctx.i64_type().into())];
    emit_tiled(&e, shape, &symbol(&shape), tile, &extra, |_, v| {
        Ok(F32::new(
            shape.format,
            v[0].into_pointer_value(),
            v[1].into_int_value(),
        ))
    })
}

/// Adds the int8-activation matrix-matrix kernel for `shape` to `module`: `(codes, factor, xq,
/// xq_stride, x_scale, x_sum, tokens, y, y_stride, row_begin, row_end)`.
pub fn emit_gemm_i8<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    shape: GemvShape,
    tile: usize,
    vnni: bool,
) -> Result<FunctionValue<'ctx>> {
    let level_map =
        level_map(shape.format).ok_or("the 8-bit format has no int8-activation kernel")?;
    let e = Emitter::new(ctx, module);
    let ptr = ctx.ptr_type(AddressSpace::default());
    let extra = [
        ("xq", ptr.into()),
        ("xq_stride", ctx.i64_type().into()),
        ("x_scale", ptr.into()),
        ("x_sum", ptr.into()),
    ];
    emit_tiled(&e, shape, &symbol_i8(&shape), tile, &extra, |_f, v| {
        Ok(Int8 {
            format: shape.format,
            vnni,
            level_map,
            xq: v[0].into_pointer_value(),
            xq_stride: v[1].into_int_value(),
            x_scale: v[2].into_pointer_value(),
            x_sum: v[3].into_pointer_value(),
        })
    })
}

/// Adds the matrix-matrix kernels of these shapes (deduplicated) to a module of gemv kernels:
/// the f32 kernel of each, and the int8-activation kernel of each sub-8-bit shape when asked.
pub fn add_gemms<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    shapes: &[GemvShape],
    (isa, int8): (Isa, Int8Act),
    tile: usize,
) -> std::result::Result<(), CodegenError> {
    let mut unique: Vec<GemvShape> = shapes.to_vec();
    unique.sort();
    unique.dedup();
    for s in unique {
        if has_gemm_f32(s.format, isa) {
            emit_gemm(ctx, module, s, tile).map_err(CodegenError::Llvm)?;
        }
        if has_gemm_i8(s.format, int8) {
            emit_gemm_i8(ctx, module, s, tile, int8 == Int8Act::Vnni)
                .map_err(CodegenError::Llvm)?;
        }
    }
    module
        .verify()
        .map_err(|e| CodegenError::Llvm(format!("generated IR does not verify: {e}")))
}

/// Whether `format` gets an f32 matrix-matrix kernel on `isa`: not where the matrix-vector
/// kernel runs a token faster than this tile's decoding does (`paretoqc bench --tables gemm`),
/// and prefill runs it once per token:
/// - 1 and 2 bits (`levels.rs`' masked adds on AVX2: the tile measured 0.53-0.91x at 1 bit and
///   0.67-1.07x at 2 bits on 4096x4096 and SmolLM2's shapes; the table kernel on AVX-512);
/// - ternary on AVX-512, whose table kernel (`gemv_tables.rs`) the tile reaches only
///   0.46-0.56x of.
fn has_gemm_f32(format: Format, isa: Isa) -> bool {
    let ternary_tables = format == Format::Ternary && isa == Isa::Avx512;
    !matches!(format, Format::Bin1 | Format::Int2) && !ternary_tables
}

/// Whether `format` gets an int8-activation matrix-matrix kernel: every sub-8-bit format but
/// ternary on VNNI, whose matrix-vector kernel (`gemv_ternary.rs`) runs a token faster than a
/// tile that extracts the digits does (measured 0.5-0.9x of per-token products on SmolLM2's and
/// 4096x4096 shapes, `paretoqc bench --tables gemm`): there prefill runs it once per token.
fn has_gemm_i8(format: Format, int8: Int8Act) -> bool {
    let ternary_vnni = format == Format::Ternary && int8 == Int8Act::Vnni;
    int8 != Int8Act::No && level_map(format).is_some() && !ternary_vnni
}

/// The manifest roles (-> symbols) of the matrix-matrix kernels `add_gemms` emits for `shape`.
pub fn roles(shape: &GemvShape, (isa, int8): (Isa, Int8Act)) -> Vec<(Role, String)> {
    let (f, r, c) = (shape.format, shape.rows, shape.cols);
    let mut out = vec![];
    if has_gemm_f32(shape.format, isa) {
        out.push((Role::matrix(RoleKind::Gemm, f, r, c), symbol(shape)));
    }
    if has_gemm_i8(shape.format, int8) {
        out.push((Role::matrix(RoleKind::GemmI8, f, r, c), symbol_i8(shape)));
    }
    out
}
