//! Native recidive: an address banned `maxretry` times, in any jails, within
//! `findtime` is banned in jail `recidive` on all ports. Which targets of a batch of
//! new bans that makes, from each target's recent bans as the store keeps them.
//! Pure: the actor reads the store and makes the bans.

use crate::config::{RecidiveConfig, RECIDIVE};
use crate::store::RecentBan;
use crate::types::{Ban, Target, Timestamp};

/// The targets of `made` that recidive bans at `now`, each once. `recent` gives a
/// target's latest bans (`None` when they cannot be read: no recidive ban then);
/// `banned` says whether recidive bans the target already.
pub fn offenders(
    rule: &RecidiveConfig,
    made: &[Ban],
    now: Timestamp,
    mut recent: impl FnMut(&Target) -> Option<Vec<RecentBan>>,
    banned: impl Fn(&Target) -> bool,
) -> Vec<Target> {
    let since = now - chrono::Duration::from_std(rule.findtime).unwrap_or(chrono::Duration::MAX);
    let mut out: Vec<Target> = Vec::new();
    for ban in made.iter().filter(|b| b.jail != RECIDIVE) {
        if out.contains(&ban.target) || banned(&ban.target) {
            continue;
        }
        let Some(list) = recent(&ban.target) else {
            continue;
        };
        let n = list
            .iter()
            .filter(|b| b.jail != RECIDIVE && b.at >= since)
            .count();
        if n >= rule.maxretry as usize {
            out.push(ban.target);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::test_time as t0;
    use crate::types::BanTime;
    use std::time::Duration;

    fn rule() -> RecidiveConfig {
        RecidiveConfig {
            maxretry: 2,
            findtime: Duration::from_secs(86_400),
            bantime: BanTime::Permanent,
        }
    }

    use crate::types::test_ban as ban;

    fn at(jail: &str, hours_ago: i64) -> RecentBan {
        RecentBan {
            jail: jail.into(),
            at: t0() - chrono::Duration::hours(hours_ago),
        }
    }

    #[test]
    fn bans_within_findtime_in_any_jail_count_and_recidives_own_do_not() {
        let made = [
            ban("sshd", "203.0.113.1"),
            ban("web", "203.0.113.1"),
            ban("sshd", "203.0.113.2"),
            ban("sshd", "203.0.113.3"),
            ban(RECIDIVE, "203.0.113.4"),
        ];
        let recent = |t: &Target| -> Option<Vec<RecentBan>> {
            Some(match t.to_string().as_str() {
                "203.0.113.1" => vec![at("web", 2), at("sshd", 0)],
                "203.0.113.2" => vec![at("sshd", 30), at("sshd", 0)],
                "203.0.113.3" => vec![at(RECIDIVE, 1), at("sshd", 0)],
                _ => vec![at("sshd", 1), at("sshd", 0)],
            })
        };
        let got = offenders(&rule(), &made, t0(), recent, |_| false);
        assert_eq!(
            got,
            vec!["203.0.113.1".parse::<Target>().expect("t")],
            "once, and only .1"
        );
        let none = offenders(&rule(), &made, t0(), recent, |_| true);
        assert!(none.is_empty(), "already banned by recidive");
        let unreadable = offenders(&rule(), &made, t0(), |_| None, |_| false);
        assert!(unreadable.is_empty());
    }
}
