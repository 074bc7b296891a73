//! The ban manager's write path. A ban goes to the store and the kernel together and
//! enters the book (what `ctl banned` shows) only once both took it; an unban goes
//! store first, then kernel, then book. What the store or the kernel refuses waits in
//! the retry queue (`upkeep.rs` sends it again).

use std::sync::atomic::Ordering::Relaxed;

use tokio::time::Instant;

use super::events::{BanEvent, Ended};
use super::messages::{Lift, Received};
use super::policy::set_of;
use super::{isolate, transaction, BanError, BanManager};
use crate::firewall::Firewall;
use crate::store::StoreChange;
use crate::types::{Announcement, AnnouncementKind, Ban, Target, Timestamp};

/// What becomes of the kernel elements of bans the store refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IfUnsaved {
    /// Taken out again: the request failed as a whole (a ban by hand, recidive).
    TakeBack,
    /// Left in: the caller keeps the bans and saves them by the retry (decisions
    /// from the logs: a full disk must not let the offenders in).
    Keep,
}

impl<F: Firewall> BanManager<F> {
    /// Store and kernel, then the book: a ban `ctl` shows is in both. The store's
    /// flush runs while nft works (one waits for the disk, the other for the kernel);
    /// when the store refuses, the kernel change stays or is taken back, as `unsaved`
    /// says.
    pub(super) async fn commit_bans(
        &mut self,
        bans: Vec<Ban>,
        now: Timestamp,
        unsaved: IfUnsaved,
    ) -> Result<(), BanError> {
        if bans.is_empty() {
            return Ok(());
        }
        let mut changes: Vec<StoreChange> = bans.iter().cloned().map(StoreChange::Put).collect();
        // Recent bans are kept only when recidive needs them: one write a ban otherwise.
        if self.recidive.is_some() {
            changes.extend(bans.iter().cloned().map(StoreChange::NoteRecent));
        }
        changes.extend(self.announce(&bans, AnnouncementKind::Ban, now));
        if !self.evidence.is_empty() {
            for ban in &bans {
                let key = (ban.jail.clone(), ban.target);
                if let Some(matches) = self.evidence.remove(&key) {
                    changes.push(StoreChange::Evidence {
                        jail: key.0,
                        target: key.1,
                        matches,
                    });
                }
            }
        }
        let kernel = self.desired().ban_changes(&bans, now);
        let store = &mut self.store;
        let joined = std::time::Instant::now();
        let (applied, stored) = tokio::join!(
            isolate::apply(&mut self.firewall, &self.stats, &kernel),
            async { store.commit(&changes) }
        );
        tracing::debug!(
            bans = bans.len(),
            store_and_kernel_us = joined.elapsed().as_micros() as u64,
            "bans stored and sent"
        );
        if let Err(e) = stored {
            if applied.is_ok() && unsaved == IfUnsaved::TakeBack {
                self.take_back(&bans, now).await;
            } else {
                // Kept for the retry that saves these bans.
                for change in changes {
                    if let StoreChange::Evidence {
                        jail,
                        target,
                        matches,
                    } = change
                    {
                        self.evidence.insert((jail, target), matches);
                    }
                }
            }
            return Err(e.into());
        }
        self.heal_store();
        let refused = match applied {
            Ok(refused) => refused,
            Err(e) => {
                tracing::error!(error = %e, bans = bans.len(), "kernel did not take the bans; they are saved and will be retried");
                self.kernel_failed(&e);
                self.hold_pending(bans);
                return Err(e.into());
            }
        };
        // What nft refused alone waits for the retry; the rest is in force.
        let (landed, held): (Vec<Ban>, Vec<Ban>) = if refused.is_empty() {
            (bans, Vec::new())
        } else {
            bans.into_iter()
                .partition(|b| !refused.holds(set_of(&self.jails, &b.jail), &b.target))
        };
        if !held.is_empty() {
            self.hold_pending(held);
        }
        if landed.is_empty() {
            return Err(BanError::Firewall(refused.error()));
        }
        if !self.waiting.pending.is_empty() {
            for ban in &landed {
                self.waiting.pending.remove(&(ban.jail.clone(), ban.target));
            }
        }
        self.banned(landed);
        // The kernel takes changes again: what waits for a retry goes now.
        self.waiting.kernel_works(Instant::now());
        Ok(())
    }

    /// After the store started a new database in place of a damaged one: every ban
    /// held (in force, or waiting for the kernel) is saved again. What cannot be
    /// saved now is tried again after the next commit.
    fn heal_store(&mut self) {
        let Some(damage) = self.store.damage() else {
            return;
        };
        let held = self.matching(None, None);
        let puts: Vec<StoreChange> = held.iter().cloned().map(StoreChange::Put).collect();
        match self.store.commit(&puts) {
            Ok(()) => {
                self.store.healed();
                tracing::error!(
                    reason = %damage.reason,
                    moved_to = ?damage.moved_to,
                    bans = held.len(),
                    "the state database was damaged and replaced: every ban in force is saved again; the history of ended bans and the read positions are lost"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "the state database was replaced, and the bans in force cannot be saved into the new one yet; retrying after the next commit")
            }
        }
    }

    /// Saved bans the kernel did not take: they wait for the retry.
    pub(super) fn hold_pending(&mut self, bans: Vec<Ban>) {
        for ban in bans {
            self.waiting
                .pending
                .insert((ban.jail.clone(), ban.target), ban);
        }
        self.waiting.schedule(Instant::now());
    }

    /// Puts the elements of `bans` back as the book and pending bans say, after the
    /// store refused them; what fails here the reconciler repairs.
    async fn take_back(&mut self, bans: &[Ban], now: Timestamp) {
        let desired = self.desired();
        let undo = desired.settle(&desired.set_keys(bans), now);
        if let Err(e) = transaction(&self.stats, self.firewall.apply(&undo)).await {
            tracing::warn!(error = %e, "could not take back kernel elements the store refused; the reconciler will");
        }
    }

    /// Bans now in force in store and kernel: logged, counted, announced, and in the
    /// book.
    pub(super) fn banned(&mut self, bans: Vec<Ban>) {
        self.ban_log.log(&bans);
        self.outputs
            .emit(|| BanEvent::Banned(bans.as_slice().into()));
        self.stats.bans.fetch_add(bans.len() as u64, Relaxed);
        // Per jail: how many (a batch rarely spans more than a few jails).
        let mut per_jail: Vec<(String, u64)> = Vec::new();
        for ban in bans {
            match per_jail.iter_mut().find(|(j, _)| *j == ban.jail) {
                Some((_, n)) => *n += 1,
                None => per_jail.push((ban.jail.clone(), 1)),
            }
            self.book.insert(ban);
        }
        for (jail, n) in per_jail {
            if let Some(c) = self.stats.jail(&jail) {
                c.total_banned.fetch_add(n, Relaxed);
            }
            self.refresh_count(&jail);
        }
    }

    pub(super) async fn unban(
        &mut self,
        target: Option<&Target>,
        jail: Option<&str>,
    ) -> Result<Vec<Ban>, BanError> {
        if let Some(j) = jail {
            if !self.jails.contains_key(j) {
                return Err(BanError::UnknownJail(j.to_string()));
            }
        }
        let lifted = self.matching(jail, target);
        if lifted.is_empty() {
            return Ok(lifted);
        }
        let now = self.clock.now();
        let announced = self.announce(&lifted, AnnouncementKind::Unban, now);
        self.lift(lifted, announced, now).await
    }

    /// Lifts `lifted` (store, kernel, then book), with `also` in the same store
    /// commit (the fleet's announcements of the unbans by hand).
    async fn lift(
        &mut self,
        lifted: Vec<Ban>,
        also: Vec<StoreChange>,
        now: Timestamp,
    ) -> Result<Vec<Ban>, BanError> {
        // A shared set keeps the element while another of its jails still bans the target.
        let keys = self.desired().set_keys(&lifted);
        self.forget(&lifted, also)?;
        let kernel = self.desired().settle(&keys, now);
        match isolate::apply(&mut self.firewall, &self.stats, &kernel).await {
            Ok(refused) if refused.is_empty() => Ok(lifted),
            // Lifted from the store and the book; the kernel's part is retried.
            Ok(refused) => {
                self.waiting
                    .unbans
                    .extend(keys.into_iter().filter(|(s, t)| refused.holds(s, t)));
                self.waiting.schedule(Instant::now());
                Ok(lifted)
            }
            Err(e) => {
                tracing::error!(error = %e, "kernel did not take the unbans; retrying");
                self.kernel_failed(&e);
                self.waiting.unbans.extend(keys);
                self.waiting.schedule(Instant::now());
                Err(e.into())
            }
        }
    }

    /// Current and pending bans matching the optional jail and target.
    pub(super) fn matching(&self, jail: Option<&str>, target: Option<&Target>) -> Vec<Ban> {
        let mut found = self.book.select(jail, target);
        found.extend(
            self.waiting
                .pending
                .values()
                .filter(|b| {
                    jail.is_none_or(|j| b.jail == j) && target.is_none_or(|t| b.target == *t)
                })
                .cloned(),
        );
        found
    }

    /// Lifted bans leave the store (with `also` in the same commit), then the book;
    /// the kernel is the caller's.
    pub(super) fn forget(
        &mut self,
        lifted: &[Ban],
        also: Vec<StoreChange>,
    ) -> Result<(), BanError> {
        let mut changes: Vec<StoreChange> =
            lifted.iter().cloned().map(StoreChange::Remove).collect();
        changes.extend(also);
        let evidence: Vec<Vec<String>> = lifted.iter().map(|b| self.evidence_of(b)).collect();
        self.store.commit(&changes)?;
        for (ban, matches) in lifted.iter().zip(evidence) {
            self.waiting.pending.remove(&(ban.jail.clone(), ban.target));
            // Pending bans were never counted as bans, so neither as unbans.
            if let Some(gone) = self.book.remove(&ban.jail, &ban.target) {
                self.ended(&gone, Ended::Lifted, matches);
            }
            tracing::info!(jail = %ban.jail, target = %ban.target, "unban");
        }
        self.refresh_counts();
        Ok(())
    }
}

impl<F: Firewall> BanManager<F> {
    /// The outbox entries announcing `bans` to the fleet: this host's own bans of
    /// the shared jails (never a ban received from another host: no echo).
    fn announce(&self, bans: &[Ban], kind: AnnouncementKind, now: Timestamp) -> Vec<StoreChange> {
        let Some(sharing) = &self.sharing else {
            return Vec::new();
        };
        bans.iter()
            .filter(|b| b.origin.is_none() && sharing.shares(&b.jail))
            .filter_map(|b| {
                let at = match kind {
                    AnnouncementKind::Ban => b.banned_at,
                    AnnouncementKind::Unban => now,
                };
                let entry = Announcement {
                    kind,
                    ban: b.clone(),
                    at,
                };
                serde_json::to_vec(&entry).ok().map(StoreChange::Publish)
            })
            .collect()
    }

    /// Bans from the fleet: through the same write path as this host's own, with
    /// the start, end and count their origin decided. A target this jail bans
    /// already keeps its ban; one that is protected here is refused and counted.
    pub(super) async fn apply_received(&mut self, batch: Vec<Received>) {
        if batch.is_empty() {
            return;
        }
        let now = self.clock.now();
        let mut seen = std::collections::HashSet::with_capacity(batch.len());
        let mut bans = Vec::with_capacity(batch.len());
        for r in &batch {
            if self.desired().holds(&r.jail, &r.target) || !seen.insert((r.jail.as_str(), r.target))
            {
                continue;
            }
            let held: Vec<Target> = if r.target.is_single() {
                Vec::new()
            } else {
                self.matching(Some(&r.jail), None)
                    .iter()
                    .map(|b| b.target)
                    .collect()
            };
            match super::policy::received_ban(&self.jails, r, &held, now) {
                Ok(ban) => bans.push(ban),
                Err(e) => {
                    self.stats.fleet.refused_here.fetch_add(1, Relaxed);
                    tracing::info!(origin = %r.origin.host, jail = %r.jail, target = %r.target, error = %e, "fleet ban not applied")
                }
            }
        }
        let n = bans.len() as u64;
        let made = bans.clone();
        match self.commit_bans(bans, now, IfUnsaved::Keep).await {
            Ok(()) | Err(BanError::Firewall(_)) => {
                self.stats.fleet.applied.fetch_add(n, Relaxed);
            }
            Err(e @ BanError::Store(_)) => {
                tracing::error!(error = %e, bans = made.len(), "the store refused fleet bans; they are in the kernel, kept in memory and saved by the retry");
                self.waiting.keep_unsaved(made);
                self.waiting.schedule(Instant::now());
            }
            Err(e) => tracing::error!(error = %e, "fleet bans could not be applied"),
        }
    }

    /// An unban from the fleet: lifts the ban of that target in that jail only when
    /// it came from that origin (host, key and ban id); anything else stays.
    pub(super) async fn lift_received(&mut self, lift: Lift) {
        let lifted: Vec<Ban> = self
            .matching(Some(&lift.jail), Some(&lift.target))
            .into_iter()
            .filter(|b| b.origin.as_ref() == Some(&lift.origin))
            .collect();
        if lifted.is_empty() {
            return;
        }
        let now = self.clock.now();
        if let Err(e) = self.lift(lifted, Vec::new(), now).await {
            tracing::warn!(origin = %lift.origin.host, jail = %lift.jail, target = %lift.target, error = %e, "fleet unban");
        }
    }
}
