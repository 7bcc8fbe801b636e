//! A team of threads that runs one decode step together: every thread walks the same layer
//! loop, takes its share of each product's rows (and of attention's heads), and a spinning
//! barrier orders the steps. A token then costs a handful of barriers per layer (about a
//! hundred nanoseconds each while the threads are awake) instead of a fork-join per product,
//! whose wake-ups kept a second thread from helping decode.

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A reusable barrier for `n` threads that spins instead of sleeping. If a thread of the team
/// panics, the others panic at their next wait instead of spinning forever.
pub struct SpinBarrier {
    n: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
}

impl SpinBarrier {
    pub fn new(n: usize) -> SpinBarrier {
        SpinBarrier {
            n,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Returns once all `n` threads have called it (for this round).
    pub fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if self.poisoned.load(Ordering::Relaxed) {
                panic!("another thread of the decode team panicked");
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1 << 14) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// A guard that poisons the barrier if its thread unwinds.
    pub fn member(&self) -> Member<'_> {
        Member(self)
    }
}

pub struct Member<'a>(&'a SpinBarrier);

impl Drop for Member<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Relaxed);
        }
    }
}

/// An f32 buffer the team writes in disjoint parts between barriers and reads whole after them.
pub struct Shared<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: access goes through the unsafe `part`/`all`, whose callers keep writes disjoint and
// separated from reads by a barrier (which orders memory: Release/Acquire on its counters).
unsafe impl Send for Shared<'_> {}
unsafe impl Sync for Shared<'_> {}

impl<'a> Shared<'a> {
    pub fn new(buffer: &'a mut [f32]) -> Shared<'a> {
        Shared {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: PhantomData,
        }
    }

    /// The elements `r`, to write.
    ///
    /// # Safety
    /// No other thread reads or writes them until the next barrier.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part(&self, r: Range<usize>) -> &mut [f32] {
        assert!(r.start <= r.end && r.end <= self.len);
        // SAFETY: in bounds (checked); exclusive for the caller by the contract above.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.len()) }
    }

    /// All elements, to read.
    ///
    /// # Safety
    /// No thread writes any of them until the next barrier.
    pub unsafe fn all(&self) -> &[f32] {
        // SAFETY: the whole allocation; no writer by the contract above.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Thread `i` of `n`'s share of `units` units, as a range of units: contiguous, in order, sizes
/// differing by at most one.
pub fn share(units: usize, i: usize, n: usize) -> Range<usize> {
    units * i / n..units * (i + 1) / n
}

/// Thread `i` of `n`'s rows of a `rows`-row product, in whole groups of `group` rows (the
/// kernels' row blocks); the last thread takes the remainder.
pub fn row_share(rows: usize, group: usize, i: usize, n: usize) -> Range<usize> {
    let groups = share(rows.div_ceil(group), i, n);
    (groups.start * group).min(rows)..(groups.end * group).min(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_row_once_in_whole_groups() {
        for rows in [0, 1, 15, 16, 17, 192, 576, 1536, 49152, 49153] {
            for n in 1..=5 {
                let parts: Vec<Range<usize>> = (0..n).map(|i| row_share(rows, 16, i, n)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[n - 1].end, rows);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert!(w[0].end % 16 == 0 || w[0].end == rows);
                }
            }
        }
    }

    #[test]
    fn the_barrier_orders_rounds_of_writes() {
        let n = 2;
        let barrier = SpinBarrier::new(n);
        let mut data = vec![0f32; n];
        let shared = Shared::new(&mut data);
        let rounds = 500;
        std::thread::scope(|s| {
            for i in 0..n {
                let (barrier, shared) = (&barrier, &shared);
                s.spawn(move || {
                    let _member = barrier.member();
                    for round in 0..rounds {
                        // SAFETY: thread i writes element i only, between barriers.
                        unsafe { shared.part(i..i + 1)[0] = (round * n + i) as f32 };
                        barrier.wait();
                        // SAFETY: nobody writes until the next barrier.
                        let all = unsafe { shared.all() };
                        for (j, &v) in all.iter().enumerate() {
                            assert_eq!(v, (round * n + j) as f32);
                        }
                        barrier.wait();
                    }
                });
            }
        });
    }

    #[test]
    fn a_panicking_member_releases_the_others() {
        let barrier = SpinBarrier::new(2);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::thread::scope(|s| {
                s.spawn(|| {
                    let _member = barrier.member();
                    panic!("boom");
                });
                s.spawn(|| {
                    let _member = barrier.member();
                    barrier.wait();
                });
            })
        }));
        assert!(result.is_err());
    }
}
