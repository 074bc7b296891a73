//! The control socket under the hardening issue's probes (run as root, release build),
//! the daemon under systemd's default open-files limits (1024 soft, 524288 hard, or
//! this process's hard limit when lower):
//! 1. ban latency, line written to element in nftables (private network namespace),
//!    with no ctl connection and with 1,100 idle ones held;
//! 2. the daemon's RSS while 200 clients ask for 50,000 bans and never read, and after
//!    they leave (dry-run backend, the bans stored before the start).
//!
//! Run: `cargo bench --bench ctl_pressure`; `GAOLER_BENCH_BIN=/path/to/gaoler` measures
//! another build with the same method.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[allow(dead_code)]
mod netns;
#[allow(dead_code)]
mod runbin;
use netns::Netns;
use runbin::bin;

use gaoler::store::{BanStore, SledStore, StoreChange};
use gaoler::types::Ban;

/// systemd's default for a service without `LimitNOFILE=`: 1024 soft, 524288 hard
/// (or this process's hard limit, when lower: raising it needs CAP_SYS_RESOURCE).
fn limits() -> String {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `limit`, valid for the call.
    let hard = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 => limit.rlim_max.min(524_288),
        _ => 1024,
    };
    format!("--nofile=1024:{hard}")
}
const IDLE_CONNECTIONS: usize = 1_100;
const BAN_SAMPLES: u32 = 20;
/// A ban slower than this ends the latency run (the old daemon took a minute).
const SLOW: Duration = Duration::from_secs(5);
const BANS: u32 = 50_000;
const LAZY_CLIENTS: usize = 200;

/// A daemon on a temporary config directory, killed when dropped.
struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    /// Writes the config (`backend`, jail `sshd` banning at the first failure) and
    /// calls `prepare` on the directory before the start; `netns` runs it there.
    fn start(backend: &str, netns: Option<&Netns>, prepare: impl FnOnce(&Path)) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path();
        let filters = Path::new(env!("CARGO_MANIFEST_DIR")).join("filters");
        std::fs::write(
            cfg.join("gaoler.toml"),
            format!("[daemon]\nstate_dir = \"state\"\nsocket = \"gaoler.sock\"\nfilter_path = [\"{}\"]\nlog_level = \"warn\"\n[firewall]\nbackend = \"{backend}\"\ntable = \"gctl\"\nreconcile_interval = 0\n[defaults]\nignoreip = []\n", filters.display()),
        )
        .expect("config");
        std::fs::create_dir_all(cfg.join("jails")).expect("jails");
        std::fs::write(
            cfg.join("jails/sshd.toml"),
            "filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = 1\nbantime = \"1d\"\nports = [\"22\"]\n",
        )
        .expect("jail");
        std::fs::write(cfg.join("auth.log"), "").expect("log");
        prepare(cfg);
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.0, "prlimit"]);
                c
            }
            None => Command::new("prlimit"),
        };
        let child = cmd
            .args([&limits(), "--", &bin(), "run", "--config"])
            .arg(cfg)
            .stderr(std::fs::File::create(cfg.join("daemon.log")).expect("log"))
            .spawn()
            .expect("daemon");
        let d = Daemon { dir, child };
        let t0 = Instant::now();
        while d
            .ask(b"{\"v\":1,\"request\":{\"cmd\":\"ping\"}}\n")
            .is_none()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "daemon did not start: {}",
                std::fs::read_to_string(d.dir.path().join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("gaoler.sock")
    }

    /// One request straight on the socket; the whole answer line.
    fn ask(&self, request: &[u8]) -> Option<Vec<u8>> {
        let mut s = UnixStream::connect(self.socket()).ok()?;
        s.write_all(request).ok()?;
        let mut line = Vec::new();
        BufReader::new(s).read_until(b'\n', &mut line).ok()?;
        line.ends_with(b"\n").then_some(line)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, Iterator::count)
    }

    fn append(&self, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("auth.log"))
            .expect("log");
        f.write_all(text.as_bytes()).expect("write");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn offender(i: u32) -> String {
    std::net::Ipv4Addr::from(0x2D00_0000u32 + i).to_string()
}

/// Line written to element in nftables, `BAN_SAMPLES` new offenders one at a time,
/// with `held` idle ctl connections open; stops at the first ban slower than `SLOW`.
fn ban_latency(held: usize) -> (Vec<Duration>, usize) {
    let ns = Netns::new("gbc");
    let d = Daemon::start("nftables", Some(&ns), |_| {});
    let idle: Vec<UnixStream> = (0..held)
        .filter_map(|_| UnixStream::connect(d.socket()).ok())
        .collect();
    assert_eq!(
        idle.len(),
        held,
        "the bench process needs {held} descriptors"
    );
    std::thread::sleep(Duration::from_millis(500));
    let files = d.open_files();
    let stamp = chrono::Local::now().format("%b %e %H:%M:%S").to_string();
    let mut took = Vec::new();
    for i in 0..BAN_SAMPLES {
        let ip = offender(i);
        let t0 = Instant::now();
        d.append(&format!(
            "{stamp} h sshd[1]: Failed password for root from {ip} port 22 ssh2\n"
        ));
        while !ns.nft_ok(&[
            "get",
            "element",
            "inet",
            "gctl",
            "sshd-v4",
            &format!("{{ {ip} }}"),
        ]) && t0.elapsed() < Duration::from_secs(120)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        took.push(t0.elapsed());
        if t0.elapsed() > SLOW {
            break;
        }
    }
    drop(idle);
    (took, files)
}

/// The resident memory of process `pid` in KiB.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    line.split_whitespace().next()?.parse().ok()
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// RSS in KiB: idle, after one full listing, at most while the clients hang, and
/// after they left; the size of the answer and how long a full listing took while they
/// hung.
fn lazy_clients() -> [String; 7] {
    let d = Daemon::start("log", None, |cfg| {
        let mut store = SledStore::open(&cfg.join("state")).expect("state");
        let now = chrono::Utc::now();
        let changes: Vec<StoreChange> = (0..BANS)
            .map(|i| {
                StoreChange::Put(Ban {
                    target: offender(i).parse().expect("target"),
                    jail: "sshd".into(),
                    banned_at: now,
                    expires_at: Some(now + chrono::Duration::days(1)),
                    count: 1,
                    origin: None,
                })
            })
            .collect();
        store.commit(&changes).expect("store");
    });
    let banned = b"{\"v\":1,\"request\":{\"cmd\":\"banned\"}}\n";
    let pid = d.pid();
    let idle = rss_kb(pid).unwrap_or(0);
    let answer = d.ask(banned).map_or(0, |a| a.len());
    let warm = rss_kb(pid).unwrap_or(0);
    let lazy: Vec<UnixStream> = (0..LAZY_CLIENTS)
        .filter_map(|_| {
            let mut s = UnixStream::connect(d.socket()).ok()?;
            s.write_all(banned).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
            Some(s)
        })
        .collect();
    // One byte of each: every answer has begun.
    for mut s in &lazy {
        let _ = s.read_exact(&mut [0u8; 1]);
    }
    let mut peak = rss_kb(pid).unwrap_or(0);
    let t0 = Instant::now();
    let full = d.ask(banned).map_or(0, |a| a.len()) == answer;
    let listing = t0.elapsed();
    for _ in 0..20 {
        peak = peak.max(rss_kb(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(lazy);
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kb(pid).unwrap_or(0);
    [
        format!("{:.1} MB", mb(idle)),
        format!("{:.1} MB ({:.1} MB of JSON)", mb(warm), answer as f64 / 1e6),
        format!("{:.1} MB", mb(peak)),
        format!("{:.1} MB", mb(after)),
        if full {
            format!("{:.0} ms", ms(listing))
        } else {
            "not answered".into()
        },
        LAZY_CLIENTS.to_string(),
        BANS.to_string(),
    ]
}

fn main() {
    println!("| what | figure |");
    println!("| --- | --- |");
    for held in [0, IDLE_CONNECTIONS] {
        let (mut took, files) = ban_latency(held);
        let figure = match took.last() {
            Some(last) if *last > SLOW => format!(
                "{} bans within {} s, then one took {:.1} s (stopped)",
                took.len() - 1,
                SLOW.as_secs(),
                last.as_secs_f64()
            ),
            _ => {
                took.sort();
                let p = |q: f64| ms(took[((took.len() as f64 - 1.0) * q) as usize]);
                format!(
                    "p50 {:.1} ms, max {:.1} ms over {} bans",
                    p(0.5),
                    p(1.0),
                    took.len()
                )
            }
        };
        println!("| ban latency, line to nftables element, {held} idle ctl connections held ({files} files open) | {figure} |");
    }
    let [idle, warm, peak, after, listing, clients, bans] = lazy_clients();
    println!("| RSS idle, {bans} bans | {idle} |");
    println!("| RSS after one `banned` | {warm} |");
    println!("| RSS at most, {clients} clients asked `banned` and never read | {peak} |");
    println!("| a full `banned` answered meanwhile | {listing} |");
    println!("| RSS 2 s after they left | {after} |");
}
