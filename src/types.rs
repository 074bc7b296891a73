//! Shared vocabulary of every stage: ban targets (address or prefix), ban times, bans,
//! the clock, and ignore lists. Pure data and arithmetic; no I/O, no tokio.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use crate::units::BanTime;

/// Wall-clock time as stored and shown (RFC 3339 UTC).
pub type Timestamp = DateTime<Utc>;

/// What a ban applies to: one address, or a prefix (`2001:db8:1:2::/64`).
///
/// IPv4-mapped IPv6 addresses are normalised to IPv4, and host bits of a prefix are
/// cleared, so two spellings of the same offender are the same target.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Target(IpNet);

impl Target {
    /// A single address.
    pub fn addr(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        Target(IpNet::from(ip))
    }

    /// The network of `ip` at the given prefix lengths (32 / 128 mean a single address).
    pub fn with_prefix(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> Self {
        let ip = ip.to_canonical();
        let len = if ip.is_ipv4() { v4_prefix } else { v6_prefix };
        match IpNet::new(ip, len) {
            Ok(net) => Target(net.trunc()),
            Err(_) => Target::addr(ip),
        }
    }

    pub fn net(&self) -> IpNet {
        self.0
    }

    /// True when the target is one address rather than a wider prefix.
    pub fn is_single(&self) -> bool {
        self.0.prefix_len() == self.0.max_prefix_len()
    }

    pub fn is_ipv4(&self) -> bool {
        matches!(self.0, IpNet::V4(_))
    }

    /// True when `ip` lies inside this target.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Error for a string that is neither an address nor a prefix.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an IPv4/IPv6 address or prefix")]
pub struct BadTarget(pub String);

impl FromStr for Target {
    type Err = BadTarget;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Target::addr(ip));
        }
        match s.parse::<IpNet>() {
            // `::ffff:1.2.3.0/120` is the IPv4 prefix 1.2.3.0/24; a shorter mapped
            // prefix is not an IPv4 network and stays IPv6.
            Ok(net) => Ok(Target(canonical_net(net).trunc())),
            Err(_) => Err(BadTarget(s.to_string())),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parsed straight from the input's text: no allocation per stored ban.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Target;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IPv4/IPv6 address or prefix")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Target, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

/// `[bantime_increment]`: repeat offenders get longer bans. Ban number `n` of a target
/// in a jail lasts `bantime * multipliers[n-1]` (the last multiplier repeating) or
/// `bantime * factor^(n-1)`, capped at `maxtime`, plus up to `rndtime` random seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Increment {
    pub factor: f64,
    pub multipliers: Vec<f64>,
    pub maxtime: Option<Duration>,
    pub rndtime: Duration,
}

impl Increment {
    /// How long ban number `count` (1 for the first) lasts; `random` is in `0..=1`.
    pub fn bantime(&self, base: Duration, count: u32, random: f64) -> Duration {
        let n = count.max(1) as usize;
        let multiplier = match self.multipliers.as_slice() {
            [] => self.factor.powi(i32::try_from(n - 1).unwrap_or(i32::MAX)),
            list => list[(n - 1).min(list.len() - 1)],
        };
        let secs = base.as_secs_f64() * multiplier;
        let cap = self.maxtime.map_or(f64::MAX, |m| m.as_secs_f64());
        let secs = if secs.is_finite() { secs.min(cap) } else { cap };
        // Never past the longest finite ban (so the arithmetic cannot overflow and the
        // kernel takes the timeout), random seconds included.
        let longest = crate::units::MAX_BANTIME.as_secs_f64();
        let extra = (self.rndtime.as_secs_f64() * random.clamp(0.0, 1.0)).round();
        Duration::from_secs((secs.clamp(0.0, longest) + extra).min(longest) as u64)
    }
}

/// One ban as the store keeps it and `ctl banned` shows it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Ban {
    pub target: Target,
    pub jail: String,
    pub banned_at: Timestamp,
    /// `None` for a permanent ban.
    pub expires_at: Option<Timestamp>,
    /// How many times this target has been banned in this jail, this ban included.
    pub count: u32,
    /// The fleet host that decided the ban; `None` for this host's own (and for
    /// records written before the fleet existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A decision this host announces to its fleet: kept in the store's outbox, in the
/// commit that makes it, until the publisher has published it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Announcement {
    pub kind: AnnouncementKind,
    pub ban: Ban,
    /// When it was decided: the ban's start, or the moment it was lifted.
    pub at: Timestamp,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnouncementKind {
    Ban,
    Unban,
}

/// Where a ban received from the fleet was decided.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Origin {
    /// The deciding host's name.
    pub host: String,
    /// Its public key (base64): only a decision signed with it lifts the ban.
    pub key: String,
    /// The ban's id at its origin.
    pub id: String,
}

impl Ban {
    /// Time left at `now`, whole seconds rounded down so a restore never extends a ban.
    /// `Some(None)` is a permanent ban; `None` means the ban has expired.
    pub fn remaining(&self, now: Timestamp) -> Option<Option<Duration>> {
        match self.expires_at {
            None => Some(None),
            Some(end) => {
                let secs = (end - now).num_seconds();
                (secs >= 1).then(|| Some(Duration::from_secs(secs as u64)))
            }
        }
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.remaining(now).is_none()
    }
}

/// Where "now" comes from. The daemon uses [`SystemClock`]; tests use one driven by
/// tokio's paused time so that expiry can be tested without waiting.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Utc::now()
    }
}

/// A wall clock that advances with tokio's (possibly paused) time; for tests.
pub struct TokioClock {
    base_wall: Timestamp,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base_wall: Timestamp) -> Self {
        TokioClock {
            base_wall,
            base: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = tokio::time::Instant::now() - self.base;
        self.base_wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

/// Addresses and networks that are never banned. Loopback is always in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IgnoreList {
    nets: Vec<IpNet>,
}

impl IgnoreList {
    pub fn new(nets: Vec<IpNet>) -> Self {
        let nets = nets.into_iter().map(|n| canonical_net(n).trunc()).collect();
        IgnoreList { nets }
    }

    /// True when `ip` (or all of `target`) must not be banned.
    pub fn covers(&self, target: &Target) -> bool {
        let net = target.net();
        if net.addr().is_loopback() {
            return true;
        }
        self.nets.iter().any(|n| n.contains(&net))
    }

    /// True when `target` would cover any address this list protects: loopback, or
    /// any address of its networks (a prefix ban that contains one, or lies in one).
    pub fn overlaps(&self, target: &Target) -> bool {
        let net = target.net();
        let loopback: IpNet = match net {
            IpNet::V4(_) => {
                IpNet::V4(ipnet::Ipv4Net::new(std::net::Ipv4Addr::LOCALHOST, 8).unwrap_or_default())
            }
            IpNet::V6(_) => IpNet::V6(
                ipnet::Ipv6Net::new(std::net::Ipv6Addr::LOCALHOST, 128).unwrap_or_default(),
            ),
        };
        std::iter::once(&loopback)
            .chain(&self.nets)
            .any(|n| n.contains(&net) || net.contains(n))
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// This list plus `more` (the host's own addresses, for `ignoreself`).
    pub fn with(&self, more: impl IntoIterator<Item = IpAddr>) -> IgnoreList {
        let mut nets = self.nets.clone();
        nets.extend(more.into_iter().map(|ip| IpNet::from(ip.to_canonical())));
        IgnoreList::new(nets)
    }
}

/// `::ffff:a.b.c.d/len` as the IPv4 network it means.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net)
            }
            _ => net,
        },
        v4 => v4,
    }
}

/// A fixed moment for unit tests: 2026-11-21 08:00:00 UTC.
#[cfg(test)]
pub(crate) fn test_time() -> Timestamp {
    use chrono::TimeZone;
    Utc.with_ymd_and_hms(2026, 11, 21, 8, 0, 0)
        .single()
        .expect("valid time")
}

/// A permanent ban of `ip` in `jail` made at [`test_time`], the first: for unit tests.
#[cfg(test)]
pub(crate) fn test_ban(jail: &str, ip: &str) -> Ban {
    Ban {
        target: ip.parse().expect("target"),
        jail: jail.into(),
        banned_at: test_time(),
        expires_at: None,
        count: 1,
        origin: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        s.parse().expect("valid target")
    }

    #[test]
    fn mapped_ipv6_is_normalised_to_ipv4() {
        assert_eq!(t("::ffff:192.0.2.7"), t("192.0.2.7"));
        assert_eq!(t("::ffff:192.0.2.0/120").to_string(), "192.0.2.0/24");
        assert_eq!(t("192.0.2.7").to_string(), "192.0.2.7");
    }

    #[test]
    fn prefix_targets_clear_host_bits_and_show_as_cidr() {
        let ip: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let target = Target::with_prefix(ip, 32, 64);
        assert_eq!(target.to_string(), "2001:db8:1:2::/64");
        assert!(!target.is_single());
        assert!(target.contains("2001:db8:1:2::99".parse().expect("ip")));
        let v4 = Target::with_prefix("192.0.2.7".parse().expect("ip"), 32, 64);
        assert!(v4.is_single());
    }

    #[test]
    fn a_mapped_prefix_shorter_than_96_is_not_all_of_ipv4() {
        // Regression: this once parsed as 0.0.0.0/0, so `ctl ban` would ban every address.
        let t = t("::ffff:1.2.3.4/64");
        assert!(!t.is_ipv4());
        assert_eq!(t.to_string(), "::/64");
    }

    #[test]
    fn garbage_is_not_a_target() {
        assert!("1.2.3".parse::<Target>().is_err());
        assert!("evil.example".parse::<Target>().is_err());
    }

    #[test]
    fn remaining_time_rounds_down_and_expires() {
        let now = Utc::now();
        let ban = Ban {
            target: t("192.0.2.1"),
            jail: "sshd".into(),
            banned_at: now,
            expires_at: Some(now + chrono::Duration::milliseconds(10_900)),
            count: 1,
            origin: None,
        };
        assert_eq!(ban.remaining(now), Some(Some(Duration::from_secs(10))));
        assert!(ban.is_expired(now + chrono::Duration::milliseconds(10_100)));
        let permanent = Ban {
            expires_at: None,
            ..ban
        };
        assert_eq!(permanent.remaining(now), Some(None));
    }

    #[test]
    fn escalation_by_factor_and_multipliers_is_capped_and_randomised() {
        let hour = Duration::from_secs(3600);
        let inc = Increment {
            factor: 2.0,
            multipliers: vec![],
            maxtime: Some(Duration::from_secs(5 * 3600)),
            rndtime: Duration::ZERO,
        };
        let hours = |n| inc.bantime(hour, n, 0.0).as_secs() / 3600;
        assert_eq!([hours(1), hours(2), hours(3), hours(4)], [1, 2, 4, 5]);
        assert_eq!(
            inc.bantime(hour, 400, 0.0),
            Duration::from_secs(5 * 3600),
            "no overflow"
        );
        let listed = Increment {
            multipliers: vec![1.0, 3.0, 10.0],
            maxtime: None,
            ..inc.clone()
        };
        let hours = |n| listed.bantime(hour, n, 0.0).as_secs() / 3600;
        assert_eq!([hours(1), hours(2), hours(3), hours(9)], [1, 3, 10, 10]);
        let rnd = Increment {
            rndtime: Duration::from_secs(100),
            ..inc
        };
        assert_eq!(rnd.bantime(hour, 1, 0.5), Duration::from_secs(3650));
        assert_eq!(rnd.bantime(hour, 1, 1.0), Duration::from_secs(3700));
    }

    #[test]
    fn ignore_list_covers_networks_and_loopback() {
        let list = IgnoreList::new(vec![
            "192.0.2.0/24".parse().expect("net"),
            "::ffff:198.51.100.0/120".parse().expect("net"),
        ]);
        assert!(list.covers(&t("192.0.2.200")));
        assert!(list.covers(&t("198.51.100.3")));
        assert!(list.covers(&t("127.0.0.1")));
        assert!(list.covers(&t("::1")));
        assert!(!list.covers(&t("203.0.113.1")));
        // A prefix is ignored only when all of it is inside an ignored network.
        assert!(!list.covers(&t("192.0.0.0/16")));
    }
}
