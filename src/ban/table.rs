//! The whole kernel table at once: built at start with every stored ban in one
//! transaction (the restore), and rebuilt the same way when a reload changes the
//! layout, so there is never a moment without the bans.

use tokio::time::Instant;

use super::desired::elements_for;
use super::isolate::{self, Refused};
use super::policy::set_of;
use super::{BanBook, BanError, BanManager, Reconfig, Reconfigured, Restored, MAX_SLEEP};
use crate::firewall::{Firewall, Layout};
use crate::store::StoreChange;
use crate::types::{Ban, Target, Timestamp};
use std::collections::HashSet;

impl<F: Firewall> BanManager<F> {
    /// Builds the kernel table and puts back every unexpired ban of an enabled jail
    /// with its remaining time, in one transaction. Expired bans, and bans of jails no
    /// longer enabled, are removed from the store.
    pub async fn restore(&mut self, layout: &Layout) -> Result<Restored, BanError> {
        let now = self.clock.now();
        let mut report = Restored::default();
        let mut drop = Vec::new();
        let mut live = Vec::new();
        let started = Instant::now();
        let mut stored = self.store.bans().map_err(BanError::Load)?;
        report.store_ms = started.elapsed().as_millis() as u64;
        if let Some(damage) = self.store.damage() {
            let recovered = self.recover_from_kernel(layout, &stored, now).await;
            tracing::error!(
                reason = %damage.reason,
                moved_to = ?damage.moved_to,
                missing = ?damage.missing,
                recovered_from_kernel = recovered.len(),
                read_from_store = stored.len(),
                "the state database was damaged: the bans the kernel's table still holds are saved again (with the time they have left, counted as first bans); others, ban history and read positions are lost"
            );
            report.recovered = recovered.len();
            stored.extend(recovered);
        }
        for ban in stored {
            if ban.is_expired(now) {
                report.expired += 1;
                drop.push(StoreChange::Remove(ban.clone()));
            } else if !self.jails.contains_key(&ban.jail) {
                tracing::info!(jail = %ban.jail, target = %ban.target, "lifting a ban of a jail that is no longer enabled");
                report.orphaned += 1;
                drop.push(StoreChange::Remove(ban.clone()));
            } else {
                live.push(ban);
            }
        }
        let elements = elements_for(&self.jails, &live, now);
        let started = Instant::now();
        report.loaded = live.len();
        // The book fills while nft loads the table: both stand before ready.
        let book = &mut self.book;
        let (installed, ()) = tokio::join!(
            isolate::install(&mut self.firewall, &self.stats, layout, &elements),
            async {
                for ban in live {
                    book.insert(ban);
                }
            }
        );
        report.kernel_ms = started.elapsed().as_millis() as u64;
        let refused = match installed {
            Ok(refused) => refused,
            Err(e) => {
                self.book = BanBook::default();
                return Err(BanError::Install(e));
            }
        };
        self.layout = Some(layout.clone());
        self.hold_back(&refused);
        if !drop.is_empty() {
            self.store.commit(&drop).map_err(BanError::Load)?;
        }
        self.refresh_counts();
        Ok(report)
    }

    /// Takes a reloaded configuration: bans of jails that are gone are lifted, the new
    /// policies apply to the next bans, and a changed table is rebuilt with every
    /// remaining ban in one transaction (as at start, never a moment without them).
    pub async fn reconfigure(&mut self, new: Reconfig) -> Result<Reconfigured, BanError> {
        let gone: Vec<String> = self
            .jails
            .keys()
            .filter(|j| !new.jails.contains_key(*j))
            .cloned()
            .collect();
        let lifted: Vec<Ban> = gone
            .iter()
            .flat_map(|j| self.matching(Some(j), None))
            .collect();
        let mut report = Reconfigured {
            lifted: lifted.len(),
            rebuilt: false,
        };
        // The table first: if the kernel refuses it, nothing has changed.
        let mut refused = Refused::default();
        if self.layout.as_ref() != Some(&new.layout) {
            let now = self.clock.now();
            let kept: Vec<Ban> = self
                .matching(None, None)
                .into_iter()
                .filter(|b| !gone.contains(&b.jail))
                .collect();
            let elements = elements_for(&new.jails, &kept, now);
            refused = isolate::install(&mut self.firewall, &self.stats, &new.layout, &elements)
                .await
                .map_err(BanError::Install)?;
            self.layout = Some(new.layout.clone());
            report.rebuilt = true;
        }
        self.jails = new.jails;
        self.recidive = new.recidive;
        self.history_horizon = new.history_horizon;
        self.sharing = new.sharing;
        if self.reconcile_every != new.reconcile_every {
            self.reconcile_every = new.reconcile_every;
            self.reconcile_at = Instant::now() + new.reconcile_every.unwrap_or(MAX_SLEEP);
        }
        if report.rebuilt {
            self.installed(&refused);
        }
        // Already out of the kernel; a store that refuses keeps them until the next
        // start, which drops bans of jails no longer enabled.
        if let Err(e) = self.forget(&lifted, Vec::new()) {
            tracing::error!(error = %e, "could not remove the bans of removed jails from the store");
        }
        Ok(report)
    }

    /// The bans the kernel's table holds that `stored` lacks, saved to the store: a
    /// damaged store is rebuilt from what is enforced. Each element becomes a ban of
    /// the jail its set is named after (or the first jail sharing the set), with the
    /// time the kernel has left for it.
    async fn recover_from_kernel(
        &mut self,
        layout: &Layout,
        stored: &[Ban],
        now: Timestamp,
    ) -> Vec<Ban> {
        let inventory = match self.firewall.inventory(layout).await {
            Ok(Some(inv)) => inv,
            Ok(None) => return Vec::new(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the kernel's table to rebuild the damaged store");
                return Vec::new();
            }
        };
        let known: HashSet<(&str, Target)> = stored
            .iter()
            .map(|b| (set_of(&self.jails, &b.jail), b.target))
            .collect();
        let mut recovered = Vec::new();
        for ((set, target), left) in inventory.elements {
            if known.contains(&(set.as_str(), target)) {
                continue;
            }
            let Some(jail) = self
                .jails
                .get_key_value(&set)
                .filter(|(_, p)| p.set == set)
                .or_else(|| self.jails.iter().find(|(_, p)| p.set == set))
                .map(|(j, _)| j.clone())
            else {
                continue;
            };
            let expires_at = left.map(|secs| now + chrono::Duration::seconds(secs as i64));
            recovered.push(Ban {
                target,
                jail,
                banned_at: now,
                expires_at,
                count: 1,
                origin: None,
            });
        }
        let puts: Vec<StoreChange> = recovered.iter().cloned().map(StoreChange::Put).collect();
        match self.store.commit(&puts) {
            Ok(()) => self.store.healed(),
            Err(e) => {
                tracing::error!(error = %e, bans = recovered.len(), "cannot save the bans recovered from the kernel; the next start recovers them again")
            }
        }
        recovered
    }

    /// After a whole table was installed with every current and pending ban (but
    /// the `refused`): the pending ones are in force now, and no older unban is left
    /// to retry.
    pub(super) fn installed(&mut self, refused: &Refused) {
        let jails = &self.jails;
        let now_in_force = self
            .waiting
            .installed(|b| !refused.holds(set_of(jails, &b.jail), &b.target));
        if !now_in_force.is_empty() {
            self.banned(now_in_force);
        }
        self.hold_back(refused);
    }

    /// Bans in the book whose element the kernel refused leave it and wait for the
    /// retry: the book shows only what the kernel holds.
    pub(super) fn hold_back(&mut self, refused: &Refused) {
        if refused.is_empty() {
            return;
        }
        let mut held = Vec::new();
        for (set, target) in &refused.keys {
            for (jail, policy) in &self.jails {
                if policy.set == *set {
                    held.extend(self.book.remove(jail, target));
                }
            }
        }
        tracing::error!(
            bans = held.len(),
            "bans whose element nft refused are kept out of the book and retried"
        );
        self.hold_pending(held);
        self.refresh_counts();
    }
}
