//! The table layer of the lookup kernels (`gemv_tables.rs`): pure computations on the packed
//! formats, no IR. Which parts of a packed byte index a table (`Scheme`: nibbles, or two groups
//! of ternary digits), which bit or digit of which weight each part holds (read off the
//! runtime's own packer: `bit_owners`, `trit_owners`), what each entry adds (`TableTerm`), and
//! the order of the n x n dword transpose in rounds of two-register shuffles.

use super::emit::{Isa, Result};
use paretoqc_runtime::format::{ternary_digits, Format, BLOCK, TRITS};

/// Entries of a nibble's table: the values of a nibble.
pub(super) const ENTRIES: usize = 16;
/// Independent accumulator chains per tile (the adds' latency overlaps).
pub(super) const CHAINS: usize = 4;
/// The ternary digits (first, end) whose base-3 number indexes each of a byte's two tables.
pub(super) const TRIT_GROUPS: [(usize, usize); 2] = [(0, 3), (3, 5)];

/// Rows per tile: one per f32 lane, 16 with AVX-512 and 8 with AVX2. A tile loads and
/// transposes one dword per lane of each row at a time (a line: 64 or 32 code bytes).
pub(super) fn lanes_of(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
    }
}

/// How the bytes of a format's rows index its tables: each byte indexes two tables, stored one
/// after the other (the tables of a row are in the order of its bytes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Scheme {
    /// Nibble n of a byte indexes table n (16 entries): 1, 2 and 3 bits.
    Nibbles,
    /// Digits 0-2 of a ternary byte index table 0 (32 entries), digits 3-4 table 1 (16).
    Ternary,
}

impl Scheme {
    pub(super) fn of(format: Format) -> Scheme {
        match format {
            Format::Ternary => Scheme::Ternary,
            _ => Scheme::Nibbles,
        }
    }

    /// The entries of a byte's two tables.
    pub(super) fn entries(self) -> [usize; 2] {
        match self {
            Scheme::Nibbles => [ENTRIES, ENTRIES],
            Scheme::Ternary => [2 * ENTRIES, ENTRIES],
        }
    }

    /// Floats of tables per code byte.
    pub(super) fn floats_per_byte(self) -> usize {
        self.entries().iter().sum()
    }

    /// Where a byte's table `part` starts among the byte's floats.
    pub(super) fn table_offset(self, part: usize) -> usize {
        self.entries()[..part].iter().sum()
    }
}

/// Code bits per weight.
pub(super) fn code_bits(format: Format) -> u32 {
    match format {
        Format::Bin1 => 1,
        Format::Int2 => 2,
        Format::Int3 => 3,
        _ => unreachable!("no table kernel for {format}"),
    }
}

/// The kernel's level of unsigned code u (the code minus the smallest), `scale · u − offset`:
/// the row's factor times it is the weight, as in `gemv.rs` (1 bit: ±1; 2 bits: u − 1.5;
/// 3 bits: u − 4).
pub(super) fn affine_level(format: Format) -> (f64, f64) {
    match format {
        Format::Bin1 => (2.0, 1.0),
        Format::Int2 => (1.0, 1.5),
        Format::Int3 => (1.0, 4.0),
        _ => unreachable!("no table kernel for {format}"),
    }
}

/// For every bit of a packed block (byte · 8 + bit), the weight and the significance of the
/// code bit stored there; `None` for bits that hold no code bit. Found by packing, with the
/// runtime's packer, a block of smallest codes and blocks where one weight has one bit more.
pub(super) fn bit_owners(format: Format) -> Vec<Option<(usize, u32)>> {
    let (lo, hi) = format.code_range();
    let bits = code_bits(format);
    let step = (hi - lo) as i32 / ((1 << bits) - 1);
    let pack = |codes: &[i8]| {
        let mut out = vec![];
        format.pack_row(codes, &mut out);
        out
    };
    let base = pack(&[lo; BLOCK]);
    let mut owners = vec![None; base.len() * 8];
    for w in 0..BLOCK {
        for s in 0..bits {
            let mut codes = [lo; BLOCK];
            codes[w] = (lo as i32 + step * (1 << s)) as i8;
            let moved: Vec<usize> = pack(&codes)
                .iter()
                .zip(&base)
                .enumerate()
                .flat_map(|(i, (a, b))| {
                    (0..8)
                        .filter(move |k| (a ^ b) >> k & 1 == 1)
                        .map(move |k| 8 * i + k)
                })
                .collect();
            assert_eq!(
                moved.len(),
                1,
                "{format}: weight {w} bit {s} is not one packed bit"
            );
            owners[moved[0]] = Some((w, s));
        }
    }
    owners
}

/// One weight's part of a table: entry e gets `entry[e] · x[weight]`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct TableTerm {
    pub(super) weight: usize,
    pub(super) entry: Vec<f64>,
}

/// The terms of each table of a block, in storage order (byte by byte, two tables a byte).
pub(super) fn block_terms(format: Format) -> Vec<Vec<TableTerm>> {
    match Scheme::of(format) {
        Scheme::Nibbles => nibble_terms(format),
        Scheme::Ternary => ternary_terms(),
    }
}

/// The terms of each nibble of a block (nibble 2·byte + 0 is the byte's low nibble): a weight's
/// code bits in the nibble times `scale`, less `offset` in the nibble holding its lowest bit.
pub(super) fn nibble_terms(format: Format) -> Vec<Vec<TableTerm>> {
    let owners = bit_owners(format);
    let (scale, offset) = affine_level(format);
    owners
        .chunks(4)
        .map(|nibble| {
            let mut terms: Vec<TableTerm> = vec![];
            for (i, owner) in nibble.iter().enumerate() {
                let Some((w, s)) = *owner else { continue };
                let at = match terms.iter().position(|t| t.weight == w) {
                    Some(at) => at,
                    None => {
                        terms.push(TableTerm {
                            weight: w,
                            entry: vec![0.0; ENTRIES],
                        });
                        terms.len() - 1
                    }
                };
                for (e, v) in terms[at].entry.iter_mut().enumerate() {
                    *v += ((e >> i) & 1) as f64 * scale * (1u32 << s) as f64;
                    if s == 0 {
                        *v -= offset;
                    }
                }
            }
            terms
        })
        .collect()
}

/// For each byte of a ternary block, the weight of each base-3 digit (most significant first),
/// `None` for the padding slot. Found with the runtime's packer: from a block of zero codes
/// (every digit 1), raising one weight to +1 changes one byte, where that weight's digit reads 2
/// by the runtime's `ternary_digits`.
pub(super) fn trit_owners() -> Vec<[Option<usize>; TRITS]> {
    let pack = |codes: &[i8]| {
        let mut out = vec![];
        Format::Ternary.pack_row(codes, &mut out);
        out
    };
    let base = pack(&[0; BLOCK]);
    let mut owners = vec![[None; TRITS]; base.len()];
    for w in 0..BLOCK {
        let mut codes = [0i8; BLOCK];
        codes[w] = 1;
        let packed = pack(&codes);
        let changed: Vec<usize> = (0..base.len()).filter(|&j| packed[j] != base[j]).collect();
        assert_eq!(changed.len(), 1, "ternary weight {w} is not in one byte");
        let j = changed[0];
        let digits = ternary_digits(packed[j]);
        let raised: Vec<usize> = (0..TRITS).filter(|&k| digits[k] == 2).collect();
        assert_eq!(raised.len(), 1, "ternary weight {w} is not one digit");
        owners[j][raised[0]] = Some(w);
    }
    owners
}

/// The terms of a ternary block's tables: for table (first, end) of a byte, entry e is the base-3
/// number of digits first..end, and a weight's level is its digit less 1 (entries past 3^n are
/// never read and stay 0).
pub(super) fn ternary_terms() -> Vec<Vec<TableTerm>> {
    let entries = Scheme::Ternary.entries();
    trit_owners()
        .iter()
        .flat_map(|byte| {
            TRIT_GROUPS
                .iter()
                .zip(entries)
                .map(move |(&(first, end), n)| {
                    let used = 3usize.pow((end - first) as u32);
                    (first..end)
                        .filter_map(|k| {
                            let place = 3usize.pow((end - 1 - k) as u32);
                            let entry = (0..n)
                                .map(|e| match e < used {
                                    true => (e / place % 3) as f64 - 1.0,
                                    false => 0.0,
                                })
                                .collect();
                            Some(TableTerm {
                                weight: byte[k]?,
                                entry,
                            })
                        })
                        .collect()
                })
        })
        .collect()
}

/// The n x n dword transpose (n = 8 or 16 lanes) as rounds of two-register shuffles (each an
/// `unpck`/`shuf`/`perm2` instruction): `round[i] = (a, b, mask)` makes register i of the next
/// round; a mask index >= n picks from the second register. Two rounds transpose 4 x 4 blocks
/// inside each 128-bit chunk, then one round (8 lanes) or two (16) move whole chunks.
pub(super) type Round = Vec<(usize, usize, Vec<u32>)>;
pub(super) fn transpose_rounds(n: usize) -> Vec<Round> {
    let n32 = n as u32;
    // Lane l of 128-bit chunk c is 4c + l; `pick` names (register · 16 + lane in the chunk).
    let per_chunk = |pick: [u32; 4]| -> Vec<u32> {
        (0..n32)
            .map(|i| {
                let (c, p) = (i / 4, pick[i as usize % 4]);
                (p / 16) * n32 + 4 * c + p % 16
            })
            .collect()
    };
    let unpack = |hi: bool, wide: bool| -> Vec<u32> {
        match (wide, hi) {
            (false, false) => per_chunk([0, 16, 1, 17]),
            (false, true) => per_chunk([2, 18, 3, 19]),
            (true, false) => per_chunk([0, 1, 16, 17]),
            (true, true) => per_chunk([2, 3, 18, 19]),
        }
    };
    // Every other chunk of a from chunk `odd`, then the same of b: (a0, a2, b0, b2) at 16
    // lanes, (a0, b0) at 8.
    let chunks = |odd: bool| -> Vec<u32> {
        let (o, per_reg) = (odd as u32, n32 / 4);
        (0..n32)
            .map(|i| {
                let (c, l) = (i / 4, i % 4);
                let from = match c < per_reg / 2 {
                    true => o + 2 * c,
                    false => per_reg + o + 2 * (c - per_reg / 2),
                };
                4 * from + l
            })
            .collect()
    };
    let mut rounds: Vec<Round> = vec![];
    rounds.push(
        (0..n)
            .map(|i| (i & !1, i | 1, unpack(i % 2 == 1, false)))
            .collect(),
    );
    rounds.push(
        (0..n)
            .map(|i| {
                let base = i & !3;
                let (a, b) = (base + (i & 2) / 2, base + (i & 2) / 2 + 2);
                (a, b, unpack(i % 2 == 1, true))
            })
            .collect(),
    );
    for span in [4, 8].into_iter().filter(|&s| s < n) {
        rounds.push(
            (0..n)
                .map(|i| {
                    let base = i / (2 * span) * (2 * span);
                    let j = base + i % span;
                    (j, j + span, chunks(i % (2 * span) >= span))
                })
                .collect(),
        );
    }
    rounds
}

/// Applies the transpose rounds to n values with `shuffle(a, b, mask)`.
pub(super) fn apply_rounds<T: Clone>(
    regs: Vec<T>,
    mut shuffle: impl FnMut(&T, &T, &[u32]) -> Result<T>,
) -> Result<Vec<T>> {
    let mut regs = regs;
    for round in transpose_rounds(regs.len()) {
        regs = round
            .iter()
            .map(|(a, b, mask)| shuffle(&regs[*a], &regs[*b], mask))
            .collect::<Result<_>>()?;
    }
    Ok(regs)
}

/// For each dword k, the register that holds dword k of the n rows after the transpose
/// (lane i = row i), worked out by transposing labels.
pub(super) fn transposed_order(n: usize) -> Vec<usize> {
    let labels: Vec<Vec<(usize, usize)>> = (0..n)
        .map(|row| (0..n).map(|dword| (row, dword)).collect())
        .collect();
    let out = apply_rounds(labels, |a, b, mask| {
        Ok(mask
            .iter()
            .map(|&m| match (m as usize).checked_sub(n) {
                None => a[m as usize],
                Some(m) => b[m],
            })
            .collect())
    })
    .expect("label shuffles cannot fail");
    (0..n)
        .map(|dword| {
            let reg = out
                .iter()
                .position(|r| r[0].1 == dword)
                .expect("every dword lands in a register");
            let lanes_are_rows = out[reg]
                .iter()
                .enumerate()
                .all(|(i, &(row, d))| row == i && d == dword);
            assert!(
                lanes_are_rows,
                "the transpose leaves rows out of lane order"
            );
            reg
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transpose_puts_row_i_in_lane_i() {
        for lanes in [8, 16] {
            let order = transposed_order(lanes);
            let mut seen = order.clone();
            seen.sort();
            assert_eq!(seen, (0..lanes).collect::<Vec<_>>());
        }
    }

    /// The table indices of a ternary byte t, as the kernel computes them in 16-bit lanes:
    /// `27·t >> 8` is the base-3 number of digits 0-2, and with r = `27·t mod 256`, `9·r >> 8`
    /// that of digits 3-4 (multiplying the base-3 fraction by 3^n moves n digits above the
    /// binary point).
    fn ternary_indices(byte: u8) -> [usize; 2] {
        let t = 27 * byte as usize;
        [t >> 8, (9 * (t & 255)) >> 8]
    }

    /// The index the kernel looks up in table `part` of a code byte.
    fn table_index(format: Format, byte: u8, part: usize) -> usize {
        match Scheme::of(format) {
            Scheme::Nibbles => (byte >> (4 * part) & 15) as usize,
            Scheme::Ternary => ternary_indices(byte)[part],
        }
    }

    /// The codes of a format, and the kernel's level of each (the row's factor times it is the
    /// weight).
    fn codes_and_levels(format: Format) -> Vec<(i8, f64)> {
        let (lo, hi) = format.code_range();
        if format == Format::Ternary {
            return (lo..=hi).map(|c| (c, c as f64)).collect();
        }
        let (scale, offset) = affine_level(format);
        let step = (hi - lo) as usize / ((1 << code_bits(format)) - 1);
        (0..1 << code_bits(format))
            .map(|u| (lo + (u * step) as i8, scale * u as f64 - offset))
            .collect()
    }

    /// Every code bit (or digit) of every weight has one place, and the tables give back the
    /// weights' levels: the entries the packed bytes index, over all tables, sum to each
    /// weight's level when each term is weighed by its weight.
    #[test]
    fn tables_sum_to_the_levels_of_the_packed_codes() {
        for format in [Format::Bin1, Format::Ternary, Format::Int2, Format::Int3] {
            let placed = match Scheme::of(format) {
                Scheme::Nibbles => bit_owners(format).iter().flatten().count(),
                Scheme::Ternary => trit_owners().iter().flatten().flatten().count(),
            };
            let per_weight = match format {
                Format::Ternary => 1,
                _ => code_bits(format) as usize,
            };
            assert_eq!(placed, BLOCK * per_weight, "{format}");
            let valid = codes_and_levels(format);
            let picks: Vec<usize> = (0..BLOCK).map(|i| i * 7 % valid.len()).collect();
            let codes: Vec<i8> = picks.iter().map(|&p| valid[p].0).collect();
            let mut packed = vec![];
            format.pack_row(&codes, &mut packed);
            let mut levels = [0.0f64; BLOCK];
            for (n, terms) in block_terms(format).iter().enumerate() {
                let e = table_index(format, packed[n / 2], n % 2);
                for t in terms {
                    levels[t.weight] += t.entry[e];
                }
            }
            for (i, &p) in picks.iter().enumerate() {
                assert_eq!(levels[i], valid[p].1, "{format} weight {i}");
            }
        }
    }

    /// For every byte the ternary packer can write (base-3 fractions n/243), the kernel's two
    /// indices are n's top three digits and its last two, as the runtime's `ternary_digits`
    /// reads them.
    #[test]
    fn ternary_indices_are_the_runtime_digits() {
        for n in 0..243u32 {
            let byte = (256 * n).div_ceil(243) as u8;
            let d = ternary_digits(byte).map(|d| d as usize);
            let expected = [9 * d[0] + 3 * d[1] + d[2], 3 * d[3] + d[4]];
            assert_eq!(ternary_indices(byte), expected, "n = {n}");
            assert_eq!(expected, [n as usize / 9, n as usize % 9], "n = {n}");
        }
    }
}
