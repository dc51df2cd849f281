//! Process-wide allocator tuning for training and evaluation binaries.

/// Asks glibc's `malloc` to keep freed blocks of up to 32 MiB for reuse
/// instead of handing each one back to the kernel.
///
/// A training step allocates and frees activations of a few MiB each,
/// hundreds of times. By default glibc serves blocks over 128 KiB–32 MiB
/// (adaptive) with `mmap` and returns them with `munmap`, so every step
/// pays page faults and kernel page zeroing again: measured on a MiniLM
/// LoRA-XS step (batch 32 × 128, flex backend, 2 threads) this was ~12% of
/// the step (`cargo xtask bench`, issue #5). Binaries call this once at
/// start (libraries never change process-wide settings). Returns whether
/// the settings took; a no-op returning `false` off glibc.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to
        // call at any time, before or after allocations.
        unsafe {
            let mmap = libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1;
            let trim = libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20) == 1;
            let pad = libc::mallopt(libc::M_TOP_PAD, 64 << 20) == 1;
            mmap && trim && pad
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_settings() {
        assert!(super::retain_freed_memory());
    }
}
