//! Percentiles over samples and medians with spread over runs.
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Nearest-rank percentile `p` (0-100) of `sorted` (ascending); 0 for no samples.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// Latency distribution in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Lat {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Lat {
    pub fn of_ms(mut ms: Vec<f64>) -> Lat {
        ms.sort_by(|a, b| a.total_cmp(b));
        Lat {
            n: ms.len(),
            min: ms.first().copied().unwrap_or(0.0),
            p50: pct(&ms, 50.0),
            p90: pct(&ms, 90.0),
            p99: pct(&ms, 99.0),
            max: ms.last().copied().unwrap_or(0.0),
        }
    }
    pub fn of(d: &[Duration]) -> Lat {
        Lat::of_ms(d.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }
}

/// A figure measured once per run: median, min and max over runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Spread {
    pub fn of(mut v: Vec<f64>) -> Spread {
        v.retain(|x| x.is_finite());
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return Spread::default();
        }
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
            runs: n,
        }
    }

    /// "12.3 (11.0–14.1)" with `prec` decimals; the range only with several runs.
    pub fn show(&self, prec: usize) -> String {
        if self.runs == 0 {
            return "n/a".into();
        }
        if self.runs == 1 {
            return format!("{:.*}", prec, self.median);
        }
        format!(
            "{:.*} ({:.*}–{:.*})",
            prec, self.median, prec, self.min, prec, self.max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_spread() {
        let l = Lat::of_ms((1..=100).map(|i| i as f64).collect());
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        let s = Spread::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(vec![1.0, 3.0]).median, 2.0);
        assert_eq!(Spread::of(vec![]).show(1), "n/a");
    }
}
