//! Latency aggregates kept per load thread and merged at the end, so memory stays bounded at
//! 100K watchers × ~60 events: one histogram of every publish → watcher latency, and per
//! event the number of deliveries and the latest one.

use hdrhistogram::Histogram;

/// Highest latency the histograms track (longer ones are clamped), ns.
pub const MAX_TRACKED_NS: u64 = 600_000_000_000;

/// A fresh latency histogram (ns, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3).expect("valid histogram bounds")
}

/// Per-event aggregate: deliveries and the latest one's latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventAgg {
    /// Watchers that got it.
    pub deliveries: u64,
    /// Latency of the last watcher to get it, ns.
    pub last_ns: u64,
}

/// One thread's latency aggregates.
#[derive(Debug, Clone)]
pub struct LatencyStats {
    /// Every delivery's publish → receive latency, ns.
    pub hist: Histogram<u64>,
    /// Per feed, per event index (`seq - base - 1`).
    pub per_event: Vec<Vec<EventAgg>>,
}

impl LatencyStats {
    /// Empty aggregates for feeds of these lengths.
    pub fn new(events_per_feed: &[usize]) -> LatencyStats {
        LatencyStats {
            hist: histogram(),
            per_event: events_per_feed
                .iter()
                .map(|&n| vec![EventAgg::default(); n])
                .collect(),
        }
    }

    /// Records that a watcher of `feed` got event `index` `latency_ns` after it was sent.
    pub fn record(&mut self, feed: usize, index: usize, latency_ns: u64) {
        self.hist
            .saturating_record(latency_ns.clamp(1, MAX_TRACKED_NS));
        if let Some(agg) = self.per_event.get_mut(feed).and_then(|f| f.get_mut(index)) {
            agg.deliveries += 1;
            agg.last_ns = agg.last_ns.max(latency_ns);
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &LatencyStats) {
        let _ = self.hist.add(&other.hist);
        for (mine, theirs) in self.per_event.iter_mut().zip(&other.per_event) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                a.deliveries += b.deliveries;
                a.last_ns = a.last_ns.max(b.last_ns);
            }
        }
    }
}

/// p50 / p99 / p999 / max of a histogram in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Median, µs.
    pub p50: f64,
    /// 99th percentile, µs.
    pub p99: f64,
    /// 99.9th percentile, µs.
    pub p999: f64,
    /// Largest, µs.
    pub max: f64,
    /// Samples.
    pub count: u64,
}

impl Percentiles {
    /// Reads the percentiles of a histogram in ns, as µs.
    pub fn of(hist: &Histogram<u64>) -> Percentiles {
        if hist.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            p50: us(hist.value_at_quantile(0.50)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
            count: hist.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_keeps_the_latest() {
        let mut a = LatencyStats::new(&[2]);
        let mut b = LatencyStats::new(&[2]);
        a.record(0, 0, 1_000);
        b.record(0, 0, 5_000);
        b.record(0, 1, 2_000);
        b.record(3, 9, 7); // unknown feed: histogram only
        a.merge(&b);
        assert_eq!(
            a.per_event[0][0],
            EventAgg {
                deliveries: 2,
                last_ns: 5_000
            }
        );
        assert_eq!(a.per_event[0][1].deliveries, 1);
        let p = Percentiles::of(&a.hist);
        assert_eq!(p.count, 4);
        assert!((p.max - 5.0).abs() < 0.01, "{p:?}");
    }
}
