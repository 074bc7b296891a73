//! Reads back what the kernel holds: `nft -j list table` output, for the reconciler.
//! nft's JSON is the one stable, machine-readable listing, so reading uses it even
//! though writing uses nft's text syntax.

use std::collections::{HashMap, HashSet};

use super::plan::Plan;
use crate::firewall::Inventory;
use crate::types::Target;

/// Reads `nft -j list table` output against `plan`: whether the chains, the rules and
/// exactly the sets gaoler created are there (a set created lazily, such as a jail's
/// prefix set before its first prefix ban, is not missing), and every element of
/// those sets with its remaining seconds.
pub fn parse_inventory(json: &[u8], plan: &Plan) -> Inventory {
    let doc: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    let wanted: HashSet<String> = plan.chain_names().collect();
    let mut chains = HashSet::new();
    let (mut rules, mut sets, mut foreign_sets) = (0, 0, 0);
    let mut elements = HashMap::new();
    for obj in doc["nftables"].as_array().into_iter().flatten() {
        if let Some(name) = obj["chain"]["name"].as_str() {
            chains.insert(name.to_string());
        }
        if obj["rule"]["chain"]
            .as_str()
            .is_some_and(|c| wanted.contains(c))
        {
            rules += 1;
        }
        let Some(name) = obj["set"]["name"].as_str() else {
            continue;
        };
        let Some(key) = plan.created_set(name) else {
            foreign_sets += 1;
            continue;
        };
        sets += 1;
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
                elements.insert((key.group.clone(), target), expires);
            }
        }
    }
    let complete = wanted.iter().all(|c| chains.contains(c))
        && rules == plan.rule_count()
        && sets == plan.created_count()
        && foreign_sets == 0;
    Inventory { complete, elements }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::firewall::nft::plan::tests::jail;
    use crate::firewall::nft::plan::SetKey;
    use crate::firewall::Layout;

    fn set(name: &str, elem: &str) -> String {
        format!(
            r#"{{"set": {{"family": "inet", "name": "{name}", "table": "gaoler", "type": "ipv4_addr", "flags": ["timeout"]{elem}}}}}"#
        )
    }

    fn rule(chain: &str) -> String {
        format!(
            r#"{{"rule": {{"family": "inet", "table": "gaoler", "chain": "{chain}", "handle": 9}}}}"#
        )
    }

    /// The shape `nft -j list table inet gaoler` prints (nft 1.0.6).
    fn listing(objects: &[String]) -> Vec<u8> {
        format!(
            r#"{{"nftables": [{{"metainfo": {{}}}}, {{"table": {{"family": "inet", "name": "gaoler"}}}}, {}]}}"#,
            objects.join(", ")
        )
        .into_bytes()
    }

    #[test]
    fn the_inventory_reads_created_sets_and_is_complete_without_the_lazy_ones() {
        let mut plan = Plan::new(&Layout {
            table: "gaoler".into(),
            priority: -10,
            jails: vec![
                jail("sshd", "sshd", &[(22, 22)], Protocol::Tcp),
                jail("recidive", "recidive", &[], Protocol::All),
            ],
        });
        plan.created([
            SetKey::of("sshd", &"192.0.2.7".parse().expect("ip")),
            SetKey::of("sshd", &"2001:db8:1:2::/64".parse().expect("net")),
        ]);
        let v4 = set(
            "sshd-v4",
            r#", "elem": [{"elem": {"val": "192.0.2.7", "timeout": 3600, "expires": 3512}}, "192.0.2.8"]"#,
        );
        let n6 = r#"{"set": {"family": "inet", "name": "sshd-n6", "table": "gaoler", "type": "ipv6_addr", "flags": ["interval", "timeout"], "elem": [{"elem": {"val": {"prefix": {"addr": "2001:db8:1:2::", "len": 64}}, "timeout": 60, "expires": 59}}]}}"#.to_string();
        let chain = |name: &str| {
            format!(r#"{{"chain": {{"family": "inet", "table": "gaoler", "name": "{name}"}}}}"#)
        };
        // The verdict map in input; a rule for each set in sshd's dispatch chain.
        let full = vec![
            v4.clone(),
            n6.clone(),
            chain("input"),
            chain("ports-0"),
            rule("input"),
            rule("ports-0"),
            rule("ports-0"),
        ];
        let inv = parse_inventory(&listing(&full), &plan);
        assert!(
            inv.complete,
            "sshd-v6, sshd-n4 and recidive's sets are not created yet"
        );
        let t = |s: &str| ("sshd".to_string(), s.parse::<Target>().expect("target"));
        assert_eq!(inv.elements.get(&t("192.0.2.7")), Some(&Some(3512)));
        assert_eq!(inv.elements.get(&t("192.0.2.8")), Some(&None), "permanent");
        assert_eq!(inv.elements.get(&t("2001:db8:1:2::/64")), Some(&Some(59)));

        let without = |i: usize| {
            let mut objects = full.clone();
            objects.remove(i);
            parse_inventory(&listing(&objects), &plan).complete
        };
        assert!(!without(1), "a created set is missing");
        assert!(!without(3), "a dispatch chain is missing");
        assert!(!without(6), "a rule is missing");
        let mut extra = full.clone();
        extra.push(set("recidive-v4", ""));
        assert!(
            !parse_inventory(&listing(&extra), &plan).complete,
            "a set gaoler did not create"
        );
        assert!(!parse_inventory(b"{}", &plan).complete);
    }
}
