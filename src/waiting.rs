//! What hax says while it waits for something (Consul, a leader, a registration): one warning
//! when the wait starts, then "still waiting for X (since T)" at a slowing pace (10 s, 30 s,
//! 1 min, 2 min, 5 min, then every 5 min), and one line when it is over. An operator looking at
//! the log ten minutes later still sees what hax waits for.
use std::time::{Duration, Instant};

/// When to say it again, after the wait started.
const PACE: [u64; 5] = [10, 30, 60, 120, 300];

#[derive(Debug, Default)]
pub struct Waiting {
    since: Option<Instant>,
    said: usize,
}

impl Waiting {
    /// Whether a wait is going on.
    pub fn is_waiting(&self) -> bool {
        self.since.is_some()
    }

    /// The thing waited for is still not there (`why`). Answers the line to log now, if any:
    /// (is it the first, the text).
    pub fn failed(
        &mut self,
        who: &str,
        what: &str,
        why: &dyn std::fmt::Display,
    ) -> Option<(bool, String)> {
        let Some(since) = self.since else {
            self.since = Some(Instant::now());
            self.said = 0;
            return Some((true, format!("{who}: waiting for {what}: {why}")));
        };
        let due = PACE
            .get(self.said)
            .copied()
            .unwrap_or_else(|| PACE[PACE.len() - 1] * (self.said + 2 - PACE.len()) as u64);
        let waited = since.elapsed();
        if waited < Duration::from_secs(due) {
            return None;
        }
        self.said += 1;
        Some((
            false,
            format!(
                "{who}: still waiting for {what} (since {:.0} s ago): {why}",
                waited.as_secs_f64()
            ),
        ))
    }

    /// The wait is over: how long it lasted (None: there was none).
    pub fn over(&mut self) -> Option<Duration> {
        self.since.take().map(|s| s.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_said_then_the_repeats_wait_their_turn() {
        let mut w = Waiting::default();
        let first = w.failed("X", "Consul", &"refused").unwrap();
        assert!(first.0 && first.1.contains("waiting for Consul"));
        assert!(
            w.failed("X", "Consul", &"refused").is_none(),
            "not again at once"
        );
        // As if 11 s had passed.
        w.since = Some(Instant::now() - Duration::from_secs(11));
        let again = w.failed("X", "Consul", &"refused").unwrap();
        assert!(
            !again.0
                && again
                    .1
                    .contains("still waiting for Consul (since 11 s ago)")
        );
        assert!(
            w.failed("X", "Consul", &"refused").is_none(),
            "next at 30 s"
        );
        assert!(w.over().is_some());
        assert!(!w.is_waiting());
    }
}
