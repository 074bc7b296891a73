//! Counters shared between stages for `ctl status` and `ctl stats`. Each counter has
//! exactly one writer (the stage that owns the thing counted); readers only load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

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
    /// Per jail; a reload adds and removes jails.
    jails: RwLock<BTreeMap<String, Arc<JailCounters>>>,
}

impl Stats {
    pub fn new<'a>(jails: impl IntoIterator<Item = &'a str>) -> Self {
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
    pub fn ensure_jails<'a>(&self, jails: impl IntoIterator<Item = &'a str>) {
        let wanted: Vec<&str> = jails.into_iter().collect();
        let mut map = self.jails.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|name, _| wanted.contains(&name.as_str()));
        for name in wanted {
            map.entry(name.to_string()).or_default();
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
}
