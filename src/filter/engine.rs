//! The two regex engines a filter's regexes run on. Every regex the linear engine
//! (Rust's `regex`, bytes, ASCII classes) accepts runs there: no line can make it
//! slow. A regex it refuses only for look-around or a backreference (several of
//! fail2ban's stock filters need them) runs on `fancy-regex` in the same byte and
//! ASCII dialect, with a backtracking limit: a line that reaches it is skipped and
//! reported as [`LimitHit`], never waited for.

use std::ops::Range;

use regex::bytes::Regex;

/// Backtracking steps one match may take before the line is given up (about a
/// millisecond of work at most).
pub const BACKTRACK_LIMIT: usize = 100_000;

/// A backtracking regex gave up on a line at [`BACKTRACK_LIMIT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitHit;

/// One compiled regex, on the engine it needs.
#[derive(Debug)]
pub enum Matcher {
    Linear(Regex),
    Backtrack(Box<fancy_regex::Regex>),
}

impl Matcher {
    /// Compiles `source` on the linear engine, or on the backtracking one when it
    /// uses look-around or backreferences; any other error is the linear engine's.
    pub fn new(source: &str) -> Result<Matcher, String> {
        match linear(source) {
            Ok(re) => Ok(Matcher::Linear(re)),
            Err(e) if needs_backtracking(source) => fancy_regex::RegexBuilder::new(source)
                .bytes_mode(fancy_regex::BytesMode::Ascii)
                .backtrack_limit(BACKTRACK_LIMIT)
                .build()
                .map(|re| Matcher::Backtrack(Box::new(re)))
                .map_err(|fe| format!("{e}; as a look-around regex: {fe}")),
            Err(e) => Err(e),
        }
    }

    pub fn is_linear(&self) -> bool {
        matches!(self, Matcher::Linear(_))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Matcher::Linear(re) => re.as_str(),
            Matcher::Backtrack(re) => re.as_str(),
        }
    }

    /// The names of the regex's capture groups.
    pub fn has_group(&self, name: &str) -> bool {
        match self {
            Matcher::Linear(re) => re.capture_names().flatten().any(|n| n == name),
            Matcher::Backtrack(re) => re.capture_names().flatten().any(|n| n == name),
        }
    }

    pub fn is_match(&self, text: &[u8]) -> Result<bool, LimitHit> {
        match self {
            Matcher::Linear(re) => Ok(re.is_match(text)),
            Matcher::Backtrack(re) => re.is_match(text).map_err(|_| LimitHit),
        }
    }

    /// Where each of `names` matched, if the regex matches at all.
    pub fn groups<const N: usize>(
        &self,
        text: &[u8],
        names: [&str; N],
    ) -> Result<Option<[Option<Range<usize>>; N]>, LimitHit> {
        match self {
            Matcher::Linear(re) => Ok(re
                .captures(text)
                .map(|c| names.map(|n| c.name(n).map(|m| m.range())))),
            Matcher::Backtrack(re) => match re.captures(text) {
                Ok(Some(c)) => Ok(Some(names.map(|n| c.name(n).map(|m| m.range())))),
                Ok(None) => Ok(None),
                Err(_) => Err(LimitHit),
            },
        }
    }
}

/// The linear engine, as filters use it.
pub fn linear(source: &str) -> Result<Regex, String> {
    regex::bytes::RegexBuilder::new(source)
        .unicode(false)
        .size_limit(16 * 1024 * 1024)
        .build()
        .map_err(|e| format!("invalid regex: {}", e.to_string().replace('\n', " ")))
}

/// Several linear regexes as one automaton (which of them match, in one scan).
pub fn linear_set<S: AsRef<str>>(sources: &[S]) -> Result<regex::bytes::RegexSet, regex::Error> {
    regex::bytes::RegexSetBuilder::new(sources)
        .unicode(false)
        .size_limit(64 * 1024 * 1024)
        .build()
}

/// Look-around or a backreference: what only the backtracking engine has.
fn needs_backtracking(source: &str) -> bool {
    ["(?=", "(?!", "(?<=", "(?<!", "(?P=", "\\k<"]
        .iter()
        .any(|s| source.contains(s))
        || source
            .as_bytes()
            .windows(2)
            .any(|w| w[0] == b'\\' && (b'1'..=b'9').contains(&w[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_regexes_stay_linear_and_look_around_backtracks() {
        assert!(Matcher::new(r"^a(?P<x>b)c$").expect("re").is_linear());
        let m = Matcher::new(r"^user (?!root)(?P<u>\w+)$").expect("re");
        assert!(!m.is_linear());
        assert_eq!(m.is_match(b"user bob"), Ok(true));
        assert_eq!(m.is_match(b"user root"), Ok(false));
        let [u] = m
            .groups(b"user bob", ["u"])
            .expect("no limit")
            .expect("match");
        assert_eq!(u, Some(5..8));
        let m = Matcher::new(r"^(?P<a>\w+) again (?P=a)$").expect("backref");
        assert_eq!(m.is_match(b"x again x"), Ok(true));
        assert_eq!(m.is_match(b"x again y"), Ok(false));
        // Bytes, ASCII classes: invalid UTF-8 is matched around, `.` is one byte.
        assert_eq!(
            Matcher::new(r"^(?!z).\xff$")
                .expect("re")
                .is_match(b"a\xff"),
            Ok(true)
        );
        assert!(Matcher::new(r"^(unclosed").is_err());
    }

    #[test]
    fn a_line_that_would_backtrack_forever_hits_the_limit_quickly() {
        let m = Matcher::new(r"^(?:(?!x)a|a)+b$").expect("re");
        assert!(!m.is_linear());
        let mut evil = vec![b'a'; 40];
        evil.push(b'!');
        let started = std::time::Instant::now();
        assert_eq!(m.is_match(&evil), Err(LimitHit));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
