//! What the ban manager does on its timer: bans whose time is up leave the book and
//! the store; what the store or the kernel refused is sent again when its retry is
//! due; old history is purged hourly; and every `reconcile_interval` the kernel is
//! compared with the bans and repaired.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use super::commit::IfUnsaved;
use super::desired::elements_for;
use super::events::Ended;
use super::policy::set_of;
use super::{isolate, reconcile, BanError, BanManager, Doubt, MAX_SLEEP, PURGE_EVERY};
use crate::firewall::{Change, Firewall};
use crate::store::StoreChange;
use crate::types::Ban;

impl<F: Firewall> BanManager<F> {
    /// Notes that the table may be gone; the next wake looks.
    pub(super) fn doubt(&mut self, why: Doubt) {
        self.table_doubt = Some(match (self.table_doubt, why) {
            (Some(Doubt::Missing), _) | (_, Doubt::Missing) => Doubt::Missing,
            _ => Doubt::Deleted,
        });
    }

    /// A kernel change failed: if for want of the table, it is rebuilt at once
    /// rather than the change retried against nothing.
    pub(super) fn kernel_failed(&mut self, e: &crate::firewall::FirewallError) {
        if e.table_missing() {
            self.doubt(Doubt::Missing);
        }
    }

    /// Settles a doubt about the table: after a failure the reconciler runs at once
    /// (it rebuilds what is missing); after a reported deletion, only when the table
    /// is really gone (gaoler's own rebuilds delete and add it in one transaction).
    pub(super) async fn settle_doubt(&mut self) {
        let Some(doubt) = self.table_doubt.take() else {
            return;
        };
        if doubt == Doubt::Deleted {
            match self.firewall.table_exists().await {
                Ok(Some(false)) => {}
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell whether the table is still there; the reconciler will");
                    return;
                }
            }
        }
        tracing::warn!("the firewall table is gone or incomplete (a flush of the ruleset?): rebuilding it with every ban");
        self.reconcile().await;
    }

    pub(super) fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + MAX_SLEEP;
        if let Some(end) = self.book.next_expiry() {
            let wait = (end - self.clock.now()).to_std().unwrap_or(Duration::ZERO);
            wake = wake.min(now + wait);
        }
        if let Some(at) = self.waiting.next() {
            wake = wake.min(at);
        }
        if self.reconcile_every.is_some() {
            wake = wake.min(self.reconcile_at);
        }
        if self.table_doubt.is_some() {
            wake = now;
        }
        wake
    }

    /// Forgets bans whose time is up; the kernel drops its elements by itself.
    pub fn expire(&mut self) {
        let now = self.clock.now();
        let gone = self.book.take_expired(now);
        let pending = &mut self.waiting.pending;
        let pending_gone: Vec<Ban> = if pending.is_empty() {
            Vec::new()
        } else {
            let expired: Vec<Ban> = pending
                .values()
                .filter(|b| b.is_expired(now))
                .cloned()
                .collect();
            for b in &expired {
                pending.remove(&(b.jail.clone(), b.target));
            }
            expired
        };
        if gone.is_empty() && pending_gone.is_empty() {
            return;
        }
        let removes: Vec<StoreChange> = gone
            .iter()
            .chain(&pending_gone)
            .cloned()
            .map(StoreChange::Remove)
            .collect();
        for ban in &gone {
            tracing::info!(jail = %ban.jail, target = %ban.target, "ban expired");
            self.ended(ban, Ended::Expired, self.evidence_of(ban));
        }
        if let Err(e) = self.store.commit(&removes) {
            // They are expired either way; the next start drops them from the store.
            tracing::warn!(error = %e, "could not remove expired bans from the store");
        }
        self.refresh_counts();
    }

    /// Re-sends what the store or the kernel refused before, when the retry is due.
    pub(super) async fn retry(&mut self) {
        if !self.waiting.due(Instant::now()) {
            return;
        }
        let now = self.clock.now();
        if !self.waiting.unsaved.is_empty() {
            let bans: Vec<Ban> = std::mem::take(&mut self.waiting.unsaved)
                .into_values()
                .filter(|b| !b.is_expired(now))
                .collect();
            let count = bans.len();
            match self.commit_bans(bans.clone(), now, IfUnsaved::Keep).await {
                Err(BanError::Store(e)) => {
                    tracing::error!(error = %e, bans = count, "the store still refuses the bans; retrying later");
                    self.waiting.keep_unsaved(bans);
                    self.waiting.back_off(Instant::now());
                    return;
                }
                // Saved; in force, or waiting for the kernel like any pending ban.
                _ => {
                    tracing::info!(bans = count, "the store took the bans it had refused");
                    self.waiting.release();
                }
            }
        }
        let desired = self.desired();
        let mut changes = desired.settle(&self.waiting.unbans, now);
        // The failed transaction may have been a renewal: replace, to be safe.
        let pending: Vec<Ban> = self.waiting.pending.values().cloned().collect();
        changes.extend(
            elements_for(&self.jails, &pending, now)
                .into_iter()
                .map(Change::Renew),
        );
        if changes.is_empty() {
            return;
        }
        match isolate::apply(&mut self.firewall, &self.stats, &changes).await {
            Ok(refused) => {
                let jails = &self.jails;
                let now_in_force = self.waiting.took(
                    |b| !refused.holds(set_of(jails, &b.jail), &b.target),
                    |(set, target)| !refused.holds(set, target),
                );
                tracing::info!(
                    changes = changes.len(),
                    refused = refused.keys.len(),
                    "kernel took the retried changes"
                );
                self.banned(now_in_force);
                if refused.is_empty() {
                    self.waiting.succeeded();
                } else {
                    self.waiting.back_off(Instant::now());
                }
            }
            Err(e) => {
                tracing::error!(error = %e, changes = changes.len(), "kernel still refuses; retrying later");
                self.kernel_failed(&e);
                self.waiting.back_off(Instant::now());
            }
        }
    }

    /// Makes the kernel match the bans: rebuilds the table when any of it is missing;
    /// otherwise re-adds missing elements, removes unknown ones and corrects timeouts
    /// that disagree. Each repair is logged at WARN and counted.
    pub async fn reconcile(&mut self) {
        let Some(layout) = self.layout.clone() else {
            return;
        };
        let inventory = match self.firewall.inventory(&layout).await {
            Ok(Some(inv)) => inv,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reconciler cannot read the kernel's table");
                return;
            }
        };
        let now = self.clock.now();
        if !inventory.complete {
            let every = elements_for(&self.jails, &self.matching(None, None), now);
            match isolate::install(&mut self.firewall, &self.stats, &layout, &every).await {
                Ok(refused) => {
                    tracing::warn!(bans = every.len(), table = %layout.table, "reconciler: the table, its chain, rules or sets were missing; rebuilt with every ban");
                    self.stats.repairs.fetch_add(1, Relaxed);
                    self.installed(&refused);
                }
                Err(e) => tracing::error!(error = %e, "reconciler could not rebuild the table"),
            }
            return;
        }
        let current = elements_for(&self.jails, &self.book.select(None, None), now);
        let desired = self.desired();
        let r = reconcile::repairs(&inventory.elements, current, |set, target| {
            desired.element(set, target, None, now).is_some()
        });
        if r.changes.is_empty() {
            return;
        }
        match isolate::apply(&mut self.firewall, &self.stats, &r.changes).await {
            Ok(_) => {
                tracing::warn!(
                    missing = r.missing,
                    unknown = r.unknown,
                    timeouts = r.timeouts,
                    "reconciler repaired the kernel's sets"
                );
                self.stats.repairs.fetch_add(r.total(), Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "reconciler could not repair the kernel's sets"),
        }
    }

    /// Removes history older than the horizon (hourly, from the run loop).
    pub(super) fn purge_history(&mut self) {
        if self.purge_at > Instant::now() {
            return;
        }
        self.purge_at = Instant::now() + PURGE_EVERY;
        let horizon =
            chrono::Duration::from_std(self.history_horizon).unwrap_or(chrono::Duration::MAX);
        match self.store.purge_history(self.clock.now() - horizon) {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "purged ban history older than dbpurgeage"),
            Err(e) => tracing::warn!(error = %e, "could not purge old ban history"),
        }
    }
}
