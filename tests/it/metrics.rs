//! `[metrics] listen`: the real daemon (log backend) scraped over plain TCP; counters
//! follow a ban and an unban; wrong paths, methods and garbage get answers without
//! harming the daemon; scrapes and bans get through a slowloris of 1,000 connections;
//! a bad or taken address is an error that says where.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::*;

const LOG_JAIL: &str = "filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = 3\n";

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// A config directory with the log backend and metrics on `listen`.
fn config(listen: &str) -> ConfigDir {
    ConfigDir::new(
        &format!("backend = \"log\"\n\n[metrics]\nlisten = \"{listen}\""),
        LOG_JAIL,
    )
}

/// Sends `bytes` and reads until the server closes: the whole answer, lossily decoded.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    // Half-closed: a request without its blank line is not waited for until a timeout.
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    text(&out)
}

/// (status line, head, body) of `GET path`.
fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let answer = exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n").as_bytes(),
    );
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete response");
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, head.to_string(), body.to_string())
}

/// The value of sample `series` (name and labels) in an exposition, if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

fn scrape(addr: SocketAddr) -> String {
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

#[test]
fn metrics_follow_failures_a_ban_and_an_unban() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let cfg = config(&addr.to_string());
    let d = Daemon::start(cfg.path(), None);
    wait_for(Duration::from_secs(5), "the metrics log line", || {
        d.output().contains("serving Prometheus metrics")
    });

    let body = scrape(addr);
    for zero in [
        "gaoler_lines_read_total",
        "gaoler_failures_total{jail=\"sshd\"}",
        "gaoler_bans_total{jail=\"sshd\"}",
        "gaoler_unbans_total{jail=\"sshd\"}",
        "gaoler_current_bans{jail=\"sshd\"}",
        "gaoler_tracked_addresses{jail=\"sshd\"}",
        "gaoler_evictions_total",
        "gaoler_reconciler_repairs_total",
        "gaoler_nft_transaction_errors_total",
    ] {
        assert_eq!(sample(&body, zero), Some(0.0), "{zero} in:\n{body}");
    }
    // The table build at start is a (dry-run) transaction.
    let at_start = sample(&body, "gaoler_nft_transactions_total").expect("transactions");
    assert_eq!(at_start, 1.0, "{body}");
    assert!(body.contains("# TYPE gaoler_nft_transaction_seconds histogram\n"));

    for _ in 0..3 {
        cfg.sshd_failure("203.0.113.50");
    }
    wait_for(Duration::from_secs(15), "the ban in /metrics", || {
        sample(&scrape(addr), "gaoler_bans_total{jail=\"sshd\"}") == Some(1.0)
    });
    let body = scrape(addr);
    let auth_log = cfg.path().join("auth.log");
    for (series, want) in [
        ("gaoler_current_bans{jail=\"sshd\"}".to_string(), 1.0),
        ("gaoler_failures_total{jail=\"sshd\"}".to_string(), 3.0),
        ("gaoler_tracked_addresses{jail=\"sshd\"}".to_string(), 0.0),
        ("gaoler_lines_read_total".to_string(), 3.0),
        (
            format!(
                "gaoler_source_lines_read_total{{source=\"{}\"}}",
                auth_log.display()
            ),
            3.0,
        ),
        // The log backend is still handed the ban as one transaction.
        ("gaoler_nft_transactions_total".to_string(), 2.0),
        ("gaoler_nft_transaction_seconds_count".to_string(), 2.0),
        (
            "gaoler_nft_transaction_seconds_bucket{le=\"+Inf\"}".to_string(),
            2.0,
        ),
        ("gaoler_nft_transaction_errors_total".to_string(), 0.0),
    ] {
        assert_eq!(sample(&body, &series), Some(want), "{series} in:\n{body}");
    }
    assert!(sample(&body, "gaoler_nft_transaction_seconds_sum").is_some_and(|s| s >= 0.0));

    ctl_json(cfg.path(), &["unban", "203.0.113.50"]);
    let body = scrape(addr);
    assert_eq!(
        sample(&body, "gaoler_unbans_total{jail=\"sshd\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "gaoler_current_bans{jail=\"sshd\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&body, "gaoler_nft_transactions_total"), Some(3.0));
}

#[test]
fn other_paths_methods_and_garbage_get_answers_and_the_daemon_keeps_running() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let cfg = config(&addr.to_string());
    let mut d = Daemon::start(cfg.path(), None);

    let (status, _, _) = get(addr, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _, _) = get(addr, "/metrics/extra");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let post = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && post.contains("\r\nAllow: GET"),
        "{post}"
    );

    // Binary junk with a blank line is a bad request; without one, and closed, or
    // oversized, the connection is answered or closed; never a crash.
    let junk = exchange(addr, b"\x00\xff\xfe\x16\x03\x01 junk\r\n\r\n");
    assert!(junk.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{junk}");
    let tls = exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    assert!(tls.is_empty() || tls.starts_with("HTTP/1.1 400"), "{tls}");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let big = exchange(addr, &huge);
    assert!(big.is_empty() || big.starts_with("HTTP/1.1 400"), "{big}");
    // Connected and silent, then gone.
    drop(TcpStream::connect(addr).expect("connect"));

    assert!(gaoler(cfg.path(), &["ctl", "ping"]).status.success());
    let body = scrape(addr);
    assert!(
        body.contains("gaoler_bans_total{jail=\"sshd\"} 0\n"),
        "{body}"
    );
    d.stop();
}

#[test]
fn a_taken_metrics_address_stops_the_start_with_exit_1_and_says_which() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let cfg = config(&addr.to_string());
    let out = gaoler(cfg.path(), &["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot serve metrics on {addr}"))
            && err.contains("`[metrics] listen`")
            && err.contains("address already in use"),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
}

#[test]
fn a_bad_metrics_address_is_a_config_error_at_its_position() {
    let cfg = config("localhost:9179");
    let out = gaoler(cfg.path(), &["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("gaoler.toml:11:10: invalid [metrics] listen `localhost:9179`"),
        "{err}"
    );
    // Empty is off, and valid.
    let cfg = config("");
    let out = gaoler(cfg.path(), &["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("metrics"),
        "no warning any more"
    );
}

/// Slow-header clients: connections that send a request head a byte every 100 ms, or
/// nothing at all, spread over a few threads; a client the server drops connects again
/// at its next turn, so the attack holds as many connections as it can for as long as
/// it runs.
struct Slowloris {
    stop: Arc<AtomicBool>,
    /// Connections made, first ones and reconnections.
    connects: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Slowloris {
    const THREADS: usize = 4;
    const TICK: Duration = Duration::from_millis(100);

    /// Opens `n` connections to `addr` (returns once all are open) and keeps them open.
    fn start(addr: SocketAddr, n: usize) -> Slowloris {
        let stop = Arc::new(AtomicBool::new(false));
        let connects = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let threads = (0..Self::THREADS)
            .map(|t| {
                let (stop, connects, tx) = (stop.clone(), connects.clone(), tx.clone());
                let mine = n / Self::THREADS + usize::from(t < n % Self::THREADS);
                std::thread::spawn(move || Self::run(addr, mine, &stop, &connects, &tx))
            })
            .collect();
        for _ in 0..Self::THREADS {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("slowloris connections open");
        }
        Slowloris {
            stop,
            connects,
            threads,
        }
    }

    fn run(
        addr: SocketAddr,
        n: usize,
        stop: &AtomicBool,
        connects: &AtomicU64,
        ready: &std::sync::mpsc::Sender<()>,
    ) {
        let connect = || {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            s.set_nonblocking(true).ok()?;
            connects.fetch_add(1, Ordering::Relaxed);
            Some(s)
        };
        // Even ones trickle a request head, odd ones stay silent.
        let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| connect()).collect();
        let _ = ready.send(());
        let head = b"GET /metrics HTTP/1.1\r\nX-Slow: ";
        let mut tick = 0;
        while !stop.load(Ordering::Relaxed) {
            let byte = head.get(tick).copied().unwrap_or(b'a');
            for (i, conn) in conns.iter_mut().enumerate() {
                let mut buf = [0u8; 64];
                let alive = match conn {
                    None => false,
                    // A trickler: its byte is taken (or waits in a full buffer).
                    Some(s) if i % 2 == 0 => s
                        .write(&[byte])
                        .map_or_else(|e| e.kind() == ErrorKind::WouldBlock, |_| true),
                    // A silent one: nothing to read, not even the end.
                    Some(s) => {
                        matches!(s.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock)
                    }
                };
                if !alive {
                    *conn = connect();
                }
            }
            tick += 1;
            std::thread::sleep(Self::TICK);
        }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("slowloris thread");
        }
        self.connects.load(Ordering::Relaxed)
    }
}

/// Raises this process's soft limit on open files to at least `want` (up to the hard
/// limit), for tests that hold many sockets; the daemon it starts inherits it.
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(
        lim.rlim_cur >= want,
        "open-file limit {} is below the {want} this test needs",
        lim.rlim_cur
    );
}

/// One scrape with `timeout` for each step: its latency if it got a 200 with metrics.
fn timed_scrape(addr: SocketAddr, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    let answer = text(&out);
    if answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.contains("\ngaoler_bans_total") {
        Ok(start.elapsed())
    } else {
        Err(format!("answer: {answer:?}"))
    }
}

#[test]
fn metrics_scrapes_and_bans_get_through_a_slowloris_of_1000_connections() {
    const ATTACKERS: usize = 1000;
    raise_nofile(ATTACKERS as u64 + 512);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let cfg = config(&addr.to_string());
    let mut d = Daemon::start(cfg.path(), None);
    wait_for(Duration::from_secs(5), "the metrics log line", || {
        d.output().contains("serving Prometheus metrics")
    });

    let attack = Slowloris::start(addr, ATTACKERS);
    let mut latencies = Vec::new();
    let mut failed = Vec::new();
    for _ in 0..20 {
        match timed_scrape(addr, Duration::from_secs(5)) {
            Ok(latency) => latencies.push(latency),
            Err(e) => failed.push(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The ban path is untouched by the attack.
    for _ in 0..3 {
        cfg.sshd_failure("203.0.113.60");
    }
    wait_for(Duration::from_secs(10), "the ban during the attack", || {
        banned_ips(cfg.path()).contains(&"203.0.113.60".to_string())
    });
    let connects = attack.stop();

    latencies.sort();
    eprintln!(
        "slowloris of {ATTACKERS} ({connects} connects): {} of 20 scrapes answered, \
         latency min {:?} median {:?} max {:?}",
        latencies.len(),
        latencies.first(),
        latencies.get(latencies.len() / 2),
        latencies.last()
    );
    assert!(latencies.len() >= 19, "failed scrapes: {failed:?}");
    let body = scrape(addr);
    let dropped = sample(
        &body,
        "gaoler_metrics_connections_dropped_total{reason=\"cap\"}",
    );
    assert!(
        dropped.is_some_and(|n| n >= (ATTACKERS - 64) as f64),
        "{body}"
    );
    d.stop();
}

/// The Grafana dashboard shipped in packaging queries only metrics a live daemon
/// serves (a histogram's `_bucket`, `_sum` and `_count` included), and is valid JSON
/// with the datasource and instance variables it uses.
#[test]
fn the_grafana_dashboard_queries_only_metrics_a_live_daemon_serves() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/grafana/gaoler-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "instance"]);
    exprs.push(
        dashboard["templating"]["list"][1]["definition"]
            .as_str()
            .expect("definition")
            .to_string(),
    );

    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let cfg = config(&addr.to_string());
    let _d = Daemon::start(cfg.path(), None);
    let body = scrape(addr);
    let types: std::collections::HashMap<&str, &str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let mut queried = std::collections::BTreeSet::new();
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("gaoler_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            queried.insert(name);
        }
    }
    for name in &queried {
        let served = types.contains_key(name.as_str())
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| types.get(base) == Some(&"histogram"))
            });
        assert!(
            served,
            "the dashboard queries {name}, which /metrics does not serve:\n{body}"
        );
    }
    eprintln!("{} metrics queried, all served", queried.len());
}
