//! One libFuzzer binary for every target; `PQC_FUZZ_TARGET` names the one to run
//! (`scripts/fuzz` sets it).

#![no_main]

use pqc_fuzz::Target;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::OnceLock;

/// The largest single allocation a target may make; more aborts the run (a crash for libFuzzer,
/// whose own `-malloc_limit_mb` needs a sanitizer's allocator hooks, which this build lacks).
const MAX_ALLOCATION: usize = 2 << 30;

struct Limited;

// SAFETY: forwards to the system allocator unchanged, refusing only oversized requests.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as alloc.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as alloc.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: as alloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn check(size: usize) {
    if size > MAX_ALLOCATION {
        // No allocation here: print with what needs none, then abort.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"pqc-fuzz: an allocation over 2 GB\n",
        );
        std::process::abort();
    }
}

#[global_allocator]
static ALLOCATOR: Limited = Limited;

fn target() -> Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let name = std::env::var("PQC_FUZZ_TARGET").unwrap_or_default();
        Target::parse(&name).unwrap_or_else(|| {
            let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
            eprintln!("PQC_FUZZ_TARGET={name:?}: set it to one of {}", names.join(", "));
            std::process::exit(2)
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = target().run(data);
});
