//! Writes gaoler's transactions in nft's own syntax, the input of `nft -f -`. One
//! script is one transaction: nft applies all of it or none.
//!
//! Text rather than nft's JSON: for 100,000 elements nft parses the text in about
//! 0.37 s and the JSON in 0.50 s, and writing the text is cheaper too (see
//! ARCHITECTURE.md). Every name written here was checked at config load to be
//! `[A-Za-z][A-Za-z0-9_-]*`, and targets, ports and timeouts are numbers, so nothing
//! needs quoting except the rule comments, which are fixed text plus a jail name.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::time::Duration;

use super::super::{Change, Element, Layout, Rule};
use crate::config::{Action, Protocol};
use crate::types::Target;

/// Name of gaoler's base chain inside its table.
pub const CHAIN: &str = "input";
/// Longest element timeout sent to the kernel: the longest finite ban (10 years).
pub const MAX_TIMEOUT_SECS: u64 = crate::units::MAX_BANTIME.as_secs();
/// nft 1.0.6 refuses a timeout of this many seconds or more written in seconds
/// ("value too large"), and takes it written in days, hours, minutes and seconds.
const SECONDS_LIMIT: u64 = 100_000_000;

/// The four sets of a jail: single addresses (`v4`, `v6`) and prefixes (`n4`, `n6`),
/// kept apart because nft rejects an address inside an overlapping interval.
pub const SET_KINDS: [(bool, bool); 4] =
    [(true, false), (false, false), (true, true), (false, true)];

pub fn set_suffix(v4: bool, prefix: bool) -> &'static str {
    match (v4, prefix) {
        (true, false) => "v4",
        (false, false) => "v6",
        (true, true) => "n4",
        (false, true) => "n6",
    }
}

/// The set holding `target` for the set group `set` (a jail's name or a shared name).
pub fn set_name(set: &str, target: &Target) -> String {
    format!(
        "{set}-{}",
        set_suffix(target.is_ipv4(), !target.is_single())
    )
}

/// Removing the table: adding it first makes the delete succeed when it is gone.
pub fn remove_script(table: &str) -> String {
    format!("add table inet {table}\ndelete table inet {table}\n")
}

/// One transaction that resets the table (add, delete, add: idempotent), creates the
/// sets, the chain and the rules, and loads `bans`.
pub fn install_script(layout: &Layout, bans: &[Element]) -> String {
    let t = &layout.table;
    let mut out = String::with_capacity(256 + bans.len() * 32);
    let _ = writeln!(
        out,
        "add table inet {t}\ndelete table inet {t}\nadd table inet {t}"
    );
    // One group of sets per set name, however many jails share it.
    let mut groups: Vec<&str> = layout.jails.iter().map(|j| j.set.as_str()).collect();
    groups.sort();
    groups.dedup();
    for group in groups {
        for (v4, prefix) in SET_KINDS {
            let _ = writeln!(
                out,
                "add set inet {t} {group}-{} {{ type {}; flags {}; }}",
                set_suffix(v4, prefix),
                if v4 { "ipv4_addr" } else { "ipv6_addr" },
                if prefix {
                    "interval,timeout"
                } else {
                    "timeout"
                },
            );
        }
    }
    let _ = writeln!(
        out,
        "add chain inet {t} {CHAIN} {{ type filter hook input priority {}; policy accept; }}",
        layout.priority
    );
    for rule in &layout.jails {
        for (v4, prefix) in SET_KINDS {
            let _ = writeln!(
                out,
                "add rule inet {t} {CHAIN} {}",
                rule_text(rule, v4, prefix)
            );
        }
    }
    // Grouped by (set group, kind) without building a set name per element.
    let mut by_set: BTreeMap<(&str, &str), Vec<&Element>> = BTreeMap::new();
    for ban in bans {
        let kind = set_suffix(ban.target.is_ipv4(), !ban.target.is_single());
        by_set.entry((&ban.set, kind)).or_default().push(ban);
    }
    for ((group, kind), elems) in by_set {
        write_elements(
            &mut out,
            "add",
            t,
            &format!("{group}-{kind}"),
            elems.iter().map(|e| (&e.target, e.timeout)),
        );
    }
    out
}

/// The match and verdict of one jail's rule for one of its sets.
fn rule_text(rule: &Rule, v4: bool, prefix: bool) -> String {
    let mut text = format!(
        "{} saddr @{}-{}",
        if v4 { "ip" } else { "ip6" },
        rule.set,
        set_suffix(v4, prefix)
    );
    let proto = match rule.protocol {
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        Protocol::All => None,
    };
    if rule.ports.is_empty() {
        if let Some(p) = proto {
            let _ = write!(text, " meta l4proto {p}");
        }
    } else {
        let ports = rule
            .ports
            .iter()
            .map(|p| {
                if p.first == p.last {
                    p.first.to_string()
                } else {
                    format!("{}-{}", p.first, p.last)
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        match proto {
            Some(p) => {
                let _ = write!(text, " {p} dport {{ {ports} }}");
            }
            None => {
                let _ = write!(text, " meta l4proto {{ tcp, udp }} th dport {{ {ports} }}");
            }
        }
    }
    text.push_str(" counter ");
    text.push_str(match (rule.action, rule.protocol) {
        (Action::Drop, _) => "drop",
        (Action::Reject, Protocol::Tcp) => "reject with tcp reset",
        (Action::Reject, _) => "reject",
    });
    let _ = write!(text, " comment \"gaoler jail {}\"", rule.jail);
    text
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

/// One transaction for a batch of changes. New bans are plain adds. Per set, elements
/// that may already be there (renewals, unbans) are first added (so the `delete`
/// cannot fail), then deleted, and then the bans and renewals are added with their
/// timeouts: re-banning portably, since older kernels keep the old timeout on a plain
/// add. The last change for a target wins.
pub fn change_script(table: &str, changes: &[Change]) -> String {
    let mut last: HashMap<(String, Target), &Change> = HashMap::with_capacity(changes.len());
    for c in changes {
        let (set, target) = match c {
            Change::Ban(e) | Change::Renew(e) => (&e.set, &e.target),
            Change::Unban { set, target } => (set, target),
        };
        last.insert((set_name(set, target), *target), c);
    }
    let mut replaced: BTreeMap<&str, Vec<&Target>> = BTreeMap::new();
    let mut added: BTreeMap<&str, Vec<&Element>> = BTreeMap::new();
    for ((set, target), change) in &last {
        if !matches!(change, Change::Ban(_)) {
            replaced.entry(set).or_default().push(target);
        }
        if let Change::Ban(e) | Change::Renew(e) = change {
            added.entry(set).or_default().push(e);
        }
    }
    let mut out = String::with_capacity(64 + changes.len() * 32);
    for (set, targets) in &replaced {
        for verb in ["add", "delete"] {
            write_elements(
                &mut out,
                verb,
                table,
                set,
                targets.iter().map(|t| (*t, None)),
            );
        }
    }
    for (set, elems) in &added {
        write_elements(
            &mut out,
            "add",
            table,
            set,
            elems.iter().map(|e| (&e.target, e.timeout)),
        );
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::PortRange;

    /// Jail `sshd`'s rule with these ports, protocol and action (also for the
    /// inventory's tests).
    pub(in crate::firewall::nft) fn rule(
        ports: Vec<PortRange>,
        protocol: Protocol,
        action: Action,
    ) -> Rule {
        Rule {
            jail: "sshd".into(),
            set: "sshd".into(),
            ports,
            protocol,
            action,
        }
    }

    fn port(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    fn element(target: &str, secs: Option<u64>) -> Element {
        Element {
            set: "sshd".into(),
            target: target.parse().expect("target"),
            timeout: secs.map(Duration::from_secs),
        }
    }

    #[test]
    fn install_resets_the_table_then_builds_sets_chain_rules_and_elements() {
        let layout = Layout {
            table: "gaoler".into(),
            priority: -10,
            jails: vec![rule(vec![port(22, 22)], Protocol::Tcp, Action::Drop)],
        };
        let bans = [
            element("192.0.2.7", Some(3599)),
            element("192.0.2.8", None),
            element("2001:db8:1:2::/64", Some(9)),
        ];
        let text = install_script(&layout, &bans);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..4],
            [
                "add table inet gaoler",
                "delete table inet gaoler",
                "add table inet gaoler",
                "add set inet gaoler sshd-v4 { type ipv4_addr; flags timeout; }",
            ]
        );
        assert!(lines
            .contains(&"add set inet gaoler sshd-n6 { type ipv6_addr; flags interval,timeout; }"));
        assert!(lines.contains(
            &"add chain inet gaoler input { type filter hook input priority -10; policy accept; }"
        ));
        assert!(lines.contains(
            &"add rule inet gaoler input ip saddr @sshd-v4 tcp dport { 22 } counter drop comment \"gaoler jail sshd\""
        ));
        assert!(lines.contains(&"add rule inet gaoler input ip6 saddr @sshd-n6 tcp dport { 22 } counter drop comment \"gaoler jail sshd\""));
        assert!(lines
            .contains(&"add element inet gaoler sshd-v4 { 192.0.2.7 timeout 3599s, 192.0.2.8 }"));
        assert!(lines.contains(&"add element inet gaoler sshd-n6 { 2001:db8:1:2::/64 timeout 9s }"));
        assert_eq!(text.matches("add rule").count(), 4);
        assert!(!text.contains("sshd-v6 {  }") && !text.contains("element inet gaoler sshd-v6"));
    }

    #[test]
    fn shared_sets_are_created_once_and_read_by_every_jail() {
        let mut web = rule(
            vec![port(80, 80), port(443, 443)],
            Protocol::Tcp,
            Action::Drop,
        );
        web.jail = "nginx".into();
        web.set = "web".into();
        let mut api = web.clone();
        api.jail = "api".into();
        let layout = Layout {
            table: "g".into(),
            priority: 0,
            jails: vec![web, api],
        };
        let text = install_script(&layout, &[]);
        assert_eq!(text.matches("add set inet g web-v4 ").count(), 1);
        assert_eq!(text.matches("saddr @web-v4 ").count(), 2);
        assert!(text.contains("comment \"gaoler jail api\"") && text.contains("{ 80, 443 }"));
    }

    #[test]
    fn protocols_ports_and_verdicts() {
        let all = rule(vec![port(1000, 2000)], Protocol::All, Action::Reject);
        assert_eq!(
            rule_text(&all, false, false),
            "ip6 saddr @sshd-v6 meta l4proto { tcp, udp } th dport { 1000-2000 } counter reject comment \"gaoler jail sshd\""
        );
        let tcp = rule(vec![], Protocol::Tcp, Action::Reject);
        assert_eq!(
            rule_text(&tcp, true, true),
            "ip saddr @sshd-n4 meta l4proto tcp counter reject with tcp reset comment \"gaoler jail sshd\""
        );
        let udp = rule(vec![port(53, 53)], Protocol::Udp, Action::Drop);
        assert!(rule_text(&udp, true, false).contains(" udp dport { 53 } counter drop "));
        let every = rule(vec![], Protocol::All, Action::Drop);
        assert_eq!(
            rule_text(&every, true, false),
            "ip saddr @sshd-v4 counter drop comment \"gaoler jail sshd\""
        );
    }

    #[test]
    fn changes_add_delete_add_per_set_and_the_last_change_wins() {
        let t6: Target = "2001:db8::7".parse().expect("ip");
        let changes = vec![
            Change::Unban {
                set: "sshd".into(),
                target: "192.0.2.7".parse().expect("ip"),
            },
            Change::Renew(element("192.0.2.7", Some(60))),
            Change::Unban {
                set: "sshd".into(),
                target: t6,
            },
        ];
        let text = change_script("gaoler", &changes);
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
        let changes = [
            Change::Ban(element("192.0.2.1", Some(60))),
            Change::Ban(element("192.0.2.1", Some(60))),
            Change::Ban(element("192.0.2.0/24", Some(60))),
        ];
        let text = change_script("gaoler", &changes);
        assert_eq!(
            text,
            "add element inet gaoler sshd-n4 { 192.0.2.0/24 timeout 60s }\nadd element inet gaoler sshd-v4 { 192.0.2.1 timeout 60s }\n"
        );
        assert_eq!(change_script("gaoler", &[]), "");
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
