//! A fake firewall for unit tests of the core: keeps the sets in a map and can be told
//! to fail, so retry paths are testable without a kernel.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Change, Element, Firewall, FirewallError, Inventory, Layout};
use crate::types::Target;

/// The fake kernel state; shared so a test can look inside while the manager owns it.
#[derive(Default, Debug)]
pub struct MemoryKernel {
    pub installed: Option<Layout>,
    /// Elements by (set, target).
    pub elements: BTreeMap<(String, Target), Option<Duration>>,
    pub transactions: usize,
    /// While above zero, each call fails and decrements it.
    pub failures_left: usize,
    /// Targets nft would refuse: a transaction that adds one fails as a whole.
    pub refused: HashSet<Target>,
    /// Every call, failed or not.
    pub attempts: usize,
}

impl MemoryKernel {
    /// Fails, as nft does, a transaction that adds a refused target.
    fn refuse<'a>(&self, mut added: impl Iterator<Item = &'a Target>) -> Result<(), FirewallError> {
        match added.find(|t| self.refused.contains(t)) {
            Some(t) => Err(FirewallError::Rejected {
                what: "memory firewall".into(),
                stderr: format!("{t}: an element the test refuses"),
            }),
            None => Ok(()),
        }
    }
}

#[derive(Default, Clone)]
pub struct MemoryFirewall {
    pub kernel: Arc<Mutex<MemoryKernel>>,
}

impl MemoryFirewall {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut MemoryKernel) -> Result<T, FirewallError>,
    ) -> Result<T, FirewallError> {
        let mut k = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        k.attempts += 1;
        if k.failures_left > 0 {
            k.failures_left -= 1;
            return Err(FirewallError::Rejected {
                what: "memory firewall".into(),
                stderr: "a failure the test asked for".into(),
            });
        }
        k.transactions += 1;
        f(&mut k)
    }
}

impl Firewall for MemoryFirewall {
    async fn probe(&mut self) -> Result<(), FirewallError> {
        Ok(())
    }

    async fn install(&mut self, layout: &Layout, bans: &[Element]) -> Result<(), FirewallError> {
        self.with(|k| {
            k.refuse(bans.iter().map(|e| &e.target))?;
            k.installed = Some(layout.clone());
            k.elements = bans
                .iter()
                .map(|e| ((e.set.clone(), e.target), e.timeout))
                .collect();
            Ok(())
        })
    }

    async fn apply(&mut self, changes: &[Change]) -> Result<(), FirewallError> {
        self.with(|k| {
            if k.installed.is_none() {
                return Err(FirewallError::NotInstalled);
            }
            k.refuse(changes.iter().filter_map(|c| match c {
                Change::Ban(e) | Change::Renew(e) => Some(&e.target),
                Change::Unban { .. } => None,
            }))?;
            for c in changes {
                match c {
                    Change::Ban(e) | Change::Renew(e) => {
                        k.elements.insert((e.set.clone(), e.target), e.timeout);
                    }
                    Change::Unban { set, target } => {
                        k.elements.remove(&(set.clone(), *target));
                    }
                }
            }
            Ok(())
        })
    }

    async fn remove(&mut self) -> Result<(), FirewallError> {
        self.with(|k| {
            k.installed = None;
            k.elements.clear();
            Ok(())
        })
    }

    async fn table_exists(&mut self) -> Result<Option<bool>, FirewallError> {
        self.with(|k| Ok(Some(k.installed.is_some())))
    }

    async fn inventory(&mut self, layout: &Layout) -> Result<Option<Inventory>, FirewallError> {
        self.with(|k| {
            Ok(Some(Inventory {
                complete: k.installed.as_ref() == Some(layout),
                elements: k
                    .elements
                    .iter()
                    .map(|(key, t)| (key.clone(), t.map(|d| d.as_secs())))
                    .collect(),
            }))
        })
    }
}
