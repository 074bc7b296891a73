//! End to end in network namespaces: the real daemon follows a log, bans the attacker
//! namespace's address in a real nftables set, and its TCP connections are dropped;
//! the ban survives `kill -9` plus a deleted table, and ends by unban or by expiry.

use std::time::Duration;

use crate::support::*;

const PORT: u16 = 2222;
const SHORT: Duration = Duration::from_millis(800);
const LONG: Duration = Duration::from_secs(3);
/// Ceiling for polls; they return as soon as the condition holds.
const WAIT: Duration = Duration::from_secs(15);

fn jail(maxretry: u32) -> String {
    format!("filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = {maxretry}\nfindtime = \"10m\"\nbantime = \"1h\"\nports = [\"{PORT}\"]\n")
}

fn stats(cfg: &ConfigDir) -> serde_json::Value {
    ctl_json(cfg.path(), &["stats"])
}

#[test]
fn brute_forcer_is_banned_dropped_restored_unbanned_and_expires() {
    let lab = Lab::new();
    let cfg = ConfigDir::new("backend = \"nftables\"\ntable = \"gaoler\"", &jail(3));
    lab.listen(PORT);
    assert!(
        lab.attacker_connects(SERVER_V4, PORT, LONG),
        "baseline: the attacker can connect before any ban"
    );
    let mut daemon = Daemon::start(cfg.path(), Some(&lab.server));

    // (a) Two failures with maxretry 3: counted, no ban.
    cfg.sshd_failure(ATTACKER_V4);
    cfg.sshd_failure(ATTACKER_V4);
    wait_for(WAIT, "two failures counted", || {
        stats(&cfg)["failures"] == 2
    });
    assert!(banned_ips(cfg.path()).is_empty());
    assert!(lab.elements("gaoler", "sshd-v4").is_empty());
    assert!(
        lab.attacker_connects(SERVER_V4, PORT, LONG),
        "no ban after two failures"
    );

    // The third: banned, in ctl and as a kernel element with a timeout.
    cfg.sshd_failure(ATTACKER_V4);
    wait_for(WAIT, "the ban", || {
        banned_ips(cfg.path()) == vec![ATTACKER_V4.to_string()]
    });
    let ban = ctl_json(cfg.path(), &["banned"])[0].clone();
    assert_eq!(ban["jail"], "sshd");
    assert_eq!(ban["count"], 1);
    let banned_at =
        chrono::DateTime::parse_from_rfc3339(ban["banned_at"].as_str().expect("banned_at"))
            .expect("rfc3339");
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(ban["expires_at"].as_str().expect("expires_at"))
            .expect("rfc3339");
    assert_eq!((expires_at - banned_at).num_seconds(), 3600);
    let elements = lab.elements("gaoler", "sshd-v4");
    assert_eq!(elements.len(), 1, "{elements:?}");
    let (addr, timeout, expires) = elements[0].clone();
    assert_eq!(addr, ATTACKER_V4);
    assert!(
        timeout.is_some_and(|t| (3590..=3600).contains(&t)),
        "timeout {timeout:?}"
    );
    let expires_before = expires.expect("element expires");

    // (b) The attacker's TCP connection is dropped.
    assert!(
        !lab.attacker_connects(SERVER_V4, PORT, SHORT),
        "banned attacker still connects"
    );

    // (c) kill -9, delete the table, restart: the ban is back with less time left.
    daemon.kill9();
    lab.nft(&["delete", "table", "inet", "gaoler"]);
    assert!(
        lab.attacker_connects(SERVER_V4, PORT, LONG),
        "with the table gone traffic flows"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let daemon = Daemon::start(cfg.path(), Some(&lab.server));
    let after = ctl_json(cfg.path(), &["banned"]);
    assert_eq!(after.as_array().map(Vec::len), Some(1));
    assert_eq!(
        after[0]["expires_at"], ban["expires_at"],
        "the ban's end never moves"
    );
    let elements = lab.elements("gaoler", "sshd-v4");
    assert_eq!(elements.len(), 1, "{elements:?}");
    let (_, timeout, expires) = elements[0].clone();
    let timeout = timeout.expect("restored element has a timeout");
    assert!(
        timeout < expires_before,
        "restored timeout {timeout} is not below {expires_before}"
    );
    assert!(expires.is_some_and(|e| e <= timeout));
    assert!(
        !lab.attacker_connects(SERVER_V4, PORT, SHORT),
        "dropped again after restore"
    );

    // (d) Unban: the connection works again.
    let lifted = ctl_json(cfg.path(), &["unban", ATTACKER_V4]);
    assert_eq!(lifted[0]["ip"], ATTACKER_V4);
    assert!(banned_ips(cfg.path()).is_empty());
    assert!(lab.elements("gaoler", "sshd-v4").is_empty());
    assert!(
        lab.attacker_connects(SERVER_V4, PORT, LONG),
        "unbanned attacker connects"
    );

    // (e) A 2-second manual ban disappears from ctl and the kernel by itself.
    let manual = ctl_json(cfg.path(), &["ban", "sshd", ATTACKER_V4, "--bantime", "2"]);
    assert_eq!(manual["ip"], ATTACKER_V4);
    assert_eq!(
        manual["count"], 2,
        "the second ban of this address in this jail"
    );
    assert_eq!(lab.elements("gaoler", "sshd-v4").len(), 1);
    assert!(!lab.attacker_connects(SERVER_V4, PORT, SHORT));
    wait_for(WAIT, "the manual ban to expire", || {
        banned_ips(cfg.path()).is_empty() && lab.elements("gaoler", "sshd-v4").is_empty()
    });
    assert!(
        lab.attacker_connects(SERVER_V4, PORT, LONG),
        "expired ban no longer drops"
    );

    // A clean stop keeps the table (on_stop = "keep").
    let mut daemon = daemon;
    daemon.stop();
    assert!(lab.nft_json(&["list", "table", "inet", "gaoler"]).is_some());
}

#[test]
fn ipv6_and_ipv4_mapped_offenders_are_banned_in_their_family_set() {
    let lab = Lab::new();
    let cfg = ConfigDir::new("backend = \"nftables\"\ntable = \"g6\"", &jail(2));
    lab.listen(PORT);
    assert!(
        lab.attacker_connects(SERVER_V6, PORT, LONG),
        "baseline over IPv6"
    );
    let _daemon = Daemon::start(cfg.path(), Some(&lab.server));
    // ignoreself: the server's own addresses are never banned, not even by hand.
    for own in [SERVER_V4, SERVER_V6] {
        let out = gaoler(cfg.path(), &["ctl", "ban", "sshd", own]);
        assert_eq!(out.status.code(), Some(2), "banning {own} must be refused");
        assert!(
            text(&out.stderr).contains("ignore list"),
            "{}",
            text(&out.stderr)
        );
    }

    cfg.sshd_failure(ATTACKER_V6);
    cfg.sshd_failure(ATTACKER_V6);
    wait_for(WAIT, "the IPv6 ban", || {
        banned_ips(cfg.path()) == vec![ATTACKER_V6.to_string()]
    });
    let v6 = lab.elements("g6", "sshd-v6");
    assert_eq!(v6.len(), 1, "{v6:?}");
    assert_eq!(v6[0].0, ATTACKER_V6);
    assert!(
        !lab.attacker_connects(SERVER_V6, PORT, SHORT),
        "IPv6 attacker dropped"
    );
    assert!(
        lab.attacker_connects(SERVER_V4, PORT, LONG),
        "the IPv4 address is another offender"
    );

    // sshd on a dual-stack socket logs IPv4 peers as ::ffff:a.b.c.d: banned as IPv4.
    let mapped = format!("::ffff:{ATTACKER_V4}");
    cfg.sshd_failure(&mapped);
    cfg.sshd_failure(&mapped);
    wait_for(WAIT, "the mapped ban", || {
        banned_ips(cfg.path()).contains(&ATTACKER_V4.to_string())
    });
    assert_eq!(lab.elements("g6", "sshd-v4").len(), 1);
    assert!(
        !lab.attacker_connects(SERVER_V4, PORT, SHORT),
        "IPv4 attacker dropped"
    );
}

#[test]
fn an_ipv6_64_ban_drops_every_address_of_the_prefix() {
    let lab = Lab::new();
    let jail = format!(
        "filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = 2\nbantime = \"1h\"\nports = [\"{PORT}\"]\nipv6_prefix = 64\n"
    );
    let cfg = ConfigDir::new("backend = \"nftables\"\ntable = \"g64\"", &jail);
    lab.listen(PORT);
    assert!(
        lab.attacker_connects_from(ATTACKER_V6_B, SERVER_V6, PORT, LONG),
        "baseline from the second address"
    );
    let _daemon = Daemon::start(cfg.path(), Some(&lab.server));

    // An overlapping single-address ban in the same jail first: another set, no conflict.
    ctl_json(
        cfg.path(),
        &["ban", "sshd", ATTACKER_V6_B, "--bantime", "1h"],
    );
    // Two failures from one address of the /64 ban the whole /64.
    cfg.sshd_failure(ATTACKER_V6);
    cfg.sshd_failure(ATTACKER_V6);
    wait_for(WAIT, "the /64 ban", || {
        banned_ips(cfg.path()).contains(&"2001:db8:5:1::/64".to_string())
    });
    let nets = lab.elements("g64", "sshd-n6");
    assert_eq!(nets.len(), 1, "{nets:?}");
    assert_eq!(nets[0].0, "2001:db8:5:1::/64");
    assert!(nets[0].1.is_some(), "the prefix element has a timeout");
    assert_eq!(
        lab.elements("g64", "sshd-v6").len(),
        1,
        "the single-address ban is still there"
    );
    // Both addresses of the /64 are dropped.
    assert!(!lab.attacker_connects_from(ATTACKER_V6, SERVER_V6, PORT, SHORT));
    assert!(!lab.attacker_connects_from(ATTACKER_V6_B, SERVER_V6, PORT, SHORT));
    // Lifting both lets both through again.
    ctl_json(cfg.path(), &["unban", "--all"]);
    assert!(lab.attacker_connects_from(ATTACKER_V6, SERVER_V6, PORT, LONG));
    assert!(lab.attacker_connects_from(ATTACKER_V6_B, SERVER_V6, PORT, LONG));
}

#[test]
fn the_reconciler_repairs_a_deleted_element_a_deleted_table_and_an_unknown_element() {
    let lab = Lab::new();
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"grec\"\nreconcile_interval = \"1s\"",
        &jail(3),
    );
    lab.listen(PORT);
    let _daemon = Daemon::start(cfg.path(), Some(&lab.server));
    ctl_json(cfg.path(), &["ban", "sshd", ATTACKER_V4, "--bantime", "1h"]);
    let repairs = || {
        ctl_json(cfg.path(), &["stats"])["repairs"]
            .as_u64()
            .unwrap_or(0)
    };
    let has = |ip: &str| lab.elements("grec", "sshd-v4").iter().any(|e| e.0 == ip);

    // An element deleted behind gaoler's back comes back, with its time left.
    lab.nft(&[
        "delete",
        "element",
        "inet",
        "grec",
        "sshd-v4",
        &format!("{{ {ATTACKER_V4} }}"),
    ]);
    assert!(
        lab.attacker_connects(SERVER_V4, PORT, LONG),
        "deleted: traffic flows"
    );
    wait_for(WAIT, "the element to be restored", || has(ATTACKER_V4));
    assert!(lab.elements("grec", "sshd-v4")[0]
        .1
        .is_some_and(|t| t <= 3600));
    assert!(
        !lab.attacker_connects(SERVER_V4, PORT, SHORT),
        "restored: dropped again"
    );

    // An element gaoler does not know is removed.
    lab.nft(&[
        "add",
        "element",
        "inet",
        "grec",
        "sshd-v4",
        "{ 198.51.100.77 }",
    ]);
    wait_for(WAIT, "the unknown element to be removed", || {
        !has("198.51.100.77")
    });

    // The whole table deleted: rebuilt with every ban.
    lab.nft(&["delete", "table", "inet", "grec"]);
    wait_for(WAIT, "the table to be rebuilt", || has(ATTACKER_V4));
    assert!(
        !lab.attacker_connects(SERVER_V4, PORT, SHORT),
        "rebuilt: dropped again"
    );
    assert!(repairs() >= 3, "repairs are counted: {}", repairs());
}

#[test]
fn a_flushed_ruleset_is_rebuilt_within_seconds_and_a_ban_after_it_lands() {
    // Regression: after `nft flush ruleset` (what `systemctl restart nftables` does)
    // bans were gone until the next reconcile (60 s), and new bans failed with "No
    // such file or directory" and were retried with backoff against nothing.
    let lab = Lab::new();
    let cfg = ConfigDir::new("backend = \"nftables\"\ntable = \"gwipe\"", &jail(3));
    lab.listen(PORT);
    let _daemon = Daemon::start(cfg.path(), Some(&lab.server));
    ctl_json(cfg.path(), &["ban", "sshd", ATTACKER_V4, "--bantime", "1h"]);
    let has = |ip: &str| lab.elements("gwipe", "sshd-v4").iter().any(|e| e.0 == ip);
    assert!(has(ATTACKER_V4));
    lab.nft(&["flush", "ruleset"]);
    // Seen through `nft monitor`: rebuilt long before the 60 s reconcile interval.
    let t0 = std::time::Instant::now();
    wait_for(Duration::from_secs(5), "the table to be rebuilt", || {
        has(ATTACKER_V4)
    });
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(
        !lab.attacker_connects(SERVER_V4, PORT, SHORT),
        "dropped again"
    );
    // Wiped again, and a ban made at once: it lands with the rebuild.
    lab.nft(&["flush", "ruleset"]);
    ctl_json(
        cfg.path(),
        &["ban", "sshd", "198.51.100.20", "--bantime", "1h"],
    );
    wait_for(Duration::from_secs(5), "both bans back", || {
        has(ATTACKER_V4) && has("198.51.100.20")
    });
}
