//! A compiled filter: one log message in, at most one failure (address, user) out.
//! Pure: no I/O, no clock, no tokio. Regexes run on bytes, so invalid UTF-8 in a log
//! line is matched around rather than rejected.

mod decode;
mod framing;
mod host;
mod proxy;

use std::net::IpAddr;

use regex::bytes::{Regex, RegexSet};

pub use framing::{split_line, DatePattern, Framed, Framer, LogTz};
pub use host::{expand_placeholders, substitute_vars, HOST_GROUP, USER_GROUP, XFF_GROUP};
pub use proxy::TrustedProxies;

/// Which regex of a filter an error or a match refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegexRole {
    Fail(usize),
    Ignore(usize),
    Pref,
}

/// A regex that does not compile, or a failregex that cannot yield an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    pub role: RegexRole,
    pub message: String,
}

/// A failure found in one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The offender: the logged peer, or the client a trusted proxy named.
    pub host: IpAddr,
    pub user: Option<String>,
    /// Index of the failregex that matched.
    pub regex: usize,
    /// The trusted proxy the line was logged for, when the client came from its
    /// X-Forwarded-For.
    pub via: Option<IpAddr>,
}

/// What a filter made of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No failregex matched (or the prefregex did not).
    Miss,
    /// A failregex matched but an ignoreregex did too.
    Ignored(Found),
    /// A failure to count.
    Failure(Found),
    /// A failregex matched, but no client can be vouched for: the peer is a trusted
    /// proxy (or the jail has `trusted_proxies_only`) and X-Forwarded-For names none.
    /// The proxy is not the offender.
    NoClient(Found),
}

/// One failregex: the full regex, and where `<HOST>` is a direct part of its top-level
/// sequence, DFA-only regexes for what must stand before and after the address.
#[derive(Debug)]
struct FailRegex {
    full: Regex,
    split: Option<(Regex, Regex)>,
}

impl FailRegex {
    fn new(expanded: &str) -> Result<FailRegex, String> {
        let full = compile(expanded)?;
        let split = host::split_at_host(expanded)
            .and_then(|(before, after)| Some((compile(&before).ok()?, compile(&after).ok()?)));
        Ok(FailRegex { full, split })
    }

    /// The address without running a capture engine: the leftmost address in the
    /// line with a valid prefix before it and a valid suffix after it, the first the
    /// server wrote; `None` leaves the case to `captured`.
    fn fast(&self, content: &[u8], candidates: &mut Option<host::Candidates>) -> Option<IpAddr> {
        let (before, after) = self.split.as_ref()?;
        candidates
            .get_or_insert_with(|| host::Candidates::find(content))
            .iter()
            .find(|(start, end, _)| {
                before.is_match(&content[..*start]) && after.is_match(&content[*end..])
            })
            .map(|(_, _, ip)| ip)
    }

    /// The address (and user) as the regex engine's captures give them.
    fn captured(&self, content: &[u8]) -> Option<(IpAddr, Option<String>)> {
        let caps = self.full.captures(content)?;
        let host = caps
            .name(HOST_GROUP)
            .and_then(|m| host::parse(m.as_bytes()))?;
        let user = caps
            .name(USER_GROUP)
            .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned());
        Some((host, user))
    }

    /// The X-Forwarded-For value the regex's `xff` group captured, if it has one.
    fn forwarded<'a>(&self, content: &'a [u8]) -> Option<&'a [u8]> {
        self.full
            .captures(content)?
            .name(XFF_GROUP)
            .map(|m| &content[m.start()..m.end()])
    }
}

/// How a message is transformed before the regexes see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Decode {
    /// As logged.
    #[default]
    None,
    /// `%XX` escapes decoded, twice (see `decode.rs`).
    Url,
}

/// A filter ready to run: its failregexes, ignoreregexes and optional prefregex.
#[derive(Debug)]
pub struct Filter {
    name: String,
    fail: Vec<FailRegex>,
    /// All failregexes in one automaton: a message that matches none costs one scan.
    fail_set: RegexSet,
    ignore: Option<RegexSet>,
    pref: Option<Regex>,
    datepattern: Option<DatePattern>,
    decode: Decode,
}

impl Filter {
    /// Compiles a filter. Every failregex must contain `<HOST>` (or `<ADDR>`); a
    /// prefregex must have a `(?P<content>...)` group. All problems are returned.
    pub fn new(
        name: &str,
        failregex: &[String],
        ignoreregex: &[String],
        prefregex: Option<&str>,
    ) -> Result<Filter, Vec<FilterError>> {
        let mut errors = Vec::new();
        let mut fail = Vec::new();
        for (i, source) in failregex.iter().enumerate() {
            let role = RegexRole::Fail(i);
            if !source.contains("<HOST>") && !source.contains("<ADDR>") {
                errors.push(FilterError {
                    role,
                    message: "failregex has no <HOST>: it must capture the offending address"
                        .into(),
                });
                continue;
            }
            match FailRegex::new(&expand_placeholders(source)) {
                Ok(re) => fail.push(re),
                Err(message) => errors.push(FilterError { role, message }),
            }
        }
        let ignore_sources: Vec<String> =
            ignoreregex.iter().map(|s| expand_placeholders(s)).collect();
        for (i, s) in ignore_sources.iter().enumerate() {
            if let Err(message) = compile(s) {
                errors.push(FilterError {
                    role: RegexRole::Ignore(i),
                    message,
                });
            }
        }
        let pref = match prefregex.map(|p| compile(&expand_placeholders(p))) {
            Some(Ok(re)) if re.capture_names().flatten().any(|n| n == "content") => Some(re),
            Some(Ok(_)) => {
                errors.push(FilterError {
                    role: RegexRole::Pref,
                    message:
                        "prefregex needs a group (?P<content>...) holding what the failregexes see"
                            .into(),
                });
                None
            }
            Some(Err(message)) => {
                errors.push(FilterError {
                    role: RegexRole::Pref,
                    message,
                });
                None
            }
            None => None,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let sources: Vec<&str> = fail.iter().map(|r| r.full.as_str()).collect();
        let fail_set = set(&sources).map_err(|e| {
            vec![FilterError {
                role: RegexRole::Fail(0),
                message: format!("failregexes do not combine: {e}"),
            }]
        })?;
        let ignore = if ignore_sources.is_empty() {
            None
        } else {
            Some(set(&ignore_sources).map_err(|e| {
                vec![FilterError {
                    role: RegexRole::Ignore(0),
                    message: format!("ignoreregexes do not combine: {e}"),
                }]
            })?)
        };
        Ok(Filter {
            name: name.to_string(),
            fail,
            fail_set,
            ignore,
            pref,
            datepattern: None,
            decode: Decode::None,
        })
    }

    /// Sets the filter's `datepattern` (timestamp format replacing detection).
    pub fn with_datepattern(mut self, pattern: Option<DatePattern>) -> Self {
        self.datepattern = pattern;
        self
    }

    /// Sets how messages are decoded before matching (`decode` in the filter file).
    pub fn with_decode(mut self, decode: Decode) -> Self {
        self.decode = decode;
        self
    }

    pub fn datepattern(&self) -> Option<&DatePattern> {
        self.datepattern.as_ref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn failregex_count(&self) -> usize {
        self.fail.len()
    }

    /// Looks for a failure in one message (the line without its timestamp and syslog
    /// header; see [`Framer`]). Fast: the user is not extracted.
    pub fn examine(&self, message: &[u8]) -> Verdict {
        self.run(message, false, &TrustedProxies::NONE)
    }

    /// Like [`Filter::examine`], and also captures `<USER>`; for `test-filter`.
    pub fn examine_detailed(&self, message: &[u8]) -> Verdict {
        self.run(message, true, &TrustedProxies::NONE)
    }

    /// Like [`Filter::examine`] (or `examine_detailed`), for a jail with trusted
    /// proxies: a failure logged for one of them is the client's that its
    /// X-Forwarded-For names (the regex's `<XFF>`), or [`Verdict::NoClient`].
    pub fn examine_behind(
        &self,
        message: &[u8],
        proxies: &TrustedProxies,
        detailed: bool,
    ) -> Verdict {
        self.run(message, detailed, proxies)
    }

    fn run(&self, message: &[u8], detailed: bool, proxies: &TrustedProxies) -> Verdict {
        let decoded;
        let message = match self.decode {
            Decode::None => message,
            Decode::Url => {
                decoded = decode::url(message);
                &decoded[..]
            }
        };
        let content = match &self.pref {
            // A DFA answers "no" cheaply; only accepted lines pay for the capture.
            Some(pref) if !pref.is_match(message) => return Verdict::Miss,
            Some(pref) => match pref.captures(message).and_then(|c| c.name("content")) {
                Some(m) => &message[m.start()..m.end()],
                None => return Verdict::Miss,
            },
            None => message,
        };
        // Most lines match nothing: answer those with one scan and no allocation.
        if !self.fail_set.is_match(content) {
            return Verdict::Miss;
        }
        // The addresses in the line, found once (when first needed) for all failregexes.
        let mut candidates = None;
        for (i, re) in self.fail.iter().enumerate() {
            // A fast hit proves the whole regex matches; otherwise ask the regex itself.
            let fast = if detailed {
                None
            } else {
                re.fast(content, &mut candidates)
            };
            let found = match fast {
                Some(ip) => Some((ip, None)),
                None if re.full.is_match(content) => re.captured(content),
                None => None,
            };
            let Some((host, user)) = found else {
                continue;
            };
            let mut found = Found {
                host,
                user,
                regex: i,
                via: None,
            };
            // With `trusted_proxies_only` the peer field is not trusted at all (a
            // forged line can change it), so X-Forwarded-For decides for every line.
            if proxies.trusts(host) || proxies.is_only() {
                match re.forwarded(content).and_then(|xff| proxies.client(xff)) {
                    Some(client) => {
                        found.via = proxies.trusts(host).then_some(host);
                        found.host = client;
                    }
                    None => return Verdict::NoClient(found),
                }
            }
            if self
                .ignore
                .as_ref()
                .is_some_and(|set| set.is_match(message))
            {
                return Verdict::Ignored(found);
            }
            return Verdict::Failure(found);
        }
        Verdict::Miss
    }
}

fn compile(source: &str) -> Result<Regex, String> {
    regex::bytes::RegexBuilder::new(source)
        .unicode(false)
        .size_limit(16 * 1024 * 1024)
        .build()
        .map_err(|e| format!("invalid regex: {}", e.to_string().replace('\n', " ")))
}

fn set<S: AsRef<str>>(sources: &[S]) -> Result<RegexSet, regex::Error> {
    regex::bytes::RegexSetBuilder::new(sources)
        .unicode(false)
        .size_limit(64 * 1024 * 1024)
        .build()
}

#[cfg(test)]
mod tests;
