//! Memory under a flood: the real daemon (dry-run backend) follows a file while this
//! bench appends 5,000,000 mixed sshd lines to it as fast as it can; the daemon's RSS is
//! sampled every 50 ms. Bounded channels mean the readers wait instead of buffering, so
//! RSS must stay flat. Run: `cargo bench --bench source_rss`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LINES: u64 = 5_000_000;

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn ctl_stats(config: &Path) -> Option<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_gaoler"))
        .args(["ctl", "stats", "--json", "--config"])
        .arg(config)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path();
    let filters = Path::new(env!("CARGO_MANIFEST_DIR")).join("filters");
    std::fs::write(
        cfg.join("gaoler.toml"),
        format!("[daemon]\nstate_dir = \"state\"\nsocket = \"gaoler.sock\"\nfilter_path = [\"{}\"]\nlog_level = \"warn\"\n[firewall]\nbackend = \"log\"\n", filters.display()),
    )
    .expect("config");
    std::fs::create_dir_all(cfg.join("jails")).expect("jails");
    std::fs::write(
        cfg.join("jails/sshd.toml"),
        "filter = \"sshd\"\nlogpath = \"flood.log\"\nmaxretry = 5\n",
    )
    .expect("jail");
    std::fs::write(cfg.join("flood.log"), "").expect("log");

    let mut daemon = Command::new(env!("CARGO_BIN_EXE_gaoler"))
        .args(["run", "--config"])
        .arg(cfg)
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let pid = daemon.id();
    let start = Instant::now();
    while ctl_stats(cfg).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let idle = rss_kb(pid).unwrap_or(0);

    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(idle));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        let cfg = cfg.to_path_buf();
        std::thread::spawn(move || {
            // (lines read, RSS) at each million lines, to show RSS does not grow with them.
            let mut milestones = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if let Some(kb) = rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::Relaxed);
                    let read = ctl_stats(&cfg)
                        .and_then(|s| s["lines_read"].as_u64())
                        .unwrap_or(0);
                    if read / 1_000_000 > milestones.len() as u64 {
                        milestones.push((read, kb));
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            milestones
        })
    };

    // Every line stamped now, so all failures fall inside findtime and count.
    let stamp = chrono::Local::now().format("%b %e %H:%M:%S").to_string();
    let write_start = Instant::now();
    {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(cfg.join("flood.log"))
            .expect("open");
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        for i in 0..LINES {
            if i % 5 == 0 {
                writeln!(out, "{stamp} web1 sshd[{}]: Failed password for root from 203.0.{}.{} port 4242 ssh2", i % 30000, (i / 250) % 200, i % 250 + 1)
            } else {
                writeln!(out, "{stamp} web1 CRON[{}]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)", i % 30000)
            }
            .expect("write");
        }
        out.flush().expect("flush");
    }
    let wrote = write_start.elapsed();
    let mut caught_up = None;
    let catch_start = Instant::now();
    while catch_start.elapsed() < Duration::from_secs(600) {
        if ctl_stats(cfg).and_then(|s| s["lines_read"].as_u64()) == Some(LINES) {
            caught_up = Some(write_start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let end = rss_kb(pid).unwrap_or(0);
    done.store(true, Ordering::Relaxed);
    let milestones = sampler.join().unwrap_or_default();
    let stats = ctl_stats(cfg).unwrap_or_default();
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = daemon.wait();

    println!("| what | value |");
    println!("| --- | --- |");
    println!(
        "| lines appended | {LINES} in {:.2} s |",
        wrote.as_secs_f64()
    );
    match caught_up {
        Some(t) => println!(
            "| daemon read all lines after | {:.2} s ({:.2} M lines/s end to end) |",
            t.as_secs_f64(),
            LINES as f64 / t.as_secs_f64() / 1e6
        ),
        None => println!(
            "| daemon read all lines | NO (lines_read = {}) |",
            stats["lines_read"]
        ),
    }
    println!("| RSS idle | {:.1} MB |", idle as f64 / 1024.0);
    println!(
        "| RSS peak during the flood | {:.1} MB |",
        peak.load(Ordering::Relaxed) as f64 / 1024.0
    );
    println!("| RSS after | {:.1} MB |", end as f64 / 1024.0);
    println!(
        "| failures / bans / tracked | {} / {} / {} |",
        stats["failures"], stats["bans"], stats["tracked"]
    );
    for (read, kb) in milestones {
        println!(
            "| RSS at {:.1} M lines read | {:.1} MB |",
            read as f64 / 1e6,
            kb as f64 / 1024.0
        );
    }
}
