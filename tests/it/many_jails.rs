//! Thousands of jails in a network namespace, with the real daemon and real nftables:
//! the daemon is ready in seconds, the kernel holds sets and rules only for the jails
//! that ban, a ban drops the attacker on its jail's port only, and a prefix banned by
//! hand in a jail without prefix config gets its interval set when it is needed.

use std::time::{Duration, Instant};

use crate::support::*;

const JAILS: u16 = 2_000;
const SHORT: Duration = Duration::from_millis(800);
const LONG: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(15);

/// The objects of table `gmany` by kind: (sets, chains, rules).
fn table(lab: &Lab) -> (Vec<String>, usize, usize) {
    let doc = lab
        .nft_json(&["list", "table", "inet", "gmany"])
        .expect("the table is there");
    let objects = doc["nftables"].as_array().cloned().unwrap_or_default();
    let mut sets: Vec<String> = objects
        .iter()
        .filter_map(|o| o["set"]["name"].as_str().map(String::from))
        .collect();
    sets.sort();
    let count = |kind: &str| objects.iter().filter(|o| o.get(kind).is_some()).count();
    (sets, count("chain"), count("rule"))
}

#[test]
fn two_thousand_jails_are_ready_in_seconds_and_each_ban_lands_in_its_jails_own_set() {
    let lab = Lab::new();
    // sshd bans on 2222 at the first failure; web guards 2222 too, and 8080; 1,998
    // quiet jails read one quiet log, each on a port of its own (q5 on 10005).
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"gmany\"\nreconcile_interval = \"1s\"",
        &format!("{BAN_AT_FIRST}ports = [\"2222\"]\n"),
    );
    cfg.write("quiet.log", "");
    cfg.write(
        "jails/web.toml",
        "filter = \"sshd\"\nlogpath = \"quiet.log\"\nports = [\"2222\", \"8080\"]\n",
    );
    for i in 0..JAILS - 2 {
        cfg.write(
            &format!("jails/q{i}.toml"),
            &format!(
                "filter = \"sshd\"\nlogpath = \"quiet.log\"\nports = [\"{}\"]\n",
                10_000 + i
            ),
        );
    }
    for port in [2222, 8080, 10_005] {
        lab.listen(port);
    }

    let started = Instant::now();
    let _daemon = Daemon::start(cfg.path(), Some(&lab.server));
    let ready = started.elapsed();
    eprintln!("{JAILS} jails ready after {ready:?}");
    let status = ctl_json(cfg.path(), &["status"]);
    assert_eq!(
        status["jails"].as_array().map(Vec::len),
        Some(usize::from(JAILS))
    );
    // No bans: no sets, and one rule (the TCP verdict map) whatever the jails.
    let (sets, chains, rules) = table(&lab);
    assert!(sets.is_empty(), "{sets:?}");
    assert_eq!(rules, 1);
    assert_eq!(
        chains,
        1 + usize::from(JAILS),
        "input and a dispatch chain per port group"
    );

    // A failure in sshd's log: banned in sshd's own set, dropped on 2222 only.
    cfg.sshd_failure(ATTACKER_V4);
    wait_for(WAIT, "the ban", || banned_ips(cfg.path()) == [ATTACKER_V4]);
    let banned = lab.elements("gmany", "sshd-v4");
    assert_eq!(banned.len(), 1, "{banned:?}");
    assert_eq!(banned[0].0, ATTACKER_V4);
    assert!(lab.elements("gmany", "web-v4").is_empty());
    assert!(
        !lab.attacker_connects(SERVER_V4, 2222, SHORT),
        "banned on sshd's port"
    );
    assert!(
        lab.attacker_connects(SERVER_V4, 8080, LONG),
        "web shares port 2222 with sshd but holds no ban: its own port stays open"
    );
    assert!(lab.attacker_connects(SERVER_V4, 10_005, LONG));
    let (sets, _, rules) = table(&lab);
    assert_eq!(sets, ["sshd-v4"]);
    assert_eq!(rules, 2, "the verdict map and sshd's rule");

    // A /64 by hand in q5, a jail without ipv6_prefix: its n6 set comes with it.
    let net = "2001:db8:5:1::/64";
    let manual = ctl_json(cfg.path(), &["ban", "q5", net]);
    assert_eq!(manual["ip"], net);
    let prefixes = lab.elements("gmany", "q5-n6");
    assert_eq!(prefixes.len(), 1, "{prefixes:?}");
    assert_eq!(prefixes[0].0, net);
    for from in [ATTACKER_V6, ATTACKER_V6_B] {
        assert!(
            !lab.attacker_connects_from(from, SERVER_V6, 10_005, SHORT),
            "{from} is inside the banned /64"
        );
    }
    assert!(
        lab.attacker_connects(SERVER_V6, 2222, LONG),
        "the prefix is banned in q5 only"
    );

    // The reconciler (every second) finds the lazily made sets complete: no repair.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ctl_json(cfg.path(), &["stats"])["repairs"], 0);
    let (sets, _, rules) = table(&lab);
    assert_eq!(sets, ["q5-n6", "sshd-v4"]);
    assert_eq!(rules, 3);
}
