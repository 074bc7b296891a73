//! A compiled filter: one log message in, at most one failure (address, user) out.
//! Pure: no I/O, no clock, no tokio. Regexes run on bytes, so invalid UTF-8 in a log
//! line is matched around rather than rejected.

mod decode;
mod engine;
mod framing;
mod host;
mod proxy;
mod session;

use std::net::IpAddr;

use engine::{LimitHit, Matcher};
use regex::bytes::{Regex, RegexSet};

pub use engine::BACKTRACK_LIMIT;
pub use framing::{split_line, DatePattern, Framed, Framer, LogTz};
pub use host::prefix_literals as prefix_literals_of;
pub use host::{
    expand_placeholders, substitute_vars, ALT_USER_GROUP, HOST_GROUP, USER_GROUP, XFF_GROUP,
};
pub use proxy::TrustedProxies;
pub use session::{
    key_of, Mark, Role, Sessions, Settled, DEFAULT_MAX_AGE_SECS, DEFAULT_MAX_SESSIONS,
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

/// One failregex: the full regex, and where `<HOST>` is a direct part of its top-level
/// sequence, DFA-only regexes for what must stand before and after the address.
#[derive(Debug)]
struct FailRegex {
    full: Matcher,
    split: Option<(Regex, Regex)>,
    /// What the line says about its session (`Fail` for a filter without sessions).
    role: Role,
    /// The regex captures an address (only a session's lines may lack one).
    has_host: bool,
    /// The regex captures a user name, which a session needs.
    has_user: bool,
    /// What a matching line must start with (one of them), when that is known.
    prefixes: Option<Vec<Vec<u8>>>,
    /// The address stands between non-address bytes: when no candidate of a line
    /// with all its candidates listed fits, the regex does not match.
    delimited: bool,
    /// A text every match contains (beyond its start): a line without it is no match.
    required: Option<memchr::memmem::Finder<'static>>,
}

impl FailRegex {
    fn new(expanded: &str, role: Role) -> Result<FailRegex, String> {
        let full = Matcher::new(expanded)?;
        let has_host = full.has_group(HOST_GROUP);
        let has_user = full.has_group(USER_GROUP) || full.has_group(ALT_USER_GROUP);
        // The fast path is for linear regexes only.
        let split = host::split_at_host(expanded)
            .filter(|_| full.is_linear())
            .and_then(|(before, after)| Some((compile(&before).ok()?, compile(&after).ok()?)));
        let prefixes = host::prefix_literals(expanded);
        let delimited = split.is_some() && host::host_is_delimited(expanded);
        let required =
            host::required_literal(expanded).map(|l| memchr::memmem::Finder::new(&l).into_owned());
        Ok(FailRegex {
            full,
            split,
            role,
            has_host,
            has_user,
            prefixes,
            delimited,
            required,
        })
    }

    /// Whether `content` starts with one of the regex's literal starts (true when
    /// it has none known).
    fn starts(&self, content: &[u8]) -> bool {
        self.prefixes
            .as_ref()
            .is_none_or(|p| p.iter().any(|l| content.starts_with(l)))
    }

    /// The address without running a capture engine: the leftmost address in the
    /// line with a valid prefix before it and a valid suffix after it, the first the
    /// server wrote; `None` leaves the case to `captured`.
    fn fast(
        &self,
        content: &[u8],
        candidates: &mut Option<host::Candidates>,
        with_user: bool,
    ) -> Option<(IpAddr, Option<String>)> {
        let (before, after) = self.split.as_ref()?;
        let (start, end, ip) = candidates
            .get_or_insert_with(|| host::Candidates::find(content))
            .iter()
            .find(|(start, end, _)| {
                before.is_match(&content[..*start]) && after.is_match(&content[*end..])
            })?;
        if !with_user {
            return Some((ip, None));
        }
        // The user, from the short parts around the address (cheap captures): the
        // same text a capture of the whole line gives.
        let user_in = |re: &Regex, text: &[u8]| -> (Option<String>, Option<String>) {
            let Some(c) = re.captures(text) else {
                return (None, None);
            };
            let get = |name: &str| {
                c.name(name)
                    .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
            };
            (get(USER_GROUP), get(ALT_USER_GROUP))
        };
        let (u1, a1) = user_in(before, &content[..start]);
        let (u2, a2) = user_in(after, &content[end..]);
        let user = u1.or(u2);
        let alt = a1.or(a2).filter(|a| !a.is_empty());
        let user = match (user, alt) {
            (Some(u), Some(a)) if u.is_empty() => Some(a),
            (Some(u), _) => Some(u),
            (None, a) => a,
        };
        Some((ip, user))
    }

    /// The address (and user) as the regex engine's captures give them; `None` when
    /// the regex does not match or its address does not parse. A regex without
    /// `<HOST>` (a session's) matches with no address.
    #[allow(clippy::type_complexity)]
    fn captured(
        &self,
        content: &[u8],
    ) -> Result<Option<(Option<IpAddr>, Option<String>)>, LimitHit> {
        let Some([host, user, alt]) = self
            .full
            .groups(content, [HOST_GROUP, USER_GROUP, ALT_USER_GROUP])?
        else {
            return Ok(None);
        };
        let host = match host {
            Some(r) => match host::parse(&content[r]) {
                Some(ip) => Some(ip),
                None => return Ok(None),
            },
            None if self.has_host => return Ok(None),
            None => None,
        };
        let alt = alt.filter(|r| !r.is_empty());
        let user = match (user, alt) {
            (Some(u), Some(a)) if u.is_empty() => Some(a),
            (Some(u), _) => Some(u),
            (None, a) => a,
        }
        .map(|r| String::from_utf8_lossy(&content[r]).into_owned());
        Ok(Some((host, user)))
    }

    /// The X-Forwarded-For value the regex's `xff` group captured, if it has one.
    fn forwarded<'a>(&self, content: &'a [u8]) -> Option<&'a [u8]> {
        let [xff] = self.full.groups(content, [XFF_GROUP]).ok()??;
        xff.map(|r| &content[r])
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

/// How a filter ties lines into sessions, and which regexes say what about one
/// (see `session/`). The failregexes are the sessions' failures.
#[derive(Clone, Debug, Default)]
pub struct SessionRules {
    /// `"process"` (the syslog header's program and pid, or the journal's `_PID`) or
    /// a regex whose `(?P<session>...)` group captures an id from the message.
    pub key: String,
    pub hold: Vec<String>,
    pub success: Vec<String>,
    pub end: Vec<String>,
    pub note: Vec<String>,
    pub max_sessions: usize,
    pub max_age_secs: i64,
}

/// What ties a filter's lines into sessions.
#[derive(Debug)]
pub enum SessionKey {
    /// The logging process: the syslog header (`host prog[pid]: `) or `_PID`.
    Process,
    /// An id in the line, captured by the regex's `session` group.
    Captured(Regex),
}

/// A compiled filter's session settings.
#[derive(Debug)]
pub struct SessionSpec {
    pub key: SessionKey,
    pub max_sessions: usize,
    pub max_age_secs: i64,
}

impl SessionSpec {
    /// A fresh, empty set of sessions with this filter's limits.
    pub fn sessions(&self) -> Sessions {
        Sessions::new(self.max_sessions, self.max_age_secs)
    }

    /// The key of the session `line` belongs to: its process (the header the
    /// framing removed, or the journal's process, if it named one), or the id the
    /// key regex finds in the whole line (an id may stand in what framing removes).
    pub fn key(&self, line: &[u8], process: Option<&[u8]>) -> Option<u64> {
        match &self.key {
            SessionKey::Process => process.map(key_of),
            SessionKey::Captured(re) => re
                .captures(line)
                .and_then(|c| c.name("session"))
                .map(|m| key_of(m.as_bytes())),
        }
    }
}

/// The literal starts of every regex of a filter, by first byte: which regexes a
/// line may match, from a few comparisons. Only for filters whose regexes (at most
/// 64) all have literal starts.
#[derive(Debug)]
struct Gate {
    /// For each first byte, the (regex, literal) pairs starting with it.
    by_first: Vec<Vec<(u8, Box<[u8]>)>>,
}

impl Gate {
    fn new(fail: &[FailRegex]) -> Option<Gate> {
        if fail.len() > 64 {
            return None;
        }
        let mut by_first: Vec<Vec<(u8, Box<[u8]>)>> = vec![Vec::new(); 256];
        for (i, re) in fail.iter().enumerate() {
            for lit in re.prefixes.as_ref()? {
                by_first[usize::from(*lit.first()?)].push((i as u8, lit.clone().into()));
            }
        }
        Some(Gate { by_first })
    }

    /// A bit per regex the line's start allows.
    fn allowed(&self, content: &[u8]) -> u64 {
        let Some(&first) = content.first() else {
            return 0;
        };
        self.by_first[usize::from(first)]
            .iter()
            .filter(|(_, lit)| content.starts_with(lit))
            .fold(0, |bits, (i, _)| bits | 1 << i)
    }
}

/// The ignoreregexes: one automaton, or each on its own when one needs look-around.
#[derive(Debug)]
enum Ignore {
    Set(RegexSet),
    Each(Vec<Matcher>),
}

impl Ignore {
    fn is_match(&self, text: &[u8]) -> Result<bool, LimitHit> {
        match self {
            Ignore::Set(set) => Ok(set.is_match(text)),
            Ignore::Each(list) => {
                for m in list {
                    if m.is_match(text)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }
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
            let key = if rules.key == "process" {
                Some(SessionKey::Process)
            } else {
                match compile(&expand_placeholders(&rules.key)) {
                    Ok(re) if re.capture_names().flatten().any(|n| n == "session") => {
                        Some(SessionKey::Captured(re))
                    }
                    Ok(_) => {
                        errors.push(FilterError {
                            role: RegexRole::SessionKey,
                            message: "a session key is \"process\" or a regex with a group (?P<session>...)".into(),
                        });
                        None
                    }
                    Err(message) => {
                        errors.push(FilterError {
                            role: RegexRole::SessionKey,
                            message,
                        });
                        None
                    }
                }
            };
            spec = key.map(|key| SessionSpec {
                key,
                max_sessions: rules.max_sessions,
                max_age_secs: rules.max_age_secs,
            });
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
        let fail_set = set(&sources).map_err(|e| {
            vec![FilterError {
                role: RegexRole::Fail(0),
                message: format!("failregexes do not combine: {e}"),
            }]
        })?;
        let ignore = if ignore_each.is_empty() {
            None
        } else if ignore_each.iter().all(Matcher::is_linear) {
            Some(Ignore::Set(set(&ignore_sources).map_err(|e| {
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
                if !re.full.is_match(content)? {
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
                None if re.full.is_match(content)? => re.captured(content)?,
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
