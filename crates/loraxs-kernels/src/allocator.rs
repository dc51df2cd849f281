//! Keeping freed activation memory in the process.
//!
//! Every training step allocates its activations afresh (burn's tensors own
//! their buffers) and frees them when the step ends. glibc's `malloc` serves
//! blocks above its mmap threshold (128 KiB, raised on the fly up to 32 MiB)
//! with fresh `mmap`s and returns them on `free`, and it hands the top of
//! the heap back to the kernel once 128 KiB (or twice the raised threshold)
//! of it is free. Each step then page-faults every activation page back in
//! and the kernel zeroes it: a fifth of a MiniLM training step's time went
//! to `exc_page_fault` and `clear_page` (docs/performance.md §10).
//!
//! [`tune_allocator`] sets the mmap threshold to its maximum and turns heap
//! trimming off, so freed blocks are reused by the next step. The process
//! keeps its peak heap for its lifetime; the peak itself does not change.

/// The largest mmap threshold glibc accepts on 64-bit targets
/// (`DEFAULT_MMAP_THRESHOLD_MAX`, 4 MiB × `sizeof(long)`).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Makes `malloc` keep freed memory of up to [`MMAP_THRESHOLD`] per block
/// in the process instead of returning it to the kernel (see the module
/// documentation). Process-wide, so it is the program's decision: the
/// `loraxs-experiments` and benchmark binaries call it first thing; a
/// program of yours that trains or serves can do the same. Returns whether
/// the settings were applied: `false` on targets without glibc, where it
/// does nothing.
///
/// ```
/// // Once, at the start of `main`.
/// let applied = loraxs_kernels::tune_allocator();
/// assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes allocator parameters; it is safe
        // to call at any time, from any thread.
        unsafe {
            let threshold = libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
            let trim = libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            threshold == 1 && trim == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
