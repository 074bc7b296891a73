//! The shipped sshd filter on arbitrary lines: never panics, and an address it reports
//! is a real address that appears in the line.
#![no_main]

use std::sync::OnceLock;

use gaoler::filter::{Filter, SessionRules, Verdict};
use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize)]
struct Spec {
    failregex: Vec<String>,
    #[serde(default)]
    ignoreregex: Vec<String>,
    session: Option<Session>,
}

#[derive(serde::Deserialize)]
struct Session {
    key: String,
    #[serde(default)]
    hold: Vec<String>,
    #[serde(default)]
    success: Vec<String>,
    #[serde(default)]
    end: Vec<String>,
    #[serde(default)]
    note: Vec<String>,
}

fn sshd() -> &'static Filter {
    static FILTER: OnceLock<Filter> = OnceLock::new();
    FILTER.get_or_init(|| {
        let spec: Spec =
            toml::from_str(include_str!("../../filters/sshd.toml")).expect("sshd.toml");
        let session = spec.session.map(|s| SessionRules {
            key: s.key,
            hold: s.hold,
            success: s.success,
            end: s.end,
            note: s.note,
            max_sessions: 1000,
            max_age_secs: 600,
        });
        Filter::build(
            "sshd",
            &spec.failregex,
            &spec.ignoreregex,
            None,
            session.as_ref(),
        )
        .expect("compiles")
    })
}

fuzz_target!(|line: &[u8]| {
    let host = match sshd().examine(line) {
        Verdict::Failure(found) | Verdict::Ignored(found) => Some(found.host),
        Verdict::Mark(mark) => mark.host,
        _ => None,
    };
    if let Some(host) = host {
        let text = String::from_utf8_lossy(line).to_ascii_lowercase();
        match host {
            // Dotted quads are written one way only (IPv4-mapped IPv6 ends with one).
            std::net::IpAddr::V4(v4) => {
                assert!(text.contains(&v4.to_string()), "{v4} not in {text:?}")
            }
            // IPv6 has many spellings; at least it came from one.
            std::net::IpAddr::V6(v6) => assert!(text.contains(':'), "{v6} from {text:?}"),
        }
    }
});
