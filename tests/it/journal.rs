//! The journal source against a real systemd-journald, run privately: a holder process
//! owns a new mount namespace with tmpfs over /run and /var/log (the host's are never
//! touched) and starts journald there; entries are written with systemd-cat and the
//! daemon runs inside the same namespace (nsenter), with a jail reading the journal.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);
/// journald's syslog socket inside the private namespace.
const SYSLOG_SOCKET: &str = "/run/systemd/journal/dev-log";

/// A private journald; killed (with its namespace) when dropped.
struct PrivateJournal {
    holder: Child,
}

const HOLDER: &str = r#"
set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/log
mkdir -p /run/systemd/journal /run/log/journal /var/log/journal
/lib/systemd/systemd-journald &
J=$!
sleep 600 &
S=$!
# Stop and reap both children, whatever ends the holder.
trap 'kill $J $S 2>/dev/null; wait $J $S 2>/dev/null; exit 0' TERM INT EXIT
for i in $(seq 200); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
[ -S /run/systemd/journal/socket ] || { echo "journald did not start"; exit 1; }
echo ready
wait $S
"#;

impl PrivateJournal {
    fn start() -> PrivateJournal {
        require_root_and_nft();
        assert!(
            std::path::Path::new("/lib/systemd/systemd-journald").exists(),
            "the journal test needs systemd-journald (package systemd)"
        );
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "bash", "-c", HOLDER])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        let out = holder.stdout.take().expect("stdout");
        BufReader::new(out)
            .read_line(&mut line)
            .expect("holder output");
        let j = PrivateJournal { holder };
        assert_eq!(
            line.trim(),
            "ready",
            "private journald did not start: {line}"
        );
        j
    }

    fn pid(&self) -> String {
        self.holder.id().to_string()
    }

    /// `nsenter` into the journal's mount namespace.
    fn enter(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            "--mount".into(),
            "--target".into(),
            self.pid(),
        ]
    }

    /// Writes `message` to the journal with SYSLOG_IDENTIFIER `ident`.
    fn log(&self, ident: &str, message: &str) {
        let mut child = Command::new("nsenter")
            .args([
                "--mount",
                "--target",
                &self.pid(),
                "systemd-cat",
                "-t",
                ident,
            ])
            .stdin(Stdio::piped())
            .spawn()
            .expect("systemd-cat");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{message}\n").as_bytes())
            .expect("write");
        assert!(child.wait().expect("wait").success(), "systemd-cat failed");
    }
}

impl PrivateJournal {
    /// Runs `args` inside the journal's namespace and waits for success.
    fn run(&self, args: &[&str]) {
        let status = Command::new("nsenter")
            .args(["--mount", "--target", &self.pid()])
            .args(args)
            .status()
            .expect("nsenter");
        assert!(status.success(), "{args:?} failed");
    }
}

impl Drop for PrivateJournal {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid()]).status();
        let _ = self.holder.wait();
    }
}

fn failure(ip: &str) -> String {
    format!("Failed password for root from {ip} port 50000 ssh2")
}

#[test]
fn journal_entries_are_matched_counted_and_resumed_by_cursor() {
    let journal = PrivateJournal::start();
    let wrapper = journal.enter();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let cfg = ConfigDir::new(
        "backend = \"log\"",
        "filter = \"sshd\"\njournal = [\"SYSLOG_IDENTIFIER=sshd\"]\nmaxretry = 3\n",
    );
    // Logged before gaoler's first start: history, not counted.
    journal.log("sshd", &failure("203.0.113.20"));

    let mut d = Daemon::start_in(cfg.path(), &wrapper);
    for _ in 0..3 {
        journal.log("sshd", &failure("203.0.113.21"));
    }
    // Same text from another program: the jail's match excludes it.
    for _ in 0..3 {
        journal.log("not-sshd", &failure("203.0.113.22"));
    }
    wait_for(WAIT, "the ban from journal entries", || {
        banned_ips(cfg.path()) == vec!["203.0.113.21".to_string()]
    });
    wait_for(WAIT, "every entry read", || {
        ctl_json(cfg.path(), &["stats"])["lines_read"].as_u64() >= Some(6)
    });
    assert_eq!(
        failures(cfg.path()),
        3,
        "only the three sshd entries after start count"
    );

    // Written while gaoler is down: read after the restart, from the saved cursor.
    d.stop();
    for _ in 0..3 {
        journal.log("sshd", &failure("203.0.113.23"));
    }
    let mut d = Daemon::start_in(cfg.path(), &wrapper);
    wait_for(WAIT, "the ban from entries written while down", || {
        banned_ips(cfg.path()).contains(&"203.0.113.23".to_string())
    });
    assert_eq!(
        failures(cfg.path()),
        3,
        "entries read before the restart are not read again"
    );

    // The same after kill -9.
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    for _ in 0..3 {
        journal.log("sshd", &failure("203.0.113.24"));
    }
    let _d = Daemon::start_in(cfg.path(), &wrapper);
    wait_for(WAIT, "the ban after kill -9", || {
        banned_ips(cfg.path()).contains(&"203.0.113.24".to_string())
    });
    assert_eq!(failures(cfg.path()), 3);
}

#[test]
fn the_shipped_sshd_jail_works_from_the_journal_and_ignores_forged_entries() {
    let journal = PrivateJournal::start();
    let wrapper = journal.enter();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(repo.join("jails/sshd.toml")).expect("shipped jail");
    let cfg = ConfigDir::new("backend = \"log\"", &shipped);
    // Like the real sshd, write through the syslog socket, where journald takes the
    // sender's credentials with each message and records its _COMM. A copy of logger
    // named sshd stays alive while its stdin is open, so its name is read correctly.
    let fake_sshd = cfg.path().join("sshd");
    std::fs::copy("/usr/bin/logger", &fake_sshd).expect("copy logger");
    let _d = Daemon::start_in(cfg.path(), &wrapper);
    // A local user forging sshd lines: SYSLOG_IDENTIFIER=sshd, but _COMM=logger.
    for _ in 0..6 {
        journal.run(&[
            "logger",
            "-u",
            SYSLOG_SOCKET,
            "-t",
            "sshd",
            &failure("203.0.113.30"),
        ]);
    }
    let mut sshd = Command::new("nsenter")
        .args(["--mount", "--target", &journal.pid()])
        .arg(&fake_sshd)
        .args(["-u", SYSLOG_SOCKET, "-t", "sshd"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("fake sshd");
    let mut input = sshd.stdin.take().expect("stdin");
    for _ in 0..5 {
        writeln!(input, "{}", failure("203.0.113.31")).expect("write");
    }
    input.flush().expect("flush");
    wait_for(WAIT, "the shipped jail's ban", || {
        banned_ips(cfg.path()) == vec!["203.0.113.31".to_string()]
    });
    wait_for(WAIT, "every entry read", || {
        ctl_json(cfg.path(), &["stats"])["lines_read"].as_u64() >= Some(11)
    });
    assert_eq!(failures(cfg.path()), 5, "forged entries are not counted");
    drop(input);
    let _ = sshd.wait();
}
