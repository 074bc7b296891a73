//! A compiled filter: one log message in, at most one failure (address, user) out.
//! Pure: no I/O, no clock, no tokio. Regexes run on bytes, so invalid UTF-8 in a log
//! line is matched around rather than rejected.

mod decode;
mod engine;
mod framing;
mod host;
mod proxy;
mod rules;
mod session;

use std::net::IpAddr;

use engine::{linear_set, LimitHit, Matcher};
use regex::bytes::RegexSet;
use rules::{FailRegex, Gate, Ignore};

pub use engine::BACKTRACK_LIMIT;
pub use framing::{split_line, DatePattern, Framed, Framer, LogTz};
pub use host::{
    expand_placeholders, substitute_vars, ALT_USER_GROUP, HOST_GROUP, USER_GROUP, XFF_GROUP,
};
pub use proxy::TrustedProxies;
pub use session::{
    key_of, Mark, Role, SessionKey, SessionRules, SessionSpec, Sessions, Settled,
    DEFAULT_MAX_AGE_SECS, DEFAULT_MAX_SESSIONS,
};

/// Which regex of a filter an error or a match refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegexRole {
    Fail(usize),
    Ignore(usize),
    Pref,
    /// A session's regex of this role, by index in its list (`key` is `Note` 0 when
    /// the session key is a regex).
    Session(Role, usize),
    SessionKey,
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
    /// A filter with sessions matched the line: what it says goes to the session's
    /// [`Sessions`], which settles the failures.
    Mark(Mark),
    /// A look-around regex gave up on the line at its backtracking limit: the line
    /// is skipped (and counted), never waited for.
    Limited,
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
    /// The failregexes, then (with sessions) the hold, success, end and note
    /// regexes: the first that matches decides.
    fail: Vec<FailRegex>,
    /// The order they are tried in: hold regexes first (they single out the
    /// harmless form of a failure), then failures, successes, ends and notes.
    order: Vec<usize>,
    /// All the linear ones in one automaton: a message that matches none costs one
    /// scan (unless the filter has look-around regexes, which are tried each).
    fail_set: RegexSet,
    /// When every regex has literal starts: which regexes a line's first bytes allow
    /// (a line allowing none is a miss without a scan).
    gate: Option<Gate>,
    any_backtracking: bool,
    ignore: Option<Ignore>,
    pref: Option<Matcher>,
    datepattern: Option<DatePattern>,
    decode: Decode,
    session: Option<SessionSpec>,
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
        Filter::build(name, failregex, ignoreregex, prefregex, None)
    }

    /// Like [`Filter::new`], with sessions when `session` is given: then a
    /// failregex may lack `<HOST>` (its line takes the session's address).
    pub fn build(
        name: &str,
        failregex: &[String],
        ignoreregex: &[String],
        prefregex: Option<&str>,
        session: Option<&SessionRules>,
    ) -> Result<Filter, Vec<FilterError>> {
        let mut errors = Vec::new();
        let mut fail = Vec::new();
        let mut add = |source: &str, role: Role, err: RegexRole, errors: &mut Vec<FilterError>| {
            let has_host = source.contains("<HOST>") || source.contains("<ADDR>");
            if !has_host && matches!(role, Role::Fail) && session.is_none() {
                errors.push(FilterError {
                    role: err,
                    message: "failregex has no <HOST>: it must capture the offending address \
                              (only a filter with [session] may leave it to the session)"
                        .into(),
                });
                return;
            }
            match FailRegex::new(&expand_placeholders(source), role) {
                Ok(re) => fail.push(re),
                Err(message) => errors.push(FilterError { role: err, message }),
            }
        };
        for (i, source) in failregex.iter().enumerate() {
            add(source, Role::Fail, RegexRole::Fail(i), &mut errors);
        }
        let mut spec = None;
        if let Some(rules) = session {
            for (list, role) in [
                (&rules.hold, Role::Hold),
                (&rules.success, Role::Success),
                (&rules.end, Role::End),
                (&rules.note, Role::Note),
            ] {
                for (i, source) in list.iter().enumerate() {
                    add(source, role, RegexRole::Session(role, i), &mut errors);
                }
            }
            match SessionSpec::new(rules) {
                Ok(s) => spec = Some(s),
                Err(message) => errors.push(FilterError {
                    role: RegexRole::SessionKey,
                    message,
                }),
            }
        }
        let ignore_sources: Vec<String> =
            ignoreregex.iter().map(|s| expand_placeholders(s)).collect();
        let mut ignore_each = Vec::new();
        for (i, s) in ignore_sources.iter().enumerate() {
            match Matcher::new(s) {
                Ok(m) => ignore_each.push(m),
                Err(message) => errors.push(FilterError {
                    role: RegexRole::Ignore(i),
                    message,
                }),
            }
        }
        let pref = match prefregex.map(|p| Matcher::new(&expand_placeholders(p))) {
            Some(Ok(re)) if re.has_group("content") => Some(re),
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
        let sources: Vec<&str> = fail
            .iter()
            .filter(|r| r.full.is_linear())
            .map(|r| r.full.as_str())
            .collect();
        let any_backtracking = fail.iter().any(|r| !r.full.is_linear());
        let gate = Gate::new(&fail);
        let mut order: Vec<usize> = (0..fail.len()).collect();
        order.sort_by_key(|&i| match fail[i].role {
            Role::Hold => 0,
            Role::Fail => 1,
            Role::Success => 2,
            Role::End => 3,
            Role::Note => 4,
        });
        let fail_set = linear_set(&sources).map_err(|e| {
            vec![FilterError {
                role: RegexRole::Fail(0),
                message: format!("failregexes do not combine: {e}"),
            }]
        })?;
        let ignore = if ignore_each.is_empty() {
            None
        } else if ignore_each.iter().all(Matcher::is_linear) {
            Some(Ignore::Set(linear_set(&ignore_sources).map_err(|e| {
                vec![FilterError {
                    role: RegexRole::Ignore(0),
                    message: format!("ignoreregexes do not combine: {e}"),
                }]
            })?))
        } else {
            Some(Ignore::Each(ignore_each))
        };
        Ok(Filter {
            name: name.to_string(),
            fail,
            fail_set,
            gate,
            any_backtracking,
            ignore,
            pref,
            datepattern: None,
            decode: Decode::None,
            order,
            session: spec,
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

    /// The number of regexes that can match a line: the failregexes, then a
    /// session's hold, success, end and note regexes (`Found::regex` indexes these).
    pub fn failregex_count(&self) -> usize {
        self.fail.len()
    }

    /// What each regex (as `Found::regex` and `Mark::regex` index them) says: the
    /// failregexes are `Fail`, a session's others their role.
    pub fn roles(&self) -> Vec<Role> {
        self.fail.iter().map(|r| r.role).collect()
    }

    /// Each regex as compiled (placeholders expanded), in the same order.
    pub fn regex_sources(&self) -> Vec<&str> {
        self.fail.iter().map(|r| r.full.as_str()).collect()
    }

    /// How this filter ties lines into sessions, if it does.
    pub fn session(&self) -> Option<&SessionSpec> {
        self.session.as_ref()
    }

    /// Looks for a failure in one message (the line without its timestamp and syslog
    /// header; see [`Framer`]). Fast: the user is not extracted.
    pub fn examine(&self, message: &[u8]) -> Verdict {
        self.run(message, false, &TrustedProxies::NONE, &mut || true)
    }

    /// Like [`Filter::examine`], and also captures `<USER>`; for `test-filter`.
    pub fn examine_detailed(&self, message: &[u8]) -> Verdict {
        self.run(message, true, &TrustedProxies::NONE, &mut || true)
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
        self.run(message, detailed, proxies, &mut || true)
    }

    /// Like [`Filter::examine_behind`] for a filter with sessions, knowing whether
    /// the line's session is open: when it is not, a success or an end can settle
    /// nothing, so its address is not looked for (the [`Verdict::Mark`] has none).
    pub fn examine_for_session(
        &self,
        message: &[u8],
        proxies: &TrustedProxies,
        open: &mut dyn FnMut() -> bool,
    ) -> Verdict {
        self.run(message, false, proxies, open)
    }

    fn run(
        &self,
        message: &[u8],
        detailed: bool,
        proxies: &TrustedProxies,
        open: &mut dyn FnMut() -> bool,
    ) -> Verdict {
        self.try_run(message, detailed, proxies, open)
            .unwrap_or(Verdict::Limited)
    }

    fn try_run(
        &self,
        message: &[u8],
        detailed: bool,
        proxies: &TrustedProxies,
        open: &mut dyn FnMut() -> bool,
    ) -> Result<Verdict, LimitHit> {
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
            Some(pref) if !pref.is_match(message)? => return Ok(Verdict::Miss),
            Some(pref) => match pref.groups(message, ["content"])? {
                Some([Some(r)]) => &message[r],
                _ => return Ok(Verdict::Miss),
            },
            None => message,
        };
        // Most lines match nothing: answer those with one scan (or, when every regex
        // has literal starts, a comparison of the line's first bytes) and no allocation.
        let allowed = match &self.gate {
            Some(gate) => {
                let allowed = gate.allowed(content);
                if allowed == 0 {
                    return Ok(Verdict::Miss);
                }
                allowed
            }
            None if !self.any_backtracking && !self.fail_set.is_match(content) => {
                return Ok(Verdict::Miss);
            }
            None => u64::MAX,
        };

        // The addresses in the line, found once (when first needed) for all failregexes.
        let mut candidates = None;
        for &i in &self.order {
            let re = &self.fail[i];
            // A line that starts with none of the regex's literal starts cannot match.
            if allowed & (1 << i.min(63)) == 0 || !re.starts(content) {
                continue;
            }
            if re
                .required
                .as_ref()
                .is_some_and(|f| f.find(content).is_none())
            {
                continue;
            }
            // A success or end of a session that is not open settles nothing.
            if matches!(re.role, Role::Success | Role::End) && !open() {
                if !re.is_match(content)? {
                    continue;
                }
                return Ok(Verdict::Mark(Mark {
                    role: re.role,
                    host: None,
                    user: None,
                    regex: i,
                    via: None,
                }));
            }
            // A fast hit proves the whole regex matches; otherwise ask the regex itself.
            // A session needs the user name of a held failure or a success (a second
            // name makes the session hostile); a failure counts whatever its name.
            let needs_user = self.session.is_some()
                && re.has_user
                && matches!(re.role, Role::Hold | Role::Success);
            let fast = if detailed {
                None
            } else {
                re.fast(content, &mut candidates, needs_user)
            };
            let proven_absent = !detailed
                && re.delimited
                && candidates.as_ref().is_some_and(host::Candidates::complete);
            let found = match fast {
                Some((ip, user)) => Some((Some(ip), user)),
                None if proven_absent => None,
                None if re.is_match(content)? => re.captured(content)?,
                None => None,
            };
            let Some((host, user)) = found else {
                continue;
            };
            if self.session.is_some() {
                return self.mark(re, i, host, user, content, message, proxies);
            }
            let Some(host) = host else {
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
                    None => return Ok(Verdict::NoClient(found)),
                }
            }
            if self.ignored(message)? {
                return Ok(Verdict::Ignored(found));
            }
            return Ok(Verdict::Failure(found));
        }
        Ok(Verdict::Miss)
    }

    fn ignored(&self, message: &[u8]) -> Result<bool, LimitHit> {
        match &self.ignore {
            Some(ignore) => ignore.is_match(message),
            None => Ok(false),
        }
    }

    /// A session filter's match: proxies resolved as for a failure; an ignored
    /// failure says nothing at all.
    #[allow(clippy::too_many_arguments)]
    fn mark(
        &self,
        re: &FailRegex,
        regex: usize,
        host: Option<IpAddr>,
        user: Option<String>,
        content: &[u8],
        message: &[u8],
        proxies: &TrustedProxies,
    ) -> Result<Verdict, LimitHit> {
        let mut mark = Mark {
            role: re.role,
            host,
            user,
            regex,
            via: None,
        };
        if let Some(peer) = host {
            if proxies.trusts(peer) || proxies.is_only() {
                match re.forwarded(content).and_then(|xff| proxies.client(xff)) {
                    Some(client) => {
                        mark.via = proxies.trusts(peer).then_some(peer);
                        mark.host = Some(client);
                    }
                    None => {
                        return Ok(Verdict::NoClient(Found {
                            host: peer,
                            user: mark.user,
                            regex,
                            via: None,
                        }))
                    }
                }
            }
        }
        if matches!(re.role, Role::Fail | Role::Hold) && self.ignored(message)? {
            return Ok(match mark.host {
                Some(host) => Verdict::Ignored(Found {
                    host,
                    user: mark.user,
                    regex,
                    via: mark.via,
                }),
                None => Verdict::Miss,
            });
        }
        Ok(Verdict::Mark(mark))
    }
}

#[cfg(test)]
mod tests;
