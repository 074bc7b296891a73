//! Per-jail failure windows and ban decisions: an address (or prefix) that fails
//! `maxretry` times within `findtime` is to be banned, with the log lines behind its
//! failures as the ban's evidence. Pure: every call takes `now`; no I/O, no tokio.
//! Memory is bounded: at most `maxretry` timestamps and lines (each at most
//! [`LINE_MAX`] bytes) per address, at most `max_tracked` addresses over all jails
//! (`jails.rs`: who is forgotten first), and at most `EVIDENCE_BUDGET` bytes of lines.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use crate::config::JailConfig;
use crate::types::{IgnoreList, Target, Timestamp};

mod jails;
mod saved;
pub use jails::Jails;
pub use saved::SavedWindows;

/// The longest evidence line kept, in bytes; a longer one is cut (at a character
/// boundary) and ends with `…`.
pub const LINE_MAX: usize = 1024;

/// A failure found by a filter, on its way to the jail that counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Index of the jail in the daemon's jail list.
    pub jail: usize,
    pub host: IpAddr,
    /// When the log line says it happened (`None`: now).
    pub time: Option<Timestamp>,
    /// The log line, cut at [`LINE_MAX`] ([`evidence_line`]).
    pub line: Option<Box<str>>,
}

/// `line` as evidence: UTF-8 (invalid bytes replaced), at most [`LINE_MAX`] bytes,
/// cut at a character boundary with `…` when longer.
pub fn evidence_line(line: &[u8]) -> Box<str> {
    let head = &line[..line.len().min(LINE_MAX)];
    let mut text = String::from_utf8_lossy(head).into_owned();
    if line.len() > LINE_MAX || text.len() > LINE_MAX {
        while text.len() > LINE_MAX - '…'.len_utf8() {
            text.pop();
        }
        text.push('…');
    }
    text.into_boxed_str()
}

/// The counting rules of one jail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counting {
    pub maxretry: u32,
    pub findtime: Duration,
    pub ignore: IgnoreList,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

impl From<&JailConfig> for Counting {
    fn from(c: &JailConfig) -> Self {
        Counting {
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
    /// The threshold is reached: ban `target`, with the lines behind its failures
    /// (oldest first; fewer than `failures` when some were not kept). Its failures
    /// are forgotten.
    Ban {
        target: Target,
        failures: u32,
        matches: Vec<String>,
    },
}

/// Failure times of one address in seconds since the epoch, oldest first; at most
/// `maxretry` are kept. A few fit inline, so a tracked address costs no allocation.
#[derive(Debug, Clone)]
enum Times {
    Few {
        n: u8,
        t: [u32; Times::INLINE],
    },
    /// Boxed on purpose: this case is rare (maxretry above INLINE), and the box keeps
    /// every map entry at 32 bytes instead of 48, about 35 MB per million addresses.
    #[allow(clippy::box_collection)]
    Many(Box<VecDeque<u32>>),
}

impl Times {
    const INLINE: usize = 5;

    fn new() -> Times {
        Times::Few {
            n: 0,
            t: [0; Times::INLINE],
        }
    }

    fn len(&self) -> usize {
        match self {
            Times::Few { n, .. } => usize::from(*n),
            Times::Many(v) => v.len(),
        }
    }

    fn to_vec(&self) -> Vec<u32> {
        match self {
            Times::Few { n, t } => t[..usize::from(*n)].to_vec(),
            Times::Many(v) => v.iter().copied().collect(),
        }
    }

    fn newest(&self) -> Option<u32> {
        match self {
            Times::Few { n: 0, .. } => None,
            Times::Few { n, t } => Some(t[usize::from(*n) - 1]),
            Times::Many(v) => v.back().copied(),
        }
    }

    /// Drops the times before `horizon`.
    fn prune(&mut self, horizon: u32) {
        match self {
            Times::Few { n, t } => {
                let mut kept = 0;
                for i in 0..usize::from(*n) {
                    if t[i] >= horizon {
                        t[kept] = t[i];
                        kept += 1;
                    }
                }
                *n = kept as u8;
            }
            Times::Many(v) => v.retain(|x| *x >= horizon),
        }
    }

    /// Adds `at`, keeping the newest `keep`.
    fn push(&mut self, at: u32, keep: usize) {
        if let Times::Few { n, t } = self {
            let len = usize::from(*n);
            if len < Times::INLINE {
                t[len] = at;
                *n += 1;
                if len + 1 > keep {
                    t.copy_within(1..len + 1, 0);
                    *n -= 1;
                }
                return;
            }
            *self = Times::Many(Box::new(t.iter().copied().collect()));
        }
        if let Times::Many(v) = self {
            v.push_back(at);
            while v.len() > keep {
                v.pop_front();
            }
        }
    }
}

/// What a jail knows of one address: its recent failures and when it was last touched.
#[derive(Debug)]
struct Tracked {
    times: Times,
    /// Position in the eviction order (see [`Jails`]).
    seq: u64,
}

/// The failure windows of one jail.
#[derive(Debug)]
pub struct Jail {
    rules: Counting,
    window: HashMap<Target, Tracked>,
    /// The lines behind tracked addresses' failures, with their times (seconds),
    /// oldest first: at most `maxretry - 1` per address (the line that bans is the
    /// last). Kept apart from `window`, whose entries stay small.
    evidence: HashMap<Target, VecDeque<(u32, Box<str>)>>,
    /// The bytes of the lines in `evidence`.
    evidence_bytes: usize,
}

fn secs(t: Timestamp) -> u32 {
    t.timestamp().clamp(0, i64::from(u32::MAX)) as u32
}

impl Jail {
    pub fn new(rules: Counting) -> Self {
        Jail {
            rules,
            window: HashMap::new(),
            evidence: HashMap::new(),
            evidence_bytes: 0,
        }
    }

    /// Counts a failure of `addr` that happened at `at` (`None`: now).
    pub fn record(&mut self, addr: IpAddr, at: Option<Timestamp>, now: Timestamp) -> Outcome {
        self.record_seq(addr, at, now, 0, None, false)
    }

    /// `record`, tagging the address with eviction sequence `seq`, and keeping `line`
    /// as evidence when there is `room` (the line of a ban is always taken along).
    fn record_seq(
        &mut self,
        addr: IpAddr,
        at: Option<Timestamp>,
        now: Timestamp,
        seq: u64,
        line: Option<&str>,
        room: bool,
    ) -> Outcome {
        let target = Target::with_prefix(addr, self.rules.ipv4_prefix, self.rules.ipv6_prefix);
        if self.rules.ignore.covers(&target) {
            return Outcome::Ignored;
        }
        let at = at.map_or(now, |t| t.min(now));
        let horizon = self.horizon(now);
        if secs(at) < horizon {
            return Outcome::Stale;
        }
        let maxretry = self.rules.maxretry.max(1) as usize;
        let entry = self.window.entry(target).or_insert_with(|| Tracked {
            times: Times::new(),
            seq,
        });
        entry.seq = seq;
        entry.times.prune(horizon);
        entry.times.push(secs(at), maxretry);
        let failures = entry.times.len() as u32;
        if entry.times.len() >= maxretry {
            self.window.remove(&target);
            let mut matches: Vec<String> = self
                .forget_evidence(&target)
                .into_iter()
                .filter(|(t, _)| *t >= horizon)
                .map(|(_, l)| l.into())
                .collect();
            matches.extend(line.map(str::to_string));
            Outcome::Ban {
                target,
                failures,
                matches,
            }
        } else {
            if let (Some(line), true) = (line, room) {
                let lines = self.evidence.entry(target).or_default();
                while lines.front().is_some_and(|(t, _)| *t < horizon)
                    || lines.len() + 1 >= maxretry
                {
                    match lines.pop_front() {
                        Some((_, old)) => self.evidence_bytes -= old.len(),
                        None => break,
                    }
                }
                self.evidence_bytes += line.len();
                lines.push_back((secs(at), line.into()));
            }
            Outcome::Counted { target, failures }
        }
    }

    /// Drops the evidence of `target`, giving it back.
    fn forget_evidence(&mut self, target: &Target) -> VecDeque<(u32, Box<str>)> {
        let lines = self.evidence.remove(target).unwrap_or_default();
        self.evidence_bytes -= lines.iter().map(|(_, l)| l.len()).sum::<usize>();
        lines
    }

    /// Forgets `target` (the cap of tracked addresses), with its evidence.
    fn forget(&mut self, target: &Target) {
        self.window.remove(target);
        self.forget_evidence(target);
    }

    /// The bytes of evidence lines this jail holds.
    pub fn evidence_bytes(&self) -> usize {
        self.evidence_bytes
    }

    /// Each tracked address with its failure times (seconds since the epoch, oldest
    /// first).
    pub fn failure_times(&self) -> impl Iterator<Item = (Target, Vec<u32>)> + '_ {
        self.window
            .iter()
            .map(|(t, tracked)| (*t, tracked.times.to_vec()))
    }

    /// Forgets addresses with no failure inside the window any more.
    pub fn expire(&mut self, now: Timestamp) {
        let horizon = self.horizon(now);
        self.window
            .retain(|_, t| t.times.newest().is_some_and(|n| n >= horizon));
        let window = &self.window;
        self.evidence.retain(|target, lines| {
            lines.retain(|(t, _)| *t >= horizon);
            !lines.is_empty() && window.contains_key(target)
        });
        self.evidence_bytes = self
            .evidence
            .values()
            .flat_map(|l| l.iter().map(|(_, l)| l.len()))
            .sum();
    }

    /// Addresses with failures but no ban yet.
    pub fn tracked(&self) -> usize {
        self.window.len()
    }

    fn horizon(&self, now: Timestamp) -> u32 {
        secs(now).saturating_sub(self.rules.findtime.as_secs().min(u64::from(u32::MAX)) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::types::test_time as t0;

    pub(super) fn secs(n: i64) -> chrono::Duration {
        chrono::Duration::seconds(n)
    }

    pub(super) fn jail(maxretry: u32, findtime: u64) -> Jail {
        Jail::new(Counting {
            maxretry,
            findtime: Duration::from_secs(findtime),
            ignore: IgnoreList::new(vec!["192.0.2.0/24".parse().expect("net")]),
            ipv4_prefix: 32,
            ipv6_prefix: 128,
        })
    }

    pub(super) fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_evidence_line_is_cut_at_1_kib_on_a_character_boundary() {
        assert_eq!(&*evidence_line(b"Failed password"), "Failed password");
        assert_eq!(&*evidence_line(b"bad \xff byte"), "bad \u{fffd} byte");
        let long = "é".repeat(1000);
        let cut = evidence_line(long.as_bytes());
        assert!(cut.len() <= LINE_MAX && cut.ends_with('…'), "{}", cut.len());
        assert!(cut.starts_with("éé"));
        let exact = "x".repeat(LINE_MAX);
        assert_eq!(&*evidence_line(exact.as_bytes()), exact);
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
            Outcome::Ban {
                target, failures, ..
            } => {
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
            .is_some_and(|v| v.times.len() <= 3));
    }

    #[test]
    fn with_ipv6_prefix_64_the_whole_prefix_counts_and_is_banned() {
        let mut j = Jail::new(Counting {
            ipv6_prefix: 64,
            ..jail(3, 600).rules
        });
        j.record(ip("2001:db8:1:2::1"), None, t0());
        j.record(ip("2001:db8:1:2:ffff::9"), None, t0());
        match j.record(ip("2001:db8:1:2::77"), None, t0()) {
            Outcome::Ban {
                target, failures, ..
            } => {
                assert_eq!(target.to_string(), "2001:db8:1:2::/64");
                assert_eq!(failures, 3);
            }
            other => panic!("expected a /64 ban, got {other:?}"),
        }
        // Another /64 and IPv4 are counted on their own.
        assert!(matches!(
            j.record(ip("2001:db8:1:3::1"), None, t0()),
            Outcome::Counted { failures: 1, .. }
        ));
        assert!(matches!(
            j.record(ip("203.0.113.1"), None, t0()),
            Outcome::Counted { failures: 1, .. }
        ));
    }

    #[test]
    fn a_tracked_address_stays_small() {
        // What a million tracked addresses cost is mostly this, times the map's slack.
        assert!(
            std::mem::size_of::<Tracked>() <= 32,
            "{}",
            std::mem::size_of::<Tracked>()
        );
    }

    #[test]
    fn failure_times_spill_from_inline_storage_and_keep_the_newest() {
        let mut t = Times::new();
        for i in 0..10 {
            t.push(i, 8);
        }
        assert!(matches!(t, Times::Many(_)));
        assert_eq!((t.len(), t.newest()), (8, Some(9)));
        t.prune(5);
        assert_eq!(t.len(), 5);
        let mut few = Times::new();
        for i in 0..5 {
            few.push(i, 3);
        }
        assert!(matches!(few, Times::Few { n: 3, .. }));
        assert_eq!(few.newest(), Some(4));
    }
}
