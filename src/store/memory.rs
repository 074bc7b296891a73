//! An in-memory `BanStore` for unit tests of the core, and a shared handle to one
//! that a test can look into while the ban manager owns it. Not durable by design.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    with_recent, BanStore, Damage, History, Outbox, RecentBan, StoreChange, StoreError, StoreReader,
};
use crate::types::{Ban, Target};

/// Bans and history in maps; `fail` makes every read and commit fail, as an
/// unavailable database would (to test error paths).
#[derive(Default, Debug)]
pub struct MemoryStore {
    pub bans: BTreeMap<(String, Target), Ban>,
    pub history: BTreeMap<(String, Target), History>,
    pub recent: BTreeMap<Target, Vec<RecentBan>>,
    pub evidence: BTreeMap<(String, Target), Vec<String>>,
    pub fail: bool,
    /// Damage to report until healed (as a replaced database would).
    pub damage: Option<Damage>,
    /// The fleet's outbox, shared with its publisher.
    pub outbox: MemoryOutbox,
}

impl MemoryStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.fail {
            return Err(StoreError::Db {
                doing: "using the store",
                reason: "injected failure".into(),
            });
        }
        Ok(())
    }
}

impl BanStore for MemoryStore {
    fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        Ok(self.bans.values().cloned().collect())
    }

    fn evidence(&self, jail: &str, target: &Target) -> Result<Vec<String>, StoreError> {
        self.check()?;
        Ok(self
            .evidence
            .get(&(jail.to_string(), *target))
            .cloned()
            .unwrap_or_default())
    }

    fn history(&self, jail: &str, target: &Target) -> Result<Option<History>, StoreError> {
        self.check()?;
        Ok(self.history.get(&(jail.to_string(), *target)).copied())
    }

    fn commit(&mut self, changes: &[StoreChange]) -> Result<(), StoreError> {
        self.check()?;
        for change in changes {
            match change {
                StoreChange::Put(ban) => {
                    self.bans
                        .insert((ban.jail.clone(), ban.target), ban.clone());
                }
                StoreChange::Remove(ban) => {
                    let key = (ban.jail.clone(), ban.target);
                    self.bans.remove(&key);
                    self.evidence.remove(&key);
                    self.history.insert(key, History::of(ban));
                }
                StoreChange::Evidence {
                    jail,
                    target,
                    matches,
                } => {
                    self.evidence
                        .insert((jail.clone(), *target), matches.clone());
                }
                StoreChange::Publish(decision) => self.outbox.push(decision.clone()),
                StoreChange::NoteRecent(ban) => {
                    let list = self.recent.remove(&ban.target).unwrap_or_default();
                    self.recent.insert(ban.target, with_recent(list, ban));
                }
            }
        }
        Ok(())
    }

    fn purge_history(&mut self, before: crate::types::Timestamp) -> Result<usize, StoreError> {
        let old: Vec<(String, Target)> = self
            .history
            .iter()
            .filter(|(k, h)| h.last_banned_at < before && !self.bans.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            self.history.remove(k);
        }
        self.recent
            .retain(|_, list| list.last().is_some_and(|b| b.at >= before));
        Ok(old.len())
    }

    fn recent_bans(&self, target: &Target) -> Result<Vec<RecentBan>, StoreError> {
        self.check()?;
        Ok(self.recent.get(target).cloned().unwrap_or_default())
    }

    fn damage(&self) -> Option<Damage> {
        self.damage.clone()
    }

    fn healed(&mut self) {
        self.damage = None;
    }
}

/// A memory store the test can still look into after handing it to the manager.
#[derive(Clone, Default)]
pub struct SharedStore(Arc<Mutex<MemoryStore>>);

impl SharedStore {
    pub fn get(&self) -> MutexGuard<'_, MemoryStore> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BanStore for SharedStore {
    fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        self.get().bans()
    }
    fn history(&self, jail: &str, target: &Target) -> Result<Option<History>, StoreError> {
        self.get().history(jail, target)
    }
    fn commit(&mut self, changes: &[StoreChange]) -> Result<(), StoreError> {
        self.get().commit(changes)
    }
    fn purge_history(&mut self, before: crate::types::Timestamp) -> Result<usize, StoreError> {
        self.get().purge_history(before)
    }
    fn recent_bans(&self, target: &Target) -> Result<Vec<RecentBan>, StoreError> {
        self.get().recent_bans(target)
    }
    fn evidence(&self, jail: &str, target: &Target) -> Result<Vec<String>, StoreError> {
        self.get().evidence(jail, target)
    }
    fn damage(&self) -> Option<Damage> {
        self.get().damage()
    }
    fn healed(&mut self) {
        self.get().healed()
    }
}

impl StoreReader for SharedStore {
    fn evidence(&self, jail: &str, target: &Target) -> Result<Vec<String>, StoreError> {
        self.get().evidence(jail, target)
    }
    fn history(&self, jail: &str, target: &Target) -> Result<Option<History>, StoreError> {
        self.get().history(jail, target)
    }
}

/// An in-memory outbox (shared between the fake store and a test's publisher).
#[derive(Clone, Default, Debug)]
pub struct MemoryOutbox(Arc<Mutex<Entries>>);

/// The last sequence number given, and the entries waiting.
#[derive(Default, Debug)]
struct Entries {
    last: u64,
    waiting: BTreeMap<u64, Vec<u8>>,
}

impl MemoryOutbox {
    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, entry: Vec<u8>) {
        let mut e = self.entries();
        e.last += 1;
        let seq = e.last;
        e.waiting.insert(seq, entry);
    }
}

impl Outbox for MemoryOutbox {
    fn waiting(&self, from: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .entries()
            .waiting
            .range(from..)
            .take(max)
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }

    fn published(&self, seqs: &[u64]) -> Result<(), StoreError> {
        let mut entries = self.entries();
        for seq in seqs {
            entries.waiting.remove(seq);
        }
        Ok(())
    }

    fn depth(&self) -> u64 {
        self.entries().waiting.len() as u64
    }
}
