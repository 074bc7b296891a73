//! Counters shared between stages for `ctl status` and `ctl stats`. Each counter has
//! exactly one writer (the stage that owns the thing counted); readers only load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Per-jail counters.
#[derive(Default, Debug)]
pub struct JailCounters {
    /// Written by the jail task.
    pub currently_failed: AtomicU64,
    pub total_failed: AtomicU64,
    /// Written by the ban manager.
    pub currently_banned: AtomicU64,
    pub total_banned: AtomicU64,
}

/// Daemon-wide counters, totals since start.
#[derive(Default, Debug)]
pub struct Stats {
    /// Written by the sources.
    pub lines_read: AtomicU64,
    /// Written by the jail task.
    pub failures: AtomicU64,
    pub evicted: AtomicU64,
    /// Written by the ban manager.
    pub bans: AtomicU64,
    /// Kernel repairs made by the reconciler (written by the ban manager).
    pub repairs: AtomicU64,
    pub jails: BTreeMap<String, JailCounters>,
}

impl Stats {
    pub fn new<'a>(jails: impl IntoIterator<Item = &'a str>) -> Self {
        Stats {
            jails: jails
                .into_iter()
                .map(|j| (j.to_string(), JailCounters::default()))
                .collect(),
            ..Stats::default()
        }
    }

    pub fn jail(&self, name: &str) -> Option<&JailCounters> {
        self.jails.get(name)
    }

    /// Addresses with failures but no ban, over all jails.
    pub fn tracked(&self) -> u64 {
        self.jails
            .values()
            .map(|j| j.currently_failed.load(Relaxed))
            .sum()
    }
}
