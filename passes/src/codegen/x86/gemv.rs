//! The LLVM IR of one packed matrix-vector kernel with f32 activations (at 1, 2 and 3 bits with
//! AVX-512 the table kernel of `gemv_tables.rs` takes its place)
//! (`paretoqc_runtime::kernels::native` has its ABI): for each row r in [row_begin, row_end),
//! `y[r - row_begin] = factor[r] · Σ_i level(code[r, i]) · x[i]`.
//!
//! Rows go in groups of `ROW_GROUP` (then one at a time for the rest): per 64-weight block the x
//! vectors are loaded once and feed every row of the group, the codes are prefetched a few row
//! groups ahead (a cold matrix streams from memory), and each row decodes its block
//! into 16-lane f32 level vectors (`levels.rs`: table lookups with AVX-512, conversions with
//! AVX2) multiplied into its accumulators by FMAs. A row is `cols / 64` full blocks, walked by a
//! loop, and an optional tail block whose x loads are masked to the row's end (the padded codes
//! then multiply zeros; nothing past x's `cols` floats is read).
//!
//! Numerics: every level · x product is exact (levels are small integers or halves), each
//! accumulator lane adds its products in block order with FMAs, and a row's accumulators are
//! summed as a tree at its end. At 1 bit the accumulators instead sum x over the weights whose
//! bit is set, S, and the row is `2 · S − Σx` (Σx summed once per call): one rounding more, and
//! the two terms can be larger than their difference. The result equals the reference
//! (dequantize, then a dot product) up to the rounding of a different summation order.
//!
//! The file also holds what every x86 kernel shares: the `Emitter`, the block decoding into
//! segments and the row and block loops that the matrix-matrix kernels (`gemm.rs`) use.

use super::levels::{level_spans, sums_set_weights, Term, LANES};
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::types::VectorType;
use inkwell::values::BasicValue;
use inkwell::values::{
    BasicMetadataValueEnum, FloatValue, FunctionValue, IntValue, PointerValue, VectorValue,
};
use inkwell::AddressSpace;
use paretoqc_runtime::format::{Format, BLOCK, TERNARY_BYTES, TRITS};

pub(super) type Result<T> = std::result::Result<T, String>;

pub(super) fn err(e: impl std::fmt::Display) -> String {
    format!("building LLVM IR: {e}")
}

/// The vector instructions an f32 kernel is generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX2 and FMA (x86-64-v3).
    Avx2,
    /// AVX-512 F and BW: table lookups with `vpermps`, masked byte loads.
    Avx512,
}

impl Isa {
    /// The best of the two a CPU with these features (LLVM's names) has.
    pub fn of(features: &[String]) -> Isa {
        let has = |name: &str| features.iter().any(|f| f == name);
        if has("avx512f") && has("avx512bw") {
            Isa::Avx512
        } else {
            Isa::Avx2
        }
    }
}

/// What one kernel is specialised to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GemvShape {
    pub format: Format,
    pub rows: usize,
    pub cols: usize,
}

impl GemvShape {
    /// `pqc_gemv_q2_576x576`.
    pub fn symbol(&self) -> String {
        let tag = match self.format {
            Format::Bin1 => "b1",
            Format::Ternary => "t158",
            Format::Int2 => "q2",
            Format::Int3 => "q3",
            Format::Int4 => "q4",
            Format::Int8 => "q8",
        };
        format!("pqc_gemv_{tag}_{}x{}", self.rows, self.cols)
    }
}

/// A run of consecutive weights starting `offset` weights into the block, as an f32 vector of
/// their levels (16 weights for 2 bits, 32 for 4 bits, 13 ternary digits in 16 lanes): how the
/// matrix-matrix kernels decode a block.
pub(super) struct Segment<'ctx> {
    pub(super) offset: usize,
    pub(super) levels: VectorValue<'ctx>,
}

pub(super) struct Emitter<'a, 'ctx> {
    pub(super) ctx: &'ctx Context,
    pub(super) module: &'a Module<'ctx>,
    pub(super) b: Builder<'ctx>,
}

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    pub(super) fn new(ctx: &'ctx Context, module: &'a Module<'ctx>) -> Emitter<'a, 'ctx> {
        Emitter {
            ctx,
            module,
            b: ctx.create_builder(),
        }
    }
    /// A stack slot in the function's entry block, where mem2reg promotes it to a register.
    pub(super) fn entry_alloca(
        &self,
        f: FunctionValue<'ctx>,
        ty: inkwell::types::BasicTypeEnum<'ctx>,
        name: &str,
    ) -> Result<PointerValue<'ctx>> {
        let entry = f.get_first_basic_block().expect("entry block");
        let b = self.ctx.create_builder();
        match entry.get_first_instruction() {
            Some(i) => b.position_before(&i),
            None => b.position_at_end(entry),
        }
        b.build_alloca(ty, name).map_err(err)
    }
    pub(super) fn i8v(&self, n: u32) -> VectorType<'ctx> {
        self.ctx.i8_type().vec_type(n)
    }
    pub(super) fn f32v(&self, n: u32) -> VectorType<'ctx> {
        self.ctx.f32_type().vec_type(n)
    }
    pub(super) fn splat_i8(&self, n: u32, v: u64) -> VectorValue<'ctx> {
        let c = self.ctx.i8_type().const_int(v, false);
        VectorType::const_vector(&vec![c; n as usize])
    }
    pub(super) fn splat_f32(&self, n: u32, v: f64) -> VectorValue<'ctx> {
        let c = self.ctx.f32_type().const_float(v);
        VectorType::const_vector(&vec![c; n as usize])
    }
    pub(super) fn byte_ptr(
        &self,
        base: PointerValue<'ctx>,
        offset: u64,
    ) -> Result<PointerValue<'ctx>> {
        let off = self.ctx.i64_type().const_int(offset, false);
        // SAFETY (of the IR): offsets stay inside the block being decoded.
        unsafe {
            self.b
                .build_in_bounds_gep(self.ctx.i8_type(), base, &[off], "p")
        }
        .map_err(err)
    }
    pub(super) fn load_vec(
        &self,
        ty: VectorType<'ctx>,
        ptr: PointerValue<'ctx>,
    ) -> Result<VectorValue<'ctx>> {
        let v = self.b.build_load(ty, ptr, "v").map_err(err)?;
        if let Some(i) = v.as_instruction_value() {
            i.set_alignment(1).map_err(err)?;
        }
        Ok(v.into_vector_value())
    }
    pub(super) fn load_i64(&self, ptr: PointerValue<'ctx>) -> Result<IntValue<'ctx>> {
        let v = self
            .b
            .build_load(self.ctx.i64_type(), ptr, "w")
            .map_err(err)?;
        if let Some(i) = v.as_instruction_value() {
            i.set_alignment(1).map_err(err)?;
        }
        Ok(v.into_int_value())
    }
    /// Unsigned bytes to f32 levels minus `offset`.
    pub(super) fn levels(&self, u: VectorValue<'ctx>, offset: f64) -> Result<VectorValue<'ctx>> {
        let n = u.get_type().get_size();
        let f = self
            .b
            .build_unsigned_int_to_float(u, self.f32v(n), "f")
            .map_err(err)?;
        self.b
            .build_float_sub(f, self.splat_f32(n, offset), "lv")
            .map_err(err)
    }
    /// `(v >> shift) & mask` on bytes.
    pub(super) fn field(
        &self,
        v: VectorValue<'ctx>,
        shift: u64,
        mask: u64,
    ) -> Result<VectorValue<'ctx>> {
        let n = v.get_type().get_size();
        let s = self
            .b
            .build_right_shift(v, self.splat_i8(n, shift), false, "s")
            .map_err(err)?;
        self.b
            .build_and(s, self.splat_i8(n, mask), "m")
            .map_err(err)
    }
    /// Bits `16t .. 16t+16` of a 64-bit word as 16 lanes of i1.
    pub(super) fn bit_lanes(&self, word: IntValue<'ctx>, t: u64) -> Result<VectorValue<'ctx>> {
        let i64t = self.ctx.i64_type();
        let s = self
            .b
            .build_right_shift(word, i64t.const_int(16 * t, false), false, "s")
            .map_err(err)?;
        let h = self
            .b
            .build_int_truncate(s, self.ctx.i16_type(), "h")
            .map_err(err)?;
        let lanes = self
            .b
            .build_bit_cast(h, self.ctx.bool_type().vec_type(16), "bits")
            .map_err(err)?;
        Ok(lanes.into_vector_value())
    }

    /// The segments of the block at `p`.
    pub(super) fn decode(
        &self,
        format: Format,
        p: PointerValue<'ctx>,
    ) -> Result<Vec<Segment<'ctx>>> {
        match format {
            Format::Int4 => {
                let bytes = self.load_vec(self.i8v(32), p)?;
                Ok(vec![
                    Segment {
                        offset: 0,
                        levels: self.levels(self.field(bytes, 0, 15)?, 8.0)?,
                    },
                    Segment {
                        offset: 32,
                        levels: self.levels(self.field(bytes, 4, 15)?, 8.0)?,
                    },
                ])
            }
            Format::Int2 => {
                let bytes = self.load_vec(self.i8v(16), p)?;
                (0..4)
                    .map(|t| {
                        let u = self.field(bytes, 2 * t, 3)?;
                        Ok(Segment {
                            offset: 16 * t as usize,
                            levels: self.levels(u, 1.5)?,
                        })
                    })
                    .collect()
            }
            Format::Int3 => {
                let low = self.load_vec(self.i8v(16), p)?;
                let high = self.load_i64(self.byte_ptr(p, 16)?)?;
                (0..4)
                    .map(|t| {
                        let hb = self
                            .b
                            .build_int_z_extend(self.bit_lanes(high, t)?, self.i8v(16), "hb")
                            .map_err(err)?;
                        let hb = self
                            .b
                            .build_left_shift(hb, self.splat_i8(16, 2), "hb2")
                            .map_err(err)?;
                        let u = self
                            .b
                            .build_or(self.field(low, 2 * t, 3)?, hb, "u")
                            .map_err(err)?;
                        Ok(Segment {
                            offset: 16 * t as usize,
                            levels: self.levels(u, 4.0)?,
                        })
                    })
                    .collect()
            }
            Format::Bin1 => {
                let word = self.load_i64(p)?;
                (0..4)
                    .map(|t| {
                        let bits = self.bit_lanes(word, t)?;
                        let l = self
                            .b
                            .build_select(
                                bits,
                                self.splat_f32(16, 1.0),
                                self.splat_f32(16, -1.0),
                                "pm",
                            )
                            .map_err(err)?;
                        Ok(Segment {
                            offset: 16 * t as usize,
                            levels: l.into_vector_value(),
                        })
                    })
                    .collect()
            }
            Format::Ternary => self.decode_ternary(p),
            Format::Int8 => (0..4)
                .map(|t| {
                    let bytes = self.load_vec(self.i8v(16), self.byte_ptr(p, 16 * t)?)?;
                    let f = self
                        .b
                        .build_signed_int_to_float(bytes, self.f32v(16), "f")
                        .map_err(err)?;
                    Ok(Segment {
                        offset: 16 * t as usize,
                        levels: f,
                    })
                })
                .collect(),
        }
    }

    /// Ternary levels: digit vector k holds weights 13k .. 13k + 12 in its first 13 lanes
    /// (`segment_live` masks x past them; their levels are finite, so they add 0).
    pub(super) fn decode_ternary(&self, p: PointerValue<'ctx>) -> Result<Vec<Segment<'ctx>>> {
        self.ternary_digits(p)?
            .into_iter()
            .enumerate()
            .map(|(k, d)| {
                let f = self
                    .b
                    .build_unsigned_int_to_float(d, self.f32v(16), "d")
                    .map_err(err)?;
                let levels = self
                    .b
                    .build_float_sub(f, self.splat_f32(16, 1.0), "lv")
                    .map_err(err)?;
                Ok(Segment {
                    offset: TERNARY_BYTES * k,
                    levels,
                })
            })
            .collect()
    }

    /// The five digit vectors (`<16 x i16>`, most significant digit first) of the ternary block
    /// at `p` (runtime `BlockT`): its 13 bytes in lanes 0..12 (lanes 13..15 zero), then per
    /// digit `t = 3t; d = t >> 8; t &= 255`.
    pub(super) fn ternary_digits(&self, p: PointerValue<'ctx>) -> Result<Vec<VectorValue<'ctx>>> {
        let bytes = self.load_13_bytes(p)?;
        let i16v = self.ctx.i16_type().vec_type(16);
        let splat =
            |v: u64| VectorType::const_vector(&[self.ctx.i16_type().const_int(v, false); 16]);
        let mut t = self.b.build_int_z_extend(bytes, i16v, "t").map_err(err)?;
        let mut digits = vec![];
        for _ in 0..TRITS {
            let t3 = self.b.build_int_mul(t, splat(3), "t3").map_err(err)?;
            digits.push(
                self.b
                    .build_right_shift(t3, splat(8), false, "d")
                    .map_err(err)?,
            );
            t = self.b.build_and(t3, splat(255), "t").map_err(err)?;
        }
        Ok(digits)
    }

    /// The 13 bytes at `p` as `<16 x i8>` with zero lanes 13..15, from an 8-, a 4- and a 1-byte
    /// load (nothing past the block is read).
    pub(super) fn load_13_bytes(&self, p: PointerValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let (i64t, i32t, i8t) = (self.ctx.i64_type(), self.ctx.i32_type(), self.ctx.i8_type());
        let low = self.load_i64(p)?;
        let mid = self
            .b
            .build_load(i32t, self.byte_ptr(p, 8)?, "mid")
            .map_err(err)?;
        mid.as_instruction_value()
            .expect("load")
            .set_alignment(1)
            .map_err(err)?;
        let last = self
            .b
            .build_load(i8t, self.byte_ptr(p, 12)?, "last")
            .map_err(err)?
            .into_int_value();
        let mid = self
            .b
            .build_int_z_extend(mid.into_int_value(), i64t, "mid64")
            .map_err(err)?;
        let last = self
            .b
            .build_int_z_extend(last, i64t, "last64")
            .map_err(err)?;
        let last = self
            .b
            .build_left_shift(last, i64t.const_int(32, false), "last.sh")
            .map_err(err)?;
        let high = self.b.build_or(mid, last, "high").map_err(err)?;
        let v2 = i64t.vec_type(2).get_undef();
        let v2 = self
            .b
            .build_insert_element(v2, low, i32t.const_zero(), "v0")
            .map_err(err)?;
        let v2 = self
            .b
            .build_insert_element(v2, high, i32t.const_int(1, false), "v1")
            .map_err(err)?;
        Ok(self
            .b
            .build_bit_cast(v2, self.i8v(16), "bytes")
            .map_err(err)?
            .into_vector_value())
    }
}

/// Declares `llvm.<name>` overloaded on `tys`.
pub(super) fn intrinsic<'ctx>(
    module: &Module<'ctx>,
    name: &str,
    tys: &[inkwell::types::BasicTypeEnum<'ctx>],
) -> Result<FunctionValue<'ctx>> {
    Intrinsic::find(name)
        .and_then(|i| i.get_declaration(module, tys))
        .ok_or_else(|| format!("LLVM has no intrinsic {name}"))
}

/// The kernel function `symbol` with the given parameters (all pointers except where `params`
/// says), its parameters named.
pub(super) fn declare<'ctx>(
    e: &Emitter<'_, 'ctx>,
    symbol: &str,
    params: &[(&str, inkwell::types::BasicMetadataTypeEnum<'ctx>)],
) -> FunctionValue<'ctx> {
    let types: Vec<_> = params.iter().map(|(_, t)| *t).collect();
    let f = e
        .module
        .add_function(symbol, e.ctx.void_type().fn_type(&types, false), None);
    for (i, (name, _)) in params.iter().enumerate() {
        f.get_nth_param(i as u32).expect("param").set_name(name);
    }
    f
}

/// The matrix-matrix kernels' loop over rows: `r` from `row_begin` to `row_end`, `row_codes`
/// pointing at row r's packed codes. `nested` leaves the builder in the row's body; `store`
/// writes `y[r - row_begin] = factor[r] · value` and `next` moves to the next row.
pub(super) struct RowLoop<'ctx> {
    r_slot: PointerValue<'ctx>,
    pub(super) r: IntValue<'ctx>,
    r0: IntValue<'ctx>,
    row_head: inkwell::basic_block::BasicBlock<'ctx>,
    exit: inkwell::basic_block::BasicBlock<'ctx>,
    pub(super) row_codes: PointerValue<'ctx>,
}

impl<'ctx> RowLoop<'ctx> {
    /// A row loop starting where the builder is (inside another loop, say).
    pub(super) fn nested(
        e: &Emitter<'_, 'ctx>,
        f: FunctionValue<'ctx>,
        shape: GemvShape,
        codes: PointerValue<'ctx>,
        (r0, r1): (IntValue<'ctx>, IntValue<'ctx>),
    ) -> Result<RowLoop<'ctx>> {
        let (ctx, b) = (e.ctx, &e.b);
        let i64t = ctx.i64_type();
        let r_slot = e.entry_alloca(f, i64t.into(), "r")?;
        let row_head = ctx.append_basic_block(f, "row");
        let row_body = ctx.append_basic_block(f, "row.body");
        let exit = ctx.append_basic_block(f, "exit");
        b.build_store(r_slot, r0).map_err(err)?;
        b.build_unconditional_branch(row_head).map_err(err)?;
        b.position_at_end(row_head);
        let r = b
            .build_load(i64t, r_slot, "r")
            .map_err(err)?
            .into_int_value();
        let more = b
            .build_int_compare(inkwell::IntPredicate::ULT, r, r1, "more")
            .map_err(err)?;
        b.build_conditional_branch(more, row_body, exit)
            .map_err(err)?;
        b.position_at_end(row_body);
        let rb = i64t.const_int(shape.format.row_bytes(shape.cols) as u64, false);
        let row_off = b.build_int_mul(r, rb, "row.off").map_err(err)?;
        // SAFETY (of the IR): r < rows, so the row is inside the codes.
        let row_codes =
            unsafe { b.build_in_bounds_gep(ctx.i8_type(), codes, &[row_off], "row.codes") }
                .map_err(err)?;
        Ok(RowLoop {
            r_slot,
            r,
            r0,
            row_head,
            exit,
            row_codes,
        })
    }

    /// `y[r - row_begin] = factor[r] · value`.
    pub(super) fn store(
        &self,
        e: &Emitter<'_, 'ctx>,
        factor: PointerValue<'ctx>,
        y: PointerValue<'ctx>,
        value: inkwell::values::FloatValue<'ctx>,
    ) -> Result<()> {
        store_output(e, (factor, y), (self.r, self.r0), value)
    }

    /// Moves to the next row; the builder continues after the loop.
    pub(super) fn next(self, e: &Emitter<'_, 'ctx>) -> Result<()> {
        let b = &e.b;
        let next = b
            .build_int_add(self.r, e.ctx.i64_type().const_int(1, false), "r.next")
            .map_err(err)?;
        b.build_store(self.r_slot, next).map_err(err)?;
        b.build_unconditional_branch(self.row_head).map_err(err)?;
        b.position_at_end(self.exit);
        Ok(())
    }
}

/// `y[row - row_begin] = factor[row] · value`.
pub(super) fn store_output<'ctx>(
    e: &Emitter<'_, 'ctx>,
    (factor, y): (PointerValue<'ctx>, PointerValue<'ctx>),
    (row, row_begin): (IntValue<'ctx>, IntValue<'ctx>),
    value: inkwell::values::FloatValue<'ctx>,
) -> Result<()> {
    let (b, f32t) = (&e.b, e.ctx.f32_type());
    // SAFETY (of the IR): factor has `rows` entries and y has row_end - row_begin.
    let fp = unsafe { b.build_in_bounds_gep(f32t, factor, &[row], "fp") }.map_err(err)?;
    let fr = b
        .build_load(f32t, fp, "factor.r")
        .map_err(err)?
        .into_float_value();
    let out = b.build_float_mul(fr, value, "y.r").map_err(err)?;
    let yi = b.build_int_sub(row, row_begin, "yi").map_err(err)?;
    let yp = unsafe { b.build_in_bounds_gep(f32t, y, &[yi], "yp") }.map_err(err)?;
    b.build_store(yp, out).map_err(err)?;
    Ok(())
}

/// Adds the kernel for `shape` to `module`, for the instructions of `isa`.
pub fn emit_gemv<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    shape: GemvShape,
    isa: Isa,
) -> Result<FunctionValue<'ctx>> {
    if super::gemv_tables::uses_tables(shape.format, isa) {
        return super::gemv_tables::emit_gemv_tables(ctx, module, shape, isa);
    }
    let e = Emitter::new(ctx, module);
    let f = declare_gemv(&e, shape);
    let p = |i: u32| f.get_nth_param(i).expect("param");
    let entry = ctx.append_basic_block(f, "entry");
    e.b.position_at_end(entry);
    let x = p(2).into_pointer_value();
    let x_sum = match sums_set_weights(shape.format) {
        true => Some(emit_x_sum(&e, f, shape, x)?),
        false => None,
    };
    let kernel = F32Kernel {
        shape,
        isa,
        codes: p(0).into_pointer_value(),
        factor: p(1).into_pointer_value(),
        x,
        y: p(3).into_pointer_value(),
        row_begin: p(4).into_int_value(),
        x_sum,
    };
    let r1 = p(5).into_int_value();
    // Whole groups of ROW_GROUP rows first, then the remaining rows one at a time.
    let split = group_split(&e, kernel.row_begin, r1, ROW_GROUP)?;
    kernel.emit_rows(&e, f, ROW_GROUP, (kernel.row_begin, split))?;
    kernel.emit_rows(&e, f, 1, (split, r1))?;
    e.b.build_return(None).map_err(err)?;
    Ok(f)
}

/// The f32 matrix-vector kernel function of `shape` (the ABI of
/// `paretoqc_runtime::kernels::native::GemvFn`).
pub(super) fn declare_gemv<'ctx>(e: &Emitter<'_, 'ctx>, shape: GemvShape) -> FunctionValue<'ctx> {
    let ptr = e.ctx.ptr_type(AddressSpace::default()).into();
    let i64t = e.ctx.i64_type();
    let params = [
        ("codes", ptr),
        ("factor", ptr),
        ("x", ptr),
        ("y", ptr),
        ("row_begin", i64t.into()),
        ("row_end", i64t.into()),
    ];
    declare(e, &shape.symbol(), &params)
}

/// Rows decoded together: each x vector, loaded once, feeds all of them, and their
/// accumulators are independent chains (so the FMAs' latency overlaps).
pub(super) const ROW_GROUP: usize = 4;

/// Emits `for (i = from; i < to; i += stride) body(i)` where the builder is (blocks
/// `name.head`, `name.body`, `name.exit`; `i` named `name`), and leaves the builder after the
/// loop.
pub(super) fn emit_loop<'ctx>(
    e: &Emitter<'_, 'ctx>,
    f: FunctionValue<'ctx>,
    name: &str,
    (from, to): (IntValue<'ctx>, IntValue<'ctx>),
    stride: u64,
    mut body: impl FnMut(IntValue<'ctx>) -> Result<()>,
) -> Result<()> {
    let (ctx, b) = (e.ctx, &e.b);
    let i64t = ctx.i64_type();
    let slot = e.entry_alloca(f, i64t.into(), &format!("{name}.slot"))?;
    b.build_store(slot, from).map_err(err)?;
    let head = ctx.append_basic_block(f, &format!("{name}.head"));
    let body_block = ctx.append_basic_block(f, &format!("{name}.body"));
    let exit = ctx.append_basic_block(f, &format!("{name}.exit"));
    b.build_unconditional_branch(head).map_err(err)?;
    b.position_at_end(head);
    let i = b
        .build_load(i64t, slot, name)
        .map_err(err)?
        .into_int_value();
    let more = b
        .build_int_compare(inkwell::IntPredicate::ULT, i, to, "more")
        .map_err(err)?;
    b.build_conditional_branch(more, body_block, exit)
        .map_err(err)?;
    b.position_at_end(body_block);
    body(i)?;
    let next = b
        .build_int_add(i, i64t.const_int(stride, false), "next")
        .map_err(err)?;
    b.build_store(slot, next).map_err(err)?;
    b.build_unconditional_branch(head).map_err(err)?;
    b.position_at_end(exit);
    Ok(())
}

/// The first row after the whole groups of `group` rows from `row_begin` to `row_end`.
pub(super) fn group_split<'ctx>(
    e: &Emitter<'_, 'ctx>,
    row_begin: IntValue<'ctx>,
    row_end: IntValue<'ctx>,
    group: usize,
) -> Result<IntValue<'ctx>> {
    let span = e.b.build_int_sub(row_end, row_begin, "span").map_err(err)?;
    let g = e.ctx.i64_type().const_int(group as u64, false);
    let whole = e.b.build_int_unsigned_div(span, g, "groups").map_err(err)?;
    let grouped = e.b.build_int_mul(whole, g, "grouped").map_err(err)?;
    e.b.build_int_add(row_begin, grouped, "split").map_err(err)
}

/// How far ahead of the codes it reads a kernel asks for codes, at least: memory latency is
/// hidden only with several requests in flight. (At 2 bits, 4096 x 4096 cold: 512 bytes along
/// each row's own stream was 1.3x slower; 4096 and 8192 bytes were no faster than 2048. The int8
/// ternary kernel's cold time was 1.4x with 512 bytes.)
const PREFETCH_MIN_BYTES: u64 = 2048;

/// The distance at which a kernel reading rows in groups of `group` asks for codes: the same
/// place whole row groups below, at least `PREFETCH_MIN_BYTES` ahead. The rows of a group are
/// adjacent, so the groups below hold the next codes the kernel reads; a distance along each
/// row's own stream would run into the next row of the same group at its end and leave the next
/// group's rows to start cold.
pub(super) fn prefetch_distance(shape: GemvShape, group: usize) -> u64 {
    let span = (group * shape.format.row_bytes(shape.cols)) as u64;
    PREFETCH_MIN_BYTES.div_ceil(span) * span
}

/// Asks for the codes `distance` bytes past `p`. Past the last row it touches other memory or
/// nothing: a prefetch never faults.
pub(super) fn prefetch_ahead<'ctx>(
    e: &Emitter<'_, 'ctx>,
    p: PointerValue<'ctx>,
    distance: u64,
) -> Result<()> {
    let ctx = e.ctx;
    let off = ctx.i64_type().const_int(distance, false);
    // SAFETY (of the IR): a plain (not inbounds) GEP: the address may lie past the codes,
    // and only a prefetch, which never faults, uses it.
    let ahead = unsafe { e.b.build_gep(ctx.i8_type(), p, &[off], "ahead") }.map_err(err)?;
    let ptr = ctx.ptr_type(AddressSpace::default());
    let f = intrinsic(e.module, "llvm.prefetch", &[ptr.into()])?;
    let i32t = ctx.i32_type();
    // (address, read, high locality, data cache)
    let args: [BasicMetadataValueEnum; 4] = [
        ahead.into(),
        i32t.const_zero().into(),
        i32t.const_int(3, false).into(),
        i32t.const_int(1, false).into(),
    ];
    e.b.build_call(f, &args, "").map_err(err)?;
    Ok(())
}

/// Accumulators per row: with AVX-512 two (eight chains in a group of four rows, 8 of the 32
/// registers); with AVX2 one (its 16-lane vectors take two of the 16 registers each).
fn accumulators_per_row(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 2,
        Isa::Avx2 => 1,
    }
}

/// What the row loops of an f32 kernel read and write.
struct F32Kernel<'ctx> {
    shape: GemvShape,
    isa: Isa,
    codes: PointerValue<'ctx>,
    factor: PointerValue<'ctx>,
    x: PointerValue<'ctx>,
    y: PointerValue<'ctx>,
    row_begin: IntValue<'ctx>,
    /// Σx over the row, for formats summing set weights (`levels::Term::Set`).
    x_sum: Option<FloatValue<'ctx>>,
}

impl<'ctx> F32Kernel<'ctx> {
    /// Emits, at the builder's position, a loop over rows `start..end` in steps of `group`
    /// (`end - start` is a multiple of `group`): per step the full blocks in a loop, then the
    /// tail block; leaves the builder after it.
    fn emit_rows(
        &self,
        e: &Emitter<'_, 'ctx>,
        f: FunctionValue<'ctx>,
        group: usize,
        rows: (IntValue<'ctx>, IntValue<'ctx>),
    ) -> Result<()> {
        let (ctx, b) = (e.ctx, &e.b);
        let i64t = ctx.i64_type();
        let per_row = accumulators_per_row(self.isa);
        emit_loop(e, f, "row", rows, group as u64, |r| {
            let accs = zeroed_accumulators(e, f, &vec![LANES; group * per_row])?;
            let full = (self.shape.cols / BLOCK) as u64;
            if full > 0 {
                let blocks = (i64t.const_zero(), i64t.const_int(full, false));
                emit_loop(e, f, "block", blocks, 1, |blk| {
                    self.add_block(e, r, blk, None, &accs)
                })?;
            }
            let rest = self.shape.cols % BLOCK;
            if rest > 0 {
                self.add_block(e, r, i64t.const_int(full, false), Some(rest), &accs)?;
            }
            for (g, row_accs) in accs.chunks_exact(per_row).enumerate() {
                let row = b
                    .build_int_add(r, i64t.const_int(g as u64, false), "row")
                    .map_err(err)?;
                let sum = sum_accumulators(e, &vec![LANES; per_row], row_accs)?;
                let value = self.row_value(e, sum)?;
                store_output(e, (self.factor, self.y), (row, self.row_begin), value)?;
            }
            Ok(())
        })
    }

    /// Adds block `blk` of rows `r ..` (one per `accs.len() / per_row`) to their accumulators:
    /// the x vectors of the block loaded once (masked to `valid` weights in the tail block),
    /// then per row its levels, FMAs alternating between the row's accumulators.
    fn add_block(
        &self,
        e: &Emitter<'_, 'ctx>,
        r: IntValue<'ctx>,
        blk: IntValue<'ctx>,
        valid: Option<usize>,
        accs: &[PointerValue<'ctx>],
    ) -> Result<()> {
        let b = &e.b;
        let xbase = b
            .build_int_mul(
                blk,
                e.ctx.i64_type().const_int(BLOCK as u64, false),
                "xbase",
            )
            .map_err(err)?;
        let xs = block_x(e, self.shape.format, self.x, xbase, valid)?;
        let fma = intrinsic(e.module, "llvm.fma", &[e.f32v(LANES).into()])?;
        let per_row = accumulators_per_row(self.isa);
        for (g, row_accs) in accs.chunks_exact(per_row).enumerate() {
            let bp = self.block_ptr(e, r, g, blk)?;
            if valid.is_none() {
                prefetch_ahead(e, bp, prefetch_distance(self.shape, accs.len() / per_row))?;
            }
            let parts = e.block_terms(self.shape.format, self.isa, bp)?;
            for (k, (part, xv)) in parts.iter().zip(&xs).enumerate() {
                let Some(xv) = xv else { continue };
                let acc = row_accs[k % per_row];
                let a = b
                    .build_load(e.f32v(LANES), acc, "a")
                    .map_err(err)?
                    .into_vector_value();
                let sum = match part {
                    Term::Levels(lv) => {
                        let args: [BasicMetadataValueEnum; 3] =
                            [(*lv).into(), (*xv).into(), a.into()];
                        b.build_call(fma, &args, "fma")
                            .map_err(err)?
                            .try_as_basic_value()
                            .basic()
                            .expect("value")
                    }
                    Term::Set(bits) => {
                        let added = b.build_float_add(a, *xv, "added").map_err(err)?;
                        b.build_select(*bits, added, a, "sum").map_err(err)?
                    }
                };
                b.build_store(acc, sum).map_err(err)?;
            }
        }
        Ok(())
    }

    /// The row's dot product from the sum of its accumulators.
    fn row_value(&self, e: &Emitter<'_, 'ctx>, sum: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
        let Some(x_sum) = self.x_sum else {
            return Ok(sum);
        };
        let twice =
            e.b.build_float_mul(sum, e.ctx.f32_type().const_float(2.0), "twice")
                .map_err(err)?;
        e.b.build_float_sub(twice, x_sum, "dot").map_err(err)
    }

    /// The codes of block `blk` of row `r + g`.
    fn block_ptr(
        &self,
        e: &Emitter<'_, 'ctx>,
        r: IntValue<'ctx>,
        g: usize,
        blk: IntValue<'ctx>,
    ) -> Result<PointerValue<'ctx>> {
        let (b, i64t) = (&e.b, e.ctx.i64_type());
        let format = self.shape.format;
        let rb = format.row_bytes(self.shape.cols) as u64;
        let row = b
            .build_int_add(r, i64t.const_int(g as u64, false), "row.g")
            .map_err(err)?;
        let row_off = b
            .build_int_mul(row, i64t.const_int(rb, false), "row.off")
            .map_err(err)?;
        let boff = b
            .build_int_mul(
                blk,
                i64t.const_int(format.block_bytes() as u64, false),
                "boff",
            )
            .map_err(err)?;
        let off = b.build_int_add(row_off, boff, "off").map_err(err)?;
        // SAFETY (of the IR): row r + g < rows and blk < blocks per row.
        unsafe { b.build_in_bounds_gep(e.ctx.i8_type(), self.codes, &[off], "bp") }.map_err(err)
    }
}

/// The x vector of each level vector of the block whose first weight is `xbase`
/// (`level_spans`), loads masked to the span's weights (and to `valid` in the tail block); `None`
/// for a span past the row's end.
fn block_x<'ctx>(
    e: &Emitter<'_, 'ctx>,
    format: Format,
    x: PointerValue<'ctx>,
    xbase: IntValue<'ctx>,
    valid: Option<usize>,
) -> Result<Vec<Option<VectorValue<'ctx>>>> {
    let (b, f32t, i64t) = (&e.b, e.ctx.f32_type(), e.ctx.i64_type());
    level_spans(format)
        .into_iter()
        .map(|(first, n)| {
            let live = valid.map_or(n, |v| v.saturating_sub(first).min(n));
            if live == 0 {
                return Ok(None);
            }
            let xi = b
                .build_int_add(xbase, i64t.const_int(first as u64, false), "xi")
                .map_err(err)?;
            // SAFETY (of the IR): the span's first weight is inside the row.
            let xp = unsafe { b.build_in_bounds_gep(f32t, x, &[xi], "xp") }.map_err(err)?;
            if live == LANES as usize {
                let v = b.build_load(e.f32v(LANES), xp, "xv").map_err(err)?;
                v.as_instruction_value()
                    .expect("load")
                    .set_alignment(4)
                    .map_err(err)?;
                Ok(Some(v.into_vector_value()))
            } else {
                masked_load(e, e.f32v(LANES), xp, live).map(Some)
            }
        })
        .collect()
}

/// Σx over the row (`cols` floats): the blocks' x vectors added in lanes, then the lanes.
fn emit_x_sum<'ctx>(
    e: &Emitter<'_, 'ctx>,
    f: FunctionValue<'ctx>,
    shape: GemvShape,
    x: PointerValue<'ctx>,
) -> Result<FloatValue<'ctx>> {
    let accs = zeroed_accumulators(e, f, &[LANES])?;
    // The block loop walks a row's codes; only its weight indices matter here.
    let row = x;
    block_loop(e, f, shape, row, |_, xbase, valid| {
        for xv in block_x(e, shape.format, x, xbase, valid)?
            .into_iter()
            .flatten()
        {
            let a =
                e.b.build_load(e.f32v(LANES), accs[0], "a")
                    .map_err(err)?
                    .into_vector_value();
            let sum = e.b.build_float_add(a, xv, "xs").map_err(err)?;
            e.b.build_store(accs[0], sum).map_err(err)?;
        }
        Ok(())
    })?;
    sum_accumulators(e, &[LANES], &accs)
}

/// Accumulators of the given vector widths in entry-block allocas, zeroed where the builder is.
pub(super) fn zeroed_accumulators<'ctx>(
    e: &Emitter<'_, 'ctx>,
    f: FunctionValue<'ctx>,
    widths: &[u32],
) -> Result<Vec<PointerValue<'ctx>>> {
    widths
        .iter()
        .map(|&w| {
            let a = e.entry_alloca(f, e.f32v(w).into(), "acc")?;
            e.b.build_store(a, e.f32v(w).const_zero()).map_err(err)?;
            Ok(a)
        })
        .collect()
}

/// The blocks of one row: a loop over the full blocks, then the tail block, calling
/// `block(block pointer, index of its first weight, valid weights if a tail)` for each.
pub(super) fn block_loop<'ctx>(
    e: &Emitter<'_, 'ctx>,
    f: FunctionValue<'ctx>,
    shape: GemvShape,
    row: PointerValue<'ctx>,
    mut block: impl FnMut(PointerValue<'ctx>, IntValue<'ctx>, Option<usize>) -> Result<()>,
) -> Result<()> {
    let (ctx, b) = (e.ctx, &e.b);
    let i64t = ctx.i64_type();
    let full = (shape.cols / BLOCK) as u64;
    let bb = shape.format.block_bytes() as u64;
    if full > 0 {
        let blocks = (i64t.const_zero(), i64t.const_int(full, false));
        emit_loop(e, f, "block", blocks, 1, |blk| {
            let boff = b
                .build_int_mul(blk, i64t.const_int(bb, false), "boff")
                .map_err(err)?;
            let p =
                unsafe { b.build_in_bounds_gep(ctx.i8_type(), row, &[boff], "bp") }.map_err(err)?;
            let xbase = b
                .build_int_mul(blk, i64t.const_int(BLOCK as u64, false), "xbase")
                .map_err(err)?;
            block(p, xbase, None)
        })?;
    }
    let tail = shape.cols % BLOCK;
    if tail > 0 {
        let p = e.byte_ptr(row, full * bb)?;
        let xbase = i64t.const_int(full * BLOCK as u64, false);
        block(p, xbase, Some(tail))?;
    }
    Ok(())
}

/// The vector width of each segment position of a format's block.
pub(super) fn segment_widths(format: Format) -> Vec<u32> {
    match format {
        Format::Int4 => vec![32, 32],
        Format::Int2 | Format::Int3 | Format::Bin1 => vec![16; 4],
        Format::Ternary => vec![16; TRITS],
        Format::Int8 => vec![16; 4],
    }
}

/// Lanes of a segment that hold the block's weights: a ternary digit vector holds 13 (12 for
/// the last, whose 13th slot is past the block); every other format's segments are full.
fn segment_live(format: Format, offset: usize, lanes: usize) -> usize {
    match format {
        Format::Ternary => TERNARY_BYTES.min(BLOCK - offset),
        _ => lanes,
    }
}

/// For each token `(x, accs)`: accs[slots[i]] += segs[i].levels · x[xbase + offset_i ..]. In a
/// tail block (`valid` weights), x loads are masked to the row's end and segments past it are
/// skipped. Segments are the outer loop, so each decoded segment is used by every token in turn.
pub(super) fn accumulate_segments<'ctx>(
    e: &Emitter<'_, 'ctx>,
    format: Format,
    segs: &[Segment<'ctx>],
    slots: &[usize],
    tokens: &[(PointerValue<'ctx>, &Vec<PointerValue<'ctx>>)],
    xbase: IntValue<'ctx>,
    valid: Option<usize>,
) -> Result<()> {
    let (ctx, b) = (e.ctx, &e.b);
    let f32t = ctx.f32_type();
    for (seg, &slot) in segs.iter().zip(slots) {
        let n = seg.levels.get_type().get_size();
        let own = segment_live(format, seg.offset, n as usize);
        let live = valid.map_or(own, |v| v.saturating_sub(seg.offset).min(own));
        if live == 0 {
            continue;
        }
        for &(x, accs) in tokens {
            let acc = accs[slot];
            let xi = b
                .build_int_add(
                    xbase,
                    ctx.i64_type().const_int(seg.offset as u64, false),
                    "xi",
                )
                .map_err(err)?;
            let xp = unsafe { b.build_in_bounds_gep(f32t, x, &[xi], "xp") }.map_err(err)?;
            let xv = if live == n as usize {
                let v = b.build_load(e.f32v(n), xp, "xv").map_err(err)?;
                v.as_instruction_value()
                    .expect("load")
                    .set_alignment(4)
                    .map_err(err)?;
                v.into_vector_value()
            } else {
                masked_load(e, e.f32v(n), xp, live)?
            };
            let a = b
                .build_load(e.f32v(n), acc, "a")
                .map_err(err)?
                .into_vector_value();
            let fma = intrinsic(e.module, "llvm.fma", &[e.f32v(n).into()])?;
            let args: [BasicMetadataValueEnum; 3] = [seg.levels.into(), xv.into(), a.into()];
            let r = b
                .build_call(fma, &args, "fma")
                .map_err(err)?
                .try_as_basic_value()
                .basic()
                .expect("value");
            b.build_store(acc, r).map_err(err)?;
        }
    }
    Ok(())
}

/// Loads the first `live` lanes of a `ty` vector at `p`, zeros in the other lanes (nothing past
/// them is read).
pub(super) fn masked_load<'ctx>(
    e: &Emitter<'_, 'ctx>,
    ty: VectorType<'ctx>,
    p: PointerValue<'ctx>,
    live: usize,
) -> Result<VectorValue<'ctx>> {
    let ctx = e.ctx;
    let bits: Vec<_> = (0..ty.get_size() as usize)
        .map(|i| ctx.bool_type().const_int((i < live) as u64, false))
        .collect();
    masked_load_lanes(e, ty, p, VectorType::const_vector(&bits))
}

/// Loads the lanes of a `ty` vector at `p` that `mask` (`<n x i1>`) selects, zeros in the
/// others (nothing in them is read).
pub(super) fn masked_load_lanes<'ctx>(
    e: &Emitter<'_, 'ctx>,
    ty: VectorType<'ctx>,
    p: PointerValue<'ctx>,
    mask: VectorValue<'ctx>,
) -> Result<VectorValue<'ctx>> {
    let ptr = e.ctx.ptr_type(AddressSpace::default());
    let f = intrinsic(e.module, "llvm.masked.load", &[ty.into(), ptr.into()])?;
    // LLVM 22's masked load takes (ptr, mask, passthru); the alignment is the pointer's.
    let args: [BasicMetadataValueEnum; 3] = [p.into(), mask.into(), ty.const_zero().into()];
    let v =
        e.b.build_call(f, &args, "xm")
            .map_err(err)?
            .try_as_basic_value()
            .basic()
            .expect("value");
    Ok(v.into_vector_value())
}

/// Σ of every lane of every accumulator (same-width accumulators first added as vectors).
pub(super) fn sum_accumulators<'ctx>(
    e: &Emitter<'_, 'ctx>,
    widths: &[u32],
    accs: &[PointerValue<'ctx>],
) -> Result<inkwell::values::FloatValue<'ctx>> {
    let b = &e.b;
    let mut by_width: Vec<(u32, VectorValue<'ctx>)> = vec![];
    for (&w, &acc) in widths.iter().zip(accs) {
        let v = b
            .build_load(e.f32v(w), acc, "acc.v")
            .map_err(err)?
            .into_vector_value();
        match by_width.iter_mut().find(|(bw, _)| *bw == w) {
            Some((_, sum)) => *sum = b.build_float_add(*sum, v, "acc.sum").map_err(err)?,
            None => by_width.push((w, v)),
        }
    }
    let mut total = e.ctx.f32_type().const_zero();
    for (w, v) in by_width {
        let reduce = intrinsic(e.module, "llvm.vector.reduce.fadd", &[e.f32v(w).into()])?;
        let args: [BasicMetadataValueEnum; 2] =
            [e.ctx.f32_type().const_float(-0.0).into(), v.into()];
        let call = b.build_call(reduce, &args, "red").map_err(err)?;
        let s = call
            .try_as_basic_value()
            .basic()
            .expect("value")
            .into_float_value();
        // Reassociation lets LLVM sum the lanes as a tree instead of one after another.
        s.as_instruction_value()
            .expect("a call")
            .set_fast_math_flags(inkwell::values::FastMathFlags::AllowReassoc)
            .map_err(err)?;
        total = b.build_float_add(total, s, "total").map_err(err)?;
    }
    Ok(total)
}
