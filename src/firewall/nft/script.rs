//! Writes gaoler's transactions in nft's own syntax, the input of `nft -f -`. One
//! script is one transaction: nft applies all of it or none.
//!
//! Text rather than nft's JSON: for 100,000 elements nft parses the text in about
//! 0.37 s and the JSON in 0.50 s, and writing the text is cheaper too (see
//! ARCHITECTURE.md). Every name written here was checked at config load to be
//! `[A-Za-z][A-Za-z0-9_-]*`, and targets, ports and timeouts are numbers, so nothing
//! needs quoting except the rule comments, which are fixed text plus a jail name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::time::Duration;

use super::plan::{Kind, Plan, SetKey};
use crate::firewall::{Change, Element};
use crate::types::Target;

/// Longest element timeout sent to the kernel: the longest finite ban (10 years).
pub const MAX_TIMEOUT_SECS: u64 = crate::units::MAX_BANTIME.as_secs();
/// nft 1.0.6 refuses a timeout of this many seconds or more written in seconds
/// ("value too large"), and takes it written in days, hours, minutes and seconds.
const SECONDS_LIMIT: u64 = 100_000_000;

/// The set holding `target` for the set group `set` (a jail's name or a shared name).
pub fn set_name(set: &str, target: &Target) -> String {
    SetKey::of(set, target).name()
}

/// Removing the table: adding it first makes the delete succeed when it is gone.
pub fn remove_script(table: &str) -> String {
    format!("add table inet {table}\ndelete table inet {table}\n")
}

/// One transaction that resets the table (add, delete, add: idempotent), creates the
/// chains and verdict maps, and each set `bans` need with its rules and elements.
/// Returns the script and the sets it creates.
pub fn install_script(plan: &Plan, bans: &[Element]) -> (String, Vec<SetKey>) {
    let t = plan.table();
    let mut out = String::with_capacity(256 + bans.len() * 32);
    let _ = writeln!(
        out,
        "add table inet {t}\ndelete table inet {t}\nadd table inet {t}"
    );
    plan.write_skeleton(&mut out);
    // Grouped by (set group, kind) without building a set name per element; the
    // address sets every table of up to EAGER_GROUPS groups holds from the start.
    let mut by_set: BTreeMap<(&str, Kind), Vec<&Element>> = BTreeMap::new();
    for key in plan.eager_sets() {
        by_set.entry(key).or_default();
    }
    for ban in bans {
        by_set
            .entry((&ban.set, Kind::of(&ban.target)))
            .or_default()
            .push(ban);
    }
    let mut created = Vec::with_capacity(by_set.len());
    for ((group, kind), elems) in by_set {
        let key = SetKey {
            group: group.to_string(),
            kind,
        };
        plan.write_set(&mut out, &key);
        write_elements(
            &mut out,
            "add",
            t,
            &key.name(),
            elems.iter().map(|e| (&e.target, e.timeout)),
        );
        created.push(key);
    }
    (out, created)
}

/// `verb element inet <table> <set> { a timeout 5s, b, ... }`; nothing when empty.
fn write_elements<'a>(
    out: &mut String,
    verb: &str,
    table: &str,
    set: &str,
    elems: impl Iterator<Item = (&'a Target, Option<Duration>)>,
) {
    let mut elems = elems.peekable();
    if elems.peek().is_none() {
        return;
    }
    let _ = write!(out, "{verb} element inet {table} {set} {{ ");
    for (i, (target, timeout)) in elems.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{target}");
        if let Some(t) = timeout {
            out.push_str(" timeout ");
            write_timeout(out, timeout_secs(t));
        }
    }
    out.push_str(" }\n");
}

pub fn timeout_secs(d: Duration) -> u64 {
    d.as_secs().clamp(1, MAX_TIMEOUT_SECS)
}

/// `secs` as nft reads it: plain seconds (the common, shorter case), or `3650d` /
/// `1157d9h46m40s` from where nft stops taking plain seconds.
fn write_timeout(out: &mut String, secs: u64) {
    if secs < SECONDS_LIMIT {
        let _ = write!(out, "{secs}s");
        return;
    }
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let _ = write!(out, "{d}d");
    for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
}

/// One transaction for a batch of changes, and the sets it creates. A set not in the
/// kernel yet is created, with its rules, before its first element; an unban from it
/// is left out (nothing is there). New bans are plain adds. Per set, elements that
/// may already be there (renewals, unbans) are first added (so the `delete` cannot
/// fail), then deleted, and then the bans and renewals are added with their
/// timeouts: re-banning portably, since older kernels keep the old timeout on a plain
/// add. The last change for a target wins.
pub fn change_script(plan: &Plan, changes: &[Change]) -> (String, Vec<SetKey>) {
    let mut last: HashMap<(SetKey, Target), &Change> = HashMap::with_capacity(changes.len());
    for c in changes {
        let (set, target) = match c {
            Change::Ban(e) | Change::Renew(e) => (&e.set, &e.target),
            Change::Unban { set, target } => (set, target),
        };
        last.insert((SetKey::of(set, target), *target), c);
    }
    let mut created: BTreeSet<&SetKey> = BTreeSet::new();
    let mut replaced: BTreeMap<&SetKey, Vec<&Target>> = BTreeMap::new();
    let mut added: BTreeMap<&SetKey, Vec<&Element>> = BTreeMap::new();
    for ((key, target), change) in &last {
        let there = plan.has(key);
        match change {
            Change::Unban { .. } if !there => {}
            Change::Unban { .. } => replaced.entry(key).or_default().push(target),
            Change::Ban(e) | Change::Renew(e) => {
                if !there {
                    created.insert(key);
                } else if matches!(change, Change::Renew(_)) {
                    replaced.entry(key).or_default().push(target);
                }
                added.entry(key).or_default().push(e);
            }
        }
    }
    let t = plan.table();
    let mut out = String::with_capacity(64 + changes.len() * 32);
    for key in &created {
        plan.write_set(&mut out, key);
    }
    for (key, targets) in &replaced {
        for verb in ["add", "delete"] {
            write_elements(
                &mut out,
                verb,
                t,
                &key.name(),
                targets.iter().map(|t| (*t, None)),
            );
        }
    }
    for (key, elems) in &added {
        write_elements(
            &mut out,
            "add",
            t,
            &key.name(),
            elems.iter().map(|e| (&e.target, e.timeout)),
        );
    }
    (out, created.into_iter().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::firewall::nft::plan::tests::jail;
    use crate::firewall::nft::plan::EAGER_GROUPS;
    use crate::firewall::Layout;

    fn element(set: &str, target: &str, secs: Option<u64>) -> Element {
        Element {
            set: set.into(),
            target: target.parse().expect("target"),
            timeout: secs.map(Duration::from_secs),
        }
    }

    /// Jail sshd on port 22; nginx and api share the set `web` on 80 and 443.
    fn plan() -> Plan {
        Plan::new(&Layout {
            table: "gaoler".into(),
            priority: -10,
            jails: vec![
                jail("sshd", "sshd", &[(22, 22)], Protocol::Tcp),
                jail("nginx", "web", &[(80, 80), (443, 443)], Protocol::Tcp),
                jail("api", "web", &[(80, 80), (443, 443)], Protocol::Tcp),
            ],
        })
    }

    #[test]
    fn install_resets_the_table_then_builds_chains_maps_and_only_the_sets_bans_need() {
        let bans = [
            element("sshd", "192.0.2.7", Some(3599)),
            element("sshd", "192.0.2.8", None),
            element("sshd", "2001:db8:1:2::/64", Some(9)),
        ];
        let (text, created) = install_script(&plan(), &bans);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..15],
            [
                "add table inet gaoler",
                "delete table inet gaoler",
                "add table inet gaoler",
                "add chain inet gaoler input { type filter hook input priority -10; policy accept; }",
                "add chain inet gaoler ports-0",
                "add chain inet gaoler ports-1",
                "add rule inet gaoler input tcp dport vmap { 22 : jump ports-0, 80 : jump ports-1, 443 : jump ports-1 }",
                "add set inet gaoler sshd-v4 { type ipv4_addr; flags timeout; }",
                "add rule inet gaoler ports-0 ip saddr @sshd-v4 counter drop comment \"gaoler jail sshd\"",
                "add element inet gaoler sshd-v4 { 192.0.2.7 timeout 3599s, 192.0.2.8 }",
                "add set inet gaoler sshd-v6 { type ipv6_addr; flags timeout; }",
                "add rule inet gaoler ports-0 ip6 saddr @sshd-v6 counter drop comment \"gaoler jail sshd\"",
                "add set inet gaoler sshd-n6 { type ipv6_addr; flags interval,timeout; }",
                "add rule inet gaoler ports-0 ip6 saddr @sshd-n6 counter drop comment \"gaoler jail sshd\"",
                "add element inet gaoler sshd-n6 { 2001:db8:1:2::/64 timeout 9s }",
            ]
        );
        // Every group's address sets from the start (a few groups); prefix sets with
        // their first prefix.
        assert_eq!(
            created.iter().map(SetKey::name).collect::<Vec<_>>(),
            ["sshd-v4", "sshd-v6", "sshd-n6", "web-v4", "web-v6"]
        );
        let (empty, created) = install_script(&plan(), &[]);
        assert_eq!(created.len(), 4);
        assert!(!empty.contains("add element"));
        // Past EAGER_GROUPS groups: no set and no rule but the verdict map until a
        // set's first element.
        let many = Plan::new(&Layout {
            table: "gaoler".into(),
            priority: -10,
            jails: (0..=EAGER_GROUPS as u16)
                .map(|i| {
                    let name = format!("j{i}");
                    jail(&name, &name, &[(10_000 + i, 10_000 + i)], Protocol::Tcp)
                })
                .collect(),
        });
        let (empty, created) = install_script(&many, &[]);
        assert!(created.is_empty() && !empty.contains("add set"));
        assert_eq!(empty.matches("add rule").count(), 1);
    }

    #[test]
    fn a_shared_set_is_created_once_and_read_by_every_jail_of_it() {
        let (text, created) = install_script(&plan(), &[element("web", "192.0.2.9", Some(60))]);
        assert_eq!(created.len(), 4, "the address sets of both groups");
        assert_eq!(text.matches("add set inet gaoler web-v4 ").count(), 1);
        assert_eq!(text.matches("saddr @web-v4 ").count(), 2);
        assert!(
            text.contains("comment \"gaoler jail api\"")
                && text.contains("comment \"gaoler jail nginx\"")
        );
    }

    #[test]
    fn the_first_element_of_a_set_creates_it_with_its_rules_in_the_same_transaction() {
        let mut plan = plan();
        let (_, installed) = install_script(&plan, &[element("sshd", "192.0.2.1", Some(60))]);
        plan.created(installed);
        // A prefix by hand in a jail without prefix config: its n4 set comes with it.
        let changes = [
            Change::Ban(element("sshd", "192.0.2.0/24", Some(60))),
            Change::Ban(element("sshd", "192.0.2.2", Some(60))),
        ];
        let (text, created) = change_script(&plan, &changes);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "add set inet gaoler sshd-n4 { type ipv4_addr; flags interval,timeout; }",
                "add rule inet gaoler ports-0 ip saddr @sshd-n4 counter drop comment \"gaoler jail sshd\"",
                "add element inet gaoler sshd-v4 { 192.0.2.2 timeout 60s }",
                "add element inet gaoler sshd-n4 { 192.0.2.0/24 timeout 60s }",
            ]
        );
        assert_eq!(
            created.iter().map(SetKey::name).collect::<Vec<_>>(),
            ["sshd-n4"]
        );
        // Once the transaction landed, the set is there: the next element is a plain add.
        plan.created(created);
        let (text, created) = change_script(
            &plan,
            &[Change::Ban(element("sshd", "198.51.100.0/24", Some(5)))],
        );
        assert_eq!(
            text,
            "add element inet gaoler sshd-n4 { 198.51.100.0/24 timeout 5s }\n"
        );
        assert!(created.is_empty());
    }

    #[test]
    fn unbans_from_a_set_never_created_are_left_out() {
        let plan = plan();
        let (text, created) = change_script(
            &plan,
            &[Change::Unban {
                set: "web".into(),
                target: "192.0.2.7".parse().expect("ip"),
            }],
        );
        assert_eq!((text.as_str(), created.len()), ("", 0));
        // A renewal into a set not there yet creates it, with no add-delete first.
        let (text, _) = change_script(
            &plan,
            &[Change::Renew(element("web", "192.0.2.7", Some(9)))],
        );
        assert!(text.starts_with("add set inet gaoler web-v4 "));
        assert!(!text.contains("delete"));
    }

    #[test]
    fn changes_add_delete_add_per_set_and_the_last_change_wins() {
        let mut plan = plan();
        plan.created([
            SetKey::of("sshd", &"192.0.2.7".parse().expect("ip")),
            SetKey::of("sshd", &"2001:db8::7".parse().expect("ip")),
        ]);
        let t6: Target = "2001:db8::7".parse().expect("ip");
        let changes = vec![
            Change::Unban {
                set: "sshd".into(),
                target: "192.0.2.7".parse().expect("ip"),
            },
            Change::Renew(element("sshd", "192.0.2.7", Some(60))),
            Change::Unban {
                set: "sshd".into(),
                target: t6,
            },
        ];
        let (text, created) = change_script(&plan, &changes);
        assert!(created.is_empty());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "add element inet gaoler sshd-v4 { 192.0.2.7 }",
                "delete element inet gaoler sshd-v4 { 192.0.2.7 }",
                "add element inet gaoler sshd-v6 { 2001:db8::7 }",
                "delete element inet gaoler sshd-v6 { 2001:db8::7 }",
                "add element inet gaoler sshd-v4 { 192.0.2.7 timeout 60s }",
            ]
        );
    }

    #[test]
    fn new_bans_are_one_plain_add_per_set() {
        let mut plan = plan();
        plan.created([
            SetKey::of("sshd", &"192.0.2.1".parse().expect("ip")),
            SetKey::of("sshd", &"192.0.2.0/24".parse().expect("net")),
        ]);
        let changes = [
            Change::Ban(element("sshd", "192.0.2.1", Some(60))),
            Change::Ban(element("sshd", "192.0.2.1", Some(60))),
            Change::Ban(element("sshd", "192.0.2.0/24", Some(60))),
        ];
        let (text, _) = change_script(&plan, &changes);
        assert_eq!(
            text,
            "add element inet gaoler sshd-v4 { 192.0.2.1 timeout 60s }\nadd element inet gaoler sshd-n4 { 192.0.2.0/24 timeout 60s }\n"
        );
        assert_eq!(change_script(&plan, &[]).0, "");
    }

    #[test]
    fn prefixes_go_to_interval_sets_and_addresses_to_plain_ones() {
        assert_eq!(
            set_name("sshd", &"2001:db8:1:2::/64".parse().expect("net")),
            "sshd-n6"
        );
        assert_eq!(
            set_name("sshd", &"2001:db8:1:2::5".parse().expect("ip")),
            "sshd-v6"
        );
        assert_eq!(
            set_name("web", &"198.51.100.0/24".parse().expect("net")),
            "web-n4"
        );
    }

    #[test]
    fn long_timeouts_are_written_in_days_where_nft_refuses_seconds() {
        // Regression: a ten-year ban was sent as `315360000s`, which nft refuses.
        let text = |secs: u64| {
            let mut out = String::new();
            write_timeout(&mut out, secs);
            out
        };
        assert_eq!(text(99_999_999), "99999999s");
        assert_eq!(text(100_000_000), "1157d9h46m40s");
        assert_eq!(text(MAX_TIMEOUT_SECS), "3650d");
        assert_eq!(text(86_400 * 2000 + 61), "2000d1m1s");
    }

    #[test]
    fn timeouts_are_at_least_one_second_and_capped() {
        assert_eq!(timeout_secs(Duration::from_millis(10)), 1);
        assert_eq!(
            timeout_secs(Duration::from_secs(u64::MAX)),
            MAX_TIMEOUT_SECS
        );
    }

    #[test]
    fn removing_tolerates_a_missing_table() {
        assert_eq!(
            remove_script("g"),
            "add table inet g\ndelete table inet g\n"
        );
    }
}
