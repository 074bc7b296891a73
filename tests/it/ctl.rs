//! Every `ctl` command against a live daemon (log backend), as a table and as JSON,
//! with its exit code; and clients that misbehave (hold connections past the daemon's
//! open-files limit, never read their answer) without stalling bans or growing memory.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use gaoler::store::{BanStore, SledStore, StoreChange};
use gaoler::types::Ban;

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

/// Under an open-files limit of 256, 300 idle ctl connections: the daemon serves 64 (a
/// quarter of its limit) and tells the rest it is busy, so a ban still reaches
/// nftables at once (before, accept failed with EMFILE, nft could not be spawned and
/// the ban waited a minute), and ctl answers again as soon as they close.
#[test]
fn idle_ctl_connections_past_the_fd_limit_do_not_delay_a_ban() {
    let lab = Lab::new();
    let cfg = ConfigDir::new("backend = \"nftables\"\ntable = \"gaoler\"", BAN_AT_FIRST);
    let wrapper = [
        "ip",
        "netns",
        "exec",
        &lab.server,
        "prlimit",
        "--nofile=256:256",
        "--",
    ];
    let d = Daemon::start_in(cfg.path(), &wrapper);
    let socket = cfg.path().join("gaoler.sock");
    let idle: Vec<UnixStream> = (0..300)
        .map(|_| UnixStream::connect(&socket).expect("connect"))
        .collect();
    wait_for(Duration::from_secs(10), "ctl refused as busy", || {
        let out = gaoler(cfg.path(), &["ctl", "ping"]);
        let err = text(&out.stderr);
        !out.status.success() && err.contains("the daemon is busy: 64 ctl connections are open")
    });
    assert!(open_fds(d.pid()) < 200, "{} files open", open_fds(d.pid()));

    let written = Instant::now();
    cfg.sshd_failure(ATTACKER_V4);
    wait_for(Duration::from_secs(5), "the ban in nftables", || {
        lab.elements("gaoler", "sshd-v4")
            .iter()
            .any(|(ip, _, _)| ip == ATTACKER_V4)
    });
    eprintln!("ban in nftables after {:?}", written.elapsed());

    drop(idle);
    wait_for(Duration::from_secs(5), "ctl answers again", || {
        gaoler(cfg.path(), &["ctl", "ping"]).status.success()
    });
    assert_eq!(banned_ips(cfg.path()), vec![ATTACKER_V4.to_string()]);
    // 236 connections and the pings were refused: a warning when the burst began (a
    // second one if the start's last ping freed its slot in the middle), a line with
    // the count when it ended; never a line per connection.
    wait_for(
        Duration::from_secs(5),
        "the end of the burst logged",
        || d.output().contains("serving again after refusing"),
    );
    let warnings = d.output().matches("refusing new ones").count();
    assert!((1..=2).contains(&warnings), "{}", d.output());
}

/// 20,000 bans (about 3.5 MB of JSON), asked for by 100 clients that never read: each
/// connection holds a 32 KiB piece of its answer out of one shared list, so the
/// daemon's memory barely moves (each client held a copy of the bans, their views and
/// the whole JSON: 580 MB more, kept after they left), other requests are answered
/// meanwhile, a full listing included, and it stays bounded after they leave.
#[test]
fn clients_that_never_read_their_bans_do_not_grow_the_daemons_memory() {
    const BANS: u32 = 20_000;
    const CLIENTS: usize = 100;
    const BOUND_KB: u64 = 100 * 1024;
    let cfg = ConfigDir::new("backend = \"log\"", BAN_AT_FIRST);
    {
        let mut store = SledStore::open(&cfg.path().join("state")).expect("open the state");
        let now = chrono::Utc::now();
        let changes: Vec<StoreChange> = (0..BANS)
            .map(|i| {
                StoreChange::Put(Ban {
                    target: offender(i).parse().expect("target"),
                    jail: "sshd".into(),
                    banned_at: now,
                    expires_at: Some(now + chrono::Duration::hours(1)),
                    count: 1,
                    origin: None,
                })
            })
            .collect();
        store.commit(&changes).expect("store the bans");
    }
    // 1024 files, systemd's default: ctl serves 256 at once.
    let d = Daemon::start_in(cfg.path(), &["prlimit", "--nofile=1024:1024", "--"]);
    let pid = d.pid();
    assert_eq!(ctl_count(cfg.path(), "banned"), BANS as usize);
    let (before, fds) = (rss_kb(pid), open_fds(pid));

    let socket = cfg.path().join("gaoler.sock");
    let lazy: Vec<UnixStream> = (0..CLIENTS)
        .map(|_| {
            let mut s = UnixStream::connect(&socket).expect("connect");
            s.write_all(b"{\"v\":1,\"request\":{\"cmd\":\"banned\"}}\n")
                .expect("ask");
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            s
        })
        .collect();
    // Every answer has begun (one byte read of each), so every one is in flight.
    for mut s in &lazy {
        s.read_exact(&mut [0u8; 1]).expect("the answer begins");
    }
    let mut peak = rss_kb(pid);
    assert!(gaoler(cfg.path(), &["ctl", "ping"]).status.success());
    assert_eq!(ctl_count(cfg.path(), "banned"), BANS as usize);
    peak = peak.max(rss_kb(pid));
    eprintln!("RSS: {before} KiB before, {peak} KiB at most with {CLIENTS} clients hanging");
    assert!(
        peak < before + BOUND_KB,
        "RSS grew from {before} KiB to {peak} KiB"
    );

    drop(lazy);
    wait_for(Duration::from_secs(5), "the connections closed", || {
        open_fds(pid) <= fds
    });
    let after = rss_kb(pid);
    eprintln!("RSS after they left: {after} KiB");
    assert!(
        after < before + BOUND_KB / 2,
        "RSS {before} KiB, then {after} KiB"
    );
}
