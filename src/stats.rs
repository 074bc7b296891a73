//! Counters shared between stages for `ctl status`, `ctl stats` and `/metrics`. Each
//! counter has exactly one writer (the stage that owns the thing counted); readers only
//! load. Nothing here does I/O.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Per-jail counters.
#[derive(Default, Debug)]
pub struct JailCounters {
    /// Written by the jail task.
    pub currently_failed: AtomicU64,
    pub total_failed: AtomicU64,
    /// Written by the ban manager.
    pub currently_banned: AtomicU64,
    pub total_banned: AtomicU64,
    /// Bans that ended: expired or lifted by `ctl unban` (written by the ban manager).
    pub total_unbanned: AtomicU64,
}

/// Daemon-wide counters, totals since start.
#[derive(Default, Debug)]
pub struct Stats {
    /// Written by the sources (the sum of every source's own counter).
    pub lines_read: AtomicU64,
    /// Lines longer than `max_line_length`, never matched (written by the sources).
    pub lines_cut: AtomicU64,
    /// Sessions forgotten before they ended, at a filter's `max_sessions` (written by
    /// the sources' examiners).
    pub sessions_evicted: AtomicU64,
    /// Lines a look-around regex gave up on at its backtracking limit, skipped
    /// (written by the sources' examiners).
    pub lines_over_limit: AtomicU64,
    /// Written by the jail task.
    pub failures: AtomicU64,
    pub evicted: AtomicU64,
    /// Written by the ban manager.
    pub bans: AtomicU64,
    /// Kernel repairs made by the reconciler (written by the ban manager).
    pub repairs: AtomicU64,
    /// Firewall transactions and their latency (written by the ban manager).
    pub transactions: Transactions,
    /// Metrics connections closed early, to make room at the connection cap (written by
    /// the metrics server's accept loop) and past the deadline for a request head or an
    /// answer (by its connections).
    pub metrics_dropped_cap: AtomicU64,
    pub metrics_dropped_deadline: AtomicU64,
    /// Ban sharing (all zero without `[fleet]`).
    pub fleet: FleetCounters,
    pub notify: NotifyCounters,
    /// Per jail; a reload adds and removes jails.
    jails: RwLock<BTreeMap<String, Arc<JailCounters>>>,
    /// Lines read per source, each counter written only by the reader that registered it.
    sources: Mutex<Vec<(String, Arc<AtomicU64>)>>,
}

/// Why a message from the fleet was not applied (the labels of
/// `gaoler_fleet_rejected_total`), in the order of [`FleetCounters::rejected`].
pub const FLEET_REJECTIONS: [&str; 7] = [
    "malformed",
    "untrusted",
    "replayed",
    "expired",
    "ignored",
    "too_broad",
    "rate_limited",
];

/// The notifiers' counters (`[[notify]]`), over all notifiers; written by their runs
/// and their queues.
#[derive(Debug, Default)]
pub struct NotifyCounters {
    /// Events a notifier handled: the program exited 0, the webhook answered 2xx.
    pub sent: AtomicU64,
    /// Events a notifier failed on: a non-zero exit, an error answer or no answer
    /// after the retries.
    pub failed: AtomicU64,
    /// Runs killed (a program) or abandoned (a webhook attempt) at their timeout.
    pub timed_out: AtomicU64,
    /// Events dropped because a notifier's queue was full (the oldest go first).
    pub dropped: AtomicU64,
}

/// The fleet's counters; each has one writer, named on it.
#[derive(Debug, Default)]
pub struct FleetCounters {
    /// Connected to a NATS server (the publisher).
    pub connected: std::sync::atomic::AtomicBool,
    /// The server connected to, or the last error (the publisher).
    pub server: Mutex<String>,
    /// Decisions published and acknowledged by JetStream (the publisher).
    pub published: AtomicU64,
    /// Decisions waiting in the outbox (the publisher, after each round).
    pub outbox: AtomicU64,
    /// Messages taken from the stream, other hosts' and this host's own (the consumer).
    pub received: AtomicU64,
    /// Messages refused by the checks, by reason (the consumer; see
    /// [`FLEET_REJECTIONS`]).
    pub rejected: [AtomicU64; FLEET_REJECTIONS.len()],
    /// Messages the stream holds that the consumer has not taken yet (the consumer).
    pub lag: AtomicU64,
    /// Fleet bans now in force here (the ban manager).
    pub applied: AtomicU64,
    /// Fleet bans this host's own rules refused: a jail it lacks, a protected
    /// address (the ban manager).
    pub refused_here: AtomicU64,
}

impl FleetCounters {
    /// Counts a rejection under `label` (one of [`FLEET_REJECTIONS`]).
    pub fn reject(&self, label: &str) {
        if let Some(i) = FLEET_REJECTIONS.iter().position(|l| *l == label) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }

    /// Messages not applied by reason: each of [`FLEET_REJECTIONS`], then
    /// `refused_by_jail` (this host's jails refused them).
    pub fn rejections(&self) -> Vec<(String, u64)> {
        FLEET_REJECTIONS
            .iter()
            .zip(&self.rejected)
            .map(|(label, n)| (label.to_string(), n.load(Relaxed)))
            .chain([(
                "refused_by_jail".to_string(),
                self.refused_here.load(Relaxed),
            )])
            .collect()
    }
}

impl Stats {
    pub fn new<S: AsRef<str>>(jails: impl IntoIterator<Item = S>) -> Self {
        let stats = Stats::default();
        stats.ensure_jails(jails);
        stats
    }

    pub fn jail(&self, name: &str) -> Option<Arc<JailCounters>> {
        self.read().get(name).cloned()
    }

    /// The jails counted, by name.
    pub fn jail_names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Counts exactly these jails from now on: new ones start at zero, the counters of
    /// jails that stay keep their values, and those of the others are dropped.
    pub fn ensure_jails<S: AsRef<str>>(&self, jails: impl IntoIterator<Item = S>) {
        let wanted: Vec<S> = jails.into_iter().collect();
        let mut map = self.jails.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|name, _| wanted.iter().any(|w| w.as_ref() == name));
        for name in wanted {
            map.entry(name.as_ref().to_string()).or_default();
        }
    }

    /// Addresses with failures but no ban, over all jails.
    pub fn tracked(&self) -> u64 {
        self.read()
            .values()
            .map(|j| j.currently_failed.load(Relaxed))
            .sum()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<JailCounters>>> {
        self.jails.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The lines-read counter of source `name` (a file path, or `journal`), created on
    /// first use. Called once by the reader of that source, which is its only writer.
    pub fn source(&self, name: &str) -> Arc<AtomicU64> {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = sources.iter().find(|(n, _)| n == name) {
            return c.clone();
        }
        let counter = Arc::new(AtomicU64::new(0));
        sources.push((name.to_string(), counter.clone()));
        counter
    }

    /// (source, lines read) of every source registered so far, sorted by name.
    pub fn sources(&self) -> Vec<(String, u64)> {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, u64)> = sources
            .iter()
            .map(|(n, c)| (n.clone(), c.load(Relaxed)))
            .collect();
        out.sort();
        out
    }
}

/// Upper bounds (inclusive) of the transaction latency histogram's buckets, in
/// nanoseconds, with their Prometheus `le` label; `+Inf` is implied.
pub const LATENCY_BUCKETS: [(u64, &str); 13] = [
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

/// Firewall transactions (table builds, batches of changes, table removal) sent by the
/// ban manager, its only writer: how many, how many failed, and how long they took.
#[derive(Default, Debug)]
pub struct Transactions {
    pub count: AtomicU64,
    pub errors: AtomicU64,
    /// Sum of all latencies, in nanoseconds.
    pub nanos: AtomicU64,
    /// Transactions per bucket of `LATENCY_BUCKETS` (not cumulative); the last slot
    /// holds those slower than the largest bound.
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

impl Transactions {
    /// Counts one transaction that took `took` and succeeded or not.
    pub fn record(&self, took: Duration, ok: bool) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|(bound, _)| nanos <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        self.nanos.fetch_add(nanos, Relaxed);
        if !ok {
            self.errors.fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
    }

    /// Cumulative counts per bucket bound, ending with `+Inf`.
    pub fn cumulative(&self) -> Vec<(&'static str, u64)> {
        let mut total = 0;
        let mut out = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (i, bucket) in self.buckets.iter().enumerate() {
            total += bucket.load(Relaxed);
            let le = LATENCY_BUCKETS.get(i).map_or("+Inf", |(_, le)| le);
            out.push((le, total));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let t = Transactions::default();
        t.record(Duration::from_micros(300), true);
        t.record(Duration::from_millis(1), true);
        t.record(Duration::from_millis(7), false);
        t.record(Duration::from_secs(60), true);
        let c = t.cumulative();
        assert_eq!(c[0], ("0.001", 2));
        assert_eq!(c[2], ("0.005", 2));
        assert_eq!(c[3], ("0.01", 3));
        assert_eq!(c[12], ("10", 3));
        assert_eq!(c[13], ("+Inf", 4));
        assert_eq!(t.count.load(Relaxed), 4);
        assert_eq!(t.errors.load(Relaxed), 1);
        assert_eq!(t.nanos.load(Relaxed), 60_008_300_000);
    }

    #[test]
    fn a_source_registered_twice_shares_its_counter() {
        let s = Stats::new(["sshd"]);
        let a = s.source("/var/log/b.log");
        a.fetch_add(3, Relaxed);
        s.source("/var/log/a.log").fetch_add(1, Relaxed);
        assert!(Arc::ptr_eq(&a, &s.source("/var/log/b.log")));
        assert_eq!(
            s.sources(),
            vec![
                ("/var/log/a.log".to_string(), 1),
                ("/var/log/b.log".to_string(), 3)
            ]
        );
    }
}
