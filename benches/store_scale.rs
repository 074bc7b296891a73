//! The store at scale (sled 0.34): 100,000 and 1,000,000 bans written in batches of
//! 5,000 as the ban manager does (one sled batch and one flush each), then the
//! database reopened and every ban read back as the restore does. Reports write rate,
//! disk use, peak RSS of this process and restore time. Each size runs in a child
//! process, so peaks do not mix. Run: `cargo bench --bench store_scale`.

use std::time::Instant;

use gaoler::store::{BanStore, SledStore, StoreChange};
use gaoler::types::{Ban, Target};

const BATCH: usize = 5_000;

fn ban(i: u32, now: chrono::DateTime<chrono::Utc>) -> Ban {
    Ban {
        target: Target::addr(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
            0x2D00_0000 + i,
        ))),
        jail: "sshd".into(),
        banned_at: now,
        expires_at: Some(now + chrono::Duration::days(1)),
        count: 1,
        origin: None,
    }
}

fn disk_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Peak RSS of this process so far, in kB.
fn peak_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn run(n: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = chrono::Utc::now();
    let started = Instant::now();
    {
        let mut store = SledStore::open(dir.path()).expect("open");
        let mut changes = Vec::with_capacity(BATCH);
        for i in 0..n {
            changes.push(StoreChange::Put(ban(i, now)));
            if changes.len() == BATCH {
                store.commit(&changes).expect("commit");
                changes.clear();
            }
        }
        store.commit(&changes).expect("commit");
    }
    let wrote = started.elapsed();
    let write_peak = peak_kb();
    let disk = disk_bytes(dir.path());
    let t0 = Instant::now();
    let store = SledStore::open(dir.path()).expect("reopen");
    let opened = t0.elapsed();
    let bans = store.bans().expect("bans");
    let read = t0.elapsed();
    assert_eq!(bans.len(), n as usize);
    println!(
        "| {n} bans | {:.0} bans/s ({:.1} s) | {:.0} MB | {:.0} MB | {:.2} s (open {:.2} s) | {:.0} MB |",
        f64::from(n) / wrote.as_secs_f64(),
        wrote.as_secs_f64(),
        disk as f64 / 1e6,
        mb(write_peak),
        read.as_secs_f64(),
        opened.as_secs_f64(),
        mb(peak_kb()),
    );
}

fn main() {
    if let Some(n) = std::env::args().nth(1).and_then(|a| a.parse().ok()) {
        if std::env::var_os("GAOLER_STORE_SCALE_CHILD").is_some() {
            run(n);
            return;
        }
    }
    println!("| size | write (batches of {BATCH}, flushed) | disk | peak RSS writing | read back at restore | peak RSS after reading |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let me = std::env::current_exe().expect("self");
    for n in [100_000u32, 1_000_000] {
        let ok = std::process::Command::new(&me)
            .arg(n.to_string())
            .env("GAOLER_STORE_SCALE_CHILD", "1")
            .status()
            .expect("child")
            .success();
        assert!(ok, "size {n} failed");
    }
}
