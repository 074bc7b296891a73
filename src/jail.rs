//! Per-jail failure windows and ban decisions: an address (or prefix) that fails
//! `maxretry` times within `findtime` is to be banned. Pure: every call takes `now`;
//! no I/O, no tokio. Memory per address is capped at `maxretry` timestamps.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use crate::config::JailConfig;
use crate::types::{IgnoreList, Target, Timestamp};

/// A failure found by a filter, on its way to the jail that counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Index of the jail in the daemon's jail list.
    pub jail: usize,
    pub host: IpAddr,
    /// When the log line says it happened (`None`: now).
    pub time: Option<Timestamp>,
}

/// The counting rules of one jail.
#[derive(Clone, Debug)]
pub struct JailRules {
    pub maxretry: u32,
    pub findtime: Duration,
    pub ignore: IgnoreList,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

impl From<&JailConfig> for JailRules {
    fn from(c: &JailConfig) -> Self {
        JailRules {
            maxretry: c.maxretry,
            findtime: c.findtime,
            ignore: c.ignore.clone(),
            ipv4_prefix: c.ipv4_prefix,
            ipv6_prefix: c.ipv6_prefix,
        }
    }
}

/// What one failure led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The address is in `ignoreip` (or loopback): not counted.
    Ignored,
    /// The failure happened longer than `findtime` ago: not counted.
    Stale,
    /// Counted; `failures` within the window so far.
    Counted { target: Target, failures: u32 },
    /// The threshold is reached: ban `target`. Its failures are forgotten.
    Ban { target: Target, failures: u32 },
}

/// The failure windows of one jail.
#[derive(Debug)]
pub struct Jail {
    rules: JailRules,
    window: HashMap<Target, VecDeque<Timestamp>>,
}

impl Jail {
    pub fn new(rules: JailRules) -> Self {
        Jail {
            rules,
            window: HashMap::new(),
        }
    }

    pub fn rules(&self) -> &JailRules {
        &self.rules
    }

    /// Counts a failure of `addr` that happened at `at` (`None`: now).
    pub fn record(&mut self, addr: IpAddr, at: Option<Timestamp>, now: Timestamp) -> Outcome {
        let target = Target::with_prefix(addr, self.rules.ipv4_prefix, self.rules.ipv6_prefix);
        if self.rules.ignore.covers(&target) {
            return Outcome::Ignored;
        }
        let at = at.map_or(now, |t| t.min(now));
        let horizon = self.horizon(now);
        if at < horizon {
            return Outcome::Stale;
        }
        let maxretry = self.rules.maxretry.max(1) as usize;
        let times = self.window.entry(target).or_default();
        while times.front().is_some_and(|t| *t < horizon) {
            times.pop_front();
        }
        times.push_back(at);
        while times.len() > maxretry {
            times.pop_front();
        }
        let failures = times.len() as u32;
        if times.len() >= maxretry {
            self.window.remove(&target);
            Outcome::Ban { target, failures }
        } else {
            Outcome::Counted { target, failures }
        }
    }

    /// Forgets addresses with no failure inside the window any more.
    pub fn expire(&mut self, now: Timestamp) {
        let horizon = self.horizon(now);
        self.window
            .retain(|_, times| times.back().is_some_and(|t| *t >= horizon));
    }

    /// Forgets the failures of one target (it was banned by other means).
    pub fn forget(&mut self, target: &Target) {
        self.window.remove(target);
    }

    /// Addresses with failures but no ban yet.
    pub fn tracked(&self) -> usize {
        self.window.len()
    }

    fn horizon(&self, now: Timestamp) -> Timestamp {
        now - chrono::Duration::from_std(self.rules.findtime).unwrap_or(chrono::Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::types::test_time as t0;

    fn secs(n: i64) -> chrono::Duration {
        chrono::Duration::seconds(n)
    }

    fn jail(maxretry: u32, findtime: u64) -> Jail {
        Jail::new(JailRules {
            maxretry,
            findtime: Duration::from_secs(findtime),
            ignore: IgnoreList::new(vec!["192.0.2.0/24".parse().expect("net")]),
            ipv4_prefix: 32,
            ipv6_prefix: 128,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn bans_at_maxretry_within_findtime() {
        let mut j = jail(3, 600);
        let a = ip("203.0.113.5");
        assert!(matches!(
            j.record(a, None, t0()),
            Outcome::Counted { failures: 1, .. }
        ));
        assert!(matches!(
            j.record(a, None, t0() + secs(10)),
            Outcome::Counted { failures: 2, .. }
        ));
        match j.record(a, None, t0() + secs(20)) {
            Outcome::Ban { target, failures } => {
                assert_eq!(target.to_string(), "203.0.113.5");
                assert_eq!(failures, 3);
            }
            other => panic!("expected ban, got {other:?}"),
        }
        // Banning forgets the window: counting starts again.
        assert_eq!(j.tracked(), 0);
        assert!(matches!(
            j.record(a, None, t0() + secs(30)),
            Outcome::Counted { failures: 1, .. }
        ));
    }

    #[test]
    fn failures_older_than_findtime_fall_out_of_the_window() {
        let mut j = jail(3, 60);
        let a = ip("203.0.113.5");
        j.record(a, None, t0());
        j.record(a, None, t0() + secs(30));
        // 61 s after the first: only two failures remain in the window.
        assert!(matches!(
            j.record(a, None, t0() + secs(61)),
            Outcome::Counted { failures: 2, .. }
        ));
        assert!(matches!(
            j.record(a, None, t0() + secs(62)),
            Outcome::Ban { .. }
        ));
    }

    #[test]
    fn a_failure_logged_longer_ago_than_findtime_is_stale() {
        let mut j = jail(3, 60);
        let a = ip("203.0.113.5");
        assert_eq!(j.record(a, Some(t0() - secs(61)), t0()), Outcome::Stale);
        assert_eq!(j.tracked(), 0);
        // A timestamp in the future counts as now.
        assert!(matches!(
            j.record(a, Some(t0() + secs(3600)), t0()),
            Outcome::Counted { .. }
        ));
    }

    #[test]
    fn ignored_and_loopback_addresses_are_never_counted() {
        let mut j = jail(1, 60);
        for a in [
            "192.0.2.77",
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:192.0.2.1",
        ] {
            assert_eq!(j.record(ip(a), None, t0()), Outcome::Ignored, "{a}");
        }
        assert!(matches!(
            j.record(ip("198.51.100.1"), None, t0()),
            Outcome::Ban { .. }
        ));
    }

    #[test]
    fn addresses_are_counted_separately_and_mapped_ipv6_is_ipv4() {
        let mut j = jail(2, 60);
        assert!(matches!(
            j.record(ip("203.0.113.5"), None, t0()),
            Outcome::Counted { .. }
        ));
        assert!(matches!(
            j.record(ip("203.0.113.6"), None, t0()),
            Outcome::Counted { .. }
        ));
        assert_eq!(j.tracked(), 2);
        assert!(matches!(
            j.record(ip("::ffff:203.0.113.5"), None, t0()),
            Outcome::Ban { .. }
        ));
    }

    #[test]
    fn expire_drops_quiet_addresses_and_memory_is_capped() {
        let mut j = jail(1000, 60);
        let a = ip("203.0.113.5");
        for i in 0..10 {
            j.record(a, None, t0() + secs(i));
        }
        j.record(ip("203.0.113.6"), None, t0() + secs(50));
        j.expire(t0() + secs(70));
        assert_eq!(j.tracked(), 1);
        let mut small = jail(3, 3600);
        for i in 0..2 {
            small.record(a, None, t0() + secs(i));
        }
        assert!(small
            .window
            .get(&Target::addr(a))
            .is_some_and(|v| v.len() <= 3));
    }
}
