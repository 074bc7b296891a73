//! The nftables backend: the only file that knows nftables. Builds JSON with the
//! `nftables` crate's types and feeds it to `nft -j -f -` itself, so that nft's error
//! text is captured and reported (the crate's own helper loses it).
//!
//! Layout: table `inet <table>`, per jail sets `<jail>-v4` / `<jail>-v6` (addresses,
//! `flags timeout`) and `<jail>-n4` / `<jail>-n6` (prefixes, `flags interval,
//! timeout`), and one chain `input` hooked at the configured priority.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nftables::expr::{
    Elem, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, Range, SetItem,
};
use nftables::schema::{
    Chain, Element as NftElement, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, SetFlag,
    SetType, SetTypeValue, Table,
};
use nftables::stmt::{Counter, Match, Operator, Reject, RejectType, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use tokio::io::AsyncWriteExt;

use super::{Change, Element, Firewall, FirewallError, Inventory, JailRule, Layout};
use crate::config::{Action, Protocol};
use crate::types::Target;

/// Name of gaoler's base chain inside its table.
pub const CHAIN: &str = "input";
/// Longest element timeout sent to the kernel (10 years); longer bans are refreshed.
const MAX_TIMEOUT_SECS: u64 = 10 * 365 * 86_400;

/// Runs `nft` for gaoler's table.
pub struct NftFirewall {
    nft: PathBuf,
    table: String,
}

impl NftFirewall {
    /// A backend for table `inet <table>`, running `nft` from `PATH`.
    pub fn new(table: &str) -> Self {
        NftFirewall {
            nft: PathBuf::from("nft"),
            table: table.to_string(),
        }
    }

    async fn run(
        &self,
        what: &str,
        args: &[&str],
        input: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, FirewallError> {
        let mut child = tokio::process::Command::new(&self.nft)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => FirewallError::NftMissing,
                _ => FirewallError::Spawn(format!(
                    "{}: {}",
                    self.nft.display(),
                    crate::util::io_reason(&e)
                )),
            })?;
        if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
            // A failed write shows up as nft's own error below.
            let _ = stdin.write_all(&bytes).await;
            drop(stdin);
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| FirewallError::Spawn(crate::util::io_reason(&e)))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let stderr = if stderr.is_empty() {
                format!("nft exited with {}", out.status)
            } else {
                stderr
            };
            Err(FirewallError::Rejected {
                what: what.to_string(),
                stderr,
            })
        }
    }

    async fn send(&self, what: &str, doc: &Nftables<'_>) -> Result<(), FirewallError> {
        let started = std::time::Instant::now();
        let json = serde_json::to_vec(doc).map_err(|e| FirewallError::Spawn(e.to_string()))?;
        let json = without_empty_element_fields(json);
        let built = started.elapsed();
        let result = self
            .run(what, &["-j", "-f", "-"], Some(json))
            .await
            .map(|_| ());
        tracing::debug!(
            what,
            build_us = built.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "nft transaction"
        );
        result
    }
}

impl Firewall for NftFirewall {
    async fn probe(&mut self) -> Result<(), FirewallError> {
        self.run("listing tables", &["-j", "list", "tables"], None)
            .await
            .map(|_| ())
    }

    async fn install(&mut self, layout: &Layout, bans: &[Element]) -> Result<(), FirewallError> {
        self.table = layout.table.clone();
        let doc = install_document(layout, bans);
        self.send(
            &format!(
                "building table inet {} with {} bans",
                layout.table,
                bans.len()
            ),
            &doc,
        )
        .await
    }

    async fn apply(&mut self, changes: &[Change]) -> Result<(), FirewallError> {
        if changes.is_empty() {
            return Ok(());
        }
        let doc = change_document(&self.table, changes);
        self.send(&format!("{} set changes", changes.len()), &doc)
            .await
    }

    async fn remove(&mut self) -> Result<(), FirewallError> {
        let table = table_obj(&self.table);
        let doc = document(vec![
            NfCmd::Add(NfListObject::Table(table.clone())),
            NfCmd::Delete(NfListObject::Table(table)),
        ]);
        self.send(&format!("removing table inet {}", self.table), &doc)
            .await
    }

    async fn inventory(&mut self, layout: &Layout) -> Result<Option<Inventory>, FirewallError> {
        let args = ["-j", "list", "table", "inet", layout.table.as_str()];
        match self.run("listing the table", &args, None).await {
            Ok(out) => Ok(Some(parse_inventory(&out, layout))),
            // No table at all: nothing is there.
            Err(FirewallError::Rejected { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(Some(Inventory::default()))
            }
            Err(e) => Err(e),
        }
    }
}

/// Reads `nft -j list table` output: whether the layout's chain, rules and sets are all
/// there, and every element of the layout's sets with its remaining seconds.
pub fn parse_inventory(json: &[u8], layout: &Layout) -> Inventory {
    let doc: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    let group_of: HashMap<String, &str> = layout
        .jails
        .iter()
        .flat_map(|j| {
            SET_KINDS.iter().map(move |(v4, prefix)| {
                (
                    format!("{}-{}", j.set, set_suffix(*v4, *prefix)),
                    j.set.as_str(),
                )
            })
        })
        .collect();
    let (mut chain, mut rules) = (false, 0);
    let mut sets = HashSet::new();
    let mut elements = HashMap::new();
    for obj in doc["nftables"].as_array().into_iter().flatten() {
        if obj["chain"]["name"] == CHAIN {
            chain = true;
        }
        if obj["rule"]["chain"] == CHAIN {
            rules += 1;
        }
        let Some(name) = obj["set"]["name"].as_str() else {
            continue;
        };
        sets.insert(name.to_string());
        let Some(group) = group_of.get(name) else {
            continue;
        };
        for e in obj["set"]["elem"].as_array().into_iter().flatten() {
            let (val, expires) = match e.get("elem") {
                Some(el) => (
                    &el["val"],
                    el["expires"].as_u64().or(el["timeout"].as_u64()),
                ),
                None => (e, None),
            };
            let text = match val {
                serde_json::Value::String(v) => v.clone(),
                v => format!(
                    "{}/{}",
                    v["prefix"]["addr"].as_str().unwrap_or_default(),
                    v["prefix"]["len"]
                ),
            };
            if let Ok(target) = text.parse::<Target>() {
                elements.insert((group.to_string(), target), expires);
            }
        }
    }
    let complete = chain
        && rules == layout.jails.len() * SET_KINDS.len()
        && group_of.keys().all(|n| sets.contains(n));
    Inventory { complete, elements }
}

/// The crate writes `"expires":null,"comment":null,"counter":null` into every element
/// object; nft accepts them, but a large batch is then 1.8x the size to send and parse.
fn without_empty_element_fields(json: Vec<u8>) -> Vec<u8> {
    const EMPTY: &[u8] = br#","expires":null,"comment":null,"counter":null"#;
    let finder = memchr::memmem::Finder::new(EMPTY);
    let mut out = Vec::with_capacity(json.len());
    let mut rest = &json[..];
    while let Some(at) = finder.find(rest) {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at + EMPTY.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// The set holding `target` for `jail`.
pub fn set_name(jail: &str, target: &Target) -> String {
    format!(
        "{jail}-{}",
        set_suffix(target.is_ipv4(), !target.is_single())
    )
}

/// The four sets of a jail: single addresses (`v4`, `v6`) and prefixes (`n4`, `n6`),
/// kept apart because nft rejects an address inside an overlapping interval.
const SET_KINDS: [(bool, bool); 4] = [(true, false), (false, false), (true, true), (false, true)];

fn set_suffix(v4: bool, prefix: bool) -> &'static str {
    match (v4, prefix) {
        (true, false) => "v4",
        (false, false) => "v6",
        (true, true) => "n4",
        (false, true) => "n6",
    }
}

fn document(cmds: Vec<NfCmd<'static>>) -> Nftables<'static> {
    Nftables {
        objects: Cow::Owned(cmds.into_iter().map(NfObject::CmdObject).collect()),
    }
}

fn table_obj(name: &str) -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: Cow::Owned(name.to_string()),
        handle: None,
    }
}

/// One transaction that resets the table (add, delete, add: idempotent), creates the
/// sets, the chain and the rules, and loads `bans`.
pub fn install_document(layout: &Layout, bans: &[Element]) -> Nftables<'static> {
    let table = table_obj(&layout.table);
    let mut cmds = vec![
        NfCmd::Add(NfListObject::Table(table.clone())),
        NfCmd::Delete(NfListObject::Table(table.clone())),
        NfCmd::Add(NfListObject::Table(table)),
    ];
    // One group of sets per set name, however many jails share it.
    let mut groups: Vec<&str> = layout.jails.iter().map(|j| j.set.as_str()).collect();
    groups.sort();
    groups.dedup();
    for group in groups {
        for (v4, prefix) in SET_KINDS {
            let mut flags = HashSet::from([SetFlag::Timeout]);
            if prefix {
                flags.insert(SetFlag::Interval);
            }
            cmds.push(NfCmd::Add(NfListObject::Set(Box::new(Set {
                family: NfFamily::INet,
                table: Cow::Owned(layout.table.clone()),
                name: Cow::Owned(format!("{group}-{}", set_suffix(v4, prefix))),
                handle: None,
                set_type: SetTypeValue::Single(if v4 {
                    SetType::Ipv4Addr
                } else {
                    SetType::Ipv6Addr
                }),
                policy: None,
                flags: Some(flags),
                elem: None,
                timeout: None,
                gc_interval: None,
                size: None,
                comment: None,
            }))));
        }
    }
    cmds.push(NfCmd::Add(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: Cow::Owned(layout.table.clone()),
        name: Cow::Borrowed(CHAIN),
        newname: None,
        handle: None,
        _type: Some(NfChainType::Filter),
        hook: Some(NfHook::Input),
        prio: Some(layout.priority),
        dev: None,
        policy: Some(NfChainPolicy::Accept),
    })));
    for rule in &layout.jails {
        for (v4, prefix) in SET_KINDS {
            cmds.push(NfCmd::Add(NfListObject::Rule(Rule {
                family: NfFamily::INet,
                table: Cow::Owned(layout.table.clone()),
                chain: Cow::Borrowed(CHAIN),
                expr: Cow::Owned(rule_statements(rule, v4, prefix)),
                handle: None,
                index: None,
                comment: Some(Cow::Owned(format!("gaoler jail {}", rule.jail))),
            })));
        }
    }
    let mut by_set: BTreeMap<String, Vec<Expression<'static>>> = BTreeMap::new();
    for ban in bans {
        by_set
            .entry(set_name(&ban.set, &ban.target))
            .or_default()
            .push(element_with_timeout(ban));
    }
    for (set, elems) in by_set {
        cmds.push(NfCmd::Add(element_obj(&layout.table, set, elems)));
    }
    document(cmds)
}

/// The statements of one jail's rule for one address family.
fn rule_statements(rule: &JailRule, v4: bool, prefix: bool) -> Vec<Statement<'static>> {
    let mut stmts = vec![Statement::Match(Match {
        left: payload(if v4 { "ip" } else { "ip6" }, "saddr"),
        right: Expression::String(Cow::Owned(format!(
            "@{}-{}",
            rule.set,
            set_suffix(v4, prefix)
        ))),
        op: Operator::EQ,
    })];
    let l4 = |name: &'static str| Expression::String(Cow::Borrowed(name));
    let l4proto = Expression::Named(NamedExpression::Meta(Meta {
        key: MetaKey::L4proto,
    }));
    let proto = match rule.protocol {
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        Protocol::All => None,
    };
    if rule.ports.is_empty() {
        if let Some(p) = proto {
            stmts.push(Statement::Match(Match {
                left: l4proto,
                right: l4(p),
                op: Operator::EQ,
            }));
        }
    } else {
        let ports = Expression::Named(NamedExpression::Set(
            rule.ports
                .iter()
                .map(|p| {
                    SetItem::Element(if p.first == p.last {
                        Expression::Number(u32::from(p.first))
                    } else {
                        Expression::Range(Box::new(Range {
                            range: [
                                Expression::Number(u32::from(p.first)),
                                Expression::Number(u32::from(p.last)),
                            ],
                        }))
                    })
                })
                .collect(),
        ));
        let left = match proto {
            Some(p) => payload(p, "dport"),
            None => {
                stmts.push(Statement::Match(Match {
                    left: l4proto,
                    right: Expression::Named(NamedExpression::Set(vec![
                        SetItem::Element(l4("tcp")),
                        SetItem::Element(l4("udp")),
                    ])),
                    op: Operator::EQ,
                }));
                payload("th", "dport")
            }
        };
        stmts.push(Statement::Match(Match {
            left,
            right: ports,
            op: Operator::EQ,
        }));
    }
    stmts.push(Statement::Counter(Counter::Anonymous(None)));
    stmts.push(match (rule.action, rule.protocol) {
        (Action::Drop, _) => Statement::Drop(None),
        (Action::Reject, Protocol::Tcp) => {
            Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None)))
        }
        (Action::Reject, _) => Statement::Reject(None),
    });
    stmts
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

fn element_obj(table: &str, set: String, elems: Vec<Expression<'static>>) -> NfListObject<'static> {
    NfListObject::Element(NftElement {
        family: NfFamily::INet,
        table: Cow::Owned(table.to_string()),
        name: Cow::Owned(set),
        elem: Cow::Owned(elems),
    })
}

fn value(target: &Target) -> Expression<'static> {
    let addr = Expression::String(Cow::Owned(target.net().addr().to_string()));
    if target.is_single() {
        addr
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(addr),
            len: u32::from(target.net().prefix_len()),
        }))
    }
}

fn element_with_timeout(e: &Element) -> Expression<'static> {
    match e.timeout {
        None => value(&e.target),
        Some(t) => Expression::Named(NamedExpression::Elem(Elem {
            val: Box::new(value(&e.target)),
            timeout: Some(timeout_secs(t)),
            expires: None,
            comment: None,
            counter: None,
        })),
    }
}

fn timeout_secs(d: Duration) -> u32 {
    d.as_secs().clamp(1, MAX_TIMEOUT_SECS) as u32
}

/// One transaction for a batch of changes. New bans are plain adds. Per set, elements
/// that may already be there (renewals, unbans) are first added (so the `delete`
/// cannot fail), then deleted, and then the bans and renewals are added with their
/// timeouts: re-banning portably, since older kernels keep the old timeout on a plain
/// add. The last change for a target wins.
pub fn change_document(table: &str, changes: &[Change]) -> Nftables<'static> {
    let mut last: BTreeMap<(String, Target), &Change> = BTreeMap::new();
    for c in changes {
        let (set, target) = match c {
            Change::Ban(e) | Change::Renew(e) => (&e.set, &e.target),
            Change::Unban { set, target } => (set, target),
        };
        last.insert((set_name(set, target), *target), c);
    }
    let mut replaced: BTreeMap<String, Vec<Expression<'static>>> = BTreeMap::new();
    let mut added: BTreeMap<String, Vec<Expression<'static>>> = BTreeMap::new();
    for ((set, target), change) in &last {
        if !matches!(change, Change::Ban(_)) {
            replaced.entry(set.clone()).or_default().push(value(target));
        }
        if let Change::Ban(e) | Change::Renew(e) = change {
            added
                .entry(set.clone())
                .or_default()
                .push(element_with_timeout(e));
        }
    }
    let mut cmds = Vec::new();
    for (set, elems) in replaced {
        cmds.push(NfCmd::Add(element_obj(table, set.clone(), elems.clone())));
        cmds.push(NfCmd::Delete(element_obj(table, set, elems)));
    }
    for (set, elems) in added {
        cmds.push(NfCmd::Add(element_obj(table, set, elems)));
    }
    document(cmds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortRange;

    fn rule(ports: Vec<PortRange>, protocol: Protocol, action: Action) -> JailRule {
        JailRule {
            jail: "sshd".into(),
            set: "sshd".into(),
            ports,
            protocol,
            action,
        }
    }

    fn json(doc: &Nftables) -> String {
        serde_json::to_string(doc).expect("serialises")
    }

    #[test]
    fn install_resets_table_then_builds_sets_chain_rules_and_elements() {
        let layout = Layout {
            table: "gaoler".into(),
            priority: -10,
            jails: vec![rule(
                vec![PortRange {
                    first: 22,
                    last: 22,
                }],
                Protocol::Tcp,
                Action::Drop,
            )],
        };
        let bans = vec![Element {
            set: "sshd".into(),
            target: "192.0.2.7".parse().expect("ip"),
            timeout: Some(Duration::from_secs(3599)),
        }];
        let text = json(&install_document(&layout, &bans));
        let add = text.find(r#"{"add":{"table""#).expect("add table");
        let del = text.find(r#"{"delete":{"table""#).expect("delete table");
        assert!(add < del);
        assert!(text.contains(r#""name":"sshd-v4""#) && text.contains(r#""name":"sshd-v6""#));
        assert!(text.contains(r#""flags":["timeout"]"#));
        assert!(text.contains(r#""hook":"input""#) && text.contains(r#""prio":-10"#));
        assert!(text.contains(r#""right":"@sshd-v4""#));
        assert!(text.contains(r#""field":"dport""#) && text.contains(r#""set":[22]"#));
        assert!(text.contains(r#""val":"192.0.2.7","timeout":3599"#));
    }

    #[test]
    fn protocol_all_with_ports_matches_tcp_and_udp_transport_ports() {
        let r = rule(
            vec![PortRange {
                first: 1000,
                last: 2000,
            }],
            Protocol::All,
            Action::Reject,
        );
        let text = serde_json::to_string(&rule_statements(&r, false, false)).expect("json");
        assert!(text.contains(r#""protocol":"ip6","field":"saddr""#));
        assert!(text.contains(r#""set":["tcp","udp"]"#));
        assert!(text.contains(r#""protocol":"th","field":"dport""#));
        assert!(text.contains(r#""range":[1000,2000]"#));
        assert!(text.contains(r#""reject":null"#));
        let tcp = rule(vec![], Protocol::Tcp, Action::Reject);
        let text = serde_json::to_string(&rule_statements(&tcp, true, false)).expect("json");
        assert!(text.contains(r#""key":"l4proto""#) && text.contains("tcp reset"));
        let all = rule(vec![], Protocol::All, Action::Drop);
        let text = serde_json::to_string(&rule_statements(&all, true, false)).expect("json");
        assert!(!text.contains("l4proto") && text.contains(r#""drop":null"#));
    }

    #[test]
    fn changes_add_delete_add_per_set_and_last_change_wins() {
        let t4: Target = "192.0.2.7".parse().expect("ip");
        let t6: Target = "2001:db8::7".parse().expect("ip");
        let changes = vec![
            Change::Unban {
                set: "sshd".into(),
                target: t4,
            },
            Change::Renew(Element {
                set: "sshd".into(),
                target: t4,
                timeout: Some(Duration::from_secs(60)),
            }),
            Change::Unban {
                set: "sshd".into(),
                target: t6,
            },
        ];
        let doc = change_document("gaoler", &changes);
        let cmds: Vec<String> = doc
            .objects
            .iter()
            .map(|o| serde_json::to_string(o).expect("json"))
            .collect();
        assert_eq!(cmds.len(), 5, "{cmds:#?}");
        assert!(cmds[0].starts_with(r#"{"add":{"element""#) && cmds[0].contains("sshd-v4"));
        assert!(cmds[1].starts_with(r#"{"delete":{"element""#) && cmds[1].contains("sshd-v4"));
        assert!(cmds[2].starts_with(r#"{"add":{"element""#) && cmds[2].contains("sshd-v6"));
        assert!(cmds[3].starts_with(r#"{"delete":{"element""#) && cmds[3].contains("sshd-v6"));
        assert!(cmds[4].contains(r#""timeout":60"#) && cmds[4].contains("sshd-v4"));
    }

    #[test]
    fn empty_element_fields_are_left_out_of_what_is_sent() {
        let doc = change_document(
            "gaoler",
            &[Change::Ban(Element {
                set: "sshd".into(),
                target: "192.0.2.1".parse().expect("ip"),
                timeout: Some(Duration::from_secs(5)),
            })],
        );
        let full = serde_json::to_vec(&doc).expect("json");
        assert!(String::from_utf8_lossy(&full).contains("\"expires\":null"));
        let sent = String::from_utf8(without_empty_element_fields(full)).expect("utf-8");
        assert!(
            sent.contains(r#"{"elem":{"val":"192.0.2.1","timeout":5}}"#),
            "{sent}"
        );
        serde_json::from_str::<serde_json::Value>(&sent).expect("still JSON");
    }

    #[test]
    fn new_bans_are_one_plain_add_per_set() {
        let changes: Vec<Change> = ["192.0.2.1", "192.0.2.2"]
            .iter()
            .map(|ip| {
                Change::Ban(Element {
                    set: "sshd".into(),
                    target: ip.parse().expect("ip"),
                    timeout: Some(Duration::from_secs(60)),
                })
            })
            .collect();
        let doc = change_document("gaoler", &changes);
        assert_eq!(doc.objects.len(), 1);
        let text = json(&doc);
        assert!(text.starts_with(r#"{"nftables":[{"add":{"element""#) && !text.contains("delete"));
    }

    #[test]
    fn prefixes_go_to_interval_sets_and_addresses_to_plain_ones() {
        let layout = Layout {
            table: "gaoler".into(),
            priority: -10,
            jails: vec![rule(vec![], Protocol::Tcp, Action::Drop)],
        };
        let text = json(&install_document(&layout, &[]));
        assert!(text.contains(r#""name":"sshd-n6""#) && text.contains(r#""name":"sshd-n4""#));
        assert!(text.contains(r#""right":"@sshd-n6""#));
        assert!(text.contains(r#""interval""#));
        let net: Target = "2001:db8:1:2::/64".parse().expect("net");
        let one: Target = "2001:db8:1:2::5".parse().expect("ip");
        assert_eq!(set_name("sshd", &net), "sshd-n6");
        assert_eq!(set_name("sshd", &one), "sshd-v6");
        let doc = change_document(
            "gaoler",
            &[Change::Ban(Element {
                set: "sshd".into(),
                target: net,
                timeout: Some(Duration::from_secs(9)),
            })],
        );
        let text = json(&doc);
        assert!(
            text.contains(r#""prefix":{"addr":"2001:db8:1:2::","len":64}"#),
            "{text}"
        );
    }

    #[test]
    fn the_inventory_reads_elements_and_notices_missing_pieces() {
        let layout = Layout {
            table: "gaoler".into(),
            priority: -10,
            jails: vec![rule(vec![], Protocol::Tcp, Action::Drop)],
        };
        // The shape `nft -j list table inet gaoler` prints (nft 1.0.6).
        let sets: String = ["v4", "v6", "n4", "n6"]
            .iter()
            .map(|k| match *k {
                "v4" => r#"{"set": {"family": "inet", "name": "sshd-v4", "table": "gaoler", "type": "ipv4_addr", "flags": ["timeout"], "elem": [{"elem": {"val": "192.0.2.7", "timeout": 3600, "expires": 3512}}, "192.0.2.8"]}}"#.to_string(),
                "n6" => r#"{"set": {"family": "inet", "name": "sshd-n6", "table": "gaoler", "type": "ipv6_addr", "flags": ["interval", "timeout"], "elem": [{"elem": {"val": {"prefix": {"addr": "2001:db8:1:2::", "len": 64}}, "timeout": 60, "expires": 59}}]}}"#.to_string(),
                k => format!(r#"{{"set": {{"family": "inet", "name": "sshd-{k}", "table": "gaoler", "type": "ipv4_addr"}}}}"#),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let rules = (0..4)
            .map(|_| r#"{"rule": {"family": "inet", "table": "gaoler", "chain": "input", "handle": 9}}"#)
            .collect::<Vec<_>>()
            .join(", ");
        let full = format!(
            r#"{{"nftables": [{{"metainfo": {{}}}}, {{"table": {{"family": "inet", "name": "gaoler"}}}}, {sets}, {{"chain": {{"family": "inet", "table": "gaoler", "name": "input"}}}}, {rules}]}}"#
        );
        let inv = parse_inventory(full.as_bytes(), &layout);
        assert!(inv.complete);
        let t = |s: &str| ("sshd".to_string(), s.parse::<Target>().expect("target"));
        assert_eq!(inv.elements.get(&t("192.0.2.7")), Some(&Some(3512)));
        assert_eq!(inv.elements.get(&t("192.0.2.8")), Some(&None), "permanent");
        assert_eq!(inv.elements.get(&t("2001:db8:1:2::/64")), Some(&Some(59)));
        let no_rules = full.replace(&format!(", {rules}"), "");
        assert!(!parse_inventory(no_rules.as_bytes(), &layout).complete);
        assert!(!parse_inventory(b"{}", &layout).complete);
    }

    #[test]
    fn timeouts_are_at_least_one_second_and_capped() {
        assert_eq!(timeout_secs(Duration::from_millis(10)), 1);
        assert_eq!(
            timeout_secs(Duration::from_secs(u64::MAX)),
            MAX_TIMEOUT_SECS as u32
        );
    }
}
