//! The binary's edges without a kernel: `check` errors with positions, nft missing at
//! start, bad log input, garbage on the control socket, a second daemon refused.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

const LOG_JAIL: &str = "filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = 3\n";

#[test]
fn check_reports_every_error_with_file_line_and_column() {
    let cfg = ConfigDir::new("backend = \"log\"\nflush_on_exit = true", LOG_JAIL);
    cfg.write(
        "jails/web.toml",
        "enabled = true\nfilter = \"nginx-nope\"\nlogpath = \"access.log\"\n",
    );
    let out = gaoler(cfg.path(), &["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("gaoler.toml:9:1: unknown field `flush_on_exit`"),
        "{err}"
    );
    assert!(
        err.contains("jails/web.toml:2:10: filter `nginx-nope` not found"),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");
    // `run` refuses the same config with the same messages.
    let out = gaoler(cfg.path(), &["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("flush_on_exit"));
}

#[test]
fn the_shipped_configuration_passes_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        repo.join("packaging/gaoler.toml"),
        dir.path().join("gaoler.toml"),
    )
    .expect("copy main");
    std::os::unix::fs::symlink(repo.join("jails"), dir.path().join("jails")).expect("link jails");
    std::os::unix::fs::symlink(repo.join("filters"), dir.path().join("filters"))
        .expect("link filters");
    let out = gaoler(dir.path(), &["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("configuration is valid"));
}

#[test]
fn nft_missing_at_start_says_to_install_nftables() {
    let cfg = ConfigDir::new("backend = \"nftables\"", LOG_JAIL);
    let empty = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(cfg.path())
        .env("PATH", empty.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("`nft` command was not found: install the nftables package"),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
}

#[test]
fn huge_lines_and_invalid_utf8_do_not_stop_matching() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let _d = Daemon::start(cfg.path(), None);
    let mut huge =
        b"Nov 21 08:13:46 h sshd[1]: Failed password for root from 203.0.113.66 port 1 ssh2 "
            .to_vec();
    huge.extend(std::iter::repeat_n(b'A', 1024 * 1024));
    huge.push(b'\n');
    cfg.append("auth.log", &huge);
    cfg.append("auth.log", b"\xff\xfe\xfd not utf-8 \x00\x01 at all\n");
    let stamp = chrono::Local::now().format("%b %e %H:%M:%S").to_string();
    let mut bad_user = format!("{stamp} h sshd[1]: Invalid user ").into_bytes();
    bad_user.extend_from_slice(b"\xff\xfe from 203.0.113.77 port 9\n");
    cfg.append("auth.log", &bad_user);
    for _ in 0..3 {
        cfg.sshd_failure("203.0.113.5");
    }
    wait_for(Duration::from_secs(15), "the ban after bad lines", || {
        banned_ips(cfg.path()).contains(&"203.0.113.5".to_string())
    });
    let stats = ctl_json(cfg.path(), &["stats"]);
    assert_eq!(stats["lines_read"], 6, "{stats}");
    // The invalid-UTF-8 user name still counted for its (real) address.
    let status = ctl_json(cfg.path(), &["status", "sshd"]);
    assert_eq!(status["jails"][0]["total_failed"], 4, "{status}");
}

/// The probe: a user name padded so that a forged ` from <addr> port 1 ssh2` ends
/// exactly at `max_line_length`, the server's own ` from <real> port` cut off. A cut
/// line is counted and never matched, at the 64 KiB default and at 16 MiB.
#[test]
fn a_line_cut_at_max_line_length_never_bans_the_address_forged_at_its_end() {
    for cap in [None, Some(16 * 1024 * 1024)] {
        let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
        if let Some(cap) = cap {
            let toml = std::fs::read_to_string(cfg.path().join("gaoler.toml")).expect("toml");
            cfg.write(
                "gaoler.toml",
                &toml.replace(
                    "[daemon]\n",
                    &format!("[daemon]\nmax_line_length = {cap}\n"),
                ),
            );
        }
        let limit = cap.unwrap_or(64 * 1024);
        let _d = Daemon::start(cfg.path(), None);
        let stamp = chrono::Local::now().format("%b %e %H:%M:%S").to_string();
        let head = format!("{stamp} h sshd[1]: Failed password for invalid user ");
        let forged = " from 203.0.113.66 port 1 ssh2";
        let pad = "u".repeat(limit - head.len() - forged.len());
        let line = format!("{head}{pad}{forged} from 192.0.2.7 port 22 ssh2\n");
        for _ in 0..3 {
            cfg.append("auth.log", line.as_bytes());
        }
        for _ in 0..3 {
            cfg.sshd_failure("203.0.113.5");
        }
        wait_for(
            Duration::from_secs(15),
            "the ban of the real offender",
            || banned_ips(cfg.path()).contains(&"203.0.113.5".to_string()),
        );
        let stats = ctl_json(cfg.path(), &["stats"]);
        assert_eq!(stats["lines_cut"], 3, "cap {limit}: {stats}");
        assert_eq!(
            stats["failures"], 3,
            "cap {limit}: only the whole lines count: {stats}"
        );
        assert_eq!(
            banned_ips(cfg.path()),
            vec!["203.0.113.5".to_string()],
            "cap {limit}"
        );
    }
}

fn raw_request(socket: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("read");
    line
}

#[test]
fn garbage_on_the_socket_gets_an_error_and_the_daemon_keeps_answering() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let _d = Daemon::start(cfg.path(), None);
    let socket = cfg.path().join("gaoler.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket).expect("socket").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "socket mode");
    let answer = raw_request(&socket, b"\x00\xffnot json\n");
    assert!(
        answer.contains("\"usage\":true") && answer.contains("malformed"),
        "{answer}"
    );
    let answer = raw_request(&socket, br#"{"v":7,"request":{"cmd":"ping"}}"#.iter().chain(b"\n").copied().collect::<Vec<u8>>().as_slice());
    assert!(answer.contains("protocol"), "{answer}");
    let big = vec![b'x'; 200 * 1024];
    let answer = raw_request(&socket, &big);
    assert!(answer.contains("larger than 64 KiB"), "{answer}");
    assert!(gaoler(cfg.path(), &["ctl", "ping"]).status.success());
    // Usage errors exit 2; an unknown jail is one.
    let out = gaoler(cfg.path(), &["ctl", "ban", "nope", "203.0.113.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no enabled jail named `nope`"));
}

#[test]
fn ctl_without_a_daemon_exits_1_with_a_hint() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let out = gaoler(cfg.path(), &["ctl", "ping"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot reach the gaoler daemon") && err.contains("is `gaoler run` running"),
        "{err}"
    );
}

/// A second configuration in `cfg/other`, like the first but with this state
/// directory and socket (relative to `other`).
fn second_config(cfg: &ConfigDir, state: &str, socket: &str) -> std::path::PathBuf {
    let main = std::fs::read_to_string(cfg.path().join("gaoler.toml")).expect("read");
    cfg.write(
        "other/gaoler.toml",
        &main.replace(
            "state_dir = \"state\"\nsocket = \"gaoler.sock\"",
            &format!("state_dir = \"{state}\"\nsocket = \"{socket}\""),
        ),
    );
    cfg.write("other/jails/sshd.toml", LOG_JAIL);
    cfg.write("other/auth.log", "");
    cfg.path().join("other")
}

#[test]
fn a_second_daemon_on_the_same_state_is_refused() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let _d = Daemon::start(cfg.path(), None);
    // The same state directory, another socket.
    let other = second_config(&cfg, "../state", "other.sock");
    let out = gaoler(&other, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("in use by another gaoler process"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        gaoler(cfg.path(), &["ctl", "ping"]).status.success(),
        "the first one keeps running"
    );
}

/// The evidence: a ban keeps the lines that made it (`ctl banned --json`
/// `matches`), across `kill -9`; a ban by hand has none; the text table shows no
/// control character from them.
#[test]
fn a_ban_keeps_the_lines_that_made_it_across_kill_9() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let mut d = Daemon::start(cfg.path(), None);
    let stamp = chrono::Local::now().format("%b %e %H:%M:%S").to_string();
    let lines: Vec<String> = ["root", "admin", "\x1b[2J\x1b[31mevil"]
        .iter()
        .enumerate()
        .map(|(i, user)| {
            format!(
                "{stamp} host sshd[{i}]: Failed password for invalid user {user} from 203.0.113.20 port 22 ssh2"
            )
        })
        .collect();
    let other =
        format!("{stamp} host sshd[9]: Failed password for root from 203.0.113.21 port 22 ssh2");
    let mut log = String::new();
    for (i, line) in lines.iter().enumerate() {
        log.push_str(line);
        log.push('\n');
        if i == 0 {
            log.push_str(&other);
            log.push('\n');
        }
    }
    cfg.append("auth.log", log.as_bytes());
    let matches_of = |ip: &str| -> Option<Vec<String>> {
        let bans = ctl_json(cfg.path(), &["banned"]);
        bans.as_array()?
            .iter()
            .find(|b| b["ip"] == ip)
            .map(|b| serde_json::from_value(b["matches"].clone()).expect("matches"))
    };
    wait_for(Duration::from_secs(10), "the ban", || {
        matches_of("203.0.113.20").is_some()
    });
    assert_eq!(matches_of("203.0.113.20"), Some(lines.clone()));
    let table = text(&gaoler(cfg.path(), &["ctl", "banned"]).stdout);
    assert!(table.contains("203.0.113.20"), "{table}");
    assert!(!table.contains('\x1b'), "{table:?}");
    ctl_json(cfg.path(), &["ban", "sshd", "203.0.113.30"]);
    assert_eq!(matches_of("203.0.113.30"), Some(Vec::new()));
    d.kill9();
    let _d = Daemon::start(cfg.path(), None);
    assert_eq!(matches_of("203.0.113.20"), Some(lines.clone()));
    assert_eq!(matches_of("203.0.113.21"), None, "one failure: no ban");

    // `ctl show`: the ban and its lines; the terminal gets the escape escaped.
    let shown = ctl_json(cfg.path(), &["show", "203.0.113.20"]);
    assert_eq!(shown["bans"][0]["jail"], "sshd");
    assert_eq!(shown["bans"][0]["matches"][2], lines[2].as_str());
    let out = gaoler(cfg.path(), &["ctl", "show", "203.0.113.20"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let human = text(&out.stdout);
    assert!(human.contains("203.0.113.20 banned in sshd"), "{human}");
    assert!(
        human.contains("| ") && human.contains("user admin from"),
        "{human}"
    );
    assert!(human.contains("user \\u{1b}[2J\\u{1b}[31mevil"), "{human}");
    assert!(!human.contains('\x1b'), "{human:?}");
    // Lifted: no current ban, one past ban.
    ctl_json(cfg.path(), &["unban", "203.0.113.20"]);
    let shown = ctl_json(cfg.path(), &["show", "203.0.113.20"]);
    assert_eq!(shown["bans"], serde_json::json!([]));
    assert_eq!(shown["past"][0]["jail"], "sshd");
    assert_eq!(shown["past"][0]["count"], 1);
    let human = text(&gaoler(cfg.path(), &["ctl", "show", "203.0.113.20"]).stdout);
    assert!(
        human.contains("not banned") && human.contains("past bans"),
        "{human}"
    );
    let bad = gaoler(cfg.path(), &["ctl", "show", "not-an-ip"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn bans_survive_a_restart_with_the_log_backend_and_expired_ones_are_dropped() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let mut d = Daemon::start(cfg.path(), None);
    ctl_json(
        cfg.path(),
        &["ban", "sshd", "203.0.113.8", "--bantime", "1h"],
    );
    ctl_json(
        cfg.path(),
        &["ban", "sshd", "2001:db8::8", "--bantime", "permanent"],
    );
    ctl_json(
        cfg.path(),
        &["ban", "sshd", "203.0.113.9", "--bantime", "1"],
    );
    d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    let _d = Daemon::start(cfg.path(), None);
    let bans = ctl_json(cfg.path(), &["banned"]);
    let ips: Vec<&str> = bans
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|b| b["ip"].as_str())
        .collect();
    assert_eq!(ips, vec!["203.0.113.8", "2001:db8::8"]);
    assert!(bans[1]["expires_at"].is_null(), "permanent ban");
}

/// A user name is the attacker's text: an ANSI escape in it must not reach the
/// operator's terminal as one.
#[test]
fn test_filter_escapes_control_characters_from_the_log() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let log = cfg.path().join("evil.log");
    std::fs::write(
        &log,
        "Dec  5 04:00:00 host sshd[1]: Failed password for invalid user \x1b[2J\x1b[31mroot\u{9b}1m\u{202e}x from 192.0.2.9 port 22 ssh2\n",
    )
    .expect("log");
    let out = gaoler(
        cfg.path(),
        &["test-filter", "sshd", log.to_str().expect("path")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("192.0.2.9"), "{shown}");
    assert!(
        shown.contains("user=\\u{1b}[2J\\u{1b}[31mroot\\u{9b}1m\\u{202e}x"),
        "{shown}"
    );
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "{shown:?}"
    );
    assert!(!shown.contains('\u{202e}'), "{shown:?}");
}

#[test]
fn test_filter_reports_in_the_stable_json_shape() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/filters/sshd.log");
    let out = gaoler(
        cfg.path(),
        &[
            "test-filter",
            "sshd",
            fixture.to_str().expect("path"),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let (lines, matched, ignored, missed) = (
        v["lines"].as_u64(),
        v["matched"].as_u64(),
        v["ignored"].as_u64(),
        v["missed"].as_u64(),
    );
    // sshd has sessions: lines that only note an address or hold a failure.
    let in_sessions = v["in_sessions"].as_u64();
    assert!(in_sessions > Some(5), "{v}");
    assert_eq!(
        lines,
        Some(
            matched.unwrap_or(0)
                + ignored.unwrap_or(0)
                + missed.unwrap_or(0)
                + in_sessions.unwrap_or(0)
        )
    );
    assert!(
        v["failures"].as_u64() > matched,
        "held failures settle at one line: {v}"
    );
    assert!(matched > Some(5));
    let first = &v["matches"][0];
    assert!(first["line"].as_u64().is_some() && first["host"].is_string());
    assert!(first.get("time").is_some());
}

#[test]
fn test_filter_with_a_jail_uses_its_variables_and_trusted_proxies() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    cfg.write(
        "jails/app.toml",
        "enabled = false\nfilter = \"webapp-auth\"\nlogpath = \"app.log\"\ntrusted_proxies = [\"127.0.0.1/32\"]\nfilter_vars = { paths = '/signin' }\n",
    );
    let log = cfg.path().join("app.log");
    std::fs::write(
        &log,
        concat!(
            "127.0.0.1 - - [21/Nov/2026:08:13:52 +0000] \"POST /signin HTTP/1.0\" 401 22 \"-\" \"curl\" 28 \"6.6.6.6, 198.51.100.3\"\n",
            "127.0.0.1 - - [21/Nov/2026:08:13:53 +0000] \"POST /login HTTP/1.0\" 401 22 \"-\" \"curl\" 28 \"198.51.100.3\"\n",
            "127.0.0.1 - - [21/Nov/2026:08:13:54 +0000] \"POST /signin HTTP/1.0\" 401 22 \"-\" \"curl\" 28 \"-\"\n",
            "203.0.113.9 - - [21/Nov/2026:08:13:55 +0000] \"POST /signin HTTP/1.1\" 401 22 \"-\" \"curl\" 28 \"6.6.6.6\"\n",
        ),
    )
    .expect("log");
    let log = log.to_str().expect("path");
    let out = gaoler(cfg.path(), &["test-filter", "--jail", "app", log, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    // /login is not among this jail's paths; the third line names no client.
    assert_eq!(v["matched"], 2, "{v}");
    assert_eq!(v["no_client"], 1, "{v}");
    assert_eq!(v["matches"][0]["host"], "198.51.100.3");
    assert_eq!(v["matches"][0]["via"], "127.0.0.1");
    assert_eq!(v["matches"][1]["host"], "203.0.113.9");
    assert!(v["matches"][1].get("via").is_none());
    let human = text(&gaoler(cfg.path(), &["test-filter", "--jail", "app", log]).stdout);
    assert!(
        human.contains("198.51.100.3 at 2026-11-21T08:13:52Z (via proxy 127.0.0.1)"),
        "{human}"
    );
    assert!(human.contains("1 matched lines name no client"), "{human}");
    // Without --jail: the filter's own defaults (/login too), no proxies.
    let plain: serde_json::Value = serde_json::from_slice(
        &gaoler(cfg.path(), &["test-filter", "webapp-auth", log, "--json"]).stdout,
    )
    .expect("json");
    assert_eq!(plain["matched"], 4, "{plain}");
    assert_eq!(plain["matches"][0]["host"], "127.0.0.1");
    // An unknown jail is a usage error naming the jails there are.
    let out = gaoler(cfg.path(), &["test-filter", "--jail", "nope", log]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no jail `nope`"),
        "{}",
        text(&out.stderr)
    );
}

/// Runs `gaoler --config CFG ARGS` as user `uid` with only group `gid`, from a copy
/// of the binary that any user may run (the build directory may not be reachable).
fn gaoler_as(cfg: &ConfigDir, uid: u32, gid: u32, args: &[&str]) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let dir = cfg.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = dir.join("gaoler-copy");
    if !copy.exists() {
        std::fs::copy(bin(), &copy).expect("copy binary");
    }
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
        ])
        .arg(&copy)
        .arg("--config")
        .arg(dir)
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

#[test]
fn only_root_may_use_the_socket_by_default() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let _d = Daemon::start(cfg.path(), None);
    let out = gaoler_as(&cfg, NOBODY, NOGROUP, &["ctl", "ping"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("permission denied: ctl needs root"),
        "{}",
        text(&out.stderr)
    );
    assert!(gaoler(cfg.path(), &["ctl", "ping"]).status.success());
}

#[test]
fn socket_group_members_may_use_ctl_and_others_are_refused_even_on_an_open_socket() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let main = std::fs::read_to_string(cfg.path().join("gaoler.toml")).expect("read");
    cfg.write(
        "gaoler.toml",
        &main.replace("[daemon]\n", "[daemon]\nsocket_group = \"nogroup\"\n"),
    );
    let _d = Daemon::start(cfg.path(), None);
    let socket = cfg.path().join("gaoler.sock");
    let meta = std::fs::metadata(&socket).expect("socket");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket mode");
    assert_eq!(meta.gid(), NOGROUP, "socket group");
    // A member of the group (here its primary group) may.
    let out = gaoler_as(&cfg, NOBODY, NOGROUP, &["ctl", "status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"jails\""));
    // Someone else is stopped by the mode, with the group named.
    let out = gaoler_as(&cfg, NOBODY, 1, &["ctl", "ping"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("permission denied: ctl needs root or group nogroup"),
        "{}",
        text(&out.stderr)
    );
    // With the mode opened by hand, the daemon's own credential check still refuses.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = gaoler_as(&cfg, NOBODY, 1, &["ctl", "ban", "sshd", "203.0.113.9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("permission denied: ctl needs root or group nogroup"),
        "{}",
        text(&out.stderr)
    );
    assert!(banned_ips(cfg.path()).is_empty(), "nothing was banned");
}

#[test]
fn an_unknown_socket_group_stops_the_start_with_its_name() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let main = std::fs::read_to_string(cfg.path().join("gaoler.toml")).expect("read");
    cfg.write(
        "gaoler.toml",
        &main.replace(
            "[daemon]\n",
            "[daemon]\nsocket_group = \"no-such-group-x\"\n",
        ),
    );
    let out = gaoler(cfg.path(), &["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("socket_group = \"no-such-group-x\": no such group"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused_before_touching_anything() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let _d = Daemon::start(cfg.path(), None);
    // Another state directory, the same socket.
    let other = second_config(&cfg, "state2", "../gaoler.sock");
    let out = gaoler(&other, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("another gaoler daemon is already answering"),
        "{}",
        text(&out.stderr)
    );
    assert!(!other.join("state2").exists(), "no state was created");
    assert!(gaoler(cfg.path(), &["ctl", "ping"]).status.success());
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    // A socket file nobody listens on, as a crashed daemon leaves it.
    let stale =
        std::os::unix::net::UnixListener::bind(cfg.path().join("gaoler.sock")).expect("bind");
    drop(stale);
    assert!(cfg.path().join("gaoler.sock").exists());
    let d = Daemon::start(cfg.path(), None);
    assert!(gaoler(cfg.path(), &["ctl", "ping"]).status.success());
    assert!(
        d.output().contains("removing a stale control socket"),
        "{}",
        d.output()
    );
}

#[test]
fn random_frames_on_the_live_socket_never_stop_the_daemon() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let mut d = Daemon::start(cfg.path(), None);
    let socket = cfg.path().join("gaoler.sock");
    let cmd = prop_oneof![
        Just("ping"),
        Just("status"),
        Just("banned"),
        Just("ban"),
        Just("unban"),
        Just("stats"),
        Just("log-level"),
        Just("flush-logs"),
        Just("nope"),
    ];
    let junk = "[ -~]{0,40}";
    let wellformed_but_wrong = (cmd, junk, junk, junk, any::<bool>()).prop_map(
        |(cmd, jail, ip, bantime, all)| {
            // Known commands with arbitrary (often invalid) values, never `reload`
            // (which would read the config) and never a valid level change.
            format!(
                r#"{{"v":1,"request":{{"cmd":"{cmd}","jail":{jail:?},"ip":{ip:?},"bantime":{bantime:?},"all":{all},"level":"x{jail:?}"}}}}"#
            )
            .into_bytes()
        },
    );
    let frames = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4096),
        wellformed_but_wrong,
    ];
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&frames, |mut bytes| {
            bytes.push(b'\n');
            let mut s = UnixStream::connect(&socket)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("connect: {e}")))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let _ = s.write_all(&bytes);
            // Any answer, or a closed connection, is fine; a hang is not.
            let mut line = String::new();
            let _ = BufReader::new(s).read_line(&mut line);
            Ok(())
        })
        .expect("every frame is answered or closed");
    assert!(gaoler(cfg.path(), &["ctl", "ping"]).status.success());
    // Still doing its job.
    for _ in 0..3 {
        cfg.sshd_failure("203.0.113.60");
    }
    wait_for(Duration::from_secs(5), "a ban after the fuzzing", || {
        banned_ips(cfg.path()).contains(&"203.0.113.60".to_string())
    });
    d.stop();
}

#[test]
fn fleet_keygen_writes_a_0600_key_prints_its_public_key_and_never_overwrites() {
    use base64::Engine as _;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fleet.key");
    let out = Command::new(bin())
        .args(["fleet", "keygen"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let public = base64::engine::general_purpose::STANDARD
        .decode(stdout.trim())
        .expect("base64 public key");
    assert_eq!(public.len(), 32);
    let meta = std::fs::metadata(&path).expect("key file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let secret = std::fs::read(&path).expect("read key");

    let again = Command::new(bin())
        .args(["fleet", "keygen"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(2));
    assert!(again.stdout.is_empty(), "{}", text(&again.stdout));
    let err = text(&again.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert!(err.contains("fleet.key"), "{err}");
    assert_eq!(std::fs::read(&path).expect("read key"), secret);
}
