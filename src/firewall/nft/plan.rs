//! What gaoler's table holds, as the nft backend builds it (pure, no I/O). Jails that
//! name ports have their rules in dispatch chains that one verdict map per protocol
//! jumps to, so a packet meets only the rules of the jails guarding its port. A set,
//! with the rules that read it, is created in the transaction that puts its first
//! element in, so a jail without bans costs the kernel nothing (ARCHITECTURE.md has
//! the measurements). `script.rs` writes from the plan; `inventory.rs` checks it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use crate::config::{Action, Protocol};
use crate::firewall::{Layout, Rule};
use crate::types::Target;

/// Name of gaoler's base chain inside its table.
pub const CHAIN: &str = "input";
/// Up to this many set groups, every group's address sets are made with the table
/// (2,000 sets: 0.05 s to make, 7 ms added to a change); past it, with their first
/// element.
pub const EAGER_GROUPS: usize = 1_000;
/// The dispatch chains are `ports-0`, `ports-1`, ...
const DISPATCH: &str = "ports-";

/// The four kinds of set of a set group: single addresses (`v4`, `v6`, `flags
/// timeout`) and prefixes (`n4`, `n6`, `flags interval,timeout`), kept apart because
/// nft rejects an address inside an overlapping interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    V4,
    V6,
    N4,
    N6,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::V4, Kind::V6, Kind::N4, Kind::N6];

    /// The kind of set that holds `target`.
    pub fn of(target: &Target) -> Kind {
        match (target.is_ipv4(), target.is_single()) {
            (true, true) => Kind::V4,
            (false, true) => Kind::V6,
            (true, false) => Kind::N4,
            (false, false) => Kind::N6,
        }
    }

    pub fn suffix(self) -> &'static str {
        match self {
            Kind::V4 => "v4",
            Kind::V6 => "v6",
            Kind::N4 => "n4",
            Kind::N6 => "n6",
        }
    }

    /// `ip` or `ip6`: the family a rule reading this kind matches.
    fn family(self) -> &'static str {
        match self {
            Kind::V4 | Kind::N4 => "ip",
            Kind::V6 | Kind::N6 => "ip6",
        }
    }

    /// The set's type and flags, as `add set` takes them.
    fn declaration(self) -> &'static str {
        match self {
            Kind::V4 => "type ipv4_addr; flags timeout;",
            Kind::V6 => "type ipv6_addr; flags timeout;",
            Kind::N4 => "type ipv4_addr; flags interval,timeout;",
            Kind::N6 => "type ipv6_addr; flags interval,timeout;",
        }
    }
}

/// One kernel set: a set group (a jail's name, or a `set` jails share) and a kind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetKey {
    pub group: String,
    pub kind: Kind,
}

impl SetKey {
    /// The set of group `group` that holds `target`.
    pub fn of(group: &str, target: &Target) -> SetKey {
        SetKey {
            group: group.to_string(),
            kind: Kind::of(target),
        }
    }

    /// `<group>-<kind>`: `sshd-v4`, `web-n6`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.group, self.kind.suffix())
    }

    /// The key a set name stands for (`sshd-v4`), if it is one of gaoler's names.
    fn parse(name: &str) -> Option<SetKey> {
        let (group, suffix) = name.rsplit_once('-')?;
        let kind = Kind::ALL.into_iter().find(|k| k.suffix() == suffix)?;
        Some(SetKey {
            group: group.to_string(),
            kind,
        })
    }
}

/// A verdict map entry: ports `first..=last` jump to dispatch chain `chain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    first: u16,
    last: u16,
    chain: usize,
}

/// gaoler's table for one layout: its chains and verdict maps, which rules read each
/// set, and the sets created so far.
#[derive(Debug)]
pub struct Plan {
    pub layout: Layout,
    /// Per jail of the layout, the dispatch chains its rules go in; none: the base
    /// chain (a jail on all ports).
    chains_of: Vec<Vec<usize>>,
    /// The verdict maps: TCP's entries, then UDP's.
    maps: [Vec<Entry>; 2],
    chains: usize,
    /// The jails of each set group, as indices into `layout.jails`.
    groups: BTreeMap<String, Vec<usize>>,
    /// The sets in the kernel, each with its rules.
    created: BTreeSet<SetKey>,
}

impl Plan {
    /// The plan for `layout`, with no set created yet.
    pub fn new(layout: &Layout) -> Plan {
        let (chains_of, maps, chains) = dispatch(&layout.jails);
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, rule) in layout.jails.iter().enumerate() {
            groups.entry(rule.set.clone()).or_default().push(i);
        }
        Plan {
            layout: layout.clone(),
            chains_of,
            maps,
            chains,
            groups,
            created: BTreeSet::new(),
        }
    }

    pub fn table(&self) -> &str {
        &self.layout.table
    }

    /// The sets made with the table even before their first element: each group's
    /// address sets (`-v4`, `-v6`), as the contract has them, while there are at most
    /// `EAGER_GROUPS` groups. Past that (thousands of jails) every set waits for its
    /// first element: the kernel makes sets in time quadratic in their number, and nft
    /// reads every set before it changes or lists one (ARCHITECTURE.md).
    pub fn eager_sets(&self) -> Vec<(&str, Kind)> {
        if self.groups.len() > EAGER_GROUPS {
            return Vec::new();
        }
        self.groups
            .keys()
            .flat_map(|g| [(g.as_str(), Kind::V4), (g.as_str(), Kind::V6)])
            .collect()
    }

    /// The plan for `layout` with every set any run may have made: to read a table
    /// this run did not build (a store rebuilt from the kernel at start).
    pub fn with_every_set(layout: &Layout) -> Plan {
        let mut plan = Plan::new(layout);
        let keys: Vec<SetKey> = plan
            .groups
            .keys()
            .flat_map(|group| {
                Kind::ALL.map(|kind| SetKey {
                    group: group.clone(),
                    kind,
                })
            })
            .collect();
        plan.created(keys);
        plan
    }

    /// True when `key`'s set and its rules are in the kernel.
    pub fn has(&self, key: &SetKey) -> bool {
        self.created.contains(key)
    }

    /// Notes the sets (with their rules) that a transaction which succeeded created.
    pub fn created(&mut self, keys: impl IntoIterator<Item = SetKey>) {
        self.created.extend(keys);
    }

    /// The created set called `name`.
    pub fn created_set(&self, name: &str) -> Option<SetKey> {
        SetKey::parse(name).filter(|k| self.created.contains(k))
    }

    pub fn created_count(&self) -> usize {
        self.created.len()
    }

    /// The base chain and the dispatch chains.
    pub fn chain_names(&self) -> impl Iterator<Item = String> + '_ {
        std::iter::once(CHAIN.to_string()).chain((0..self.chains).map(|c| format!("{DISPATCH}{c}")))
    }

    /// The rules the kernel holds: the verdict maps, and those reading created sets.
    pub fn rule_count(&self) -> usize {
        let maps = self.maps.iter().filter(|m| !m.is_empty()).count();
        let reading: usize = self
            .created
            .iter()
            .flat_map(|k| self.groups.get(&k.group).into_iter().flatten())
            .map(|&j| self.chains_of[j].len().max(1))
            .sum();
        maps + reading
    }

    /// What an empty table holds: the base chain on the input hook, the dispatch
    /// chains and a verdict map per protocol that jails name ports of.
    pub fn write_skeleton(&self, out: &mut String) {
        let t = self.table();
        let _ = writeln!(
            out,
            "add chain inet {t} {CHAIN} {{ type filter hook input priority {}; policy accept; }}",
            self.layout.priority
        );
        for c in 0..self.chains {
            let _ = writeln!(out, "add chain inet {t} {DISPATCH}{c}");
        }
        for (proto, entries) in ["tcp", "udp"].into_iter().zip(&self.maps) {
            if entries.is_empty() {
                continue;
            }
            let _ = write!(out, "add rule inet {t} {CHAIN} {proto} dport vmap {{ ");
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if e.first == e.last {
                    let _ = write!(out, "{}", e.first);
                } else {
                    let _ = write!(out, "{}-{}", e.first, e.last);
                }
                let _ = write!(out, " : jump {DISPATCH}{}", e.chain);
            }
            out.push_str(" }\n");
        }
    }

    /// `add set` for `key`, then a rule per jail reading it in each chain the jail's
    /// ports dispatch to (or in the base chain, for a jail on all ports).
    pub fn write_set(&self, out: &mut String, key: &SetKey) {
        let t = self.table();
        let set = key.name();
        let _ = writeln!(
            out,
            "add set inet {t} {set} {{ {} }}",
            key.kind.declaration()
        );
        let family = key.kind.family();
        for &j in self.groups.get(&key.group).into_iter().flatten() {
            let rule = &self.layout.jails[j];
            let tail = format!(
                "{family} saddr @{set} counter {} comment \"gaoler jail {}\"",
                verdict(rule),
                rule.jail
            );
            if self.chains_of[j].is_empty() {
                let proto = match rule.protocol {
                    Protocol::Tcp => "meta l4proto tcp ",
                    Protocol::Udp => "meta l4proto udp ",
                    Protocol::All => "",
                };
                let _ = writeln!(out, "add rule inet {t} {CHAIN} {proto}{tail}");
            }
            for c in &self.chains_of[j] {
                let _ = writeln!(out, "add rule inet {t} {DISPATCH}{c} {tail}");
            }
        }
    }
}

/// What a jail's rule does with a banned packet.
fn verdict(rule: &Rule) -> &'static str {
    match (rule.action, rule.protocol) {
        (Action::Drop, _) => "drop",
        (Action::Reject, Protocol::Tcp) => "reject with tcp reset",
        (Action::Reject, _) => "reject",
    }
}

/// Splits the ports of the jails that name some, per protocol, into ranges guarded by
/// the same jails; each distinct group of jails gets one dispatch chain. Returns the
/// chains of each jail, the verdict maps (TCP, UDP) and the number of chains.
fn dispatch(jails: &[Rule]) -> (Vec<Vec<usize>>, [Vec<Entry>; 2], usize) {
    let mut chain_of: HashMap<Vec<usize>, usize> = HashMap::new();
    let mut maps: [Vec<Entry>; 2] = Default::default();
    for (map, proto) in maps.iter_mut().zip([Protocol::Tcp, Protocol::Udp]) {
        // Where each of a jail's ranges starts (+1) and where it has ended (-1, at the
        // port after its last).
        let mut edges: Vec<(u32, usize, i32)> = Vec::new();
        for (j, rule) in jails.iter().enumerate() {
            if rule.protocol != proto && rule.protocol != Protocol::All {
                continue;
            }
            for r in &rule.ports {
                edges.push((u32::from(r.first), j, 1));
                edges.push((u32::from(r.last) + 1, j, -1));
            }
        }
        edges.sort_unstable();
        // The jails guarding the ports from the current edge on (a jail may list
        // overlapping ranges of its own: counted).
        let mut guarding: BTreeMap<usize, i32> = BTreeMap::new();
        let mut i = 0;
        while i < edges.len() {
            let at = edges[i].0;
            while let Some(&(_, j, step)) = edges.get(i).filter(|e| e.0 == at) {
                let n = guarding.entry(j).or_insert(0);
                *n += step;
                if *n == 0 {
                    guarding.remove(&j);
                }
                i += 1;
            }
            if guarding.is_empty() {
                continue;
            }
            // A range that started has an edge after it, where it ends.
            let Some(&(next, _, _)) = edges.get(i) else {
                break;
            };
            let (first, last) = (at as u16, (next - 1) as u16);
            let cover: Vec<usize> = guarding.keys().copied().collect();
            let fresh = chain_of.len();
            let chain = *chain_of.entry(cover).or_insert(fresh);
            match map.last_mut() {
                Some(e) if e.chain == chain && u32::from(e.last) + 1 == at => e.last = last,
                _ => map.push(Entry { first, last, chain }),
            }
        }
    }
    let mut chains_of = vec![Vec::new(); jails.len()];
    for (cover, &chain) in &chain_of {
        for &j in cover {
            chains_of[j].push(chain);
        }
    }
    for chains in &mut chains_of {
        chains.sort_unstable();
    }
    (chains_of, maps, chain_of.len())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::PortRange;

    pub(in crate::firewall::nft) fn jail(
        name: &str,
        set: &str,
        ports: &[(u16, u16)],
        protocol: Protocol,
    ) -> Rule {
        Rule {
            jail: name.into(),
            set: set.into(),
            ports: ports
                .iter()
                .map(|&(first, last)| PortRange { first, last })
                .collect(),
            protocol,
            action: Action::Drop,
        }
    }

    fn layout(jails: Vec<Rule>) -> Layout {
        Layout {
            table: "g".into(),
            priority: -10,
            jails,
        }
    }

    fn entries(plan: &Plan, map: usize) -> Vec<(u16, u16, usize)> {
        plan.maps[map]
            .iter()
            .map(|e| (e.first, e.last, e.chain))
            .collect()
    }

    #[test]
    fn overlapping_ports_are_split_so_each_range_jumps_to_the_jails_guarding_it() {
        let plan = Plan::new(&layout(vec![
            jail("sshd", "sshd", &[(22, 22)], Protocol::Tcp),
            jail("wide", "wide", &[(20, 30), (25, 25)], Protocol::Tcp),
            jail("dns", "dns", &[(53, 53)], Protocol::All),
            jail("web", "web", &[(80, 80), (443, 443)], Protocol::Tcp),
            jail("api", "web", &[(443, 443)], Protocol::Tcp),
            jail("recidive", "recidive", &[], Protocol::All),
        ]));
        // wide alone on 20-21, with sshd on 22, alone again on 23-30 (its own overlap
        // at 25 changes nothing); web alone on 80; web and api on 443.
        assert_eq!(
            entries(&plan, 0),
            [
                (20, 21, 0),
                (22, 22, 1),
                (23, 30, 0),
                (53, 53, 2),
                (80, 80, 3),
                (443, 443, 4)
            ]
        );
        assert_eq!(entries(&plan, 1), [(53, 53, 2)], "only dns guards udp");
        assert_eq!(plan.chains, 5);
        assert_eq!(
            plan.chains_of,
            [vec![1], vec![0, 1], vec![2], vec![3, 4], vec![4], vec![]]
        );
        let mut skeleton = String::new();
        plan.write_skeleton(&mut skeleton);
        let lines: Vec<&str> = skeleton.lines().collect();
        assert_eq!(
            lines[0],
            "add chain inet g input { type filter hook input priority -10; policy accept; }"
        );
        assert_eq!(
            lines[1..6],
            [
                "add chain inet g ports-0",
                "add chain inet g ports-1",
                "add chain inet g ports-2",
                "add chain inet g ports-3",
                "add chain inet g ports-4"
            ]
        );
        assert_eq!(
            lines[6],
            "add rule inet g input tcp dport vmap { 20-21 : jump ports-0, 22 : jump ports-1, 23-30 : jump ports-0, 53 : jump ports-2, 80 : jump ports-3, 443 : jump ports-4 }"
        );
        assert_eq!(
            lines[7],
            "add rule inet g input udp dport vmap { 53 : jump ports-2 }"
        );
        assert_eq!(plan.rule_count(), 2, "the two verdict maps, no set yet");
    }

    #[test]
    fn adjacent_ranges_of_the_same_jails_make_one_entry_and_ten_thousand_jails_one_each() {
        let plan = Plan::new(&layout(vec![jail(
            "a",
            "a",
            &[(10, 19), (20, 29), (31, 31)],
            Protocol::Udp,
        )]));
        assert_eq!(entries(&plan, 1), [(10, 29, 0), (31, 31, 0)]);
        assert!(entries(&plan, 0).is_empty());
        let many: Vec<Rule> = (0..10_000u16)
            .map(|i| {
                let name = format!("j{i}");
                jail(&name, &name, &[(10_000 + i, 10_000 + i)], Protocol::Tcp)
            })
            .collect();
        let plan = Plan::new(&layout(many));
        assert_eq!(plan.chains, 10_000);
        assert_eq!(plan.maps[0].len(), 10_000);
        assert_eq!(plan.rule_count(), 1, "one verdict map, whatever the jails");
    }

    #[test]
    fn a_set_is_written_with_a_rule_per_jail_in_each_of_its_chains() {
        let mut plan = Plan::new(&layout(vec![
            jail("web", "web", &[(80, 80), (443, 443)], Protocol::Tcp),
            jail("api", "web", &[(443, 443)], Protocol::Tcp),
            jail("recidive", "recidive", &[], Protocol::All),
            jail("smtp", "smtp", &[], Protocol::Tcp),
        ]));
        let mut out = String::new();
        let web6 = SetKey {
            group: "web".into(),
            kind: Kind::N6,
        };
        plan.write_set(&mut out, &web6);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                "add set inet g web-n6 { type ipv6_addr; flags interval,timeout; }",
                "add rule inet g ports-0 ip6 saddr @web-n6 counter drop comment \"gaoler jail web\"",
                "add rule inet g ports-1 ip6 saddr @web-n6 counter drop comment \"gaoler jail web\"",
                "add rule inet g ports-1 ip6 saddr @web-n6 counter drop comment \"gaoler jail api\"",
            ]
        );
        let mut out = String::new();
        let every = SetKey::of("recidive", &"192.0.2.7".parse().expect("ip"));
        let smtp = SetKey::of("smtp", &"192.0.2.0/24".parse().expect("net"));
        plan.write_set(&mut out, &every);
        plan.write_set(&mut out, &smtp);
        assert!(out.contains(
            "add rule inet g input ip saddr @recidive-v4 counter drop comment \"gaoler jail recidive\"\n"
        ));
        assert!(
            out.contains("add set inet g smtp-n4 { type ipv4_addr; flags interval,timeout; }\n")
        );
        assert!(out.contains(
            "add rule inet g input meta l4proto tcp ip saddr @smtp-n4 counter drop comment \"gaoler jail smtp\"\n"
        ));
        assert_eq!(plan.rule_count(), 1);
        plan.created([web6.clone(), every]);
        assert!(plan.has(&web6) && !plan.has(&smtp));
        assert_eq!(plan.rule_count(), 1 + 3 + 1);
        assert_eq!(plan.created_set("web-n6"), Some(web6));
        assert_eq!(plan.created_set("web-v6"), None, "not created");
        assert_eq!(plan.created_set("web"), None);
    }

    #[test]
    fn verdicts_follow_the_action_and_protocol() {
        let mut r = jail("a", "a", &[], Protocol::Tcp);
        r.action = Action::Reject;
        assert_eq!(verdict(&r), "reject with tcp reset");
        r.protocol = Protocol::All;
        assert_eq!(verdict(&r), "reject");
        r.action = Action::Drop;
        assert_eq!(verdict(&r), "drop");
    }

    #[test]
    fn kinds_follow_the_target() {
        let kind = |s: &str| Kind::of(&s.parse().expect("target"));
        assert_eq!(kind("192.0.2.1"), Kind::V4);
        assert_eq!(kind("2001:db8::1"), Kind::V6);
        assert_eq!(kind("192.0.2.0/24"), Kind::N4);
        assert_eq!(kind("2001:db8:1:2::/64"), Kind::N6);
        assert_eq!(
            SetKey::parse("my-web-n4"),
            Some(SetKey {
                group: "my-web".into(),
                kind: Kind::N4
            })
        );
    }
}
