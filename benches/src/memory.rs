//! Peak resident memory of this process, from Linux's `/proc/self/status`.
//!
//! `VmHWM` is the high-water mark of resident memory; writing `5` to
//! `/proc/self/clear_refs` resets it to the current resident size, so a
//! workload's peak can be taken after the model is loaded. On systems
//! without `/proc` both functions return 0.

/// Resets the peak to the current resident size and returns that size in
/// bytes.
pub fn reset_peak() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:") * 1024
}

/// Peak resident memory since the last [`reset_peak`] (or process start),
/// in bytes.
pub fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l[key.len()..].trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_is_at_least_the_current_size() {
        let now = super::reset_peak();
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        if now > 0 {
            assert!(
                super::peak_rss() >= now + (60 << 20),
                "a 64 MiB allocation shows in the peak"
            );
        }
    }
}
