//! Memory under a flood: the real daemon (dry-run backend) follows a file while this
//! bench appends 5,000,000 mixed sshd lines to it as fast as it can; the daemon's RSS is
//! sampled every 50 ms. Bounded channels mean the readers wait instead of buffering, so
//! RSS must stay flat. Run: `cargo bench --bench source_rss`.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{mb, rss_kb, BenchDaemon};

const LINES: u64 = 5_000_000;

fn main() {
    let daemon = BenchDaemon::start("", "maxretry = 5");
    let pid = daemon.pid();
    let idle = rss_kb(pid).unwrap_or(0);

    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(idle));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        let stats_dir = daemon.dir.path().to_path_buf();
        std::thread::spawn(move || {
            // (lines read, RSS) at each million lines, to show RSS does not grow with them.
            let mut milestones = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if let Some(kb) = rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::Relaxed);
                    let read = common::lines_read_in(&stats_dir);
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
            .open(daemon.log())
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
    let caught_up = daemon.wait_for_lines(LINES, write_start);
    let end = rss_kb(pid).unwrap_or(0);
    done.store(true, Ordering::Relaxed);
    let milestones = sampler.join().unwrap_or_default();
    let stats = daemon.stats().unwrap_or_default();

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
    println!("| RSS idle | {:.1} MB |", mb(idle));
    println!(
        "| RSS peak during the flood | {:.1} MB |",
        mb(peak.load(Ordering::Relaxed))
    );
    println!("| RSS after | {:.1} MB |", mb(end));
    println!(
        "| failures / bans / tracked | {} / {} / {} |",
        stats["failures"], stats["bans"], stats["tracked"]
    );
    for (read, kb) in milestones {
        println!(
            "| RSS at {:.1} M lines read | {:.1} MB |",
            read as f64 / 1e6,
            mb(kb)
        );
    }
}
