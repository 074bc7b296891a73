//! What a jail's bans are: its kernel set, its bantime with escalation for repeat
//! offenders (`[bantime_increment]`, counted from the target's history), its ignore
//! list, and the rule that prefixes of one jail never overlap. Pure: the caller
//! brings the history, what the jail already bans, `now` and the random factor.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::messages::Received;
use super::BanError;
use crate::config::Config;
use crate::store::History;
use crate::types::{Ban, BanTime, IgnoreList, Increment, Target, Timestamp};

/// What a jail's bans need from the config.
#[derive(Clone, Debug)]
pub struct BanPolicy {
    /// The set group its bans go to: the jail's name, or a `set` shared with others.
    pub set: String,
    pub bantime: BanTime,
    pub ignore: IgnoreList,
    pub increment: Option<Increment>,
}

/// Policies of the jails `config` runs (`recidive` included when it is on).
pub fn policies(config: &Config) -> BTreeMap<String, BanPolicy> {
    config
        .active_jails()
        .into_iter()
        .map(|j| {
            (
                j.name,
                BanPolicy {
                    set: j.set,
                    bantime: j.bantime,
                    ignore: j.ignore,
                    increment: j.increment,
                },
            )
        })
        .collect()
}

/// The set group `jail`'s bans go to (its own name when it has no policy).
pub fn set_of<'a>(jails: &'a BTreeMap<String, BanPolicy>, jail: &'a str) -> &'a str {
    jails.get(jail).map_or(jail, |p| p.set.as_str())
}

/// What a new ban is asked for.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub jail: &'a str,
    pub target: Target,
    /// An explicit length (`ctl ban --bantime`), taken as given.
    pub bantime: Option<BanTime>,
    /// The address whose failure asked for the ban (`None`: by hand). A prefix that
    /// would cover a protected address is narrowed to it; by hand, it is refused.
    pub addr: Option<IpAddr>,
}

/// The ban `request` makes at `now` under `jails`. `held` are the targets `jail`
/// bans already (current or pending); `history` the target's latest ban in the jail,
/// counted only within `horizon`; `random` in `0..=1` for `rndtime`.
pub fn new_ban<'t>(
    jails: &BTreeMap<String, BanPolicy>,
    request: Request<'_>,
    held: impl IntoIterator<Item = &'t Target>,
    history: Option<History>,
    horizon: Duration,
    now: Timestamp,
    random: f64,
) -> Result<Ban, BanError> {
    let Request {
        jail,
        target,
        bantime,
        addr,
    } = request;
    let policy = jails
        .get(jail)
        .ok_or_else(|| BanError::UnknownJail(jail.to_string()))?;
    // No ban covers loopback, the host's own addresses or an ignored range: a prefix
    // that would is narrowed to the address that failed, or refused when by hand.
    let target = if !target.is_single() && policy.ignore.overlaps(&target) {
        match addr {
            Some(a) => Target::addr(a),
            None => {
                return Err(BanError::Protected {
                    target,
                    jail: jail.to_string(),
                })
            }
        }
    } else {
        target
    };
    no_overlap(jail, target, held)?;
    if policy.ignore.covers(&target) {
        return Err(BanError::Ignored {
            target,
            jail: jail.to_string(),
        });
    }
    // History older than the horizon is forgotten: the count starts again.
    let horizon = chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::MAX);
    let count = history
        .filter(|h| now - h.last_banned_at <= horizon)
        .map_or(0, |h| h.count)
        + 1;
    let bantime = match (bantime, &policy.increment, policy.bantime) {
        (Some(explicit), _, _) => explicit,
        (None, Some(inc), BanTime::Finite(base)) => {
            BanTime::Finite(inc.bantime(base, count, random))
        }
        (None, _, configured) => configured,
    };
    Ok(Ban {
        target,
        jail: jail.to_string(),
        banned_at: now,
        expires_at: bantime.expiry_from(now),
        count,
        origin: None,
    })
}

/// Prefixes of one jail share an interval set: nft refuses overlapping ones.
fn no_overlap<'t>(
    jail: &str,
    target: Target,
    held: impl IntoIterator<Item = &'t Target>,
) -> Result<(), BanError> {
    if target.is_single() {
        return Ok(());
    }
    let overlapping = held.into_iter().copied().find(|t| {
        !t.is_single()
            && *t != target
            && (t.net().contains(&target.net()) || target.net().contains(&t.net()))
    });
    match overlapping {
        Some(existing) => Err(BanError::Overlaps {
            target,
            existing,
            jail: jail.to_string(),
        }),
        None => Ok(()),
    }
}

/// A ban another host decided, as this host applies it: in the jail of the same name,
/// with its origin's start, end and count. Nothing protected here is covered: a
/// prefix over one is refused (the address that failed elsewhere is not known here).
pub fn received_ban<'t>(
    jails: &BTreeMap<String, BanPolicy>,
    received: &Received,
    held: impl IntoIterator<Item = &'t Target>,
    now: Timestamp,
) -> Result<Ban, BanError> {
    let Received {
        jail,
        target,
        banned_at,
        expires_at,
        count,
        origin,
    } = received;
    let policy = jails
        .get(jail)
        .ok_or_else(|| BanError::UnknownJail(jail.clone()))?;
    let (target, jail_name) = (*target, jail.clone());
    if policy.ignore.covers(&target) {
        return Err(BanError::Ignored {
            target,
            jail: jail_name,
        });
    }
    if policy.ignore.overlaps(&target) {
        return Err(BanError::Protected {
            target,
            jail: jail_name,
        });
    }
    no_overlap(jail, target, held)?;
    if expires_at.is_some_and(|end| end <= now) {
        return Err(BanError::Ended {
            target,
            jail: jail_name,
        });
    }
    Ok(Ban {
        target,
        jail: jail_name,
        banned_at: *banned_at,
        expires_at: *expires_at,
        count: *count,
        origin: Some(origin.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::test_time as t0;

    fn t(s: &str) -> Target {
        s.parse().expect("target")
    }

    fn jails() -> BTreeMap<String, BanPolicy> {
        BTreeMap::from([(
            "sshd".to_string(),
            BanPolicy {
                set: "sshd".into(),
                bantime: BanTime::Finite(Duration::from_secs(600)),
                ignore: IgnoreList::new(vec!["192.0.2.0/24".parse().expect("net")]),
                increment: Some(Increment {
                    factor: 2.0,
                    multipliers: vec![],
                    maxtime: None,
                    rndtime: Duration::ZERO,
                }),
            },
        )])
    }

    fn ask(target: &str) -> Request<'static> {
        Request {
            jail: "sshd",
            target: t(target),
            bantime: None,
            addr: None,
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn the_count_grows_from_history_within_the_horizon_and_escalates_the_bantime() {
        let j = jails();
        let first = new_ban(&j, ask("203.0.113.5"), [], None, DAY, t0(), 0.0).expect("ban");
        assert_eq!(
            (first.count, first.expires_at),
            (1, Some(t0() + chrono::Duration::seconds(600)))
        );
        let recent = History {
            count: 2,
            last_banned_at: t0() - chrono::Duration::hours(1),
        };
        let third = new_ban(&j, ask("203.0.113.5"), [], Some(recent), DAY, t0(), 0.0).expect("ban");
        assert_eq!(third.count, 3);
        assert_eq!(
            third.expires_at,
            Some(t0() + chrono::Duration::seconds(2400))
        );
        let old = History {
            last_banned_at: t0() - chrono::Duration::days(2),
            ..recent
        };
        let again = new_ban(&j, ask("203.0.113.5"), [], Some(old), DAY, t0(), 0.0).expect("ban");
        assert_eq!(again.count, 1, "history past the horizon is forgotten");
    }

    #[test]
    fn an_explicit_bantime_wins_and_permanent_never_expires() {
        let j = jails();
        let req = Request {
            bantime: Some(BanTime::Permanent),
            ..ask("203.0.113.5")
        };
        let ban = new_ban(&j, req, [], None, DAY, t0(), 0.0).expect("ban");
        assert_eq!(ban.expires_at, None);
    }

    #[test]
    fn ignored_unknown_and_overlapping_requests_are_refused() {
        let j = jails();
        assert!(matches!(
            new_ban(&j, ask("192.0.2.9"), [], None, DAY, t0(), 0.0),
            Err(BanError::Ignored { .. })
        ));
        assert!(matches!(
            new_ban(&j, ask("127.0.0.1"), [], None, DAY, t0(), 0.0),
            Err(BanError::Ignored { .. })
        ));
        let unknown = Request {
            jail: "nope",
            ..ask("203.0.113.5")
        };
        assert!(matches!(
            new_ban(&j, unknown, [], None, DAY, t0(), 0.0),
            Err(BanError::UnknownJail(_))
        ));
        let held = [t("2001:db8::/48"), t("203.0.113.7")];
        assert!(matches!(
            new_ban(&j, ask("2001:db8:0:1::/64"), &held, None, DAY, t0(), 0.0),
            Err(BanError::Overlaps { .. })
        ));
        // A single address inside a banned prefix goes to the other set: no overlap.
        assert!(new_ban(&j, ask("2001:db8::1"), &held, None, DAY, t0(), 0.0).is_ok());
        assert_eq!(set_of(&j, "sshd"), "sshd");
        assert_eq!(set_of(&j, "other"), "other");
    }

    #[test]
    fn a_prefix_over_a_protected_address_is_narrowed_or_refused() {
        // Regressions: `from ::1` with ipv6_prefix 64 banned ::/64 (and so [::1]); a
        // failure in the /24 of an ignored admin banned the /24; `ctl ban 0.0.0.0/0`
        // blocked 127.0.0.1.
        let j = jails();
        let from = |target: &str, addr: &str| Request {
            addr: Some(addr.parse().expect("ip")),
            ..ask(target)
        };
        let r = |req| new_ban(&j, req, [], None, DAY, t0(), 0.0);
        assert!(matches!(
            r(from("::/64", "::1")),
            Err(BanError::Ignored { .. })
        ));
        let narrowed = r(from("192.0.2.0/23", "192.0.3.77")).expect("narrowed");
        assert_eq!(
            narrowed.target,
            t("192.0.3.77"),
            "the /23 holds ignored 192.0.2.0/24"
        );
        assert!(matches!(
            r(ask("0.0.0.0/0")),
            Err(BanError::Protected { .. })
        ));
        assert!(matches!(r(ask("::/0")), Err(BanError::Protected { .. })));
        assert!(matches!(
            r(ask("127.0.0.0/16")),
            Err(BanError::Protected { .. })
        ));
        let e = r(ask("192.0.0.0/16")).expect_err("by hand");
        assert!(e.is_usage() && e.to_string().contains("protected"), "{e}");
        // A prefix clear of every protected range stays a prefix.
        assert_eq!(
            r(from("203.0.113.0/24", "203.0.113.9"))
                .expect("ban")
                .target,
            t("203.0.113.0/24")
        );
    }

    proptest::proptest! {
        /// Whatever the prefix and the protected ranges, no ban covers one of them.
        #[test]
        fn no_ban_ever_covers_a_protected_address(
            v4 in proptest::bool::ANY,
            bits in proptest::num::u128::ANY,
            len in 0u8..=128,
            protected in proptest::collection::vec((proptest::num::u128::ANY, 0u8..=128), 0..4),
            by_hand in proptest::bool::ANY,
        ) {
            let net = |b: u128, l: u8| -> ipnet::IpNet {
                if v4 {
                    ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(b as u32), l.min(32)).expect("len").trunc().into()
                } else {
                    ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(b), l).expect("len").trunc().into()
                }
            };
            let ignore = IgnoreList::new(protected.iter().map(|&(b, l)| net(b, l)).collect());
            let jails = BTreeMap::from([(
                "sshd".to_string(),
                BanPolicy { set: "sshd".into(), bantime: BanTime::Permanent, ignore: ignore.clone(), increment: None },
            )]);
            let target: Target = net(bits, len).to_string().parse().expect("target");
            // The address that failed: anywhere inside the prefix.
            let addr: std::net::IpAddr = if v4 {
                std::net::Ipv4Addr::from(bits as u32).into()
            } else {
                std::net::Ipv6Addr::from(bits).into()
            };
            let request = Request {
                jail: "sshd",
                target,
                bantime: None,
                addr: (!by_hand).then_some(addr),
            };
            if let Ok(ban) = new_ban(&jails, request, [], None, DAY, t0(), 0.0) {
                proptest::prop_assert!(!ignore.overlaps(&ban.target), "{} covers a protected address", ban.target);
            }
        }
    }
}
