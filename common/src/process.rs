//! What this process has used of the machine, for reports that need more precision than the
//! Prometheus process collector's whole seconds.

/// User plus system CPU seconds of this process (every thread), to the microsecond; 0 when the
/// kernel does not answer.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we own; RUSAGE_SELF needs nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_seconds_grow_with_work() {
        let before = super::cpu_seconds();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = super::cpu_seconds() - before;
        assert!(used > 0.01, "50 ms of spinning counted as {used} s");
    }
}
