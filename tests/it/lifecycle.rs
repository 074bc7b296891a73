//! The daemon and its service manager: sd_notify messages (READY, STATUS, WATCHDOG,
//! STOPPING) received on a socket the test binds as NOTIFY_SOCKET.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::support::*;

const LOG_JAIL: &str = "filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = 3\n";

/// Every datagram that arrives within `wait`.
fn messages(socket: &UnixDatagram, wait: Duration) -> Vec<String> {
    let until = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match socket.recv(&mut buf) {
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    out
}

#[test]
fn systemd_hears_ready_status_watchdog_pings_and_stopping() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let path = cfg.path().join("notify.sock");
    let notify = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
    let env_notify = format!("NOTIFY_SOCKET={}", path.display());
    // WATCHDOG_PID must be the daemon's pid: the shell passes its own on to exec.
    let mut daemon = Daemon::start_in(
        cfg.path(),
        &[
            "env",
            &env_notify,
            "WATCHDOG_USEC=200000",
            "sh",
            "-c",
            "export WATCHDOG_PID=$$; exec \"$0\" \"$@\"",
        ],
    );
    let heard = messages(&notify, Duration::from_millis(700)).join("\n");
    assert!(heard.contains("READY=1"), "{heard}");
    assert!(heard.contains("STATUS=1 jails, 0 bans restored"), "{heard}");
    let pings = heard.matches("WATCHDOG=1").count();
    assert!(
        pings >= 3,
        "pings every 100 ms expected, got {pings}: {heard}"
    );
    // A reload is announced, and READY comes again after it.
    ctl_json(cfg.path(), &["reload"]);
    let heard = messages(&notify, Duration::from_millis(300)).join("\n");
    let reloading = heard.find("RELOADING=1").expect(&heard);
    assert!(heard[reloading..].contains("READY=1"), "{heard}");
    daemon.stop();
    let heard = messages(&notify, Duration::from_millis(300)).join("\n");
    assert!(heard.contains("STOPPING=1"), "{heard}");
}

#[test]
fn without_a_watchdog_there_are_no_pings() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let path = cfg.path().join("notify.sock");
    let notify = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
    let env_notify = format!("NOTIFY_SOCKET={}", path.display());
    let _daemon = Daemon::start_in(cfg.path(), &["env", &env_notify]);
    let heard = messages(&notify, Duration::from_millis(400)).join("\n");
    assert!(heard.contains("READY=1"), "{heard}");
    assert!(!heard.contains("WATCHDOG=1"), "{heard}");
}

fn set_daemon_option(cfg: &ConfigDir, line: &str) {
    let main = std::fs::read_to_string(cfg.path().join("gaoler.toml")).expect("read");
    cfg.write(
        "gaoler.toml",
        &main.replace("[daemon]\n", &format!("[daemon]\n{line}\n")),
    );
}

#[test]
fn ctl_log_level_changes_what_the_daemon_logs_at_once() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    let d = Daemon::start(cfg.path(), None);
    let v = ctl_json(cfg.path(), &["log-level", "warn"]);
    assert_eq!(v["log_level"], "warn");
    cfg.sshd_failure("203.0.113.20");
    wait_for(Duration::from_secs(5), "the failure", || {
        failures(cfg.path()) == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !d.output().contains("203.0.113.20"),
        "debug lines are off at warn:\n{}",
        d.output()
    );
    ctl_json(cfg.path(), &["log-level", "DEBUG"]);
    cfg.sshd_failure("203.0.113.21");
    wait_for(Duration::from_secs(5), "the debug line", || {
        d.output().contains("failure") && d.output().contains("203.0.113.21")
    });
    let out = gaoler(cfg.path(), &["ctl", "log-level", "loud"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown log level `loud`"));
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    set_daemon_option(&cfg, "log_format = \"json\"");
    let d = Daemon::start(cfg.path(), None);
    ctl_json(cfg.path(), &["ban", "sshd", "203.0.113.30"]);
    wait_for(Duration::from_secs(5), "the ban line", || {
        d.output().contains(r#""message":"ban""#)
    });
    let out = d.output();
    let mut saw_ban = false;
    for line in out.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
        if v["fields"]["message"] == "ban" {
            assert_eq!(v["fields"]["target"], "203.0.113.30", "{v}");
            assert_eq!(v["fields"]["jail"], "sshd", "{v}");
            saw_ban = true;
        }
    }
    assert!(saw_ban, "{out}");
}

#[test]
fn flush_logs_reopens_the_log_file_after_a_rotation() {
    let cfg = ConfigDir::new("backend = \"log\"", LOG_JAIL);
    set_daemon_option(&cfg, "log_file = \"gaoler.log\"");
    let _d = Daemon::start(cfg.path(), None);
    let log = cfg.path().join("gaoler.log");
    wait_for(Duration::from_secs(5), "the ready line in the file", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("gaoler is ready"))
    });
    // logrotate moves the file away; lines keep going to the moved file until...
    std::fs::rename(&log, cfg.path().join("gaoler.log.1")).expect("rotate");
    let v = ctl_json(cfg.path(), &["flush-logs"]);
    assert_eq!(v["reopened"], log.display().to_string());
    // ... the daemon reopens its log_file: new lines go to the new file.
    ctl_json(cfg.path(), &["ban", "sshd", "203.0.113.40"]);
    wait_for(
        Duration::from_secs(5),
        "the ban line in the new file",
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("203.0.113.40")),
    );
    let old = std::fs::read_to_string(cfg.path().join("gaoler.log.1")).expect("old log");
    assert!(old.contains("gaoler is ready") && !old.contains("203.0.113.40"));
}
