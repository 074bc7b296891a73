//! Memory and speed of multi-line sessions: one million open sessions (each an sshd
//! process whose failure waits for an address, as `Disconnecting: Too many
//! authentication failures` does), then the same million settled by their ends. The
//! resident memory of this process is measured before and after.
//! Run: `cargo bench --bench session_memory` (numbers go to BENCHMARKS.md).

use std::time::Instant;

use chrono::{TimeZone, Utc};
use gaoler::filter::{key_of, Mark, Role, Sessions};

const OPEN: u64 = 1_000_000;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let now = Utc.timestamp_opt(1_700_000_000, 0).single().expect("time");
    let fail = Mark {
        role: Role::Fail,
        host: None,
        user: None,
        regex: 0,
        via: None,
    };
    let before = rss_kb();
    let mut sessions = Sessions::new(2 * OPEN as usize, 600);
    let keys: Vec<u64> = (0..OPEN)
        .map(|pid| key_of(format!("web1 sshd[{pid}]: ").as_bytes()))
        .collect();
    let start = Instant::now();
    for &k in &keys {
        std::hint::black_box(sessions.observe(Some(k), &fail, now));
    }
    let open_s = start.elapsed().as_secs_f64();
    let after = rss_kb();
    assert_eq!(sessions.len() as u64, OPEN, "every session stays open");
    let end = Mark {
        role: Role::End,
        host: Some("203.0.113.7".parse().expect("ip")),
        ..fail
    };
    let start = Instant::now();
    let settled: u64 = keys
        .iter()
        .map(|&k| {
            sessions
                .observe(Some(k), &end, now)
                .map_or(0, |s| u64::from(s.count))
        })
        .sum();
    let end_s = start.elapsed().as_secs_f64();
    assert_eq!(settled, OPEN, "each end settles its session's failure");
    assert!(sessions.is_empty());
    let grown = after.saturating_sub(before);
    println!("| what | figure |");
    println!("| --- | --- |");
    println!("| open sessions | {OPEN} |");
    println!(
        "| resident memory for them | {:.1} MiB ({:.0} bytes a session) |",
        grown as f64 / 1024.0,
        grown as f64 * 1024.0 / OPEN as f64
    );
    println!(
        "| opening them (a failure without an address each) | {:.0} ns a line |",
        open_s / OPEN as f64 * 1e9
    );
    println!(
        "| settling them (each session's end names the address) | {:.0} ns a line |",
        end_s / OPEN as f64 * 1e9
    );
}
