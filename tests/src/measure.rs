//! What the benchmarks read and print: a process's resident memory from /proc, percentiles of
//! samples, and their units.

use std::time::Duration;

/// Resident memory of a process, in KiB: now (VmRSS) and at its peak (VmHWM).
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// VmRSS and VmHWM of a process, from /proc (zero if unreadable).
pub fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

/// The `p`th percentile (nearest rank) of the samples; zero when there are none.
pub fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Milliseconds, as a number.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// KiB as MiB, for printing.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s: Vec<Duration> = (1..=10).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 50), Duration::from_millis(5));
        assert_eq!(percentile(&s, 90), Duration::from_millis(9));
        assert_eq!(percentile(&s, 99), Duration::from_millis(10));
        assert_eq!(percentile(&s, 0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
        assert!(memory(std::process::id()).rss_kib > 0);
    }
}
