//! The nftables rules and lifecycle, in network namespaces: bans kept in the kernel
//! while the daemon is down (`on_stop = "keep"`), removed with `"flush"`; reject against
//! drop; only the jail's ports and protocol are blocked.

use std::time::Duration;

use crate::support::*;

const SHORT: Duration = Duration::from_millis(800);
const LONG: Duration = Duration::from_secs(3);

fn jail(extra: &str) -> String {
    format!("filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = 3\nbantime = \"1h\"\n{extra}\n")
}

#[test]
fn on_stop_keep_holds_bans_while_gaoler_is_down_and_across_the_restart() {
    let lab = Lab::new();
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"gkeep\"\non_stop = \"keep\"",
        &jail("ports = [\"2222\"]"),
    );
    lab.listen(2222);
    let mut d = Daemon::start(cfg.path(), Some(&lab.server));
    ctl_json(cfg.path(), &["ban", "sshd", ATTACKER_V4]);
    let before = lab.elements("gkeep", "sshd-v4");
    assert_eq!(before.len(), 1);
    d.stop();
    // Down: the ban is still in force.
    assert_eq!(lab.elements("gkeep", "sshd-v4").len(), 1);
    assert!(
        !lab.attacker_connects(SERVER_V4, 2222, SHORT),
        "dropped while gaoler is down"
    );
    let _d = Daemon::start(cfg.path(), Some(&lab.server));
    let after = lab.elements("gkeep", "sshd-v4");
    assert_eq!(after.len(), 1, "restored, not lost");
    assert!(
        after[0].2 <= before[0].2,
        "never extended: {after:?} after {before:?}"
    );
    assert!(
        !lab.attacker_connects(SERVER_V4, 2222, SHORT),
        "dropped after the restart"
    );
    assert_eq!(banned_ips(cfg.path()), vec![ATTACKER_V4.to_string()]);
}

#[test]
fn on_stop_flush_removes_the_table_at_stop() {
    let lab = Lab::new();
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"gflush\"\non_stop = \"flush\"",
        &jail("ports = [\"2222\"]"),
    );
    lab.listen(2222);
    let mut d = Daemon::start(cfg.path(), Some(&lab.server));
    ctl_json(cfg.path(), &["ban", "sshd", ATTACKER_V4]);
    assert!(!lab.attacker_connects(SERVER_V4, 2222, SHORT));
    d.stop();
    assert!(
        lab.nft_json(&["list", "table", "inet", "gflush"]).is_none(),
        "the table is gone"
    );
    assert!(
        lab.attacker_connects(SERVER_V4, 2222, LONG),
        "traffic flows once gaoler stopped"
    );
    // The ban is still in the store and comes back at the next start.
    let _d = Daemon::start(cfg.path(), Some(&lab.server));
    assert!(!lab.attacker_connects(SERVER_V4, 2222, SHORT));
}

#[test]
fn reject_refuses_at_once_where_drop_lets_the_connection_time_out() {
    let lab = Lab::new();
    lab.listen(2222);
    for (action, table) in [("drop", "gdrop"), ("reject", "grej")] {
        let cfg = ConfigDir::new(
            &format!("backend = \"nftables\"\ntable = \"{table}\""),
            &jail(&format!("ports = [\"2222\"]\naction = \"{action}\"")),
        );
        let mut d = Daemon::start(cfg.path(), Some(&lab.server));
        ctl_json(cfg.path(), &["ban", "sshd", ATTACKER_V4]);
        let result = lab.attacker_connect_result(SERVER_V4, 2222, SHORT);
        match action {
            "drop" => assert_eq!(result, Err(std::io::ErrorKind::TimedOut)),
            _ => assert_eq!(result, Err(std::io::ErrorKind::ConnectionRefused)),
        }
        d.stop();
        lab.nft(&["delete", "table", "inet", table]);
    }
}

#[test]
fn only_the_jails_ports_and_protocol_are_blocked() {
    let lab = Lab::new();
    lab.listen(2222);
    lab.listen(2223);
    lab.listen(3000);
    // tcp, ports 2222 and a range 2990-3010: 2223 stays open.
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"gports\"",
        &jail("ports = [\"2222\", \"2990-3010\"]\nprotocol = \"tcp\""),
    );
    let mut d = Daemon::start(cfg.path(), Some(&lab.server));
    ctl_json(cfg.path(), &["ban", "sshd", ATTACKER_V4]);
    assert!(!lab.attacker_connects(SERVER_V4, 2222, SHORT));
    assert!(
        !lab.attacker_connects(SERVER_V4, 3000, SHORT),
        "inside the range"
    );
    assert!(
        lab.attacker_connects(SERVER_V4, 2223, LONG),
        "another port stays open"
    );
    d.stop();
    lab.nft(&["delete", "table", "inet", "gports"]);

    // udp on 2222: TCP to 2222 is not affected.
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"gudp\"",
        &jail("ports = [\"2222\"]\nprotocol = \"udp\""),
    );
    let mut d = Daemon::start(cfg.path(), Some(&lab.server));
    ctl_json(cfg.path(), &["ban", "sshd", ATTACKER_V4]);
    assert!(
        lab.attacker_connects(SERVER_V4, 2222, LONG),
        "a udp jail does not block tcp"
    );
    d.stop();
    lab.nft(&["delete", "table", "inet", "gudp"]);

    // all protocols, no ports: everything from the attacker is dropped.
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"gall\"",
        &jail("ports = []\nprotocol = \"all\""),
    );
    let _d = Daemon::start(cfg.path(), Some(&lab.server));
    ctl_json(cfg.path(), &["ban", "sshd", ATTACKER_V4]);
    assert!(!lab.attacker_connects(SERVER_V4, 2223, SHORT));
    assert!(!lab.attacker_connects(SERVER_V4, 3000, SHORT));
}

#[test]
fn jails_sharing_a_set_block_an_offender_on_all_their_ports() {
    let lab = Lab::new();
    lab.listen(2222);
    lab.listen(2223);
    lab.listen(2224);
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"gshare\"",
        &jail("ports = [\"2222\"]\nset = \"common\""),
    );
    cfg.write(
        "jails/web.toml",
        &jail("ports = [\"2223\"]\nset = \"common\"").replace("auth.log", "web.log"),
    );
    cfg.write("web.log", "");
    let _d = Daemon::start(cfg.path(), Some(&lab.server));
    // Banned by sshd: dropped on sshd's port and on web's too, not elsewhere.
    ctl_json(cfg.path(), &["ban", "sshd", ATTACKER_V4]);
    assert_eq!(lab.elements("gshare", "common-v4").len(), 1);
    assert!(!lab.attacker_connects(SERVER_V4, 2222, SHORT));
    assert!(
        !lab.attacker_connects(SERVER_V4, 2223, SHORT),
        "the shared set blocks web's port too"
    );
    assert!(lab.attacker_connects(SERVER_V4, 2224, LONG));
    // Banned by web as well; lifting sshd's ban keeps the element for web's.
    ctl_json(cfg.path(), &["ban", "web", ATTACKER_V4, "--bantime", "10m"]);
    ctl_json(cfg.path(), &["unban", ATTACKER_V4, "--jail", "sshd"]);
    let left = lab.elements("gshare", "common-v4");
    assert_eq!(left.len(), 1, "web still bans it");
    assert!(
        left[0].1.is_some_and(|t| t <= 600),
        "timed to web's ban: {left:?}"
    );
    assert!(!lab.attacker_connects(SERVER_V4, 2222, SHORT));
    ctl_json(cfg.path(), &["unban", ATTACKER_V4, "--jail", "web"]);
    assert!(lab.elements("gshare", "common-v4").is_empty());
    assert!(lab.attacker_connects(SERVER_V4, 2222, LONG));
    assert!(lab.attacker_connects(SERVER_V4, 2223, LONG));
}

#[test]
fn a_reload_that_removes_a_jail_lifts_its_bans_in_the_kernel_and_keeps_the_others() {
    let lab = Lab::new();
    lab.listen(2222);
    lab.listen(8080);
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"greload\"",
        &jail("ports = [\"2222\"]"),
    );
    cfg.write(
        "jails/web.toml",
        "filter = \"sshd\"\nlogpath = \"web.log\"\nmaxretry = 3\nbantime = \"1h\"\nports = [\"8080\"]\n",
    );
    cfg.write("web.log", "");
    let _d = Daemon::start(cfg.path(), Some(&lab.server));
    ctl_json(cfg.path(), &["ban", "sshd", ATTACKER_V4]);
    ctl_json(cfg.path(), &["ban", "web", ATTACKER_V4]);
    assert!(!lab.attacker_connects(SERVER_V4, 2222, SHORT));
    assert!(!lab.attacker_connects(SERVER_V4, 8080, SHORT));
    let sshd_before = lab.elements("greload", "sshd-v4");

    std::fs::remove_file(cfg.path().join("jails/web.toml")).expect("rm");
    let report = ctl_json(cfg.path(), &["reload"]);
    assert_eq!(report["lifted"], 1, "{report}");
    assert_eq!(report["rebuilt"], true, "{report}");
    // web's set and rule are gone with its ban; sshd's element is there, not extended.
    assert!(
        lab.attacker_connects(SERVER_V4, 8080, LONG),
        "web's ban lifted"
    );
    assert!(
        !lab.attacker_connects(SERVER_V4, 2222, SHORT),
        "sshd's ban stays"
    );
    let sshd_after = lab.elements("greload", "sshd-v4");
    assert_eq!(sshd_after.len(), 1);
    assert!(sshd_after[0].2 <= sshd_before[0].2, "{sshd_after:?}");
    let table = lab
        .nft_json(&["list", "table", "inet", "greload"])
        .expect("table");
    assert!(!table.to_string().contains("web-v4"), "{table}");
    assert_eq!(banned_ips(cfg.path()), [ATTACKER_V4]);
}

#[test]
fn a_ten_year_ban_reaches_the_kernel_and_a_longer_one_is_refused_before_it() {
    // Regression: a bantime of 3650 days passed `check`, and nft then refused the
    // element ("value too large"): it was written as 315360000s.
    let lab = Lab::new();
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"glong\"",
        &jail("ports = [\"2222\"]").replace("bantime = \"1h\"", "bantime = \"3650d\""),
    );
    lab.listen(2222);
    let _d = Daemon::start(cfg.path(), Some(&lab.server));
    ctl_json(cfg.path(), &["ban", "sshd", ATTACKER_V4]);
    let els = lab.elements("glong", "sshd-v4");
    assert_eq!(els.len(), 1, "{els:?}");
    assert!(els[0].1.is_some_and(|t| t > 3649 * 86_400), "{els:?}");
    assert!(!lab.attacker_connects(SERVER_V4, 2222, SHORT));
    // One day longer is refused at the command line, with what to do instead.
    let out = gaoler(
        cfg.path(),
        &["ctl", "ban", "sshd", "198.51.100.9", "--bantime", "3651d"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("permanent"),
        "{}",
        text(&out.stderr)
    );
    // And in a jail file, at its position.
    cfg.write(
        "jails/sshd.toml",
        &jail("").replace("bantime = \"1h\"", "bantime = \"3651d\""),
    );
    let out = gaoler(cfg.path(), &["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("sshd.toml:4:"),
        "{}",
        text(&out.stderr)
    );
}

/// Two jails each ban an overlapping prefix in sets of their own; then they are made
/// to share one set, where nft refuses overlapping intervals. The restart must not
/// fail as a whole: the table is built, every other ban lands, the refused prefix
/// waits and lands once the overlap is lifted.
#[test]
fn an_element_nft_refuses_never_takes_the_restore_or_the_other_bans_down() {
    let lab = Lab::new();
    lab.listen(2222);
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"giso\"",
        &jail("ports = [\"2222\"]"),
    );
    cfg.write("jails/web.toml", &jail("ports = [\"2222\"]"));
    let mut d = Daemon::start(cfg.path(), Some(&lab.server));
    ctl_json(cfg.path(), &["ban", "sshd", "203.0.113.0/24"]);
    ctl_json(cfg.path(), &["ban", "web", "203.0.0.0/16"]);
    ctl_json(cfg.path(), &["ban", "sshd", ATTACKER_V4]);
    d.stop();
    for name in ["sshd", "web"] {
        cfg.write(
            &format!("jails/{name}.toml"),
            &jail("ports = [\"2222\"]\nset = \"shared\""),
        );
    }
    let d = Daemon::start(cfg.path(), Some(&lab.server));
    assert!(
        !lab.attacker_connects(SERVER_V4, 2222, SHORT),
        "the other bans are in force"
    );
    let prefixes = lab.elements("giso", "shared-n4");
    assert_eq!(
        prefixes.len(),
        1,
        "one of the overlapping prefixes: {prefixes:?}"
    );
    let banned = banned_ips(cfg.path());
    assert_eq!(
        banned.len(),
        2,
        "ctl shows only what the kernel holds: {banned:?}"
    );
    assert!(
        d.output().contains("nft refused this change alone"),
        "logged"
    );
    // Lifting the prefix that holds the place lets the other in at its retry.
    let held = prefixes[0].0.clone();
    ctl_json(cfg.path(), &["unban", &held]);
    wait_for(
        Duration::from_secs(20),
        "the refused prefix landing",
        || {
            let now = lab.elements("giso", "shared-n4");
            now.len() == 1 && now[0].0 != held
        },
    );
    assert_eq!(banned_ips(cfg.path()).len(), 2);
}
