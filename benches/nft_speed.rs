//! The nftables backend at speed, in a private network namespace (run as root):
//! 100,000 distinct offenders from the log into the kernel; the restart that restores
//! 100,000 bans against a raw `nft -f` of the same elements; startup to READY (the
//! sd_notify message systemd waits for) with an empty store; and single-ban latency
//! from a line written to the ban in force. Then the storm and the restart again as an
//! operator sees them from outside: the default reconcile interval, and a script
//! running `gaoler ctl stats --json` every 50 ms. Run: `cargo bench --bench nft_speed`;
//! `GAOLER_BENCH_BIN=/path/to/gaoler` measures another build with the same method.

#[allow(dead_code)]
mod netns;
mod runbin;
use netns::Netns;
use runbin::{bin, list, median};

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const N: u32 = 100_000;
/// Rounds of the restore and of the raw `nft -f`, alternated; the medians are reported.
const ROUNDS: usize = 3;

fn config(dir: &Path, maxretry: u32) {
    config_with(dir, maxretry, "reconcile_interval = 0\n");
}

/// A `[[notify]]` for the run (`GAOLER_BENCH_NOTIFY`): `exec` a program that returns
/// at once on every ban, `hang` one that never returns (killed at its 2 s timeout),
/// unset: none.
fn notify_section() -> String {
    match std::env::var("GAOLER_BENCH_NOTIFY").as_deref() {
        Ok("exec") => "[[notify]]\nexec = [\"true\"]\n".into(),
        Ok("hang") => "[[notify]]\nexec = [\"sleep\", \"1000\"]\ntimeout = \"2s\"\n".into(),
        _ => String::new(),
    }
}

/// The bench's config; `firewall_extra` goes into [firewall].
fn config_with(dir: &Path, maxretry: u32, firewall_extra: &str) {
    // GAOLER_BENCH_BACKEND=log isolates the pipeline and the store from nft.
    let backend = std::env::var("GAOLER_BENCH_BACKEND").unwrap_or_else(|_| "nftables".into());
    let filters = Path::new(env!("CARGO_MANIFEST_DIR")).join("filters");
    std::fs::write(
        dir.join("gaoler.toml"),
        format!("[daemon]\nstate_dir = \"state\"\nsocket = \"gaoler.sock\"\nfilter_path = [\"{}\"]\nlog_level = \"warn\"\n[firewall]\nbackend = \"{backend}\"\ntable = \"gbench\"\n{firewall_extra}[defaults]\nignoreip = []\n{}", filters.display(), notify_section()),
    )
    .expect("config");
    std::fs::create_dir_all(dir.join("jails")).expect("jails");
    std::fs::write(dir.join("jails/sshd.toml"), format!("filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = {maxretry}\nbantime = \"1d\"\nports = [\"22\"]\n")).expect("jail");
    if !dir.join("auth.log").exists() {
        std::fs::write(dir.join("auth.log"), "").expect("log");
    }
}

fn start(ns: &Netns, dir: &Path) -> Child {
    start_with(ns, dir, &[])
}

fn start_with(ns: &Netns, dir: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .expect("log");
    Command::new("ip")
        .args(["netns", "exec", &ns.0, &bin(), "run", "--config"])
        .arg(dir)
        .env("GAOLER_LOG", "gaoler=info")
        .envs(env.iter().copied())
        .stderr(log)
        .spawn()
        .expect("daemon")
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// Starts the daemon with `NOTIFY_SOCKET` set, as systemd does; the daemon and the
/// seconds from spawn to its `READY=1`.
fn start_to_ready(ns: &Netns, dir: &Path) -> (Child, f64) {
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let notify = UnixDatagram::bind(&path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let t0 = Instant::now();
    let daemon = start_with(ns, dir, &[("NOTIFY_SOCKET", path.as_os_str())]);
    match runbin::ready_after(&notify, t0) {
        Ok(secs) => (daemon, secs),
        Err(e) => {
            stop(daemon);
            panic!("no READY=1 within 120 s: {e}");
        }
    }
}

/// One request straight on the control socket (no process spawn): `bans` since start.
fn bans(socket: &Path) -> Option<u64> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.write_all(b"{\"v\":1,\"request\":{\"cmd\":\"stats\"}}\n")
        .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    v["response"]["bans"].as_u64()
}

fn wait_ready(socket: &Path) -> Instant {
    let start = Instant::now();
    while bans(socket).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    Instant::now()
}

fn ip(i: u32) -> String {
    std::net::Ipv4Addr::from(0x2D00_0000u32 + i).to_string()
}

fn line(stamp: &str, i: u32) -> String {
    format!(
        "{stamp} h sshd[1]: Failed password for root from {} port 22 ssh2\n",
        ip(i)
    )
}

/// Appends `text` to the followed log in one write.
fn append(cfg: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(cfg.join("auth.log"))
        .expect("log");
    f.write_all(text.as_bytes()).expect("write");
}

/// A raw `nft -f` file with the same 100k elements as the restore: the reference.
fn raw_file(cfg: &Path) -> std::path::PathBuf {
    let mut raw =
        String::from("table inet graw {\n set s { type ipv4_addr; flags timeout;\n elements = { ");
    raw.push_str(
        &(0..N)
            .map(|i| format!("{} timeout 86000s", ip(i)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    raw.push_str(" }\n }\n}\n");
    let rawfile = cfg.join("raw.nft");
    std::fs::write(&rawfile, raw).expect("raw");
    rawfile
}

/// Seconds of one raw `nft -f` of `rawfile` (its table deleted after).
fn raw_nft(ns: &Netns, rawfile: &Path) -> f64 {
    let t0 = Instant::now();
    let ok = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "-f"])
        .arg(rawfile)
        .status()
        .expect("nft")
        .success();
    let took = t0.elapsed().as_secs_f64();
    assert!(ok, "raw nft -f failed");
    ns.nft(&["delete", "table", "inet", "graw"]);
    took
}

/// `bans` from `gaoler ctl stats --json`, as a monitoring script reads it.
fn ctl_bans(cfg: &Path) -> Option<u64> {
    let out = Command::new(bin())
        .args(["ctl", "--config"])
        .arg(cfg)
        .args(["stats", "--json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["bans"].as_u64()
}

/// Polls `gaoler ctl stats --json` every 50 ms until `done` holds for its answer.
fn poll_ctl(cfg: &Path, limit: Duration, done: impl Fn(Option<u64>) -> bool) {
    let t0 = Instant::now();
    while !done(ctl_bans(cfg)) {
        assert!(
            t0.elapsed() < limit,
            "ctl stats did not get there in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The storm and the restart as seen from outside: the default reconcile interval,
/// `ctl stats --json` every 50 ms; ROUNDS each, medians.
fn from_outside(ns: &Netns, cfg: &Path, text: &str) {
    config_with(cfg, 1, "");
    let rawfile = raw_file(cfg);
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        ns.nft(&["delete", "table", "inet", "gbench"]);
        let _ = std::fs::remove_dir_all(cfg.join("state"));
        std::fs::write(cfg.join("auth.log"), "").expect("log");
        let daemon = start(ns, cfg);
        poll_ctl(cfg, Duration::from_secs(60), |b| b.is_some());
        let t0 = Instant::now();
        append(cfg, text);
        poll_ctl(cfg, Duration::from_secs(300), |b| {
            b.unwrap_or(0) >= u64::from(N)
        });
        rates.push(f64::from(N) / t0.elapsed().as_secs_f64());
        stop(daemon);
    }
    let (mut restores, mut raws) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ns.nft(&["delete", "table", "inet", "gbench"]);
        let t0 = Instant::now();
        let daemon = start(ns, cfg);
        poll_ctl(cfg, Duration::from_secs(60), |b| b.is_some());
        restores.push(t0.elapsed().as_secs_f64());
        stop(daemon);
        raws.push(raw_nft(ns, &rawfile));
    }
    let rate = median(&mut rates);
    let (restore, raw) = (median(&mut restores), median(&mut raws));
    println!(
        "| from outside: {N} offenders appended, `ctl stats --json` every 50 ms, reconcile on, median of {ROUNDS} | {rate:.0} bans/s (all: {}) |",
        rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "| from outside: restart to `ctl stats` answering with {N} bans, median of {ROUNDS} | {restore:.2} s (all: {}); raw `nft -f` {raw:.2} s (all: {}); gaoler {:.2}x |",
        list(&restores),
        list(&raws),
        restore / raw
    );
}

/// True when `GAOLER_BENCH_PARTS` (a comma list; all when unset) names `part`.
/// The bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn part(name: &str) -> bool {
    std::env::var("GAOLER_BENCH_PARTS").map_or(true, |p| p.split(',').any(|x| x.trim() == name))
}

fn elements(ns: &Netns) -> usize {
    ns.nft(&["list", "set", "inet", "gbench", "sshd-v4"])
        .matches("expires")
        .count()
}

fn main() {
    let ns = Netns::new("gb");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path();
    let socket = cfg.join("gaoler.sock");
    let stamp = chrono::Local::now().format("%b %e %H:%M:%S").to_string();
    println!("| what | figure |");
    println!("| --- | --- |");

    let text: String = (0..N).map(|i| line(&stamp, i)).collect();
    if part("inside") {
        inside(&ns, cfg, &socket, &stamp, &text);
    }
    if part("outside") {
        from_outside(&ns, cfg, &text);
    }
}

/// The storm, the restore, startup and single-ban latency, as the daemon's own
/// counters see them (the control socket polled every 2 ms without a process spawn).
fn inside(ns: &Netns, cfg: &Path, socket: &Path, stamp: &str, text: &str) {
    // 1. 100k distinct offenders (maxretry 1) from the log into the kernel; ROUNDS
    // runs from a fresh state, the median reported.
    config(cfg, 1);
    let (mut rates, mut in_kernel) = (Vec::new(), 0);
    for round in 0..ROUNDS {
        if round > 0 {
            ns.nft(&["delete", "table", "inet", "gbench"]);
            std::fs::remove_dir_all(cfg.join("state")).expect("fresh state");
            std::fs::write(cfg.join("auth.log"), "").expect("log");
        }
        let daemon = start(ns, cfg);
        wait_ready(socket);
        let t0 = Instant::now();
        append(cfg, text);
        while bans(socket).unwrap_or(0) < u64::from(N) {
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "bans did not arrive"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        rates.push(f64::from(N) / t0.elapsed().as_secs_f64());
        in_kernel = elements(ns);
        stop(daemon);
    }
    let rate = median(&mut rates);
    let store_bytes = dir_bytes(&cfg.join("state"));
    println!(
        "| the store after the storm (each ban with its line as evidence) | {:.1} MB, {:.0} bytes a ban |",
        store_bytes as f64 / 1e6,
        store_bytes as f64 / f64::from(N)
    );
    println!(
        "| {N} offenders from the log into the kernel, median of {ROUNDS} | {rate:.0} bans/s, {:.2} s ({in_kernel} elements; all: {} bans/s) |",
        f64::from(N) / rate,
        rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
    );

    // 2. Restart: restore 100k bans (start to READY, which follows the restore),
    // against a raw `nft -f` of the same elements; alternated, ROUNDS each, medians.
    let rawfile = raw_file(cfg);
    let (mut restores, mut raws, mut restored, mut split) =
        (Vec::new(), Vec::new(), 0, String::new());
    for _ in 0..ROUNDS {
        ns.nft(&["delete", "table", "inet", "gbench"]);
        let (daemon, ready) = start_to_ready(ns, cfg);
        restores.push(ready);
        restored = elements(ns);
        stop(daemon);
        // Where the restore's time went, from the daemon's own log line.
        split = std::fs::read_to_string(cfg.join("daemon.log"))
            .unwrap_or_default()
            .lines()
            .rfind(|l| l.contains("firewall table built") && l.contains("restored=100000"))
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| w.starts_with("store_ms") || w.starts_with("kernel_ms"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        ns.nft(&["delete", "table", "inet", "gbench"]);
        raws.push(raw_nft(ns, &rawfile));
    }
    let (restore, raw_time) = (median(&mut restores), median(&mut raws));
    println!(
        "| restart restoring {N} bans (start to READY), median of {ROUNDS} | {restore:.2} s ({restored} elements; last: {split}; all: {}) |",
        list(&restores)
    );
    println!(
        "| raw `nft -f` of the same {N} elements, median of {ROUNDS} | {raw_time:.2} s (all: {}); gaoler {:.2}x |",
        list(&raws),
        restore / raw_time
    );

    // 3. Startup to READY with an empty store (a first boot: the table is created),
    // against the start of the same binary printing its version.
    let full = cfg.join("state.full");
    std::fs::rename(cfg.join("state"), &full).expect("keep the full store");
    let (mut empties, mut execs) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        ns.nft(&["delete", "table", "inet", "gbench"]);
        let _ = std::fs::remove_dir_all(cfg.join("state"));
        let (daemon, ready) = start_to_ready(ns, cfg);
        empties.push(ready);
        stop(daemon);
        let t0 = Instant::now();
        let ok = Command::new(bin())
            .arg("--version")
            .output()
            .expect("gaoler --version")
            .status
            .success();
        assert!(ok);
        execs.push(t0.elapsed().as_secs_f64());
    }
    let (empty, exec) = (median(&mut empties), median(&mut execs));
    println!(
        "| startup to READY, empty store (table created), median of 5 | {:.1} ms (all: {} ms); `gaoler --version` alone {:.1} ms |",
        empty * 1000.0,
        empties
            .iter()
            .map(|v| format!("{:.1}", v * 1000.0))
            .collect::<Vec<_>>()
            .join(", "),
        exec * 1000.0
    );
    let _ = std::fs::remove_dir_all(cfg.join("state"));
    std::fs::rename(&full, cfg.join("state")).expect("the full store back");

    // 4. Single-ban latency: one new offender at a time, line written -> ban in force.
    std::fs::remove_dir_all(cfg.join("state")).expect("fresh state");
    std::fs::write(cfg.join("auth.log"), "").expect("log");
    let daemon = start(ns, cfg);
    wait_ready(socket);
    let mut lat = Vec::new();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(cfg.join("auth.log"))
        .expect("log");
    for i in 0..300u32 {
        let before = bans(socket).unwrap_or(0);
        let t0 = Instant::now();
        f.write_all(line(stamp, N + i).as_bytes()).expect("write");
        while bans(socket).unwrap_or(0) <= before {
            assert!(t0.elapsed() < Duration::from_secs(5), "ban did not arrive");
            // Polling without a pause would take a core from the daemon it measures.
            std::thread::sleep(Duration::from_micros(100));
        }
        lat.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    stop(daemon);
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1000.0;
    println!("| single-ban latency, line written to ban in force ({} bans) | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms |", lat.len(), p(0.5), p(0.99), p(1.0));
}
