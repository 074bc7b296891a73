//! 10,000 jails (each on a port of its own, as a hoster's per-site jails are) in a
//! private network namespace, run as root: start to READY (the sd_notify message
//! systemd waits for) with one shared log and with a log per jail; one ban by hand,
//! request to ban in force; the cost of a TCP connection over loopback through the
//! table; 1,000 bans in 1,000 jails and the restart that restores them. Run:
//! `cargo bench --bench jail_scale`; `GAOLER_BENCH_BIN=/path/to/gaoler` measures
//! another build (BENCHMARKS.md compares this tree with the one before it).

#[allow(dead_code)]
mod netns;
mod runbin;
use netns::Netns;
use runbin::{bin, list, median};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const JAILS: u32 = 10_000;
/// Starts per configuration; the median is reported.
const ROUNDS: usize = 3;
/// Single bans measured (fewer when a build needs more than `BAN_BUDGET` for them).
const BANS: usize = 20;
const BAN_BUDGET: Duration = Duration::from_secs(90);
/// Jails given a ban each for the restart figure.
const BANNED_JAILS: u32 = 1_000;
/// TCP connections timed through the table.
const CONNECTIONS: u32 = 300;
const TABLE: &str = "gjails";

/// A config directory with `JAILS` jails, jail `j<i>` on port 10000 + i, reading the
/// shared `auth.log` or a log of its own.
fn config(dir: &Path, log_each: bool) {
    let filters = Path::new(env!("CARGO_MANIFEST_DIR")).join("filters");
    std::fs::write(
        dir.join("gaoler.toml"),
        format!("[daemon]\nstate_dir = \"state\"\nsocket = \"gaoler.sock\"\nfilter_path = [\"{}\"]\nlog_level = \"warn\"\n[firewall]\nbackend = \"nftables\"\ntable = \"{TABLE}\"\n[defaults]\nignoreip = []\n", filters.display()),
    )
    .expect("config");
    let jails = dir.join("jails");
    let _ = std::fs::remove_dir_all(&jails);
    std::fs::create_dir_all(&jails).expect("jails");
    std::fs::create_dir_all(dir.join("logs")).expect("logs");
    std::fs::write(dir.join("auth.log"), "").expect("log");
    for i in 0..JAILS {
        let log = if log_each {
            let log = format!("logs/j{i}.log");
            std::fs::write(dir.join(&log), "").expect("log");
            log
        } else {
            "auth.log".to_string()
        };
        std::fs::write(
            jails.join(format!("j{i}.toml")),
            format!(
                "filter = \"sshd\"\nlogpath = \"{log}\"\nbantime = \"1d\"\nports = [\"{}\"]\n",
                10_000 + i
            ),
        )
        .expect("jail");
    }
}

/// Starts the daemon with `NOTIFY_SOCKET` set, as systemd does; the daemon and the
/// seconds from spawn to its `READY=1`.
fn start_to_ready(ns: &Netns, dir: &Path) -> (Child, f64) {
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let notify = UnixDatagram::bind(&path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(600)))
        .expect("timeout");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .expect("log");
    let t0 = Instant::now();
    let mut daemon = Command::new("ip")
        .args(["netns", "exec", &ns.0, &bin(), "run", "--config"])
        .arg(dir)
        .env("NOTIFY_SOCKET", &path)
        .stderr(log)
        .spawn()
        .expect("daemon");
    match runbin::ready_after(&notify, t0) {
        Ok(secs) => (daemon, secs),
        Err(e) => {
            let _ = daemon.kill();
            panic!("no READY=1 within 600 s: {e}");
        }
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// Start to READY with no table and no state (a first boot), `ROUNDS` times.
fn first_starts(ns: &Netns, dir: &Path) -> Vec<f64> {
    (0..ROUNDS)
        .map(|_| {
            ns.nft(&["delete", "table", "inet", TABLE]);
            let _ = std::fs::remove_dir_all(dir.join("state"));
            let (daemon, ready) = start_to_ready(ns, dir);
            stop(daemon);
            ready
        })
        .collect()
}

/// One request on the control socket, answered once the ban is in force.
fn ban(socket: &Path, jail: &str, ip: &str) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let request = format!(
        "{{\"v\":1,\"request\":{{\"cmd\":\"ban\",\"jail\":\"{jail}\",\"ip\":\"{ip}\"}}}}\n"
    );
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line.contains("\"kind\":\"banned\"")
}

/// Seconds per TCP connection (connect, accept, close) over loopback to `port`.
fn connection_cost(ns: &Netns, port: u16) -> f64 {
    ns.on_thread(move || {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = TcpListener::bind(addr).expect("listen");
        let t0 = Instant::now();
        for _ in 0..CONNECTIONS {
            let mut c = TcpStream::connect(addr).expect("connect");
            let (mut s, _) = listener.accept().expect("accept");
            c.write_all(b"x").expect("write");
            let mut b = [0u8; 1];
            s.read_exact(&mut b).expect("read");
        }
        t0.elapsed().as_secs_f64() / f64::from(CONNECTIONS)
    })
}

fn ip(i: u32) -> String {
    std::net::Ipv4Addr::from(0x2D00_0000u32 + i).to_string()
}

fn main() {
    let ns = Netns::new("gj");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg: PathBuf = dir.path().to_path_buf();
    let socket = cfg.join("gaoler.sock");
    println!("| what ({JAILS} jails) | figure |");
    println!("| --- | --- |");

    // The reference: a TCP connection with no table in the namespace.
    let bare = connection_cost(&ns, 9_999);

    for log_each in [false, true] {
        config(&cfg, log_each);
        let mut starts = first_starts(&ns, &cfg);
        let which = if log_each {
            "a log per jail"
        } else {
            "one shared log"
        };
        println!(
            "| start to READY, {which}, no table, empty store, median of {ROUNDS} | {:.2} s (all: {}) |",
            median(&mut starts),
            list(&starts)
        );
    }

    // One shared log from here on.
    config(&cfg, false);
    ns.nft(&["delete", "table", "inet", TABLE]);
    let _ = std::fs::remove_dir_all(cfg.join("state"));
    let (daemon, _) = start_to_ready(&ns, &cfg);
    let mut lat = Vec::new();
    let t0 = Instant::now();
    for i in 0..BANS {
        if i > 0 && t0.elapsed() > BAN_BUDGET {
            break;
        }
        let t = Instant::now();
        assert!(ban(&socket, "j5", &ip(i as u32)), "ban refused");
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let n = lat.len();
    println!(
        "| one ban by hand (jail j5), request to ban in force, median of {n} | {:.1} ms (all: {} ms) |",
        median(&mut lat),
        list(&lat)
    );
    // Traffic to j5's port (j5 holds bans) and to a port no jail guards.
    for (port, what) in [(10_005, "j5's port"), (9_999, "a port no jail guards")] {
        let cost = connection_cost(&ns, port);
        println!(
            "| a TCP connection over loopback to {what}, mean of {CONNECTIONS} | {:.0} us (no table: {:.0} us) |",
            cost * 1e6,
            bare * 1e6
        );
    }

    // A ban in each of 1,000 jails, then the restart restoring them: only for a build
    // whose bans take well under a second.
    if lat.iter().cloned().fold(0.0, f64::max) > 1000.0 {
        println!("| {BANNED_JAILS} bans in {BANNED_JAILS} jails, and the restart | skipped: bans take seconds |");
        stop(daemon);
        return;
    }
    let t = Instant::now();
    for j in 0..BANNED_JAILS {
        assert!(
            ban(&socket, &format!("j{j}"), &ip(1_000 + j)),
            "ban refused"
        );
    }
    println!(
        "| {BANNED_JAILS} bans by hand, one at a time, each the first of its jail (a set and its rule created with it) | {:.1} ms per ban |",
        t.elapsed().as_secs_f64() * 1000.0 / f64::from(BANNED_JAILS)
    );
    let cost = connection_cost(&ns, 10_005);
    println!(
        "| a TCP connection over loopback to j5's port, {BANNED_JAILS} jails holding bans, mean of {CONNECTIONS} | {:.0} us |",
        cost * 1e6
    );
    stop(daemon);
    let mut restarts = Vec::new();
    for _ in 0..ROUNDS {
        ns.nft(&["delete", "table", "inet", TABLE]);
        let (daemon, ready) = start_to_ready(&ns, &cfg);
        restarts.push(ready);
        stop(daemon);
    }
    println!(
        "| restart restoring {} bans in {BANNED_JAILS} jails, no table, median of {ROUNDS} | {:.2} s (all: {}) |",
        n + BANNED_JAILS as usize,
        median(&mut restarts),
        list(&restarts)
    );
}
