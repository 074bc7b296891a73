//! Memory of the jail engine through the real daemon: RSS after 1,000,000 unique IPv4
//! offenders below maxretry (all tracked), and during a spray of 10,000,000 unique IPv6
//! sources with max_tracked at its default (1,000,000): RSS must stay flat while the
//! oldest addresses are evicted. Run: `cargo bench --bench jail_memory`.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use common::{mb, rss_kb, BenchDaemon};

/// Appends one failure line per address produced by `addr(i)` for `i` in `range`.
fn flood(d: &BenchDaemon, range: std::ops::Range<u64>, addr: impl Fn(u64) -> String) {
    let stamp = chrono::Local::now().format("%b %e %H:%M:%S").to_string();
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(d.log())
        .expect("open");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    for i in range {
        writeln!(
            out,
            "{stamp} web1 sshd[{}]: Failed password for root from {} port 4242 ssh2",
            i % 30000,
            addr(i)
        )
        .expect("write");
    }
    out.flush().expect("flush");
}

fn main() {
    println!("| scenario | lines | tracked | evicted | RSS |");
    println!("| --- | --- | --- | --- | --- |");

    // 1M unique IPv4 offenders, one failure each (maxretry 5): all tracked.
    let d = BenchDaemon::start("", "maxretry = 5\nfindtime = \"1h\"");
    let idle = rss_kb(d.pid()).unwrap_or(0);
    println!("| idle | 0 | 0 | 0 | {:.1} MB |", mb(idle));
    let n = 1_000_000;
    let start = Instant::now();
    flood(&d, 0..n, |i| {
        Ipv4Addr::from(0x2D00_0000u32 + i as u32).to_string()
    });
    d.wait_for_lines(n, start)
        .expect("the daemon read all lines");
    let s = d.stats().unwrap_or_default();
    println!(
        "| 1M unique IPv4 below maxretry | {n} | {} | {} | {:.1} MB |",
        s["tracked"],
        s["evicted"],
        mb(rss_kb(d.pid()).unwrap_or(0))
    );
    drop(d);

    // 10M unique IPv6 sources with max_tracked at its default; RSS per million lines.
    let d = BenchDaemon::start("", "maxretry = 5\nfindtime = \"1h\"");
    let total = 10_000_000u64;
    let start = Instant::now();
    for chunk in 0..10 {
        let range = chunk * 1_000_000..(chunk + 1) * 1_000_000;
        flood(&d, range.clone(), |i| {
            Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i))
                .to_string()
        });
        d.wait_for_lines(range.end, start)
            .expect("the daemon read all lines");
        let s = d.stats().unwrap_or_default();
        println!(
            "| IPv6 spray, max_tracked default | {} | {} | {} | {:.1} MB |",
            range.end,
            s["tracked"],
            s["evicted"],
            mb(rss_kb(d.pid()).unwrap_or(0))
        );
    }
    println!(
        "\nIPv6 spray: {total} lines read in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
