//! hax's own figures, read from its `GET /metrics` (the Prometheus text, parsed with
//! `prometheus-parse`): counters and gauges, and for histograms the mean and quantiles of what
//! was observed between two scrapes. The bench reads these instead of hax's log text.
use crate::http::Http;
use crate::stats::Lat;
use prometheus_parse::{Scrape, Value};
use std::time::Duration;

/// One scrape of hax's metrics.
pub struct HaxMetrics(Scrape);

impl HaxMetrics {
    /// Scrapes `url` (hax's HTTP base URL).
    pub fn read(url: &str) -> Result<HaxMetrics, String> {
        let mut h = Http::new(url, Duration::from_secs(10))?;
        let r = h.get("/metrics")?;
        if !r.ok() {
            return Err(format!("GET /metrics: HTTP {}", r.status));
        }
        HaxMetrics::parse(&r.text())
    }

    pub fn parse(text: &str) -> Result<HaxMetrics, String> {
        Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .map(HaxMetrics)
            .map_err(|e| format!("/metrics does not parse: {e}"))
    }

    /// The sum of the samples named `name` whose labels include `label` (all of them when
    /// None): counters, gauges and the `_sum`/`_count` of histograms. 0 when there is none.
    pub fn value(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                _ => 0.0,
            })
            .sum()
    }

    /// The samples named `name` summed by the value of their label `label` (counters, gauges).
    pub fn by_label(&self, name: &str, label: &str) -> std::collections::BTreeMap<String, f64> {
        let mut out = std::collections::BTreeMap::new();
        for s in self.0.samples.iter().filter(|s| s.metric == name) {
            let v = match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                _ => continue,
            };
            let key = s.labels.get(label).unwrap_or("").to_string();
            *out.entry(key).or_default() += v;
        }
        out
    }

    /// The cumulative buckets of histogram `name`: (upper bound, count), ascending.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = self
            .0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .flat_map(|s| match &s.value {
                Value::Histogram(h) => h.iter().map(|b| (b.less_than, b.count)).collect(),
                _ => Vec::new(),
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

/// The mean of what histogram `name` observed between scrapes `a` and `b`, and how many
/// observations (None: none).
pub fn mean_between(a: &HaxMetrics, b: &HaxMetrics, name: &str) -> Option<(f64, f64)> {
    let count = b.value(&format!("{name}_count"), None) - a.value(&format!("{name}_count"), None);
    let sum = b.value(&format!("{name}_sum"), None) - a.value(&format!("{name}_sum"), None);
    (count > 0.0).then(|| (sum / count, count))
}

/// The `q` quantile (0..1) of what histogram `name` observed between scrapes `a` and `b`,
/// interpolated linearly inside its bucket as Prometheus's `histogram_quantile` does (None: no
/// observation). The buckets bound its precision: hax's double at each step.
pub fn quantile_between(a: &HaxMetrics, b: &HaxMetrics, name: &str, q: f64) -> Option<f64> {
    let before = a.buckets(name);
    let after = b.buckets(name);
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, c)| {
            let was = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, c - was)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, c) in &delta {
        if c >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = c - lower.1;
            let frac = if in_bucket > 0.0 {
                (rank - lower.1) / in_bucket
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * frac);
        }
        lower = (le, c);
    }
    Some(lower.0)
}

/// What histogram `name` observed between scrapes `a` and `b`, as a [`Lat`] in milliseconds:
/// the count, and min/p50/p90/p99/max estimated from the buckets.
pub fn lat_between(a: &HaxMetrics, b: &HaxMetrics, name: &str) -> Lat {
    let n = mean_between(a, b, name).map_or(0.0, |(_, n)| n);
    let q = |p: f64| quantile_between(a, b, name, p).map_or(0.0, |s| s * 1e3);
    Lat {
        n: n as usize,
        min: q(0.0),
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        max: q(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(sum: f64, count: u64, buckets: &[(f64, u64)]) -> HaxMetrics {
        let mut t = String::from("# HELP hax_x_seconds x.\n# TYPE hax_x_seconds histogram\n");
        t += &format!("hax_x_seconds_sum {sum}\nhax_x_seconds_count {count}\n");
        for (le, c) in buckets {
            t += &format!("hax_x_seconds_bucket{{le=\"{le}\"}} {c}\n");
        }
        t += &format!("hax_x_seconds_bucket{{le=\"+Inf\"}} {count}\n");
        t += "# HELP hax_sends sends.\n# TYPE hax_sends counter\nhax_sends_total{outcome=\"delivered\"} 7\nhax_sends_total{outcome=\"timed_out\"} 2\n# EOF\n";
        HaxMetrics::parse(&t).unwrap()
    }

    #[test]
    fn the_figures_between_two_scrapes_are_the_differences() {
        let a = scrape(0.5, 10, &[(0.001, 5), (0.002, 10), (0.004, 10)]);
        let b = scrape(0.9, 20, &[(0.001, 5), (0.002, 10), (0.004, 20)]);
        let (mean, n) = mean_between(&a, &b, "hax_x_seconds").unwrap();
        assert!((mean - 0.04).abs() < 1e-12 && n == 10.0);
        // All ten new observations fell in (2 ms, 4 ms]: the median is that bucket's middle.
        let p50 = quantile_between(&a, &b, "hax_x_seconds", 0.5).unwrap();
        assert!((p50 - 0.003).abs() < 1e-12, "{p50}");
        assert!(quantile_between(&a, &a, "hax_x_seconds", 0.5).is_none());
        assert_eq!(
            b.value("hax_sends_total", Some(("outcome", "timed_out"))),
            2.0
        );
        assert_eq!(b.value("hax_sends_total", None), 9.0);
        let by = b.by_label("hax_sends_total", "outcome");
        assert_eq!((by["delivered"], by["timed_out"]), (7.0, 2.0));
    }
}
