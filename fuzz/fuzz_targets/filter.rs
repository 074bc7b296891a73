//! The shipped sshd filter on arbitrary lines: never panics, and an address it reports
//! is a real address that appears in the line.
#![no_main]

use std::sync::OnceLock;

use gaoler::filter::{Filter, Verdict};
use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize)]
struct Spec {
    failregex: Vec<String>,
    #[serde(default)]
    ignoreregex: Vec<String>,
}

fn sshd() -> &'static Filter {
    static FILTER: OnceLock<Filter> = OnceLock::new();
    FILTER.get_or_init(|| {
        let spec: Spec =
            toml::from_str(include_str!("../../filters/sshd.toml")).expect("sshd.toml");
        Filter::new("sshd", &spec.failregex, &spec.ignoreregex, None).expect("compiles")
    })
}

fuzz_target!(|line: &[u8]| {
    if let Verdict::Failure(found) | Verdict::Ignored(found) = sshd().examine(line) {
        let text = String::from_utf8_lossy(line).to_ascii_lowercase();
        match found.host {
            // Dotted quads are written one way only (IPv4-mapped IPv6 ends with one).
            std::net::IpAddr::V4(v4) => {
                assert!(text.contains(&v4.to_string()), "{v4} not in {text:?}")
            }
            // IPv6 has many spellings; at least it came from one.
            std::net::IpAddr::V6(v6) => assert!(text.contains(':'), "{v6} from {text:?}"),
        }
    }
});
