//! Read bandwidth floors: the bytes a kernel must read, against what this machine reads.

use super::*;

/// Sums a buffer as u64 words with eight independent lanes (vectorised; reads every byte).
fn read_all(buf: &[u8]) -> u64 {
    let mut acc = [0u64; 8];
    for chunk in buf.chunks_exact(64) {
        for (i, w) in chunk.chunks_exact(8).enumerate() {
            acc[i] = acc[i].wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
        }
    }
    acc.iter().fold(0, |a, b| a ^ b)
}

/// Read bandwidth in bytes/s: (cache 1 thread, cache 2 threads, memory 1 thread, memory 2 threads).
pub(super) struct Floors {
    pub(super) cache: [f64; 2],
    pub(super) memory: [f64; 2],
}

impl Floors {
    pub(super) fn measure() -> Floors {
        let bufs: Vec<Vec<u8>> = (0..COLD_BYTES / HOT_BYTES)
            .map(|i| vec![i as u8; HOT_BYTES])
            .collect();
        let mut cache = [0.0; 2];
        let mut memory = [0.0; 2];
        for (slot, threads) in [1usize, 2].into_iter().enumerate() {
            let p = pool(threads).expect("thread pool");
            let read = |b: &[u8]| {
                p.install(|| {
                    use rayon::prelude::*;
                    b.par_chunks(b.len() / threads)
                        .map(read_all)
                        .reduce(|| 0, |a, b| a ^ b)
                })
            };
            cache[slot] = HOT_BYTES as f64
                / time_per_call(|_| {
                    black_box(read(&bufs[0]));
                });
            memory[slot] = HOT_BYTES as f64
                / time_per_call(|i| {
                    black_box(read(&bufs[i % bufs.len()]));
                });
        }
        Floors { cache, memory }
    }

    pub(super) fn print(&self) {
        println!("## Read bandwidth (this machine, this run)\n");
        println!("| source | 1 thread GB/s | 2 threads GB/s |");
        println!("| --- | ---: | ---: |");
        println!(
            "| 4 MiB buffer (cache) | {:.1} | {:.1} |",
            self.cache[0] / 1e9,
            self.cache[1] / 1e9
        );
        println!(
            "| 1 GiB rotation (memory) | {:.1} | {:.1} |\n",
            self.memory[0] / 1e9,
            self.memory[1] / 1e9
        );
    }
}
