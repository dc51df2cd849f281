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
    status_kib("VmRSS:").unwrap_or(0) * 1024
}

/// Peak resident memory since the last [`reset_peak`] (or process start),
/// in bytes.
pub fn peak_rss() -> u64 {
    status_kib("VmHWM:").unwrap_or(0) * 1024
}

/// The value of `key` (e.g. `VmHWM:`) in `/proc/self/status`, in KiB; `None`
/// when the file or the line is absent or does not parse.
fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib(&status, key)
}

fn parse_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().strip_suffix("kB")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        let status = "Name:\tx\nVmHWM:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(parse_kib(status, "VmHWM:"), Some(123_456));
        assert_eq!(parse_kib(status, "VmRSS:"), Some(2048));
        assert_eq!(parse_kib(status, "VmSwap:"), None);
        assert_eq!(parse_kib("VmHWM:\tlots kB\n", "VmHWM:"), None);
    }

    /// On Linux the parse must succeed (a failure would report every
    /// benchmark's memory as 0), a large allocation must raise the peak, and
    /// the reset must lower it again once that allocation is freed (else
    /// every workload's peak would include what ran before it).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_peak_follows_a_large_allocation_and_the_reset_clears_it() {
        const MIB: u64 = 1 << 20;
        assert!(status_kib("VmRSS:").is_some(), "VmRSS must parse on Linux");
        assert!(status_kib("VmHWM:").is_some(), "VmHWM must parse on Linux");
        let before = reset_peak();
        assert!(before > 0);
        let big = vec![1u8; 256 << 20];
        std::hint::black_box(&big);
        let with_big = peak_rss();
        assert!(
            with_big >= before + 250 * MIB,
            "a 256 MiB allocation shows in the peak: {before} → {with_big}"
        );
        drop(big);
        let after_free = reset_peak();
        let reset = peak_rss();
        assert!(
            reset + 200 * MIB <= with_big,
            "the reset lowers the peak once the allocation is freed: {with_big} → {reset} (current {after_free})"
        );
    }
}
