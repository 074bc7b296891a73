//! Fleet ban sharing at speed (run as root, with Debian's nats-server installed): two
//! gaoler daemons A and B, each with its own nftables table, in one private network
//! namespace, sharing bans through a nats-server on its loopback. Measures:
//! - propagation latency, from A's log line written to B's ban in force (B's kernel
//!   and store; read from B's JSON log), over 1,000 bans written 10 ms apart;
//! - sustained throughput: 100,000 offenders written to A's log at once, until all
//!   are in force on B;
//! - catch-up: B stopped while A bans 100,000 more, then the time from B's start until
//!   it has applied them all.
//!
//! Run: `cargo bench --bench fleet` (numbers go to BENCHMARKS.md).

#[allow(dead_code)]
mod netns;
#[allow(dead_code)]
mod runbin;
use netns::Netns;
use runbin::bin;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const LATENCY_BANS: usize = 1_000;
const STORM: usize = 100_000;

struct Host {
    dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Host {
    fn new(root: &Path, name: &str, table: &str) -> (Host, String) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let out = Command::new(bin())
            .args(["fleet", "keygen"])
            .arg(dir.join("fleet.key"))
            .output()
            .expect("keygen");
        assert!(out.status.success(), "keygen");
        let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
        std::fs::write(
            dir.join("gaoler.toml"),
            format!(
                "[daemon]\nstate_dir = \"state\"\nsocket = \"gaoler.sock\"\nlog_format = \"json\"\nfilter_path = [\"{}\"]\n\n[firewall]\ntable = \"{table}\"\non_stop = \"flush\"\n",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("filters").display()
            ),
        )
        .expect("main");
        std::fs::create_dir_all(dir.join("jails")).expect("jails");
        std::fs::write(
            dir.join("jails/sshd.toml"),
            "filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = 1\nbantime = \"1h\"\n",
        )
        .expect("jail");
        std::fs::write(dir.join("auth.log"), "").expect("log");
        let log = dir.join("daemon.log");
        (
            Host {
                dir,
                child: None,
                log,
            },
            public,
        )
    }

    fn join(&self, name: &str, trusted: &str) {
        let main = std::fs::read_to_string(self.dir.join("gaoler.toml")).expect("main");
        std::fs::write(
            self.dir.join("gaoler.toml"),
            format!("{main}\n[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nhost = \"{name}\"\nkey = \"fleet.key\"\ntrusted_keys = [\"{trusted}\"]\nrate_per_origin = 1000000\n"),
        )
        .expect("fleet");
    }

    fn start(&mut self, ns: &Netns) {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = ns
            .cmd(&[&bin(), "run", "--config", &self.dir.to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn");
        self.child = Some(child);
        let t0 = Instant::now();
        while self.ctl(&["ping"]).is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "daemon did not start: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    fn ctl(&self, args: &[&str]) -> Option<serde_json::Value> {
        let out = Command::new(bin())
            .arg("ctl")
            .args(args)
            .args(["--json", "--config"])
            .arg(&self.dir)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn fleet(&self, key: &str) -> u64 {
        self.ctl(&["fleet"])
            .map_or(0, |v| v[key].as_u64().unwrap_or(0))
    }

    fn append(&self, lines: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("auth.log"))
            .expect("auth.log");
        f.write_all(lines.as_bytes()).expect("write");
    }

    /// When each address's ban came in force, from the daemon's JSON log.
    fn ban_times(&self) -> std::collections::HashMap<String, SystemTime> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = std::collections::HashMap::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["fields"]["message"] != "ban" {
                continue;
            }
            let (Some(target), Some(ts)) =
                (v["fields"]["target"].as_str(), v["timestamp"].as_str())
            else {
                continue;
            };
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) {
                out.insert(target.to_string(), SystemTime::from(t));
            }
        }
        out
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

fn line(ip: &str) -> String {
    let stamp = chrono::Local::now().format("%b %e %H:%M:%S");
    format!("{stamp} bench sshd[4242]: Failed password for root from {ip} port 50000 ssh2\n")
}

/// The `i`-th address of block `block` (up to 500,000 a block).
fn ip(block: u32, i: usize) -> String {
    let n = i as u32 + 1;
    format!(
        "10.{}.{}.{}",
        block * 8 + n / 65_536,
        (n / 256) % 256,
        n % 256
    )
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> f64 {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed().as_secs_f64()
}

fn main() {
    if Command::new("nats-server")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("nats-server is not installed (apt-get install nats-server): skipped");
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let ns = Netns::new("gbf");
    let store = root.path().join("nats");
    let mut nats = ns
        .cmd(&[
            "nats-server",
            "-js",
            "-sd",
            &store.to_string_lossy(),
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server");
    std::thread::sleep(Duration::from_millis(500));
    let (mut a, a_key) = Host::new(root.path(), "a", "gfa");
    let (mut b, b_key) = Host::new(root.path(), "b", "gfb");
    a.join("A", &b_key);
    b.join("B", &a_key);
    a.start(&ns);
    b.start(&ns);
    wait_until(Duration::from_secs(20), "connected", || {
        a.ctl(&["fleet"]).is_some_and(|v| v["connected"] == true)
            && b.ctl(&["fleet"]).is_some_and(|v| v["connected"] == true)
    });

    // Latency: one ban at a time.
    let mut written = Vec::with_capacity(LATENCY_BANS);
    for i in 0..LATENCY_BANS {
        let addr = ip(1, i);
        a.append(&line(&addr));
        written.push((addr, SystemTime::now()));
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_until(Duration::from_secs(60), "B applies 1,000", || {
        b.fleet("applied") >= LATENCY_BANS as u64
    });
    std::thread::sleep(Duration::from_millis(300));
    let on_b = b.ban_times();
    let on_a = a.ban_times();
    let ms = |from: SystemTime, to: Option<&SystemTime>| {
        to.and_then(|t| t.duration_since(from).ok())
            .map(|d| d.as_secs_f64() * 1e3)
    };
    let mut remote: Vec<f64> = written
        .iter()
        .filter_map(|(ip, t)| ms(*t, on_b.get(ip)))
        .collect();
    let mut local: Vec<f64> = written
        .iter()
        .filter_map(|(ip, t)| ms(*t, on_a.get(ip)))
        .collect();
    remote.sort_by(f64::total_cmp);
    local.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| {
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };

    // Throughput: a storm of 100,000 offenders on A.
    let storm: String = (0..STORM).map(|i| line(&ip(2, i))).collect();
    let before = b.fleet("applied");
    let t0 = Instant::now();
    a.append(&storm);
    wait_until(Duration::from_secs(120), "A bans the storm", || {
        a.fleet("published") >= (LATENCY_BANS + STORM) as u64
    });
    let published_s = t0.elapsed().as_secs_f64();
    let applied_then = b.fleet("applied") - before;
    wait_until(Duration::from_secs(300), "B applies the storm", || {
        b.fleet("applied") >= before + STORM as u64
    });
    let storm_s = t0.elapsed().as_secs_f64();

    // Catch-up: B down while A bans 100,000 more.
    b.stop();
    let more: String = (0..STORM).map(|i| line(&ip(3, i))).collect();
    a.append(&more);
    wait_until(Duration::from_secs(300), "A publishes them", || {
        a.fleet("published") >= (LATENCY_BANS + 2 * STORM) as u64
    });
    let t0 = Instant::now();
    b.start(&ns);
    wait_until(Duration::from_secs(600), "B catches up", || {
        b.fleet("applied") >= STORM as u64
    });
    let catch_up = t0.elapsed().as_secs_f64();
    let banned_b = b
        .ctl(&["banned"])
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0);

    println!("| what | figure |");
    println!("| --- | --- |");
    println!(
        "| propagation, A's log line to B's ban in force ({} bans, 10 ms apart) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms |",
        remote.len(),
        pct(&remote, 0.5),
        pct(&remote, 0.99),
        remote.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| the same line to A's own ban in force | p50 {:.1} ms, p99 {:.1} ms |",
        pct(&local, 0.5),
        pct(&local, 0.99)
    );
    println!(
        "| storm: {STORM} offenders on A until all in force on B | {storm_s:.2} s = {:.0} bans/s (A had published all at {published_s:.2} s, B applied {applied_then} by then) |",
        STORM as f64 / storm_s
    );
    println!(
        "| catch-up: B started with {STORM} bans queued, until all applied | {catch_up:.2} s = {:.0} bans/s (B holds {banned_b}) |",
        STORM as f64 / catch_up
    );
    a.stop();
    b.stop();
    let _ = nats.kill();
    let _ = nats.wait();
}
