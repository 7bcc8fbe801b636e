//! Seeded test data, one generator for the tests and benchmarks of every crate (a seed gives the
//! same numbers in all of them): Knuth's MMIX linear congruential generator, its high bits.

use crate::format::Format;
use crate::model::PackedMatrix;
use crate::Artifact;

/// A seeded stream of numbers (not for anything but test data).
pub struct Lcg(pub u64);

impl Lcg {
    /// The next 31 random bits.
    pub fn draw(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// A value in [-1, 1] on a grid of 1e-6.
    pub fn f32(&mut self) -> f32 {
        (self.draw() % 2_000_001) as f32 / 1_000_000.0 - 1.0
    }

    /// A value in [-1, 1) with 31 random bits.
    pub fn f64(&mut self) -> f64 {
        self.draw() as f64 / (1u64 << 30) as f64 - 1.0
    }

    /// `n` values in [-scale, scale].
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }

    /// `n` codes of `format`, each equally likely (at 1 bit, where code 0 does not exist, 0
    /// becomes +1).
    pub fn code_row(&mut self, format: Format, n: usize) -> Vec<i8> {
        let (lo, hi) = format.code_range();
        let span = (hi as i32 - lo as i32 + 1) as u64;
        (0..n)
            .map(|_| {
                let v = (lo as i32 + (self.draw() % span) as i32) as i8;
                if format == Format::Bin1 && v == 0 {
                    1
                } else {
                    v
                }
            })
            .collect()
    }

    /// Packed random codes of a [rows, cols] matrix in `format` (`code_row` per row).
    pub fn codes(&mut self, format: Format, rows: usize, cols: usize) -> Vec<u8> {
        let mut codes = Vec::with_capacity(format.matrix_bytes(rows, cols));
        for _ in 0..rows {
            let row = self.code_row(format, cols);
            format.pack_row(&row, &mut codes);
        }
        codes
    }

    /// A packed matrix of random codes, with the per-row factors `factor` draws.
    pub fn packed(
        &mut self,
        format: Format,
        rows: usize,
        cols: usize,
        mut factor: impl FnMut(&mut Lcg) -> f32,
    ) -> PackedMatrix {
        let codes = self.codes(format, rows, cols);
        let factor = (0..rows).map(|_| factor(self)).collect();
        PackedMatrix {
            format,
            rows,
            cols,
            codes,
            factor,
        }
    }
}

/// The logits of a 3-token prompt and then of 5 tokens one at a time (the decode path) on a
/// pool of `threads` threads: what the thread-count tests compare bit for bit.
pub fn decode_logits(art: &Artifact, threads: usize) -> Vec<Vec<f32>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool");
    pool.install(|| {
        let mut s = crate::decoder::Session::new(&art.model, art.kernels.as_ref(), 16);
        let mut all = vec![s.forward(&[1, 5, 9], false).expect("the prompt runs")];
        for id in [7u32, 300, 42, 11, 200] {
            all.push(s.forward(&[id], false).expect("a decode step runs"));
        }
        all
    })
}

/// The index of the first step whose logits differ in any bit, if one does.
pub fn first_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| {
        x.len() != y.len() || x.iter().zip(y).any(|(p, q)| p.to_bits() != q.to_bits())
    })
}
