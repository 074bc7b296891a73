//! Every `ctl` command against a live daemon (log backend), as a table and as JSON,
//! with its exit code.

use crate::support::*;

const JAIL: &str = "filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = 3\nbantime = \"1h\"\n";

/// `gaoler ctl ARGS` as text: (exit code, stdout, stderr).
fn ctl_text(cfg: &ConfigDir, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["ctl"];
    full.extend_from_slice(args);
    let out = gaoler(cfg.path(), &full);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn every_ctl_command_answers_as_a_table_and_as_json() {
    let cfg = ConfigDir::new("backend = \"log\"", JAIL);
    let _d = Daemon::start(cfg.path(), None);

    let (code, out, _) = ctl_text(&cfg, &["ping"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("pong: gaoler "), "{out}");
    assert_eq!(ctl_json(cfg.path(), &["ping"])["pong"], true);

    let (_, out, _) = ctl_text(&cfg, &["version"]);
    assert!(out.contains("ctl protocol 1"), "{out}");
    assert_eq!(ctl_json(cfg.path(), &["version"])["protocol"], 1);

    // ban: a table line with the relative expiry, JSON in the stable shape.
    let (code, out, _) = ctl_text(&cfg, &["ban", "sshd", "203.0.113.1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("banned 203.0.113.1 in sshd") && out.contains("in 59m"),
        "{out}"
    );
    let v = ctl_json(
        cfg.path(),
        &["ban", "sshd", "2001:db8::/64", "--bantime", "permanent"],
    );
    assert_eq!(v["ip"], "2001:db8::/64");
    assert!(v["expires_at"].is_null(), "{v}");

    // banned: an aligned table (header and rows start their columns together).
    let (_, out, _) = ctl_text(&cfg, &["banned"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("IP  "), "{out}");
    let col = lines[0].find("JAIL").expect("JAIL column");
    assert!(
        lines[1..].iter().all(|l| l[col..].starts_with("sshd")),
        "{out}"
    );
    assert!(out.contains("never"), "{out}");
    let bans = ctl_json(cfg.path(), &["banned", "--jail", "sshd"]);
    assert_eq!(bans.as_array().map(Vec::len), Some(2));
    for field in ["ip", "jail", "banned_at", "expires_at", "count"] {
        assert!(bans[0].get(field).is_some(), "{field} in {bans}");
    }

    // status, all jails and one.
    let (_, out, _) = ctl_text(&cfg, &["status"]);
    assert!(out.starts_with("JAIL") && out.contains("sshd"), "{out}");
    let (_, out, _) = ctl_text(&cfg, &["status", "sshd"]);
    assert!(out.contains("banned in sshd: "), "{out}");
    let v = ctl_json(cfg.path(), &["status", "sshd"]);
    assert_eq!(v["jails"][0]["currently_banned"], 2, "{v}");
    assert_eq!(v["jails"][0]["banned"].as_array().map(Vec::len), Some(2));

    // stats.
    let (_, out, _) = ctl_text(&cfg, &["stats"]);
    assert!(out.starts_with("LINES READ"), "{out}");
    let v = ctl_json(cfg.path(), &["stats"]);
    for field in ["lines_read", "failures", "bans", "tracked", "evicted"] {
        assert!(v[field].is_u64(), "{field} in {v}");
    }

    // unban one, then all.
    let (code, out, _) = ctl_text(&cfg, &["unban", "203.0.113.1"]);
    assert_eq!(code, 0);
    assert_eq!(out, "unbanned 203.0.113.1 in sshd\n");
    let (code, out, _) = ctl_text(&cfg, &["unban", "203.0.113.1"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "nothing to unban: no matching ban\n")
    );
    let v = ctl_json(cfg.path(), &["unban", "--all"]);
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    let (_, out, _) = ctl_text(&cfg, &["banned"]);
    assert_eq!(out, "no bans\n");

    // reload, log-level, flush-logs.
    let (code, out, _) = ctl_text(&cfg, &["reload"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("reloaded: 1 jails running"), "{out}");
    assert_eq!(ctl_json(cfg.path(), &["reload"])["kept"][0], "sshd");
    let (_, out, _) = ctl_text(&cfg, &["log-level", "info"]);
    assert_eq!(out, "log level is now info\n");
    let (_, out, _) = ctl_text(&cfg, &["flush-logs"]);
    assert!(out.contains("nothing to reopen"), "{out}");
    assert!(ctl_json(cfg.path(), &["flush-logs"])["reopened"].is_null());

    // Usage errors exit 2 with the thing at fault named.
    let (code, _, err) = ctl_text(&cfg, &["ban", "sshd", "not-an-ip"]);
    assert_eq!(code, 2);
    assert!(err.contains("not-an-ip"), "{err}");
    let (code, _, err) = ctl_text(&cfg, &["status", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("no enabled jail named `nope`"), "{err}");
    let (code, _, err) = ctl_text(&cfg, &["ban", "sshd", "203.0.113.2", "--bantime", "soon"]);
    assert_eq!(code, 2);
    assert!(err.contains("--bantime"), "{err}");
}
