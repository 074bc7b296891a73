//! The kernel's desired state and the changes that reach it. Per (set, target) the
//! kernel holds one element, as long as the longest ban that the jails of that set
//! hold on the target (current, or saved and waiting for the kernel). Pure: the view
//! reads the book and the pending bans; the actor applies what it returns.

use std::collections::{BTreeMap, HashMap};

use super::book::BanBook;
use super::policy::{set_of, BanPolicy};
use super::retry::PendingBans;
use crate::firewall::{Change, Element};
use crate::types::{Ban, Target, Timestamp};

/// The bans as the kernel should see them.
#[derive(Clone, Copy)]
pub struct Desired<'a> {
    pub jails: &'a BTreeMap<String, BanPolicy>,
    pub book: &'a BanBook,
    pub pending: &'a PendingBans,
    /// Decided bans the store refused: in the kernel while they wait to be saved.
    pub unsaved: &'a PendingBans,
}

impl Desired<'_> {
    /// The element `target` should have in `set` now: the longest of the bans
    /// (current or pending) that the jails of `set` hold on it, leaving out `except`'s.
    pub fn element(
        &self,
        set: &str,
        target: &Target,
        except: Option<&str>,
        now: Timestamp,
    ) -> Option<Element> {
        let mut best = None;
        for (jail, policy) in self.jails {
            if policy.set != set || except == Some(jail.as_str()) {
                continue;
            }
            if let Some(ban) = self.book.get(jail, target) {
                best = longer(best, element(ban, set, now));
            }
            // Pending and unsaved bans are rare: no key is built unless there are some.
            for waiting in [self.pending, self.unsaved] {
                if !waiting.is_empty() {
                    if let Some(ban) = waiting.get(&(jail.clone(), *target)) {
                        best = longer(best, element(ban, set, now));
                    }
                }
            }
        }
        best
    }

    /// True when `jail` holds a ban of `target`, in force or pending.
    pub fn holds(&self, jail: &str, target: &Target) -> bool {
        self.book.get(jail, target).is_some()
            || [self.pending, self.unsaved]
                .iter()
                .any(|w| !w.is_empty() && w.contains_key(&(jail.to_string(), *target)))
    }

    /// The kernel changes that put `bans` in force. Per (set, target): the longest of
    /// the new ban and the bans other jails of the set hold; an element that is there
    /// already is replaced, a new one added.
    pub fn ban_changes(&self, bans: &[Ban], now: Timestamp) -> Vec<Change> {
        let mut wanted: HashMap<(&str, Target), (Element, bool)> =
            HashMap::with_capacity(bans.len());
        for b in bans {
            let set = set_of(self.jails, &b.jail);
            let key = (set, b.target);
            let others = self.element(set, &b.target, Some(&b.jail), now);
            let mut renew = others.is_some() || self.holds(&b.jail, &b.target);
            let mut want = longer(others, element(b, set, now));
            if let Some((prev, prev_renew)) = wanted.remove(&key) {
                renew |= prev_renew;
                want = longer(want, Some(prev));
            }
            if let Some(el) = want {
                wanted.insert(key, (el, renew));
            }
        }
        wanted
            .into_values()
            .map(|(el, renew)| {
                if renew {
                    Change::Renew(el)
                } else {
                    Change::Ban(el)
                }
            })
            .collect()
    }

    /// The kernel change for each (set, target) of `keys` after its bans changed:
    /// renewed to what the bans want, or unbanned.
    pub fn settle<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k (String, Target)>,
        now: Timestamp,
    ) -> Vec<Change> {
        keys.into_iter()
            .map(|(set, target)| match self.element(set, target, None, now) {
                Some(el) => Change::Renew(el),
                None => Change::Unban {
                    set: set.clone(),
                    target: *target,
                },
            })
            .collect()
    }

    /// The (set, target) pairs `bans` occupy in the kernel, each once.
    pub fn set_keys(&self, bans: &[Ban]) -> Vec<(String, Target)> {
        let mut keys: Vec<(String, Target)> = bans
            .iter()
            .map(|b| (set_of(self.jails, &b.jail).to_string(), b.target))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// What the kernel should hold for `bans` under `jails`: per (set, target), the
/// longest ban. Sorted rather than hashed: a restore makes 100,000 of them.
pub fn elements_for(
    jails: &BTreeMap<String, BanPolicy>,
    bans: &[Ban],
    now: Timestamp,
) -> Vec<Element> {
    let mut sets: Vec<&str> = Vec::new();
    let mut live: Vec<(usize, Target, Option<std::time::Duration>)> =
        Vec::with_capacity(bans.len());
    for ban in bans {
        let Some(timeout) = ban.remaining(now) else {
            continue;
        };
        let set = set_of(jails, &ban.jail);
        let index = match sets.iter().position(|s| *s == set) {
            Some(i) => i,
            None => {
                sets.push(set);
                sets.len() - 1
            }
        };
        live.push((index, ban.target, timeout));
    }
    // Per (set, target), the longest first: permanent (`None`) sorts after any time.
    live.sort_unstable_by(|a, b| {
        (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| match (a.2, b.2) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => y.cmp(&x),
        })
    });
    live.dedup_by(|later, first| (later.0, later.1) == (first.0, first.1));
    let names: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    live.into_iter()
        .map(|(set, target, timeout)| Element {
            set: names[set].clone(),
            target,
            timeout,
        })
        .collect()
}

/// The element for `ban` in `set` at `now`, or `None` when it has expired.
fn element(ban: &Ban, set: &str, now: Timestamp) -> Option<Element> {
    ban.remaining(now).map(|timeout| Element {
        set: set.to_string(),
        target: ban.target,
        timeout,
    })
}

/// The one of `a` and `b` that lasts longer (permanent lasts longest).
fn longer(a: Option<Element>, b: Option<Element>) -> Option<Element> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let a_wins = match (a.timeout, b.timeout) {
                (None, _) => true,
                (_, None) => false,
                (Some(x), Some(y)) => x >= y,
            };
            Some(if a_wins { a } else { b })
        }
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::test_time as t0;
    use crate::types::{BanTime, IgnoreList};
    use std::time::Duration;

    fn t(s: &str) -> Target {
        s.parse().expect("target")
    }

    fn ban(jail: &str, ip: &str, secs: Option<i64>) -> Ban {
        Ban {
            target: t(ip),
            jail: jail.into(),
            banned_at: t0(),
            expires_at: secs.map(|s| t0() + chrono::Duration::seconds(s)),
            count: 1,
            origin: None,
        }
    }

    /// Jails sshd and web share the set "shared"; mail has its own.
    fn jails() -> BTreeMap<String, BanPolicy> {
        let p = |set: &str| BanPolicy {
            set: set.into(),
            bantime: BanTime::Finite(Duration::from_secs(60)),
            ignore: IgnoreList::default(),
            increment: None,
        };
        BTreeMap::from([
            ("sshd".to_string(), p("shared")),
            ("web".to_string(), p("shared")),
            ("mail".to_string(), p("mail")),
        ])
    }

    fn secs(el: &Option<Element>) -> Option<Option<u64>> {
        el.as_ref().map(|e| e.timeout.map(|d| d.as_secs()))
    }

    #[test]
    fn a_shared_set_holds_the_longest_ban_and_a_pending_one_counts() {
        let j = jails();
        let mut book = BanBook::default();
        book.insert(ban("sshd", "203.0.113.5", Some(600)));
        let mut pending = PendingBans::new();
        let web = ban("web", "203.0.113.5", None);
        pending.insert(("web".into(), web.target), web);
        let d = Desired {
            jails: &j,
            book: &book,
            pending: &pending,
            unsaved: &PendingBans::new(),
        };
        let now = t0();
        assert_eq!(
            secs(&d.element("shared", &t("203.0.113.5"), None, now)),
            Some(None)
        );
        assert_eq!(
            secs(&d.element("shared", &t("203.0.113.5"), Some("web"), now)),
            Some(Some(600))
        );
        assert_eq!(d.element("mail", &t("203.0.113.5"), None, now), None);
        assert!(d.holds("web", &t("203.0.113.5")) && !d.holds("mail", &t("203.0.113.5")));
        // Expired bans want nothing.
        let later = now + chrono::Duration::seconds(601);
        let empty = PendingBans::new();
        let d = Desired {
            pending: &empty,
            ..d
        };
        assert_eq!(d.element("shared", &t("203.0.113.5"), None, later), None);
    }

    #[test]
    fn new_bans_are_adds_unless_the_set_holds_the_target_and_unbans_settle_to_the_rest() {
        let j = jails();
        let mut book = BanBook::default();
        book.insert(ban("sshd", "203.0.113.5", Some(600)));
        let pending = PendingBans::new();
        let d = Desired {
            jails: &j,
            book: &book,
            pending: &pending,
            unsaved: &PendingBans::new(),
        };
        let now = t0();
        let changes = d.ban_changes(
            &[
                ban("web", "203.0.113.5", Some(60)),
                ban("mail", "203.0.113.6", Some(60)),
                ban("mail", "203.0.113.6", Some(90)),
            ],
            now,
        );
        assert_eq!(
            changes.len(),
            2,
            "one change per (set, target): {changes:?}"
        );
        for c in &changes {
            match c {
                Change::Renew(el) => {
                    assert_eq!(
                        (el.set.as_str(), el.timeout),
                        ("shared", Some(Duration::from_secs(600)))
                    )
                }
                Change::Ban(el) => {
                    assert_eq!(
                        (el.set.as_str(), el.timeout),
                        ("mail", Some(Duration::from_secs(90)))
                    )
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let keys = d.set_keys(&[
            ban("sshd", "203.0.113.5", None),
            ban("web", "203.0.113.5", None),
            ban("mail", "203.0.113.7", None),
        ]);
        assert_eq!(keys.len(), 2);
        let settled = d.settle(&keys, now);
        assert!(settled.contains(&Change::Renew(Element {
            set: "shared".into(),
            target: t("203.0.113.5"),
            timeout: Some(Duration::from_secs(600)),
        })));
        assert!(settled.contains(&Change::Unban {
            set: "mail".into(),
            target: t("203.0.113.7"),
        }));
    }

    #[test]
    fn elements_for_a_restore_keep_one_per_set_and_target_and_drop_expired_bans() {
        let j = jails();
        let now = t0();
        let els = elements_for(
            &j,
            &[
                ban("sshd", "203.0.113.5", Some(600)),
                ban("web", "203.0.113.5", Some(900)),
                ban("mail", "203.0.113.6", Some(0)),
                ban("gone", "203.0.113.7", None),
            ],
            now,
        );
        assert_eq!(els.len(), 2);
        assert!(els
            .iter()
            .any(|e| e.set == "shared" && e.timeout == Some(Duration::from_secs(900))));
        assert!(
            els.iter().any(|e| e.set == "gone" && e.timeout.is_none()),
            "a jail without a policy uses its own name"
        );
    }
}
