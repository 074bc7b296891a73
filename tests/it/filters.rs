//! Every shipped filter against its fixture of real-format log lines: positives with
//! the expected address (and user), negatives, and injections where attacker text
//! carries a forged address; and the fast address path agreeing with full captures. Fixture format, one annotation before each line:
//!   `#> host=ADDR [user=NAME]`  the line must match with this address (and user)
//!   `#> inject host=ADDR`       as above; the line also holds a forged address
//!   `#> none`                   the line must not match
//!   `#> noclient`               a failure logged for a trusted proxy that names no
//!                               client: never counted
//! `#! trusted_proxies NET...` sets the trusted proxies for the lines after it (as a
//! jail's `trusted_proxies`); a `host=` is then the client the line is counted for.
//! `#! trusted_proxies_only` then also refuses lines from other peers.
//! Lines starting with `# ` are comments.

use std::path::{Path, PathBuf};

use gaoler::filter::{split_line, Filter, TrustedProxies, Verdict};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shipped() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("filters"))
        .expect("filters/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

fn load(path: &Path) -> std::sync::Arc<Filter> {
    match gaoler::config::load_filter(repo(), path.to_str().expect("utf-8 path")) {
        Ok(f) => f,
        Err(e) => panic!("{} does not compile:\n{e}", path.display()),
    }
}

#[derive(Debug)]
enum Expect {
    Host {
        host: String,
        user: Option<String>,
        inject: bool,
    },
    None,
    NoClient,
}

fn parse_annotation(text: &str) -> Expect {
    let text = text.trim();
    if text == "none" {
        return Expect::None;
    }
    if text == "noclient" {
        return Expect::NoClient;
    }
    let inject = text.starts_with("inject ");
    let text = text.trim_start_matches("inject ").trim();
    let rest = text
        .strip_prefix("host=")
        .unwrap_or_else(|| panic!("bad annotation `{text}`"));
    let (host, user) = match rest.split_once(" user=") {
        Some((h, u)) => (h.to_string(), Some(u.to_string())),
        None => (rest.to_string(), None),
    };
    Expect::Host { host, user, inject }
}

/// The address a word of a log line spells, also as `ADDR:PORT` or with a trailing `.`.
fn address_in(word: &str) -> Option<String> {
    let word = word.trim_end_matches(['.', ':']);
    if let Ok(ip) = word.parse::<std::net::IpAddr>() {
        return Some(ip.to_canonical().to_string());
    }
    let (addr, port) = word.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    addr.parse::<std::net::Ipv4Addr>()
        .ok()
        .map(|ip| ip.to_string())
}

#[test]
fn every_shipped_filter_passes_its_fixture() {
    let now = chrono::Utc::now();
    let mut failures = Vec::new();
    for path in shipped() {
        let name = path
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        let filter = load(&path);
        let fixture = repo().join(format!("tests/fixtures/filters/{name}.log"));
        let bytes = std::fs::read(&fixture)
            .unwrap_or_else(|_| panic!("filter {name} has no fixture {}", fixture.display()));
        let (mut positives, mut negatives, mut injections) = (0, 0, 0);
        let mut hits = vec![0usize; filter.failregex_count()];
        let mut pending: Option<Expect> = None;
        let mut proxies = TrustedProxies::default();
        for (n, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line_no = n + 1;
            if raw == b"#! trusted_proxies_only" {
                proxies = proxies.clone().only(true);
                continue;
            }
            if let Some(rest) = raw.strip_prefix(b"#! trusted_proxies") {
                let nets = String::from_utf8_lossy(rest)
                    .split_whitespace()
                    .map(|n| n.parse().expect("a network after #! trusted_proxies"))
                    .collect();
                proxies = TrustedProxies::new(nets);
                continue;
            }
            if let Some(note) = raw.strip_prefix(b"#>") {
                pending = Some(parse_annotation(&String::from_utf8_lossy(note)));
                continue;
            }
            if raw.is_empty() || raw.starts_with(b"# ") || raw == b"#" {
                continue;
            }
            let Some(expect) = pending.take() else {
                failures.push(format!("{name}.log:{line_no}: line without an annotation"));
                continue;
            };
            let message = split_line(raw, now).message;
            let verdict = filter.examine_behind(message, &proxies, true);
            // The fast path (no capture engine) must find exactly what captures find.
            let fast = filter.examine_behind(message, &proxies, false);
            let same = match (&fast, &verdict) {
                (Verdict::Failure(a), Verdict::Failure(b))
                | (Verdict::Ignored(a), Verdict::Ignored(b))
                | (Verdict::NoClient(a), Verdict::NoClient(b)) => {
                    a.host == b.host && a.regex == b.regex
                }
                (Verdict::Miss, Verdict::Miss) => true,
                _ => false,
            };
            if !same {
                failures.push(format!(
                    "{name}.log:{line_no}: fast path {fast:?} differs from captures {verdict:?}"
                ));
            }
            match (&expect, &verdict) {
                (Expect::None, Verdict::Miss | Verdict::Ignored(_)) => negatives += 1,
                (Expect::NoClient, Verdict::NoClient(_)) => negatives += 1,
                (Expect::Host { host, user, inject }, Verdict::Failure(found)) => {
                    hits[found.regex] += 1;
                    positives += 1;
                    if found.host.to_string() != *host {
                        failures.push(format!(
                            "{name}.log:{line_no}: matched {} instead of {host}",
                            found.host
                        ));
                    }
                    if user.is_some() && found.user != *user {
                        failures.push(format!(
                            "{name}.log:{line_no}: user {:?} instead of {user:?}",
                            found.user
                        ));
                    }
                    if *inject {
                        injections += 1;
                        let text = String::from_utf8_lossy(raw);
                        let addresses = text
                            .split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
                            .filter_map(address_in)
                            .filter(|a| a != host)
                            .count();
                        if addresses == 0 {
                            failures.push(format!(
                                "{name}.log:{line_no}: injection line has no forged address"
                            ));
                        }
                    }
                }
                (expect, verdict) => failures.push(format!(
                    "{name}.log:{line_no}: expected {expect:?}, got {verdict:?}"
                )),
            }
        }
        if positives == 0 || negatives == 0 || injections == 0 {
            failures.push(format!("{name}: needs positive, negative and injection lines ({positives}/{negatives}/{injections})"));
        }
        for (i, h) in hits.iter().enumerate() {
            if *h == 0 {
                failures.push(format!(
                    "{name}: failregex #{i} is never exercised by the fixture"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_shipped_failregex_is_anchored_at_the_start() {
    let mut bad = Vec::new();
    for path in shipped() {
        let text = std::fs::read_to_string(&path).expect("read");
        let doc: toml::Value = toml::from_str(&text).expect("toml");
        for (i, re) in doc["failregex"]
            .as_array()
            .expect("failregex list")
            .iter()
            .enumerate()
        {
            let re = re.as_str().expect("string");
            if !re.starts_with('^') {
                bad.push(format!(
                    "{} failregex #{i} does not start with ^",
                    path.display()
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
