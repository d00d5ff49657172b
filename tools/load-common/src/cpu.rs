//! The CPU time of the whole process, for the client CPU per command in
//! the report.

use std::time::Duration;

/// User and system CPU time used so far by every thread of this process
/// (`getrusage(RUSAGE_SELF)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTime {
    /// Time spent running the process's own code.
    pub user: Duration,
    /// Time the kernel spent on its behalf (system calls, page faults).
    pub system: Duration,
}

impl CpuTime {
    /// The process's CPU time so far.
    pub fn now() -> CpuTime {
        // SAFETY: an all-zero `rusage` is a valid value of the plain C
        // struct; getrusage only writes into it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_SELF with a pointer to a live, writable rusage.
        let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        // getrusage fails only on a bad `who` or pointer, neither possible here.
        assert_eq!(r, 0, "getrusage: {}", std::io::Error::last_os_error());
        CpuTime {
            user: timeval(usage.ru_utime),
            system: timeval(usage.ru_stime),
        }
    }

    /// User plus system time.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The CPU time used between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_shows_as_cpu_time() {
        let before = CpuTime::now();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut x = 1u64;
        let used = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            let used = CpuTime::now().since(&before);
            if used.total() >= Duration::from_millis(20) || std::time::Instant::now() > deadline {
                break used;
            }
        };
        assert!(used.total() >= Duration::from_millis(20), "{used:?}");
        assert!(used.user > Duration::ZERO, "{used:?}");
    }
}
