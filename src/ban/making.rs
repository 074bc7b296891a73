//! Making bans: a new ban's history (a current or pending ban, else the store's) and
//! the prefixes its jail holds, handed to the pure `policy`; a ban by hand; and the
//! recidive bans that follow a batch, from the store's recent bans.

use super::commit::IfUnsaved;
use super::policy::set_of;
use super::{policy, recidive, BanError, BanManager};
use crate::config::RECIDIVE;
use crate::firewall::Firewall;
use crate::store::History;
use std::net::IpAddr;

use crate::types::{Ban, BanTime, Target, Timestamp};

impl<F: Firewall> BanManager<F> {
    /// Bans in jail `recidive`, on all ports, the targets of `made` that were banned
    /// `maxretry` times in any jails within its `findtime` (from the store's records).
    pub(super) async fn recidive(&mut self, made: &[Ban], now: Timestamp) {
        let Some(rule) = self.recidive.clone() else {
            return;
        };
        let store = &self.store;
        let recent = |t: &Target| match store.recent_bans(t) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(target = %t, error = %e, "cannot read recent bans for recidive");
                None
            }
        };
        let desired = self.desired();
        let targets = recidive::offenders(&rule, made, now, recent, |t| desired.holds(RECIDIVE, t));
        let mut bans = Vec::new();
        for target in targets {
            match self.new_ban(RECIDIVE, target, None, None, now) {
                Ok(b) => bans.push(b),
                Err(e) => {
                    tracing::warn!(%target, error = %e, "not banned by recidive")
                }
            }
        }
        if !bans.is_empty() {
            if let Err(e) = self.commit_bans(bans, now, IfUnsaved::TakeBack).await {
                tracing::error!(error = %e, "recidive bans could not be applied");
            }
        }
    }

    pub(super) async fn manual_ban(
        &mut self,
        jail: &str,
        target: Target,
        bantime: Option<BanTime>,
    ) -> Result<Ban, BanError> {
        let now = self.clock.now();
        let ban = self.new_ban(jail, target, bantime, None, now)?;
        self.commit_bans(vec![ban.clone()], now, IfUnsaved::TakeBack)
            .await?;
        self.recidive(std::slice::from_ref(&ban), now).await;
        Ok(ban)
    }

    /// A new ban of `target` in `jail` by its policy, counted from its history: a
    /// current (or pending) ban is the latest; else what the store kept.
    pub(super) fn new_ban(
        &self,
        jail: &str,
        target: Target,
        bantime: Option<BanTime>,
        addr: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Ban, BanError> {
        let pending = &self.waiting.pending;
        let current = self.book.get(jail, &target).or_else(|| {
            (!pending.is_empty())
                .then(|| pending.get(&(jail.to_string(), target)))
                .flatten()
        });
        let history = match current {
            Some(ban) => Some(History::of(ban)),
            // A ban now matters more than its escalation: an unreadable store (a
            // fault being reported) counts this ban as the first.
            None if self.jails.contains_key(jail) => {
                self.store.history(jail, &target).unwrap_or_else(|e| {
                    // Not a warning each: the commit that follows reports the fault once.
                    tracing::debug!(%jail, %target, error = %e, "cannot read the ban history; counting this ban as the first");
                    None
                })
            }
            None => None,
        };
        // Prefixes must not overlap within a kernel set, whichever of the set's jails
        // holds them (current or pending); only a prefix needs the list.
        let mut held: Vec<&Target> = Vec::new();
        if !target.is_single() {
            let set = set_of(&self.jails, jail);
            for (name, p) in &self.jails {
                if p.set == set || name == jail {
                    held.extend(self.book.targets_in(name));
                    held.extend(
                        pending
                            .values()
                            .filter(|b| b.jail == *name)
                            .map(|b| &b.target),
                    );
                }
            }
        }
        let request = policy::Request {
            jail,
            target,
            bantime,
            addr,
        };
        let ban = policy::new_ban(
            &self.jails,
            request,
            held,
            history,
            self.history_horizon,
            now,
            fastrand::f64(),
        )?;
        if ban.target != target {
            tracing::info!(%jail, prefix = %target, narrowed = %ban.target, "a prefix ban would cover a protected address (loopback, this host, ignoreip): narrowed to the address that failed");
        }
        Ok(ban)
    }
}
