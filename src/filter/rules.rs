//! One regex of a filter and what makes it cheap: the compiled regex and its role,
//! the fast address path (the parts before and after `<HOST>`), its literal start
//! and a literal every match contains; and, over all of a filter's regexes, the
//! literal-start gate and the ignoreregexes.

use std::net::IpAddr;

use regex::bytes::{Regex, RegexSet};

use super::engine::{linear, LimitHit, Matcher};
use super::host::{self, ALT_USER_GROUP, HOST_GROUP, USER_GROUP, XFF_GROUP};
use super::session::Role;

/// One failregex: the full regex, and where `<HOST>` is a direct part of its top-level
/// sequence, DFA-only regexes for what must stand before and after the address.
#[derive(Debug)]
pub(super) struct FailRegex {
    pub(super) full: Matcher,
    pub(super) split: Option<(Regex, Regex)>,
    /// What the line says about its session (`Fail` for a filter without sessions).
    pub(super) role: Role,
    /// The regex captures an address (only a session's lines may lack one).
    pub(super) has_host: bool,
    /// The regex captures a user name, which a session needs.
    pub(super) has_user: bool,
    /// What a matching line must start with (one of them), when that is known.
    pub(super) prefixes: Option<Vec<Vec<u8>>>,
    /// The address stands between non-address bytes: when no candidate of a line
    /// with all its candidates listed fits, the regex does not match.
    pub(super) delimited: bool,
    /// A text every match contains (beyond its start): a line without it is no match.
    pub(super) required: Option<memchr::memmem::Finder<'static>>,
    /// The regex without its free tail, for yes/no answers on lines without a newline.
    probe: Option<Regex>,
}

impl FailRegex {
    pub(super) fn new(expanded: &str, role: Role) -> Result<FailRegex, String> {
        let full = Matcher::new(expanded)?;
        let has_host = full.has_group(HOST_GROUP);
        let has_user = full.has_group(USER_GROUP) || full.has_group(ALT_USER_GROUP);
        // The fast path is for linear regexes only.
        let split = host::split_at_host(expanded)
            .filter(|_| full.is_linear())
            .and_then(|(before, after)| Some((linear(&before).ok()?, linear(&after).ok()?)));
        let prefixes = host::prefix_literals(expanded);
        let delimited = split.is_some() && host::host_is_delimited(expanded);
        let required =
            host::required_literal(expanded).map(|l| memchr::memmem::Finder::new(&l).into_owned());
        let probe = host::without_free_tail(expanded)
            .filter(|_| full.is_linear())
            .and_then(|p| linear(&p).ok());
        Ok(FailRegex {
            probe,
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
    pub(super) fn starts(&self, content: &[u8]) -> bool {
        self.prefixes
            .as_ref()
            .is_none_or(|p| p.iter().any(|l| content.starts_with(l)))
    }

    /// Whether the whole regex matches `content`.
    pub(super) fn is_match(&self, content: &[u8]) -> Result<bool, LimitHit> {
        match &self.probe {
            Some(probe) if memchr::memchr(b'\n', content).is_none() => Ok(probe.is_match(content)),
            _ => self.full.is_match(content),
        }
    }

    /// The address without running a capture engine: the leftmost address in the
    /// line with a valid prefix before it and a valid suffix after it, the first the
    /// server wrote; `None` leaves the case to `captured`.
    pub(super) fn fast(
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
    pub(super) fn captured(
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
    pub(super) fn forwarded<'a>(&self, content: &'a [u8]) -> Option<&'a [u8]> {
        let [xff] = self.full.groups(content, [XFF_GROUP]).ok()??;
        xff.map(|r| &content[r])
    }
}

/// The literal starts of every regex of a filter, by first byte: which regexes a
/// line may match, from a few comparisons. Only for filters whose regexes (at most
/// 64) all have literal starts.
#[derive(Debug)]
pub(super) struct Gate {
    /// For each first byte, the (regex, literal) pairs starting with it.
    by_first: Vec<Vec<(u8, Box<[u8]>)>>,
}

impl Gate {
    pub(super) fn new(fail: &[FailRegex]) -> Option<Gate> {
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
    pub(super) fn allowed(&self, content: &[u8]) -> u64 {
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
pub(super) enum Ignore {
    Set(RegexSet),
    Each(Vec<Matcher>),
}

impl Ignore {
    pub(super) fn is_match(&self, text: &[u8]) -> Result<bool, LimitHit> {
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
