//! Sessions: the lines one attempt leaves over several log lines, tied together by a
//! key (the logging process, or an id the filter captures), as fail2ban's multi-line
//! filters tie them with `<F-MLFID>`. A line without an address inherits the
//! session's; a failure marked `hold` (a public key the client offered and the
//! server refused) counts only once the session proves hostile, and a success drops
//! it. Pure: the caller gives the time; memory is bounded by a cap and an age limit.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use regex::bytes::Regex;

use crate::types::Timestamp;

/// What a matched line says about its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A failure (`failregex`): counted, with the session's address if the line has
    /// none. It also confirms the session's held failures.
    Fail,
    /// A failure that counts only if the session proves hostile: a real failure in
    /// it, or attempts under two different user names (fail2ban's `<F-NOFAIL>` on a
    /// failure line). A success drops it.
    Hold,
    /// The client got in (`<F-MLFGAINED>`): held failures are dropped, unless the
    /// session tried other user names first. Ends the session.
    Success,
    /// The connection ended (`<F-MLFFORGET>`): its address, if it names one, still
    /// settles failures waiting for it; then the session is forgotten.
    End,
    /// The line only tells the session's address or user (`<F-NOFAIL>`).
    Note,
}

/// A line a session filter matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub role: Role,
    pub host: Option<IpAddr>,
    /// The user the line names, if the filter captures one.
    pub user: Option<String>,
    /// Index of the regex among the filter's rules (failregexes first).
    pub regex: usize,
    /// The trusted proxy the line was logged for, when `host` came from X-Forwarded-For.
    pub via: Option<IpAddr>,
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
    /// Compiles a filter's session rules' key: `"process"`, or a regex with a
    /// `(?P<session>...)` group.
    pub fn new(rules: &SessionRules) -> Result<SessionSpec, String> {
        let key = if rules.key == "process" {
            SessionKey::Process
        } else {
            let re = super::engine::linear(&super::expand_placeholders(&rules.key))?;
            if !re.capture_names().flatten().any(|n| n == "session") {
                return Err(
                    "a session key is \"process\" or a regex with a group (?P<session>...)".into(),
                );
            }
            SessionKey::Captured(re)
        };
        Ok(SessionSpec {
            key,
            max_sessions: rules.max_sessions,
            max_age_secs: rules.max_age_secs,
        })
    }

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

/// Failures a line settles: `count` of them against `host`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    pub host: IpAddr,
    pub count: u32,
}

/// Defaults: sessions open at once per filter and source, and how long one may stay
/// quiet before it is forgotten.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
pub const DEFAULT_MAX_AGE_SECS: i64 = 600;

/// One open session. Kept small: a million of them must fit comfortably.
#[derive(Clone, Copy, Debug, Default)]
struct Session {
    addr: Option<IpAddr>,
    /// Failures waiting for an address.
    pending: u16,
    /// Failures waiting for proof that the session is hostile.
    held: u16,
    /// Tried under two different user names.
    hostile: bool,
    /// Hash of the first user name seen (0: none yet).
    user: u64,
    /// Unix seconds of the last line.
    last: i64,
}

/// The open sessions of one filter over one source, with their limits.
#[derive(Debug)]
pub struct Sessions {
    open: HashMap<u64, Session, Fixed>,
    cap: usize,
    max_age: i64,
    /// Sessions forgotten before they ended because the cap was reached.
    evicted: u64,
    /// When quiet sessions were last swept.
    swept: i64,
}

/// A fixed-key hasher: keys are already hashes.
#[derive(Clone, Copy, Debug, Default)]
struct Fixed;

impl BuildHasher for Fixed {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

#[derive(Debug)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The key of a session: a 64-bit hash of what identifies it (a header with the
/// process id, a queue id). Collisions are negligible at the caps used.
pub fn key_of(bytes: &[u8]) -> u64 {
    // FNV-1a, then a final mix so that near keys spread over the table.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

fn user_key(user: &str) -> u64 {
    key_of(user.as_bytes()) | 1
}

impl Sessions {
    /// At most `cap` sessions (at least 1), each forgotten `max_age_secs` after its
    /// last line.
    pub fn new(cap: usize, max_age_secs: i64) -> Sessions {
        Sessions {
            open: HashMap::with_hasher(Fixed),
            cap: cap.max(1),
            max_age: max_age_secs.max(1),
            evicted: 0,
            swept: i64::MIN,
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Whether session `key` is open (and not quiet past the age limit) at `now`.
    pub fn is_open(&self, key: Option<u64>, now: Timestamp) -> bool {
        key.and_then(|k| self.open.get(&k))
            .is_some_and(|s| now.timestamp().saturating_sub(s.last) <= self.max_age)
    }

    /// Sessions forgotten early because the cap was reached, since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Takes one matched line of session `key` at `now`; returns the failures it
    /// settles. A line with no key is a session of its own.
    pub fn observe(&mut self, key: Option<u64>, mark: &Mark, now: Timestamp) -> Option<Settled> {
        let now = now.timestamp();
        let Some(key) = key else {
            let mut alone = Session::default();
            return step(&mut alone, mark);
        };
        self.sweep(now);
        let ends = matches!(mark.role, Role::Success | Role::End);
        let session = match self.open.get_mut(&key) {
            Some(s) if now.saturating_sub(s.last) <= self.max_age => s,
            Some(s) => {
                // Quiet for too long: the process id was reused, or the end was lost.
                *s = Session::default();
                s
            }
            None if ends => {
                // Nothing open: an end or success settles nothing beyond its own line.
                let mut alone = Session::default();
                return step(&mut alone, mark);
            }
            None => {
                if self.open.len() >= self.cap {
                    self.make_room(now);
                }
                self.open.entry(key).or_default()
            }
        };
        session.last = now;
        let settled = step(session, mark);
        if ends {
            self.open.remove(&key);
        }
        settled
    }

    /// Forgets sessions quiet for longer than the age limit, at most every half of it.
    fn sweep(&mut self, now: i64) {
        if now.saturating_sub(self.swept) < self.max_age / 2 + 1 {
            return;
        }
        self.swept = now;
        let max_age = self.max_age;
        self.open
            .retain(|_, s| now.saturating_sub(s.last) <= max_age);
    }

    /// At the cap: forgets the quiet ones, then the older half, counting those.
    fn make_room(&mut self, now: i64) {
        self.swept = i64::MIN;
        self.sweep(now);
        if self.open.len() < self.cap {
            return;
        }
        let mut times: Vec<i64> = self.open.values().map(|s| s.last).collect();
        let mid = times.len() / 2;
        let (_, &mut median, _) = times.select_nth_unstable(mid);
        let before = self.open.len();
        // At least half go: those no newer than the median.
        self.open.retain(|_, s| s.last > median);
        self.evicted += (before - self.open.len()) as u64;
    }
}

/// Applies one line to a session; returns the failures it settles.
fn step(s: &mut Session, mark: &Mark) -> Option<Settled> {
    if let Some(host) = mark.host {
        s.addr = Some(host);
    }
    if let Some(user) = mark.user.as_deref().filter(|u| !u.is_empty()) {
        let u = user_key(user);
        if s.user == 0 {
            s.user = u;
        } else if s.user != u {
            s.hostile = true;
        }
    }
    match mark.role {
        Role::Fail => {
            s.pending = s.pending.saturating_add(1).saturating_add(s.held);
            s.held = 0;
        }
        Role::Hold => s.held = s.held.saturating_add(1),
        Role::Success if s.hostile => {
            // A way in after attempts under other names: those attempts count, and
            // so does this one (as fail2ban counts it).
            s.pending = s.pending.saturating_add(1);
        }
        Role::Success => s.held = 0,
        Role::End | Role::Note => {}
    }
    if s.hostile {
        s.pending = s.pending.saturating_add(s.held);
        s.held = 0;
    }
    match s.addr {
        Some(host) if s.pending > 0 => Some(Settled {
            host,
            count: u32::from(std::mem::take(&mut s.pending)),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
