//! `ctl events`: bans and unbans followed live over the control socket, with their
//! lines; a reader that does not keep up is dropped, never the daemon.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const JAIL: &str = "filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = 2\n";

/// `ctl events` as a child: its stdout lines come through a channel.
struct Follower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follower {
    fn start(cfg: &std::path::Path, args: &[&str]) -> Follower {
        let mut child = Command::new(bin())
            .args(["ctl", "events"])
            .args(args)
            .arg("--config")
            .arg(cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ctl events");
        // Following once it says so on stderr.
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let mut said = String::new();
        err.read_line(&mut said).expect("stderr line");
        assert!(said.contains("following"), "{said}");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("an event within 10 s")
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ctl_events_sees_a_ban_with_its_lines_and_its_unban_live() {
    let cfg = ConfigDir::new("backend = \"log\"", JAIL);
    let _d = Daemon::start(cfg.path(), None);
    let json = Follower::start(cfg.path(), &["--json"]);
    let text = Follower::start(cfg.path(), &["--jail", "sshd"]);
    let lines = [sshd_line("203.0.113.40"), sshd_line("203.0.113.40")];
    cfg.append("auth.log", lines.concat().as_bytes());
    let ban: serde_json::Value = serde_json::from_str(&json.next()).expect("json event");
    assert_eq!(ban["event"], "ban");
    assert_eq!(ban["ip"], "203.0.113.40");
    assert_eq!(ban["jail"], "sshd");
    assert_eq!(ban["count"], 1);
    assert!(ban["origin"].is_null());
    let matches: Vec<String> = serde_json::from_value(ban["matches"].clone()).expect("matches");
    let expected: Vec<String> = lines.iter().map(|l| l.trim_end().to_string()).collect();
    assert_eq!(matches, expected);
    let human = text.next();
    assert!(
        human.contains("ban   203.0.113.40 in sshd (ban 1") && human.contains("2 lines"),
        "{human}"
    );
    ctl_json(cfg.path(), &["unban", "203.0.113.40"]);
    let unban: serde_json::Value = serde_json::from_str(&json.next()).expect("json event");
    assert_eq!(unban["event"], "unban");
    assert_eq!(unban["reason"], "lifted");
    assert_eq!(unban["matches"].as_array().map(Vec::len), Some(2));
    assert!(text.next().contains("unban 203.0.113.40 in sshd (lifted)"));
    let unknown = gaoler(cfg.path(), &["ctl", "events", "--jail", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn a_reader_that_never_reads_is_dropped_and_bans_go_on() {
    const OFFENDERS: u32 = 20_000;
    let cfg = ConfigDir::new("backend = \"log\"", BAN_AT_FIRST);
    let _d = Daemon::start(cfg.path(), None);
    // Subscribes, then never reads a byte.
    let mut stuck = UnixStream::connect(cfg.path().join("gaoler.sock")).expect("connect");
    stuck
        .write_all(b"{\"v\":1,\"request\":{\"cmd\":\"events\"}}\n")
        .expect("request");
    let follower = Follower::start(cfg.path(), &["--json"]);
    ban_storm(&cfg, OFFENDERS, 21);
    assert!(gaoler(cfg.path(), &["ctl", "ping"]).status.success());
    // The reader that keeps up sees every ban.
    let mut seen = 0;
    while seen < OFFENDERS {
        let line = follower.next();
        if line.contains("\"event\":\"ban\"") {
            seen += 1;
        }
    }
    // The one that never read was dropped: what the socket held, then the end.
    stuck
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut got = Vec::new();
    let end = std::io::Read::read_to_end(&mut stuck, &mut got);
    assert!(end.is_ok(), "closed by the daemon: {end:?}");
    let events = got
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"{"))
        .count();
    eprintln!("the stuck reader got {events} frames of {OFFENDERS}");
    assert!(events < OFFENDERS as usize, "{events} frames");
    assert!(gaoler(cfg.path(), &["ctl", "ping"]).status.success());
}
