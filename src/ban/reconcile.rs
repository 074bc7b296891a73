//! The reconciler's diff: what to change so that the kernel's elements match the
//! bans. A missing element is added, an unknown one removed, and a timeout that
//! differs from the ban's time left by more than a few seconds is corrected. Pure:
//! the actor reads the kernel's inventory and applies the changes.

use std::collections::HashMap;

use crate::firewall::{Change, Element};
use crate::types::Target;

/// Seconds a kernel timeout may differ from the ban's time left before it is corrected.
pub const TIMEOUT_SLACK_SECS: u64 = 3;

/// The changes that repair the kernel, counted by kind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    pub changes: Vec<Change>,
    pub missing: u64,
    pub unknown: u64,
    pub timeouts: u64,
}

impl Repairs {
    pub fn total(&self) -> u64 {
        self.missing + self.unknown + self.timeouts
    }
}

/// Compares the kernel's `elements` (seconds left by (set, target); `None`: never
/// expires) with `current`, the elements the bans in force want. An element no ban
/// wants (`wanted` says false) is unknown; one a pending ban wants is left alone.
pub fn repairs(
    elements: &HashMap<(String, Target), Option<u64>>,
    current: Vec<Element>,
    wanted: impl Fn(&str, &Target) -> bool,
) -> Repairs {
    let mut r = Repairs::default();
    for el in current {
        match elements.get(&(el.set.clone(), el.target)) {
            None => {
                r.missing += 1;
                r.changes.push(Change::Ban(el));
            }
            Some(kernel) => {
                let disagree = match (el.timeout, kernel) {
                    (None, None) => false,
                    (Some(ours), Some(k)) => k.abs_diff(ours.as_secs()) > TIMEOUT_SLACK_SECS,
                    _ => true,
                };
                if disagree {
                    r.timeouts += 1;
                    r.changes.push(Change::Renew(el));
                }
            }
        }
    }
    for (set, target) in elements.keys() {
        if !wanted(set, target) {
            r.unknown += 1;
            r.changes.push(Change::Unban {
                set: set.clone(),
                target: *target,
            });
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(s: &str) -> Target {
        s.parse().expect("target")
    }

    fn el(ip: &str, secs: Option<u64>) -> Element {
        Element {
            set: "sshd".into(),
            target: t(ip),
            timeout: secs.map(Duration::from_secs),
        }
    }

    #[test]
    fn missing_unknown_and_drifted_elements_are_repaired_and_close_ones_left_alone() {
        let kernel = HashMap::from([
            (("sshd".to_string(), t("203.0.113.1")), Some(600)),
            (("sshd".to_string(), t("203.0.113.2")), Some(598)),
            (("sshd".to_string(), t("203.0.113.3")), Some(100)),
            (("sshd".to_string(), t("203.0.113.4")), Some(50)),
            (("sshd".to_string(), t("203.0.113.9")), None),
        ]);
        let current = vec![
            el("203.0.113.1", Some(600)),
            el("203.0.113.2", Some(600)),
            el("203.0.113.3", None),
            el("203.0.113.5", Some(600)),
        ];
        let banned = [
            "203.0.113.1",
            "203.0.113.2",
            "203.0.113.3",
            "203.0.113.5",
            "203.0.113.4",
        ];
        let r = repairs(&kernel, current, |_, target| {
            banned.iter().any(|b| t(b) == *target)
        });
        assert_eq!((r.missing, r.unknown, r.timeouts), (1, 1, 1));
        assert_eq!(r.total(), 3);
        assert!(r
            .changes
            .contains(&Change::Ban(el("203.0.113.5", Some(600)))));
        assert!(r.changes.contains(&Change::Renew(el("203.0.113.3", None))));
        assert!(r.changes.contains(&Change::Unban {
            set: "sshd".into(),
            target: t("203.0.113.9")
        }));
    }

    #[test]
    fn a_kernel_that_matches_needs_nothing() {
        let kernel = HashMap::from([(("sshd".to_string(), t("203.0.113.1")), None)]);
        let r = repairs(&kernel, vec![el("203.0.113.1", None)], |_, _| true);
        assert_eq!(r, Repairs::default());
    }
}
