//! Web access-log filters: a generated 1M-line access log (Gunicorn extended format
//! behind nginx, with X-Forwarded-For, mixed with nginx combined lines; about 2% login
//! failures, 1% probes, some of them %-encoded) through the four web filters
//! in-process, with the shipped jails' trusted proxies, beside `grep -c` on the file
//! and `gaoler test-filter --jail http-flood` on one core.
//! Run: `cargo bench --bench web_filters` (numbers go to BENCHMARKS.md).

use std::io::Write;
use std::path::Path;
use std::process::Command;

use gaoler::filter::{Filter, TrustedProxies, Verdict};
use measure::{best, one_core, Rng, RUNS};

mod measure;

const LINES: usize = 1_000_000;

fn corpus(path: &Path) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("corpus file"));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let pages = [
        "GET / HTTP/1.0",
        "GET /api/items?page=2 HTTP/1.0",
        "GET /static/app.3f2a.js HTTP/1.0",
        "POST /api/items HTTP/1.0",
        "GET /account/settings HTTP/1.0",
        "GET /search?q=rust+regex HTTP/1.0",
    ];
    let probes = [
        "GET /../../etc/passwd HTTP/1.0",
        "GET /?q=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.0",
        "GET /item?id=1%20UNION%20SELECT%201,2 HTTP/1.0",
        "GET /.env HTTP/1.0",
        "GET /wp-login.php HTTP/1.0",
    ];
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        "curl/7.88.1",
        "python-requests/2.31.0",
    ];
    for i in 0..LINES {
        let (h, m, s) = ((i / 3600) % 24, (i / 60) % 60, i % 60);
        let stamp = format!("[21/Nov/2026:{h:02}:{m:02}:{s:02} +0000]");
        let n = rng.next();
        let client = format!("198.51.{}.{}", (n >> 8) % 256, n % 254 + 1);
        let roll = rng.next() % 100;
        let (request, status) = match roll {
            0..=1 => ("POST /login HTTP/1.0", 401),
            2 => (rng.pick(&probes), 404),
            _ => (rng.pick(&pages), 200),
        };
        let agent = rng.pick(&agents);
        let micros = 800 + rng.next() % 5000;
        let line = if i % 4 == 0 {
            format!("{client} - - {stamp} \"{request}\" {status} 153 \"-\" \"{agent}\"")
        } else {
            format!("127.0.0.1 - - {stamp} \"{request}\" {status} 153 \"-\" \"{agent}\" {micros} \"{client}\"")
        };
        writeln!(out, "{line}").expect("write corpus");
    }
    out.flush().expect("flush corpus");
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    corpus(&log);
    let bytes = std::fs::read(&log).expect("read corpus");
    let lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let proxies = TrustedProxies::new(vec![
        "127.0.0.1/32".parse().expect("net"),
        "::1/128".parse().expect("net"),
    ])
    .only(false);
    let rate = |secs: f64| lines.len() as f64 / secs;

    println!();
    println!(
        "{} lines ({:.0} MB), 3 in 4 from Gunicorn behind nginx (X-Forwarded-For)",
        lines.len(),
        bytes.len() as f64 / 1e6
    );
    println!();
    println!("| what | time (best of {RUNS}) | lines/s | counted |");
    println!("| --- | --- | --- | --- |");
    let (secs, n) = best(|| {
        Command::new("grep")
            .args(["-c", "HTTP/"])
            .arg(&log)
            .output()
            .expect("grep")
    });
    println!(
        "| `grep -c HTTP/` on the file | {secs:.3} s | {:.2} M | {} |",
        rate(secs) / 1e6,
        String::from_utf8_lossy(&n.stdout).trim()
    );
    for name in [
        "http-flood",
        "webapp-auth",
        "web-exploit-probe",
        "gunicorn-access",
    ] {
        let path = repo.join("filters").join(format!("{name}.toml"));
        let filter: std::sync::Arc<Filter> =
            gaoler::config::load_filter(repo, path.to_str().expect("utf-8")).expect("filter");
        let (secs, counted) = best(|| {
            lines
                .iter()
                .filter(|l| {
                    matches!(
                        filter.examine_behind(l, &proxies, false),
                        Verdict::Failure(_)
                    )
                })
                .count()
        });
        println!(
            "| `{name}` in-process, trusted proxies | {secs:.3} s | {:.2} M | {counted} |",
            rate(secs) / 1e6
        );
        if name == "http-flood" {
            // The X-Forwarded-For capture is most of the cost: the same without it.
            let (secs, counted) = best(|| {
                lines
                    .iter()
                    .filter(|l| matches!(filter.examine(l), Verdict::Failure(_)))
                    .count()
            });
            println!(
                "| `{name}` in-process, no trusted proxies (peer only) | {secs:.3} s | {:.2} M | {counted} |",
                rate(secs) / 1e6
            );
        }
    }
    // The same through the command line, with a jail's settings, on one core.
    let cfg = dir.path().join("cfg");
    std::fs::create_dir_all(cfg.join("jails")).expect("cfg");
    std::fs::write(
        cfg.join("gaoler.toml"),
        format!(
            "[daemon]\nstate_dir = \"state\"\nsocket = \"g.sock\"\nfilter_path = [\"{}\"]\n",
            repo.join("filters").display()
        ),
    )
    .expect("gaoler.toml");
    std::fs::copy(
        repo.join("jails/http-flood.toml"),
        cfg.join("jails/http-flood.toml"),
    )
    .expect("jail");
    let bin = env!("CARGO_BIN_EXE_gaoler");
    let (secs, out) = best(|| {
        one_core(bin)
            .arg("--config")
            .arg(&cfg)
            .args(["test-filter", "--jail", "http-flood"])
            .arg(&log)
            .output()
            .expect("test-filter")
    });
    let summary = String::from_utf8_lossy(&out.stdout);
    let matched = summary
        .lines()
        .next()
        .and_then(|l| l.split(", ").nth(1))
        .unwrap_or("?");
    println!(
        "| `gaoler test-filter --jail http-flood` (one core, whole process) | {secs:.3} s | {:.2} M | {matched} |",
        rate(secs) / 1e6
    );
}
