//! Filter throughput: a generated 2M-line mixed syslog corpus (about 20% sshd failures
//! among accepted logins, sessions, cron, kernel and systemd lines), measured side by
//! side in one run: `grep -cE` on the file, `gaoler test-filter sshd` on one core, the
//! engine in-process, every shipped filter at once over the same lines, and
//! `fail2ban-regex` with fail2ban's own sshd filter when it is installed (on the first
//! 100,000 lines: it is much slower).
//! Run: `cargo bench --bench filter_throughput` (numbers go to BENCHMARKS.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use gaoler::filter::{Filter, Framer, Verdict};
use measure::{best, one_core, Rng, RUNS};

mod measure;

const LINES: usize = 2_000_000;

/// A documentation-range address from the generator.
fn ip(rng: &mut Rng) -> String {
    let n = rng.next();
    format!("203.0.{}.{}", (n >> 8) % 256, n % 254 + 1)
}

fn corpus(path: &Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("corpus file"));
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let users = [
        "root", "admin", "oracle", "test", "ubuntu", "git", "postgres", "pi", "deploy",
    ];
    for i in 0..LINES {
        let (h, m, s) = ((i / 3600) % 24, (i / 60) % 60, i % 60);
        let stamp = format!("Nov 21 {h:02}:{m:02}:{s:02} web1");
        let pid = 1000 + rng.next() % 30000;
        let roll = rng.next() % 100;
        let ip = ip(&mut rng);
        let user = rng.pick(&users);
        let port = 1024 + rng.next() % 60000;
        let line = match roll {
            0..=9 => format!("{stamp} sshd[{pid}]: Failed password for {user} from {ip} port {port} ssh2"),
            10..=14 => format!("{stamp} sshd[{pid}]: Invalid user {user} from {ip} port {port}"),
            15..=19 => format!("{stamp} sshd[{pid}]: Connection closed by authenticating user {user} {ip} port {port} [preauth]"),
            20..=34 => format!("{stamp} sshd[{pid}]: Accepted publickey for {user} from {ip} port {port} ssh2: ED25519 SHA256:Yc3x0b8W1T0k2nq4m5p6r7s8t9u0v1w2x3y4z5a6b7c"),
            35..=49 => format!("{stamp} sshd[{pid}]: pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)"),
            50..=59 => format!("{stamp} sshd[{pid}]: Received disconnect from {ip} port {port}:11: disconnected by user"),
            60..=74 => format!("{stamp} CRON[{pid}]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)"),
            75..=84 => format!("{stamp} kernel: [{pid}.{port}] IN=eth0 OUT= MAC=00:16:3e:aa:bb:cc SRC={ip} DST=192.0.2.1 LEN=60 PROTO=TCP SPT={port} DPT=23"),
            85..=94 => format!("{stamp} systemd[1]: Started session-{pid}.scope - Session {pid} of User {user}."),
            _ => format!("{stamp} postfix/smtpd[{pid}]: connect from unknown[{ip}]"),
        };
        writeln!(out, "{line}").expect("write corpus");
    }
    out.flush().expect("flush corpus");
}

/// `fail2ban-regex` on the first `F2B_LINES` lines with fail2ban's sshd filter, when
/// installed: (seconds, lines, matched).
fn fail2ban_regex(dir: &Path, lines: &[&[u8]]) -> Option<(f64, usize, String)> {
    const F2B_LINES: usize = 100_000;
    Command::new("fail2ban-regex").arg("--help").output().ok()?;
    let sample = dir.join("mixed-100k.log");
    let n = lines.len().min(F2B_LINES);
    std::fs::write(&sample, lines[..n].join(&b'\n')).expect("sample");
    let start = Instant::now();
    let out = one_core("fail2ban-regex")
        .arg(&sample)
        .arg("sshd")
        .output()
        .expect("fail2ban-regex");
    let secs = start.elapsed().as_secs_f64();
    // "Lines: 100000 lines, 0 ignored, 20012 matched, 79988 missed"
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let matched = text
        .lines()
        .find(|l| l.starts_with("Lines:"))
        .and_then(|l| l.split(", ").find_map(|p| p.strip_suffix(" matched")))
        .unwrap_or("?")
        .to_string();
    Some((secs, n, matched))
}

/// A line the filter matched: a failure, or a line of a session (which the
/// daemon then gives to the session's state; that step is not timed here).
fn hit(v: Verdict) -> bool {
    matches!(v, Verdict::Failure(_) | Verdict::Mark(_))
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = repo.join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path: PathBuf = dir.join("mixed-2m.log");
    corpus(&path);
    let bytes = std::fs::read(&path).expect("read corpus");
    let lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mb = bytes.len() as f64 / 1e6;
    println!(
        "corpus: {} lines, {mb:.0} MB ({})",
        lines.len(),
        path.display()
    );

    let pattern = "Failed password|Invalid user|authenticating user";
    let (grep_s, grep_out) = best(|| {
        one_core("grep")
            .args(["-cE", pattern])
            .arg(&path)
            .output()
            .expect("grep")
    });
    let grep_count = String::from_utf8_lossy(&grep_out.stdout).trim().to_string();

    let bin = env!("CARGO_BIN_EXE_gaoler");
    let (tf_s, tf_out) = best(|| {
        one_core(bin)
            .args(["test-filter", "sshd"])
            .arg(&path)
            .arg("--config")
            .arg(repo)
            .output()
            .expect("test-filter")
    });
    // "Filter sshd: N lines, M matched, ..." (the summary, which counts like grep -c).
    let summary = String::from_utf8_lossy(&tf_out.stdout).into_owned();
    let tf_matched = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" matched"))
        .unwrap_or("?")
        .to_string();

    let filters_dir = repo.join("filters");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&filters_dir)
        .expect("filters")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let load = |p: &Path| -> std::sync::Arc<Filter> {
        gaoler::config::load_filter(repo, p.to_str().expect("path")).expect("filter compiles")
    };
    let sshd = load(&filters_dir.join("sshd.toml"));
    let all: Vec<std::sync::Arc<Filter>> = files.iter().map(|p| load(p)).collect();
    let framer = Framer::default();
    let now = chrono::Utc::now();

    let (frame_s, _) = best(|| {
        lines
            .iter()
            .map(|l| framer.split(l, now).message.len())
            .sum::<usize>()
    });
    let messages: Vec<&[u8]> = lines.iter().map(|l| framer.split(l, now).message).collect();
    let (filter_s, _) = best(|| messages.iter().filter(|m| hit(sshd.examine(m))).count());
    let (hits, misses): (Vec<&[u8]>, Vec<&[u8]>) =
        messages.iter().partition(|m| hit(sshd.examine(m)));
    let (miss_s, _) = best(|| {
        misses
            .iter()
            .filter(|m| matches!(sshd.examine(m), Verdict::Miss))
            .count()
    });
    let (hit_s, _) = best(|| hits.iter().filter(|m| hit(sshd.examine(m))).count());
    println!(
        "per line: miss {:.0} ns ({} lines), hit {:.0} ns ({} lines)",
        miss_s / misses.len() as f64 * 1e9,
        misses.len(),
        hit_s / hits.len() as f64 * 1e9,
        hits.len()
    );
    let (engine_s, engine_hits) = best(|| {
        lines
            .iter()
            .filter(|l| hit(sshd.examine(framer.split(l, now).message)))
            .count()
    });
    let (all_s, all_hits) = best(|| {
        let mut hits = 0;
        for l in &lines {
            let framed = framer.split(l, now);
            for f in &all {
                if hit(f.examine(framed.message)) {
                    hits += 1;
                }
            }
        }
        hits
    });

    // Each filter alone over the same framed lines: where the all-filters time goes.
    let mut per_filter: Vec<(f64, String)> = files
        .iter()
        .zip(&all)
        .map(|(p, f)| {
            let start = Instant::now();
            let n = messages
                .iter()
                .filter(|m| !matches!(f.examine(m), Verdict::Miss))
                .count();
            std::hint::black_box(n);
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                start.elapsed().as_secs_f64() / lines.len() as f64 * 1e9,
                name,
            )
        })
        .collect();
    per_filter.sort_by(|a, b| b.0.total_cmp(&a.0));
    let costly: Vec<String> = per_filter
        .iter()
        .take(8)
        .map(|(ns, n)| format!("{n} {ns:.0} ns"))
        .collect();
    println!(
        "slowest filters per line on this corpus: {}",
        costly.join(", ")
    );
    let f2b = fail2ban_regex(&dir, &lines);
    let rate = |s: f64| lines.len() as f64 / s;
    println!();
    println!("| what | time (best of {RUNS}) | lines/s | matches |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| `grep -cE '{pattern}'` (1 core) | {grep_s:.3} s | {:.2} M | {grep_count} |",
        rate(grep_s) / 1e6
    );
    println!(
        "| `gaoler test-filter sshd` (1 core, whole process) | {tf_s:.3} s | {:.2} M | {} |",
        rate(tf_s) / 1e6,
        tf_matched
    );
    println!(
        "| framing only (timestamp + syslog header) | {frame_s:.3} s | {:.2} M | |",
        rate(frame_s) / 1e6
    );
    println!(
        "| sshd filter only, on framed messages | {filter_s:.3} s | {:.2} M | |",
        rate(filter_s) / 1e6
    );
    println!(
        "| sshd filter in-process (framing + filter) | {engine_s:.3} s | {:.2} M | {engine_hits} |",
        rate(engine_s) / 1e6
    );
    println!("| all {} shipped filters on every line, in-process | {all_s:.3} s | {:.2} M | {all_hits} |", all.len(), rate(all_s) / 1e6);
    match f2b {
        Some((secs, n, matched)) => println!(
            "| `fail2ban-regex` with fail2ban's sshd filter, first {n} lines (1 run) | {secs:.3} s | {:.3} M | {matched} |",
            n as f64 / secs / 1e6
        ),
        None => println!("| `fail2ban-regex` | not installed | | |"),
    }
    println!();
    println!(
        "test-filter sshd vs grep: {:.2}x grep's time",
        tf_s / grep_s
    );
}
