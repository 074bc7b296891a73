//! Failure windows across a restart. At a clean stop the jails' windows are saved
//! (the readers have stopped and their positions are saved, so the two agree); at the
//! next start they are counted again, through the same path as a failure read from a
//! log, so `findtime`, `ignoreip` and a changed `maxretry` apply as they are now. A
//! crash (`kill -9`) saves nothing: its failures since the last stop are lost, never
//! counted twice.

use std::collections::BTreeMap;

use chrono::TimeZone;
use serde::{Deserialize, Serialize};

use super::{Jails, Outcome};
use crate::types::{Target, Timestamp};

/// The saved windows, by jail name: each address (or prefix) with its failure times
/// in seconds since the epoch.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedWindows {
    v: u32,
    jails: BTreeMap<String, Vec<(Target, Vec<u32>)>>,
}

/// A ban the restored windows reached (a lower `maxretry` than before the restart).
#[derive(Debug, PartialEq, Eq)]
pub struct Reached {
    pub jail: String,
    pub target: Target,
    pub failures: u32,
}

impl SavedWindows {
    /// The windows of `jails`, whose jail `i` is named `names[i]`.
    pub fn of(jails: &Jails, names: &[String]) -> SavedWindows {
        let mut saved = SavedWindows {
            v: 1,
            jails: BTreeMap::new(),
        };
        for (i, name) in names.iter().enumerate() {
            let Some(jail) = jails.jail(i) else { continue };
            let windows: Vec<(Target, Vec<u32>)> = jail.failure_times().collect();
            if !windows.is_empty() {
                saved.jails.insert(name.clone(), windows);
            }
        }
        saved
    }

    /// Addresses saved, over all jails.
    pub fn len(&self) -> usize {
        self.jails.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts the saved failures again in the jails of the same name; returns the
    /// bans they reach.
    pub fn replay(self, jails: &mut Jails, names: &[String], now: Timestamp) -> Vec<Reached> {
        let mut reached = Vec::new();
        for (name, windows) in self.jails {
            let Some(index) = names.iter().position(|n| *n == name) else {
                continue;
            };
            for (target, times) in windows {
                for at in times {
                    let Some(at) = chrono::Utc.timestamp_opt(i64::from(at), 0).single() else {
                        continue;
                    };
                    if let Outcome::Ban {
                        target, failures, ..
                    } = jails.record(index, target.net().addr(), Some(at), now)
                    {
                        reached.push(Reached {
                            jail: name.clone(),
                            target,
                            failures,
                        });
                    }
                }
            }
        }
        reached
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jail::tests::{ip, jail, secs};
    use crate::types::test_time as t0;

    fn names() -> Vec<String> {
        vec!["sshd".into(), "web".into()]
    }

    #[test]
    fn two_failures_before_a_restart_and_one_after_make_a_ban() {
        let mut before = Jails::new(vec![jail(3, 600), jail(5, 600)], 100);
        for t in [0, 10] {
            before.record(0, ip("203.0.113.5"), Some(t0() + secs(t)), t0() + secs(t));
        }
        before.record(1, ip("203.0.113.6"), Some(t0()), t0());
        let saved = SavedWindows::of(&before, &names());
        assert_eq!(saved.len(), 2);
        // Through the bytes it is stored as.
        let bytes = serde_json::to_vec(&saved).expect("encode");
        let saved: SavedWindows = serde_json::from_slice(&bytes).expect("decode");
        let mut after = Jails::new(vec![jail(3, 600), jail(5, 600)], 100);
        let now = t0() + secs(60);
        assert!(saved.replay(&mut after, &names(), now).is_empty());
        let third = after.record(0, ip("203.0.113.5"), Some(now), now);
        assert!(
            matches!(third, Outcome::Ban { failures: 3, .. }),
            "{third:?}"
        );
    }

    #[test]
    fn stale_failures_and_removed_jails_are_not_restored_and_a_lower_maxretry_bans() {
        let mut before = Jails::new(vec![jail(5, 600), jail(5, 600)], 100);
        for t in [0, 10] {
            before.record(0, ip("203.0.113.5"), Some(t0() + secs(t)), t0() + secs(t));
            before.record(1, ip("203.0.113.6"), Some(t0() + secs(t)), t0() + secs(t));
        }
        let saved = SavedWindows::of(&before, &names());
        // Only `sshd` is left, now with maxretry 2; an hour went by for nothing else.
        let mut after = Jails::new(vec![jail(2, 600)], 100);
        let reached = saved.replay(&mut after, &["sshd".to_string()], t0() + secs(30));
        assert_eq!(reached.len(), 1);
        assert_eq!(reached[0].jail, "sshd");
        let saved = SavedWindows::of(&before, &names());
        let mut later = Jails::new(vec![jail(5, 600), jail(5, 600)], 100);
        assert!(saved
            .replay(&mut later, &names(), t0() + secs(3600))
            .is_empty());
        assert_eq!(later.tracked(), 0, "older than findtime");
    }
}
