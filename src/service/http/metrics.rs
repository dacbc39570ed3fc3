//! Per-request counters of the HTTP service: requests by method class and status class,
//! and a latency histogram, as relaxed atomics read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::metrics::{Exposition, Histogram, Kind};

/// Method classes, by index.
const METHODS: [&str; 4] = ["GET", "HEAD", "other", "unparsed"];
/// Status classes, by index.
const STATUSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Requests answered and how long they took.
#[derive(Debug, Default)]
pub(super) struct HttpMetrics {
    requests: [[AtomicU64; STATUSES.len()]; METHODS.len()],
    latency: Histogram,
}

impl HttpMetrics {
    /// A request of method class `method` (an index into the classes: GET, HEAD, other, or
    /// a request whose head could not be read) was answered with `status`; its first byte
    /// arrived at `started`, and it was answered at `now`.
    pub(super) fn record(
        &self,
        method: usize,
        status: u16,
        started: Option<Instant>,
        now: Instant,
    ) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[method.min(METHODS.len() - 1)][class].fetch_add(1, Ordering::Relaxed);
        if let Some(t) = started {
            self.latency.observe(now.saturating_duration_since(t));
        }
    }

    pub(super) fn render(&self, out: &mut Exposition) {
        let name = "ringport_http_requests_total";
        out.family(
            name,
            Kind::Counter,
            "HTTP requests answered, by method (GET, HEAD, other, unparsed) and status class.",
        );
        for (m, row) in METHODS.iter().zip(&self.requests) {
            for (st, n) in STATUSES.iter().zip(row) {
                out.sample(
                    name,
                    &[("method", m), ("status", st)],
                    n.load(Ordering::Relaxed),
                );
            }
        }
        let name = "ringport_http_request_duration_seconds";
        out.family(
            name,
            Kind::Histogram,
            "Time from a request's first byte to its response being queued (clock read once per batch).",
        );
        self.latency.render(out, name, &[]);
    }
}
