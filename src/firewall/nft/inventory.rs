//! Reads back what the kernel holds: `nft -j list table` output, for the reconciler.
//! nft's JSON is the one stable, machine-readable listing, so reading uses it even
//! though writing uses nft's text syntax.

use std::collections::{HashMap, HashSet};

use super::script::{set_suffix, CHAIN, SET_KINDS};
use crate::firewall::{Inventory, Layout};
use crate::types::Target;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Action, Protocol};
    use crate::firewall::nft::script::tests::rule;

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
}
