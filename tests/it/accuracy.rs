//! Detection accuracy on fail2ban's annotated test logs (Debian's fail2ban package,
//! unpacked by scripts/test into target/fail2ban-stock; never committed). Each corpus
//! file is run through the gaoler filter of the same name, in every mode the corpus
//! annotates that the filter has, exactly as `test-filter` and the daemon read a log:
//! lines in order, so sessions form. Every filter with a counterpart must reach a
//! recall of 0.95 in its default mode, with no false positive and no wrong address
//! in any mode. Lines whose expected host is a name are left out (gaoler never
//! resolves names), and so are those expecting 0.0.0.0 (anonymised, never a client). The table goes to target/accuracy.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gaoler::filter::LogTz;
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corpus() -> PathBuf {
    let dir = repo()
        .join("target/fail2ban-stock/usr/lib/python3/dist-packages/fail2ban/tests/files/logs");
    assert!(
        dir.join("sshd").is_file(),
        "{} is missing: scripts/test unpacks Debian's fail2ban package there",
        dir.display()
    );
    dir
}

/// The gaoler filter for a corpus file, where the names differ.
fn counterpart(corpus_name: &str) -> &str {
    match corpus_name {
        "roundcube-auth" => "roundcube",
        "3proxy" => "threeproxy",
        other => other,
    }
}

/// Corpus lines gaoler refuses on purpose: the text is the same as a forgery's, so
/// taking the address fail2ban expects would let an attacker choose it. They are
/// counted apart (never as caught), each with the reason; the filters' fixtures
/// show the forgery each one stands for.
const REFUSED: [(&str, &str, &str); 2] = [
    (
        "pam-generic",
        "ruser= rhost=192.0.2.2 user=test rhost=192.0.2.152",
        "a service that passes the login name as ruser too (vsftpd) logs a name ` rhost=A user=test` as exactly this line with B real",
    ),
    (
        "nginx-http-auth",
        r#"host: "localhost:8443"": was not found"#,
        "nginx never writes `\": was not found` after the Host header: this is a password mismatch for 127.0.0.1 whose Host header (spaces allowed before nginx 1.21.1) forges the rest",
    ),
];

/// One annotated line, with the options of the block it stands in.
struct Case {
    line: Vec<u8>,
    expect: Value,
    /// The block's option sets (fail2ban's `filterOptions`): the line is tested once
    /// per set.
    options: Vec<Value>,
}

/// The annotated lines of a corpus file, following `addFILE`.
fn cases(dir: &Path, name: &str, out: &mut Vec<Case>) {
    let bytes = std::fs::read(dir.join(name)).expect("corpus file");
    let mut options = vec![serde_json::json!({})];
    let mut pending: Option<Value> = None;
    for raw in bytes.split(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(raw);
        if let Some(at) = text.find("filterOptions:") {
            if text.starts_with('#') {
                let v: Value = serde_json::from_str(text[at + 14..].trim()).expect("filterOptions");
                options = match v {
                    Value::Array(list) => list,
                    one => vec![one],
                };
                continue;
            }
        }
        if let Some(rest) = text.strip_prefix("# addFILE:") {
            let other = rest.trim().trim_matches('"');
            cases(dir, other, out);
            continue;
        }
        if let Some(at) = text.find("failJSON:") {
            if text.starts_with('#') {
                pending = serde_json::from_str(text[at + 9..].trim()).ok();
                continue;
            }
        }
        if text.starts_with('#') || text.trim().is_empty() {
            continue;
        }
        if let Some(expect) = pending.take() {
            out.push(Case {
                line: raw.to_vec(),
                expect,
                options: options.clone(),
            });
        }
    }
}

/// fail2ban's conditions, in the forms its corpus uses: `name == 'x'`,
/// `opts.get('mode') != 'x'` (with `==` or `!=`).
fn holds(condition: &str, name: &str, mode: Option<&str>) -> bool {
    let (lhs, rhs, equal) = match condition.split_once("!=") {
        Some((l, r)) => (l, r, false),
        None => {
            let (l, r) = condition
                .split_once("==")
                .unwrap_or_else(|| panic!("condition `{condition}` is not understood"));
            (l, r, true)
        }
    };
    let value = rhs.trim().trim_matches(|c| c == '\'' || c == '"');
    let actual = match lhs.trim() {
        "name" => Some(name),
        "opts.get('mode')" => mode,
        other => panic!("condition on `{other}` is not understood"),
    };
    (actual == Some(value)) == equal
}

/// Counts for one filter in one mode.
#[derive(Default)]
struct Score {
    caught: usize,
    attacks: usize,
    false_positives: usize,
    benign: usize,
    wrong: usize,
    /// Expected hosts that are names (never resolved) or unspecified addresses.
    names: usize,
    /// Lines in [`REFUSED`].
    refused: usize,
    missed: Vec<String>,
    errors: Vec<String>,
}

/// The option keys that only say how the lines are framed, which gaoler detects.
const FRAMING_KEYS: [&str; 4] = ["logtype", "logging", "test.condition", "test.prefix-line"];

fn run_mode(dir: &Path, corpus_name: &str, filter: &str, mode: Option<&str>) -> Option<Score> {
    let mut all = Vec::new();
    cases(dir, corpus_name, &mut all);
    let path = repo().join(format!("filters/{filter}.toml"));
    let default_mode = default_mode_of(&path);
    let vars: Vec<(String, String)> = mode
        .map(|m| vec![("mode".to_string(), m.to_string())])
        .unwrap_or_default();
    let compiled = gaoler::config::load_filter_with(repo(), path.to_str()?, &vars).ok()?;
    // The lines this mode tests, each with the option set it is tested under.
    let mut lines: Vec<(&Case, Option<String>)> = Vec::new();
    for case in &all {
        let chosen = case.options.iter().find(|o| {
            let Some(map) = o.as_object() else {
                return false;
            };
            if let Some(cond) = map.get("test.condition").and_then(Value::as_str) {
                if !holds(cond, corpus_name, None) {
                    return false;
                }
            }
            if map
                .keys()
                .any(|k| k != "mode" && !FRAMING_KEYS.contains(&k.as_str()))
            {
                return false;
            }
            let m = map.get("mode").and_then(Value::as_str);
            let m = if m == default_mode.as_deref() {
                None
            } else {
                m
            };
            m == mode
        });
        let Some(chosen) = chosen else { continue };
        let prefix = chosen
            .get("test.prefix-line")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(cond) = case.expect.get("constraint").and_then(Value::as_str) {
            let m = chosen.get("mode").and_then(Value::as_str);
            if !holds(cond, corpus_name, m) {
                continue;
            }
        }
        lines.push((case, prefix));
    }
    if lines.is_empty() {
        return None;
    }
    let mut input = Vec::new();
    for (case, prefix) in &lines {
        if let Some(p) = prefix {
            input.extend_from_slice(p.as_bytes());
        }
        input.extend_from_slice(&case.line);
        input.push(b'\n');
    }
    let opts = gaoler::test_filter::Options {
        all_matches: true,
        ..Default::default()
    };
    let report = gaoler::test_filter::run(
        &compiled,
        LogTz::Fixed(chrono::FixedOffset::east_opt(0)?),
        &input[..],
        &opts,
    )
    .ok()?;
    let got: BTreeMap<usize, String> = report
        .matches
        .iter()
        .map(|m| (m.line, m.host.clone()))
        .collect();
    let mut score = Score::default();
    for (i, (case, _)) in lines.iter().enumerate() {
        let at = i + 1;
        let text = String::from_utf8_lossy(&case.line).into_owned();
        match case.expect.get("match").and_then(Value::as_bool) {
            Some(true) => {
                let want = case.expect.get("host").and_then(Value::as_str);
                let want_ip =
                    want.map(|h| h.parse::<std::net::IpAddr>().map(|ip| ip.to_canonical()));
                // A name (never resolved), or 0.0.0.0 / :: (an anonymised address,
                // never a client): not an address gaoler would ban.
                if matches!(want_ip, Some(Err(_)))
                    || matches!(want_ip, Some(Ok(ip)) if ip.is_unspecified())
                {
                    score.names += 1;
                    continue;
                }
                if REFUSED
                    .iter()
                    .any(|(file, fragment, _)| *file == corpus_name && text.contains(fragment))
                {
                    score.refused += 1;
                    continue;
                }
                score.attacks += 1;
                match got.get(&at) {
                    Some(host) => {
                        score.caught += 1;
                        if let Some(Ok(ip)) = want_ip {
                            if *host != ip.to_string() {
                                score.wrong += 1;
                                score.errors.push(format!("wrong address {host}: {text}"));
                            }
                        }
                    }
                    None => score.missed.push(text),
                }
            }
            Some(false) => {
                score.benign += 1;
                if got.contains_key(&at) {
                    score.false_positives += 1;
                    score.errors.push(format!("false positive: {text}"));
                }
            }
            None => {}
        }
    }
    Some(score)
}

/// A filter's default mode (its `[vars]` `mode`), if it has modes.
fn default_mode_of(path: &Path) -> Option<String> {
    let doc: toml::Value = toml::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    doc.get("vars")?.get("mode")?.as_str().map(str::to_string)
}

/// The modes the corpus annotates for a file (None is the default).
fn annotated_modes(dir: &Path, name: &str) -> Vec<Option<String>> {
    let mut all = Vec::new();
    cases(dir, name, &mut all);
    let mut modes: Vec<Option<String>> = vec![None];
    for case in &all {
        for o in &case.options {
            let m = o.get("mode").and_then(Value::as_str).map(str::to_string);
            if !modes.contains(&m) {
                modes.push(m);
            }
        }
    }
    modes
}

/// Modes a gaoler filter has.
fn modes_of(filter: &str) -> Vec<String> {
    let path = repo().join(format!("filters/{filter}.toml"));
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let doc: toml::Value = toml::from_str(&text).expect("filter toml");
    doc.get("modes")
        .and_then(|m| m.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn every_filter_catches_what_fail2bans_corpus_annotates_without_false_positives() {
    let dir = corpus();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // fail2ban's own examples and obsolete forms; sshd-journal comes with sshd.
        .filter(|n| !n.starts_with("zzz-") && n != "sshd-journal")
        .collect();
    names.sort();
    let mut table = String::from(
        "| corpus file | gaoler filter | mode | caught | recall | false positives | wrong address | left out (host names, 0.0.0.0) | refused (ambiguous with a forgery) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut failures = Vec::new();
    let mut without = Vec::new();
    let (mut total_caught, mut total_attacks, mut total_fp, mut total_benign) = (0, 0, 0, 0);
    for name in &names {
        let filter = counterpart(name);
        if !repo().join(format!("filters/{filter}.toml")).is_file() {
            without.push(name.clone());
            continue;
        }
        let has = modes_of(filter);
        let default_mode = default_mode_of(&repo().join(format!("filters/{filter}.toml")));
        let mut modes: Vec<Option<String>> = Vec::new();
        for mode in annotated_modes(&dir, name) {
            let mode = if mode == default_mode { None } else { mode };
            if !modes.contains(&mode) {
                modes.push(mode);
            }
        }
        for mode in modes {
            if let Some(m) = &mode {
                if !has.contains(m) {
                    table.push_str(&format!(
                        "| {name} | {filter} | {m} | (the filter has no such mode) | | | | | |\n"
                    ));
                    continue;
                }
            }
            let Some(score) = run_mode(&dir, name, filter, mode.as_deref()) else {
                continue;
            };
            let recall = if score.attacks == 0 {
                1.0
            } else {
                score.caught as f64 / score.attacks as f64
            };
            let label = mode.clone().unwrap_or_else(|| "default".into());
            table.push_str(&format!(
                "| {name} | {filter} | {label} | {}/{} | {:.2} | {}/{} | {} | {} | {} |\n",
                score.caught,
                score.attacks,
                recall,
                score.false_positives,
                score.benign,
                score.wrong,
                score.names,
                score.refused
            ));
            if mode.is_none() {
                total_caught += score.caught;
                total_attacks += score.attacks;
                total_fp += score.false_positives;
                total_benign += score.benign;
                if recall < 0.95 {
                    failures.push(format!(
                        "{name} ({filter}): recall {recall:.2} ({}/{}) in the default mode; missed:\n  {}",
                        score.caught,
                        score.attacks,
                        score.missed.join("\n  ")
                    ));
                }
            }
            if !score.errors.is_empty() {
                failures.push(format!(
                    "{name} ({filter}, {label}):\n  {}",
                    score.errors.join("\n  ")
                ));
            }
        }
    }
    for (file, fragment, why) in REFUSED {
        table.push_str(&format!("\nRefused in {file} (`{fragment}`): {why}."));
    }
    table.push_str(&format!(
        "\n\nDefault modes together: {total_caught} of {total_attacks} attacks caught, {total_fp} false positives on {total_benign} benign lines.\nCorpus files without a gaoler counterpart: {}\n",
        if without.is_empty() { "none".to_string() } else { without.join(", ") }
    ));
    let _ = std::fs::write(repo().join("target/accuracy.md"), &table);
    eprintln!("{table}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
