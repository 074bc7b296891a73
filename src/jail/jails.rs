//! All jails' failure windows under one cap, `max_tracked`, and the order in which
//! addresses are forgotten past it: one a spray of new addresses cannot turn against
//! an attacker's earlier failures. Pure, like the rest of `jail`.

use std::collections::VecDeque;
use std::net::IpAddr;

use super::{Counting, Jail, Outcome};
use crate::types::{Target, Timestamp};

/// All jails' failure windows with one cap, `max_tracked`, on the addresses tracked
/// across them. Past it, addresses are forgotten in an order a spray of new addresses
/// cannot turn against an attacker's earlier failures: addresses with a single failure
/// go before any with more (a sprayer pays a line per address it adds, so it cannot
/// cheaply push a two-failure attacker out), and among those, one in the same prefix
/// (IPv4 /24, IPv6 /64) as the address being added goes first (the spray eats itself),
/// else the one whose last failure is oldest.
#[derive(Debug)]
pub struct Jails {
    jails: Vec<Jail>,
    /// (jail, target, seq) of addresses with one failure, in the order they were
    /// touched; entries whose seq is no longer the target's are stale and skipped.
    single: VecDeque<(u32, Target, u64)>,
    /// The same for addresses with two failures or more.
    many: VecDeque<(u32, Target, u64)>,
    seq: u64,
    max_tracked: usize,
    evicted: u64,
    /// The bytes of evidence lines over all jails, kept under `EVIDENCE_BUDGET`.
    evidence_bytes: usize,
    /// Lines not kept as evidence because the budget was spent, since start.
    evidence_dropped: u64,
    evidence_budget: usize,
}

/// At most this many bytes of log lines are kept as evidence of tracked addresses,
/// over all jails; past it, a failure counts without its line (its ban then shows
/// fewer lines), and the line that makes a ban is always kept.
pub const EVIDENCE_BUDGET: usize = 64 << 20;

/// How many of the oldest single-failure addresses are looked at for one in the
/// newcomer's prefix.
const SPRAY_SCAN: usize = 32;

/// The prefix a spray comes from: IPv4 /24, IPv6 /64.
fn spray_prefix(target: &Target) -> ipnet::IpNet {
    let addr = target.net().addr();
    let len = if addr.is_ipv4() { 24 } else { 64 };
    ipnet::IpNet::new(addr, len.min(target.net().prefix_len()))
        .map(|n| n.trunc())
        .unwrap_or(target.net())
}

impl Jails {
    pub fn new(jails: Vec<Jail>, max_tracked: usize) -> Self {
        Jails {
            jails,
            single: VecDeque::new(),
            many: VecDeque::new(),
            seq: 0,
            max_tracked: max_tracked.max(1),
            evicted: 0,
            evidence_bytes: 0,
            evidence_dropped: 0,
            evidence_budget: EVIDENCE_BUDGET,
        }
    }

    /// The same with another evidence budget (tests).
    #[cfg(test)]
    pub fn with_evidence_budget(mut self, bytes: usize) -> Self {
        self.evidence_budget = bytes;
        self
    }

    /// Counts a failure in jail `index`; evicts the least recently failing addresses
    /// when the cap is passed.
    pub fn record(
        &mut self,
        index: usize,
        addr: IpAddr,
        at: Option<Timestamp>,
        now: Timestamp,
    ) -> Outcome {
        self.record_line(index, addr, at, now, None)
    }

    /// `record`, with the failure's log line kept as evidence (within the budget).
    pub fn record_line(
        &mut self,
        index: usize,
        addr: IpAddr,
        at: Option<Timestamp>,
        now: Timestamp,
        line: Option<&str>,
    ) -> Outcome {
        let room = self.evidence_bytes + line.map_or(0, str::len) <= self.evidence_budget;
        let Some(jail) = self.jails.get_mut(index) else {
            return Outcome::Ignored;
        };
        self.seq += 1;
        let before = jail.evidence_bytes();
        let outcome = jail.record_seq(addr, at, now, self.seq, line, room);
        self.evidence_bytes = self.evidence_bytes - before + jail.evidence_bytes();
        if !room && line.is_some() && matches!(outcome, Outcome::Counted { .. }) {
            self.evidence_dropped += 1;
        }
        let mut newcomer = None;
        if let Outcome::Counted { target, failures } = &outcome {
            let entry = (index as u32, *target, self.seq);
            if *failures <= 1 {
                self.single.push_back(entry);
                newcomer = Some(spray_prefix(target));
            } else {
                self.many.push_back(entry);
            }
        }
        while self.tracked() > self.max_tracked {
            if !self.evict_one(newcomer) {
                break;
            }
        }
        if self.single.len() + self.many.len() > 2 * self.tracked() + 1024 {
            self.compact();
        }
        outcome
    }

    /// True when `(jail, target, seq)` is the current entry of that target.
    fn live(&self, (jail, target, seq): &(u32, Target, u64)) -> bool {
        self.jails
            .get(*jail as usize)
            .and_then(|j| j.window.get(target))
            .is_some_and(|t| t.seq == *seq)
    }

    /// Forgets one address, in the order the type's comment gives.
    fn evict_one(&mut self, newcomer: Option<ipnet::IpNet>) -> bool {
        while self.single.front().is_some_and(|e| !self.live(e)) {
            self.single.pop_front();
        }
        let same_prefix = newcomer.and_then(|prefix| {
            self.single
                .iter()
                .enumerate()
                .filter(|(_, e)| self.live(e))
                .take(SPRAY_SCAN)
                .find(|(_, (_, t, _))| spray_prefix(t) == prefix)
                .map(|(i, _)| i)
        });
        let victim = match same_prefix {
            Some(i) => self.single.remove(i),
            None => self.single.pop_front(),
        };
        let victim = victim.or_else(|| loop {
            let e = self.many.pop_front()?;
            if self.live(&e) {
                break Some(e);
            }
        });
        let Some((jail, target, _)) = victim else {
            return false;
        };
        if let Some(j) = self.jails.get_mut(jail as usize) {
            let before = j.evidence_bytes();
            j.forget(&target);
            self.evidence_bytes = self.evidence_bytes - before + j.evidence_bytes();
        }
        self.evicted += 1;
        true
    }

    /// Drops stale entries from the eviction orders.
    fn compact(&mut self) {
        let single = std::mem::take(&mut self.single);
        let many = std::mem::take(&mut self.many);
        self.single = single.into_iter().filter(|e| self.live(e)).collect();
        self.many = many.into_iter().filter(|e| self.live(e)).collect();
    }

    /// Forgets quiet addresses in every jail.
    pub fn expire(&mut self, now: Timestamp) {
        for j in &mut self.jails {
            j.expire(now);
        }
        self.evidence_bytes = self.jails.iter().map(Jail::evidence_bytes).sum();
        self.compact();
    }

    pub fn jail(&self, index: usize) -> Option<&Jail> {
        self.jails.get(index)
    }

    /// The jails of a new configuration (a reload): new jail `i` has `rules[i]`, and
    /// keeps the failure windows of old jail `keep[i]` when that one counted by the
    /// same rules; every other jail starts empty. The eviction order and the eviction
    /// count carry over.
    pub fn reshape(
        self,
        rules: Vec<Counting>,
        keep: &[Option<usize>],
        max_tracked: usize,
    ) -> Jails {
        let mut old: Vec<Option<Jail>> = self.jails.into_iter().map(Some).collect();
        let mut moved_to = vec![None; old.len()];
        let jails = rules
            .into_iter()
            .enumerate()
            .map(|(i, rules)| {
                let kept = keep
                    .get(i)
                    .copied()
                    .flatten()
                    .filter(|&o| {
                        old.get(o)
                            .and_then(Option::as_ref)
                            .is_some_and(|j| j.rules == rules)
                    })
                    .and_then(|o| {
                        moved_to[o] = Some(i as u32);
                        old[o].take()
                    });
                kept.unwrap_or_else(|| Jail::new(rules))
            })
            .collect();
        let moved = |order: VecDeque<(u32, Target, u64)>| -> VecDeque<(u32, Target, u64)> {
            order
                .into_iter()
                .filter_map(|(j, target, seq)| {
                    let to = moved_to.get(j as usize).copied().flatten()?;
                    Some((to, target, seq))
                })
                .collect()
        };
        let mut out = Jails {
            jails,
            single: moved(self.single),
            many: moved(self.many),
            seq: self.seq,
            max_tracked: max_tracked.max(1),
            evicted: self.evicted,
            evidence_bytes: 0,
            evidence_dropped: self.evidence_dropped,
            evidence_budget: self.evidence_budget,
        };
        while out.tracked() > out.max_tracked {
            if !out.evict_one(None) {
                break;
            }
        }
        out.compact();
        out.evidence_bytes = out.jails.iter().map(Jail::evidence_bytes).sum();
        out
    }

    /// Addresses with failures but no ban, over all jails.
    pub fn tracked(&self) -> usize {
        self.jails.iter().map(Jail::tracked).sum()
    }

    /// Addresses forgotten because of the cap, since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The bytes of evidence lines held, and the lines not kept for the budget.
    pub fn evidence(&self) -> (usize, u64) {
        (self.evidence_bytes, self.evidence_dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jail::tests::{ip, jail, secs};
    use crate::types::test_time as t0;

    fn banned_with(outcome: Outcome) -> Vec<String> {
        match outcome {
            Outcome::Ban { matches, .. } => matches,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_ban_takes_the_lines_behind_its_failures_oldest_first() {
        let mut jails = Jails::new(vec![jail(3, 600)], 100);
        let a = ip("203.0.113.1");
        for (i, line) in ["one", "two"].iter().enumerate() {
            jails.record_line(0, a, None, t0() + secs(i as i64), Some(line));
        }
        // Another address's lines are its own.
        jails.record_line(0, ip("203.0.113.2"), None, t0(), Some("other"));
        assert_eq!(
            jails.evidence().0,
            "one".len() + "two".len() + "other".len()
        );
        let matches = banned_with(jails.record_line(0, a, None, t0() + secs(2), Some("three")));
        assert_eq!(matches, ["one", "two", "three"]);
        assert_eq!(
            jails.evidence().0,
            "other".len(),
            "the ban's lines are gone"
        );
    }

    #[test]
    fn evidence_keeps_the_newest_lines_of_the_window_only() {
        let mut jails = Jails::new(vec![jail(3, 60)], 100);
        let a = ip("203.0.113.1");
        jails.record_line(0, a, None, t0(), Some("too old"));
        jails.record_line(0, a, None, t0() + secs(100), Some("b"));
        jails.record_line(0, a, None, t0() + secs(101), Some("c"));
        let matches = banned_with(jails.record_line(0, a, None, t0() + secs(102), Some("d")));
        assert_eq!(matches, ["b", "c", "d"]);
        // Expiry and eviction free the lines of forgotten addresses.
        jails.record_line(0, a, None, t0() + secs(200), Some("e"));
        jails.expire(t0() + secs(1000));
        assert_eq!(jails.evidence().0, 0);
        let mut small = Jails::new(vec![jail(5, 600)], 1);
        small.record_line(0, ip("203.0.113.1"), None, t0(), Some("first"));
        small.record_line(0, ip("203.0.113.2"), None, t0(), Some("second"));
        assert_eq!(
            small.evidence().0,
            "second".len(),
            "the evicted address's line went"
        );
    }

    #[test]
    fn past_the_budget_failures_count_without_lines_but_a_ban_keeps_its_own() {
        let mut jails = Jails::new(vec![jail(2, 600)], 100).with_evidence_budget(10);
        jails.record_line(0, ip("203.0.113.1"), None, t0(), Some("12345678"));
        jails.record_line(0, ip("203.0.113.2"), None, t0(), Some("over the budget"));
        assert_eq!(jails.evidence(), (8, 1));
        let matches = banned_with(jails.record_line(
            0,
            ip("203.0.113.2"),
            None,
            t0(),
            Some("the banning line"),
        ));
        assert_eq!(matches, ["the banning line"]);
    }

    #[test]
    fn max_tracked_evicts_the_least_recently_failing_address_first() {
        let mut jails = Jails::new(vec![jail(5, 600), jail(5, 600)], 3);
        for (j, a) in [(0, "203.0.113.1"), (1, "203.0.113.2"), (0, "203.0.113.3")] {
            jails.record(j, ip(a), None, t0());
        }
        // .1 fails again: now .2 is the least recently failing.
        jails.record(0, ip("203.0.113.1"), None, t0() + secs(1));
        jails.record(1, ip("203.0.113.4"), None, t0() + secs(2));
        assert_eq!((jails.tracked(), jails.evicted()), (3, 1));
        let tracked = |j: usize, a: &str| {
            jails
                .jail(j)
                .and_then(|jail| jail.window.get(&Target::addr(ip(a))))
                .map(|t| t.times.len())
        };
        assert_eq!(tracked(1, "203.0.113.2"), None);
        assert_eq!(tracked(0, "203.0.113.1"), Some(2));
    }

    #[test]
    fn a_spray_of_unique_addresses_stays_at_the_cap() {
        let mut jails = Jails::new(vec![jail(5, 600)], 1000);
        for i in 0..100_000u32 {
            let a = std::net::Ipv6Addr::from(
                0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i),
            );
            jails.record(0, IpAddr::V6(a), None, t0());
        }
        assert_eq!(jails.tracked(), 1000);
        assert_eq!(jails.evicted(), 99_000);
        assert!(
            jails.single.len() + jails.many.len() <= 2 * 1000 + 1024,
            "the eviction order is compacted"
        );
    }

    #[test]
    fn a_reload_keeps_the_windows_of_jails_counting_by_the_same_rules() {
        let mut jails = Jails::new(vec![jail(3, 600), jail(3, 600), jail(3, 600)], 100);
        jails.record(0, ip("203.0.113.1"), None, t0());
        jails.record(1, ip("203.0.113.2"), None, t0());
        jails.record(2, ip("203.0.113.3"), None, t0());
        // Old 0 stays (moved to 1), old 1 is removed, old 2 changes its rules, and a
        // new jail comes first.
        let rules = vec![jail(3, 600).rules, jail(3, 600).rules, jail(5, 600).rules];
        let mut next = jails.reshape(rules, &[None, Some(0), Some(2)], 100);
        assert_eq!(next.tracked(), 1);
        assert_eq!(next.jail(0).map(Jail::tracked), Some(0));
        assert_eq!(next.jail(1).map(Jail::tracked), Some(1));
        assert_eq!(
            next.jail(2).map(Jail::tracked),
            Some(0),
            "changed rules start anew"
        );
        // The kept address is one failure from a ban still, and evictable in order.
        next.record(1, ip("203.0.113.1"), None, t0() + secs(1));
        assert!(matches!(
            next.record(1, ip("203.0.113.1"), None, t0() + secs(2)),
            Outcome::Ban { .. }
        ));
        assert!(next
            .single
            .iter()
            .chain(&next.many)
            .all(|(j, _, _)| (*j as usize) < 3));
    }

    #[test]
    fn a_smaller_cap_at_reload_evicts_the_oldest() {
        let mut jails = Jails::new(vec![jail(5, 600)], 100);
        for (i, a) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
            .iter()
            .enumerate()
        {
            jails.record(0, ip(a), None, t0() + secs(i as i64));
        }
        let next = jails.reshape(vec![jail(5, 600).rules], &[Some(0)], 2);
        assert_eq!((next.tracked(), next.evicted()), (2, 1));
        assert!(next
            .jail(0)
            .is_some_and(|j| !j.window.contains_key(&Target::addr(ip("203.0.113.1")))));
    }

    #[test]
    fn a_spray_past_the_cap_cannot_evict_an_attackers_earlier_failures() {
        // Regression: a spray of new addresses past max_tracked evicted an IPv4
        // attacker's two failures, so its third was not banned.
        for spray_v6 in [false, true] {
            let mut jails = Jails::new(vec![jail(3, 600)], 100);
            let attacker = ip("198.51.100.7");
            jails.record(0, attacker, None, t0());
            jails.record(0, attacker, None, t0() + secs(1));
            // A bystander with one failure, and a spray ten times the cap.
            jails.record(0, ip("198.51.100.200"), None, t0() + secs(2));
            for i in 0..1000u32 {
                let a = if spray_v6 {
                    IpAddr::V6(std::net::Ipv6Addr::from(
                        0x2001_0db8_u128 << 96 | u128::from(i),
                    ))
                } else {
                    IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i * 256))
                };
                jails.record(0, a, None, t0() + secs(3));
            }
            assert_eq!(jails.tracked(), 100);
            assert!(
                matches!(
                    jails.record(0, attacker, None, t0() + secs(4)),
                    Outcome::Ban { .. }
                ),
                "the attacker's two failures survived the spray (v6: {spray_v6})"
            );
        }
        // A spray from one /64 eats itself first: an older single failure elsewhere stays.
        let mut jails = Jails::new(vec![jail(3, 600)], 100);
        jails.record(0, ip("198.51.100.200"), None, t0());
        for i in 0..1000u32 {
            let a = std::net::Ipv6Addr::from(0x2001_0db8_0000_0001_u128 << 64 | u128::from(i));
            jails.record(0, IpAddr::V6(a), None, t0() + secs(1));
        }
        assert!(matches!(
            jails.record(0, ip("198.51.100.200"), None, t0() + secs(2)),
            Outcome::Counted { failures: 2, .. }
        ));
    }
}
