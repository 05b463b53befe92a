//! Metrics of what the daemon decided and what it costs, for Prometheus and
//! node_exporter: a [`snapshot::Snapshot`] taken on the main thread from the
//! tuner registry, the loop's counters and `/proc/self`, rendered by
//! [`render`] as OpenMetrics (`-q metrics`, `GET /metrics`) or Prometheus
//! text 0.0.4 (`--metrics-textfile`, scrapers that ask for it), served by
//! [`http::MetricsServer`] from the daemon's one mio loop and written by
//! [`textfile::Textfile`] on the tick grid.

pub mod http;
pub mod proc;
mod render;
pub mod snapshot;
pub mod textfile;

use std::cell::Cell;

pub use render::{Format, render};

/// Counters the event loop keeps (it owns the ring buffer); read at scrape
/// time through the reply context.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// Events read from the ring buffer and handed to dispatch.
    pub events_received: Cell<u64>,
    /// Events of the wrong size or layout, discarded.
    pub events_malformed: Cell<u64>,
    /// Events discarded because the daemon's queue was full.
    pub events_overflowed: Cell<u64>,
    /// Events BPF programs could not post (ring buffer full), as last read
    /// from the shared counters map.
    pub ringbuf_drops: Cell<u64>,
}

impl LoopStats {
    /// Count one drain of the ring buffer.
    pub fn drained(&self, received: usize, malformed: u64, overflowed: u64) {
        let add = |c: &Cell<u64>, n: u64| c.set(c.get().saturating_add(n));
        add(&self.events_received, received as u64);
        add(&self.events_malformed, malformed);
        add(&self.events_overflowed, overflowed);
    }
}

/// The OpenMetrics text of the running daemon (`-q metrics`).
pub fn openmetrics(ctx: &crate::replies::ReplyCtx<'_>) -> String {
    render(&snapshot::gather(ctx), Format::OpenMetrics)
}
