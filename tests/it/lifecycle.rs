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
