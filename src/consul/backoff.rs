//! Retrying against Consul: [`Backoff`] between failed attempts and the [`jitter`] that spreads
//! the retries of many hax instances.
use std::time::Duration;

/// Backoff between failed attempts: 250 ms doubling to 10 s, with jitter.
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(250),
        }
    }
}

impl Backoff {
    pub fn reset(&mut self) {
        self.next = Duration::from_millis(250);
    }
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(10));
        d + d.mul_f64(jitter() * 0.3)
    }
}

/// A number in [0, 1) from the clock: enough to spread retries of many hax instances.
pub fn jitter() -> f64 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    (n.wrapping_mul(2654435761) % 1000) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_ceiling() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        for _ in 0..20 {
            b.next_delay();
        }
        let late = b.next_delay();
        assert!(first < Duration::from_millis(400));
        assert!(late >= Duration::from_secs(10) && late <= Duration::from_secs(13));
    }
}
