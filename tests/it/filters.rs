//! Every shipped filter against its fixture of real-format log lines: positives with
//! the expected address (and user), negatives, and injections where attacker text
//! carries a forged address; and the fast address path agreeing with full captures. Fixture format, one annotation before each line:
//!   `#> host=ADDR [user=NAME]`  the line must match with this address (and user)
//!   `#> inject host=ADDR`       as above; the line also holds a forged address
//!   `#> none`                   the line must not match
//!   `#> noclient`               a failure logged for a trusted proxy that names no
//!                               client: never counted
//!   `failures=N` after a host   the line settles N failures (a filter with sessions
//!                               counts held or waiting failures at the line that
//!                               settles them; the lines of a fixture form sessions
//!                               in order, as in a log)
//! `#! trusted_proxies NET...` sets the trusted proxies for the lines after it (as a
//! jail's `trusted_proxies`); a `host=` is then the client the line is counted for.
//! `#! vars NAME=VALUE...` runs the lines after it with the filter's variables set as
//! a jail's `filter_vars` would (`#! vars mode=ddos`; `#! vars` alone: defaults
//! again), with sessions of their own. Each mode's failregexes must be exercised
//! under that mode.
//! `#! trusted_proxies_only` then also refuses lines from other peers.
//! Lines starting with `# ` are comments.

use std::path::{Path, PathBuf};

use gaoler::filter::{split_line, Filter, Sessions, TrustedProxies, Verdict};

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

fn load_with(path: &Path, vars: &[(String, String)]) -> std::sync::Arc<Filter> {
    match gaoler::config::load_filter_with(repo(), path.to_str().expect("utf-8 path"), vars) {
        Ok(f) => f,
        Err(e) => panic!("{} does not compile with {vars:?}:\n{e}", path.display()),
    }
}

/// A filter as each `#! vars` of its fixture sets it, with its open sessions and
/// how often each regex matched.
struct Variant {
    vars: Vec<(String, String)>,
    filter: std::sync::Arc<Filter>,
    sessions: Option<Sessions>,
    hits: Vec<usize>,
}

impl Variant {
    fn new(path: &Path, vars: &[(String, String)]) -> Variant {
        let filter = load_with(path, vars);
        Variant {
            vars: vars.to_vec(),
            sessions: filter.session().map(|spec| spec.sessions()),
            hits: vec![0; filter.failregex_count()],
            filter,
        }
    }

    /// Indexes of the regexes this variant must see exercised: all of them for the
    /// defaults; for a mode, the failregexes it adds to the defaults'.
    fn must_hit(&self, default_fails: usize) -> Vec<usize> {
        if self.vars.is_empty() {
            return (0..self.hits.len()).collect();
        }
        let fails = self
            .filter
            .roles()
            .iter()
            .filter(|r| matches!(r, gaoler::filter::Role::Fail))
            .count();
        (default_fails..fails).collect()
    }
}

fn fail_count(filter: &Filter) -> usize {
    filter
        .roles()
        .iter()
        .filter(|r| matches!(r, gaoler::filter::Role::Fail))
        .count()
}

#[derive(Debug)]
enum Expect {
    Host {
        host: String,
        user: Option<String>,
        inject: bool,
        failures: Option<u32>,
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
    let (rest, failures) = match rest.split_once(" failures=") {
        Some((r, n)) => (r, Some(n.trim().parse().expect("failures=N"))),
        None => (rest, None),
    };
    let (host, user) = match rest.split_once(" user=") {
        Some((h, u)) => (h.to_string(), Some(u.to_string())),
        None => (rest.to_string(), None),
    };
    Expect::Host {
        host,
        user,
        inject,
        failures,
    }
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

/// One annotated line of a fixture: its number, bytes, what it must give, and the
/// trusted proxies in force for it.
struct FixtureLine {
    no: usize,
    raw: Vec<u8>,
    expect: Expect,
    proxies: TrustedProxies,
    /// Filter variables in force (`#! vars`).
    vars: Vec<(String, String)>,
}

/// The annotated lines of filter `name`'s fixture; problems go to `failures`.
fn fixture_lines(name: &str, failures: &mut Vec<String>) -> Vec<FixtureLine> {
    let fixture = repo().join(format!("tests/fixtures/filters/{name}.log"));
    let bytes = std::fs::read(&fixture)
        .unwrap_or_else(|_| panic!("filter {name} has no fixture {}", fixture.display()));
    let mut lines = Vec::new();
    let mut pending: Option<Expect> = None;
    let mut proxies = TrustedProxies::default();
    let mut vars = Vec::new();
    for (n, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = n + 1;
        if let Some(rest) = raw.strip_prefix(b"#! vars") {
            vars = String::from_utf8_lossy(rest)
                .split_whitespace()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("#! vars NAME=VALUE");
                    (k.to_string(), v.to_string())
                })
                .collect();
            continue;
        }
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
        match pending.take() {
            Some(expect) => lines.push(FixtureLine {
                no: line_no,
                raw: raw.to_vec(),
                expect,
                proxies: proxies.clone(),
                vars: vars.clone(),
            }),
            None => failures.push(format!("{name}.log:{line_no}: line without an annotation")),
        }
    }
    lines
}

fn filter_name(path: &Path) -> String {
    path.file_stem()
        .expect("stem")
        .to_string_lossy()
        .into_owned()
}

/// What one line of a fixture gave: the failures it settles (host, user, regex,
/// count), or the verdict when it settles none.
enum Outcome {
    Settles {
        host: std::net::IpAddr,
        user: Option<String>,
        count: u32,
    },
    Nothing(Verdict),
}

/// Runs one message through `filter` and, for a filter with sessions, through its
/// open sessions (keyed by the line's process); counts the regex hit.
fn outcome(
    filter: &Filter,
    sessions: &mut Option<Sessions>,
    raw: &[u8],
    proxies: &TrustedProxies,
    now: chrono::DateTime<chrono::Utc>,
    hits: &mut [usize],
) -> Outcome {
    let framed = split_line(raw, now);
    let verdict = filter.examine_behind(framed.message, proxies, true);
    match verdict {
        Verdict::Failure(found) => {
            hits[found.regex] += 1;
            Outcome::Settles {
                host: found.host,
                user: found.user,
                count: 1,
            }
        }
        Verdict::Mark(mark) => {
            hits[mark.regex] += 1;
            let (Some(spec), Some(open)) = (filter.session(), sessions.as_mut()) else {
                return Outcome::Nothing(Verdict::Mark(mark));
            };
            let key = spec.key(raw, framed.process);
            match open.observe(key, &mark, framed.time.unwrap_or(now)) {
                Some(settled) => Outcome::Settles {
                    host: settled.host,
                    user: mark.user,
                    count: settled.count,
                },
                None => Outcome::Nothing(Verdict::Mark(mark)),
            }
        }
        other => Outcome::Nothing(other),
    }
}

/// The address a line itself gives (a session's line may give none).
fn address(v: &Verdict) -> Option<std::net::IpAddr> {
    match v {
        Verdict::Failure(f) => Some(f.host),
        Verdict::Mark(m) => m.host,
        _ => None,
    }
}

#[test]
fn every_shipped_filter_passes_its_fixture() {
    let now = chrono::Utc::now();
    let mut failures = Vec::new();
    for path in shipped() {
        let name = filter_name(&path);
        let mut variants = vec![Variant::new(&path, &[])];
        let (mut positives, mut negatives, mut injections) = (0, 0, 0);
        for FixtureLine {
            no: line_no,
            raw,
            expect,
            proxies,
            vars,
        } in fixture_lines(&name, &mut failures)
        {
            let at = match variants.iter().position(|v| v.vars == vars) {
                Some(at) => at,
                None => {
                    variants.push(Variant::new(&path, &vars));
                    variants.len() - 1
                }
            };
            let Variant {
                filter,
                sessions,
                hits,
                ..
            } = &mut variants[at];
            let filter = &**filter;
            let raw = raw.as_slice();
            let message = split_line(raw, now).message;
            // The fast path (no capture engine) must find exactly what captures find.
            let verdict = filter.examine_behind(message, &proxies, true);
            let fast = filter.examine_behind(message, &proxies, false);
            let same = match (&fast, &verdict) {
                (Verdict::Failure(a), Verdict::Failure(b))
                | (Verdict::Ignored(a), Verdict::Ignored(b))
                | (Verdict::NoClient(a), Verdict::NoClient(b)) => {
                    a.host == b.host && a.regex == b.regex
                }
                (Verdict::Mark(a), Verdict::Mark(b)) => a.host == b.host && a.regex == b.regex,
                (Verdict::Miss, Verdict::Miss) => true,
                _ => false,
            };
            if !same {
                failures.push(format!(
                    "{name}.log:{line_no}: fast path {fast:?} differs from captures {verdict:?}"
                ));
            }
            let got = outcome(filter, sessions, raw, &proxies, now, hits);
            match (&expect, got) {
                (
                    Expect::None,
                    Outcome::Nothing(Verdict::Miss | Verdict::Ignored(_) | Verdict::Mark(_)),
                ) => negatives += 1,
                (Expect::NoClient, Outcome::Nothing(Verdict::NoClient(_))) => negatives += 1,
                (
                    Expect::Host {
                        host,
                        user,
                        inject,
                        failures: want_count,
                    },
                    Outcome::Settles {
                        host: got_host,
                        user: got_user,
                        count,
                    },
                ) => {
                    positives += 1;
                    if got_host.to_string() != *host {
                        failures.push(format!(
                            "{name}.log:{line_no}: matched {got_host} instead of {host}"
                        ));
                    }
                    if user.is_some() && got_user != *user {
                        failures.push(format!(
                            "{name}.log:{line_no}: user {got_user:?} instead of {user:?}"
                        ));
                    }
                    if want_count.unwrap_or(1) != count {
                        failures.push(format!(
                            "{name}.log:{line_no}: settles {count} failures instead of {}",
                            want_count.unwrap_or(1)
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
                (expect, Outcome::Settles { host, count, .. }) => failures.push(format!(
                    "{name}.log:{line_no}: expected {expect:?}, got {count} failure(s) of {host}"
                )),
                (expect, Outcome::Nothing(verdict)) => failures.push(format!(
                    "{name}.log:{line_no}: expected {expect:?}, got {verdict:?}"
                )),
            }
        }
        if positives == 0 || negatives == 0 || injections == 0 {
            failures.push(format!("{name}: needs positive, negative and injection lines ({positives}/{negatives}/{injections})"));
        }
        let default_fails = fail_count(&variants[0].filter);
        // A regex is exercised when it matched under any variant (a mode that
        // includes others repeats their regexes).
        let exercised: Vec<&str> = variants
            .iter()
            .flat_map(|v| {
                let sources = v.filter.regex_sources();
                v.hits
                    .iter()
                    .zip(sources)
                    .filter(|(h, _)| **h > 0)
                    .map(|(_, s)| s)
                    .collect::<Vec<_>>()
            })
            .collect();
        for v in &variants {
            let sources = v.filter.regex_sources();
            for i in v.must_hit(default_fails) {
                if !exercised.contains(&sources[i]) {
                    failures.push(format!(
                        "{name} {:?}: regex #{i} (failregexes, then a session's hold, success, end and note) is never exercised by the fixture",
                        v.vars
                    ));
                }
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
        // The failregexes, a session's regexes, and each mode's failregexes.
        let mut lists = vec![("failregex".to_string(), doc.get("failregex"))];
        if let Some(session) = doc.get("session") {
            for role in ["hold", "success", "end", "note"] {
                lists.push((format!("session.{role}"), session.get(role)));
            }
        }
        for (mode, table) in doc
            .get("modes")
            .and_then(|m| m.as_table())
            .into_iter()
            .flatten()
        {
            lists.push((format!("modes.{mode}.failregex"), table.get("failregex")));
        }
        for (list, regexes) in lists {
            let regexes = regexes
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default();
            for (i, re) in regexes.iter().enumerate() {
                let re = re.as_str().expect("string");
                if !re.starts_with('^') {
                    bad.push(format!(
                        "{} {list} #{i} does not start with ^",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Where a client's text can go, a forged address can go: for every positive line of
/// every shipped filter, each place that takes free text (found by inserting the
/// payload's shape with a non-address in it: the line must still match, for the same
/// address) gets the payload with a forged address. The address captured must stay
/// the real one, or the line must not match. The places tried: each word's start and
/// end, each quoted field's inside edges, and the end of the line.
#[test]
fn a_forged_address_anywhere_the_client_writes_never_becomes_the_banned_one() {
    const FORGED: &str = "203.0.113.66";
    const PAYLOADS: [&str; 9] = [
        "{}",
        " {}",
        " from {}",
        " from {} port 1",
        " from {} port 1 ssh2",
        " [{}]",
        " client {}",
        " rhost={}",
        " for {}",
    ];
    let now = chrono::Utc::now();
    let mut failures = Vec::new();
    let mut tried = 0usize;
    for path in shipped() {
        let name = filter_name(&path);
        let mut compiled: Vec<Variant> = Vec::new();
        for line in fixture_lines(&name, &mut Vec::new()) {
            let filter = match compiled.iter().find(|v| v.vars == line.vars) {
                Some(v) => v.filter.clone(),
                None => {
                    let v = Variant::new(&path, &line.vars);
                    let f = v.filter.clone();
                    compiled.push(v);
                    f
                }
            };
            // A client behind a trusted proxy comes from X-Forwarded-For (its own test).
            if !matches!(line.expect, Expect::Host { .. })
                || line.proxies != TrustedProxies::default()
            {
                continue;
            }
            let message = split_line(&line.raw, now).message.to_vec();
            let Some(real) = address(&filter.examine(&message)) else {
                continue;
            };
            for at in insertion_points(&message) {
                for payload in PAYLOADS {
                    let with = |addr: &str| {
                        let mut m = message[..at].to_vec();
                        m.extend_from_slice(payload.replace("{}", addr).as_bytes());
                        m.extend_from_slice(&message[at..]);
                        m
                    };
                    // Does this place take such text? The shape with no address in it.
                    let probe = with("zq.zq.zq.zq");
                    if address(&filter.examine(&probe)) != Some(real) {
                        continue;
                    }
                    tried += 1;
                    let forged = with(FORGED);
                    if let Some(got) = address(&filter.examine(&forged)) {
                        if got != real {
                            failures.push(format!(
                                "{name}.log:{}: {got} instead of {real}: {}",
                                line.no,
                                String::from_utf8_lossy(&forged)
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(tried > 1_000, "only {tried} injections tried");
    assert!(
        failures.is_empty(),
        "{} of {tried} injections won:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Where an attacker's text may sit in `message`: at each word's start and end, just
/// inside each double quote, and at the end.
fn insertion_points(message: &[u8]) -> Vec<usize> {
    let mut points = vec![message.len()];
    for (i, &b) in message.iter().enumerate() {
        if b == b' ' {
            points.push(i);
            points.push(i + 1);
        }
        if b == b'"' {
            points.push(i);
            points.push(i + 1);
        }
    }
    points.sort_unstable();
    points.dedup();
    points
}
