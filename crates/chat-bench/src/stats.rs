//! Latency histograms and the figures the report prints from them.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latencies in microseconds, 1 µs to 60 s, three significant digits.
pub(crate) struct Latencies(Histogram<u64>);

impl Latencies {
    pub(crate) fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("constant bounds that hdrhistogram accepts"),
        )
    }

    pub(crate) fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.0.saturating_record(micros);
    }

    pub(crate) fn merge(&mut self, other: &Latencies) {
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    pub(crate) fn ms(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub(crate) fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }

    pub(crate) fn summary(&self) -> Value {
        json!({
            "count": self.count(),
            "p50_ms": round(self.ms(0.50)),
            "p99_ms": round(self.ms(0.99)),
            "max_ms": round(self.max_ms()),
        })
    }
}

/// Rounds to three decimals for the report.
pub(crate) fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
