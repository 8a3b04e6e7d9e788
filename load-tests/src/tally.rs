//! What one task counted, and the sum of them all.
//!
//! Every viewer and sender owns a [`Tally`] and returns it when it ends; the
//! scenario folds them into [`Totals`] once. So the hot path (a frame
//! arriving) touches only memory its own task owns: no lock, no shared
//! histogram. The cost is one histogram per connection, which is why it is
//! small: 2 significant digits (1 % resolution) and `u32` counts, ~10 KiB,
//! against the 100+ KiB a 3-digit `u64` histogram over the same range takes.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, from 1 µs to this (60 s).
pub const LATENCY_MAX_US: u64 = 60_000_000;

/// A per-task latency histogram (see the module docs for its size).
pub fn task_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("static histogram bounds are valid")
}

/// The merged histogram: the same buckets, with room for billions of counts.
pub fn total_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("static histogram bounds are valid")
}

/// One connection's counts.
#[derive(Debug)]
pub struct Tally {
    /// Viewers: send-to-receive latency of every bench item. Senders: latency
    /// from sending to seeing their own item come back (the ack).
    pub latency: Histogram<u32>,
    /// Viewers: bench items received, `count` included. Senders: 0.
    pub deliveries: u64,
    /// Items that were not sent by this run (other traffic in the room).
    pub foreign_items: u64,
    /// Text frames received.
    pub frames: u64,
    /// Frames that did not decode as server frames.
    pub undecodable: u64,
    /// `error` frames, by code.
    pub errors: BTreeMap<String, u64>,
    /// Senders only: danmaku sent, seen accepted (own item or `ack` back),
    /// and rejected (an `error` naming its `client_msg_id`).
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Set when the connection ended before the run told it to stop: the
    /// close code and reason, or the transport error.
    pub ended_early: Option<String>,
    /// Set when the connection never got its welcome: why.
    pub connect_failure: Option<String>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            latency: task_histogram(),
            deliveries: 0,
            foreign_items: 0,
            frames: 0,
            undecodable: 0,
            errors: BTreeMap::new(),
            sent: 0,
            accepted: 0,
            rejected: 0,
            ended_early: None,
            connect_failure: None,
        }
    }
}

impl Tally {
    pub fn failed(reason: String) -> Self {
        Self {
            connect_failure: Some(reason),
            ..Self::default()
        }
    }

    pub fn record_latency_us(&mut self, micros: u64, count: u32) {
        self.latency
            .saturating_record_n(micros.clamp(1, LATENCY_MAX_US), count);
    }

    pub fn count_error(&mut self, code: &str) {
        *self.errors.entry(code.to_owned()).or_default() += 1;
    }
}

/// The sum of many tallies of one kind (viewers, or senders).
#[derive(Debug)]
pub struct Totals {
    pub latency: Histogram<u64>,
    pub connected: u64,
    pub deliveries: u64,
    pub foreign_items: u64,
    pub frames: u64,
    pub undecodable: u64,
    pub errors: BTreeMap<String, u64>,
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub ended_early: BTreeMap<String, u64>,
    pub connect_failures: BTreeMap<String, u64>,
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            latency: total_histogram(),
            connected: 0,
            deliveries: 0,
            foreign_items: 0,
            frames: 0,
            undecodable: 0,
            errors: BTreeMap::new(),
            sent: 0,
            accepted: 0,
            rejected: 0,
            ended_early: BTreeMap::new(),
            connect_failures: BTreeMap::new(),
        }
    }
}

impl Totals {
    pub fn absorb(&mut self, tally: Tally) {
        if let Some(reason) = tally.connect_failure {
            *self.connect_failures.entry(reason).or_default() += 1;
            return;
        }
        self.connected += 1;
        for bucket in tally.latency.iter_recorded() {
            self.latency.saturating_record_n(
                bucket.value_iterated_to(),
                u64::from(bucket.count_at_value()),
            );
        }
        self.deliveries += tally.deliveries;
        self.foreign_items += tally.foreign_items;
        self.frames += tally.frames;
        self.undecodable += tally.undecodable;
        self.sent += tally.sent;
        self.accepted += tally.accepted;
        self.rejected += tally.rejected;
        for (code, n) in tally.errors {
            *self.errors.entry(code).or_default() += n;
        }
        if let Some(reason) = tally.ended_early {
            *self.ended_early.entry(reason).or_default() += 1;
        }
    }

    pub fn connect_failures(&self) -> u64 {
        self.connect_failures.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_histogram_stays_small() {
        // The per-connection budget the module docs promise.
        let h = task_histogram();
        assert!(
            h.distinct_values() * std::mem::size_of::<u32>() <= 12 * 1024,
            "{}",
            h.distinct_values()
        );
    }

    #[test]
    fn totals_merge_counts_latencies_and_failures() {
        let mut a = Tally {
            deliveries: 3,
            ..Tally::default()
        };
        a.record_latency_us(1_000, 2);
        a.record_latency_us(0, 1);
        a.count_error("rate_limited");
        let mut b = Tally {
            deliveries: 1,
            ..Tally::default()
        };
        b.record_latency_us(100_000_000, 1);
        b.count_error("rate_limited");
        b.ended_early = Some("close 1013".into());
        let mut totals = Totals::default();
        totals.absorb(a);
        totals.absorb(b);
        totals.absorb(Tally::failed("http 401".into()));
        assert_eq!(totals.connected, 2);
        assert_eq!(totals.deliveries, 4);
        assert_eq!(totals.latency.len(), 4);
        assert!(totals.latency.max() >= LATENCY_MAX_US * 99 / 100);
        assert_eq!(totals.errors["rate_limited"], 2);
        assert_eq!(totals.ended_early["close 1013"], 1);
        assert_eq!(totals.connect_failures(), 1);
    }
}
