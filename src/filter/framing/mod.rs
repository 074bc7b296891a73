//! Splits a raw log line into when it happened and the message filters see. A leading
//! timestamp in any common format is found and removed, then (after syslog-style
//! stamps) a `host tag[pid]: ` header; a CLF stamp `[21/Nov/2026:08:13:46 +0000]`
//! inside an access-log line gives the time without removing anything. A filter's
//! `datepattern` replaces detection. Pure: `now` is passed in to infer a missing year.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};

use crate::types::Timestamp;
use header::{
    names_process, rfc5424_message, rfc5424_process, strip_inner_framing, strip_pid_header,
    strip_syslog_header, thread_id_prefix,
};
use stamp::{clf, clock, day_month_year, digits, epoch, fraction, month, offset, tai64n, ymd};

mod header;
mod stamp;

/// A line split into when it happened (if it says) and what it says.
#[derive(Debug, PartialEq, Eq)]
pub struct Framed<'a> {
    pub time: Option<Timestamp>,
    pub message: &'a [u8],
    /// The syslog header that named the logging process (`host sshd[42]: `, or an
    /// RFC 5424 line's host, app and procid), when there was one: what ties a
    /// process's lines into a session.
    pub process: Option<&'a [u8]>,
}

/// How timestamps without an offset are read (a jail's `logtimezone`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogTz {
    /// The host's local time zone.
    #[default]
    Local,
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

impl LogTz {
    /// Parses `local`, `UTC`, `+01:00` / `-0500`, or an IANA name like `Europe/Berlin`.
    pub fn parse(s: &str) -> Result<LogTz, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("local") {
            return Ok(LogTz::Local);
        }
        if s.eq_ignore_ascii_case("utc") || s.eq_ignore_ascii_case("gmt") || s == "Z" {
            return Ok(LogTz::Fixed(Utc.fix()));
        }
        if let Some((secs, used)) = offset(s.as_bytes()) {
            if used == s.len() {
                if let Some(off) = FixedOffset::east_opt(secs) {
                    return Ok(LogTz::Fixed(off));
                }
            }
        }
        s.parse::<chrono_tz::Tz>().map(LogTz::Named).map_err(|_| {
            format!("unknown time zone `{s}`: use an IANA name like Europe/Berlin, UTC, an offset like +01:00, or local")
        })
    }

    /// The instant a wall-clock time in this zone names (the earlier one in a DST fold).
    /// Offsets are cached per wall-clock hour, so a log of millions of lines does not
    /// pay a time-zone lookup per line; ambiguous and skipped hours are never cached.
    fn resolve(&self, naive: NaiveDateTime) -> Option<Timestamp> {
        use chrono::LocalResult;
        if let LogTz::Fixed(off) = self {
            return Some(
                naive.and_utc() - chrono::Duration::seconds(i64::from(off.local_minus_utc())),
            );
        }
        let hour = naive.and_utc().timestamp().div_euclid(3600);
        if let Some((tz, h, off)) = OFFSETS.with(|c| c.get()) {
            if tz == *self && h == hour {
                return Some(naive.and_utc() - chrono::Duration::seconds(i64::from(off)));
            }
        }
        let (result, single) = match self {
            LogTz::Local => {
                let r = chrono::Local.from_local_datetime(&naive);
                (
                    r.earliest().map(|t| t.with_timezone(&Utc)),
                    matches!(r, LocalResult::Single(_)),
                )
            }
            LogTz::Named(tz) => {
                let r = tz.from_local_datetime(&naive);
                (
                    r.earliest().map(|t| t.with_timezone(&Utc)),
                    matches!(r, LocalResult::Single(_)),
                )
            }
            LogTz::Fixed(_) => (None, false),
        };
        if let (Some(t), true) = (result, single) {
            let off = (naive.and_utc() - t).num_seconds() as i32;
            OFFSETS.with(|c| c.set(Some((*self, hour, off))));
        }
        result
    }
}

/// The latest wall-clock time a year-less stamp may name at `now`, and `now`'s year;
/// memoised because a batch of lines shares one `now`.
fn syslog_horizon(now: Timestamp) -> (NaiveDateTime, i32) {
    if let Some((at, limit, year)) = HORIZON.with(|c| c.get()) {
        if at == now {
            return (limit, year);
        }
    }
    let limit = now.naive_utc() + chrono::Duration::hours(24 + 14);
    let year = chrono::Datelike::year(&now);
    HORIZON.with(|c| c.set(Some((now, limit, year))));
    (limit, year)
}

thread_local! {
    static HORIZON: std::cell::Cell<Option<(Timestamp, NaiveDateTime, i32)>> = const { std::cell::Cell::new(None) };
    /// The last year-less minute read on this thread (month, day, hour and minute a
    /// byte each), the instant of its second 0, and the `now` and zone it was read at.
    static MINUTE: std::cell::Cell<Option<(u32, NaiveDateTime, Timestamp, LogTz)>> = const { std::cell::Cell::new(None) };
    /// The last (zone, wall-clock hour, offset) resolved on this thread.
    static OFFSETS: std::cell::Cell<Option<(LogTz, i64, i32)>> = const { std::cell::Cell::new(None) };
}

/// A filter's `datepattern`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatePattern {
    /// The lines carry no timestamp: every line is all message, at the time read.
    None,
    /// Seconds since the epoch (with optional fraction) at the start of the line.
    Epoch,
    /// A chrono `strftime` format matched at the start of the line (optionally in `[]`).
    Format(String),
}

impl DatePattern {
    /// Parses `none`, `epoch`, or a strftime format, rejecting a malformed one.
    pub fn parse(s: &str) -> Result<DatePattern, String> {
        match s.trim() {
            "none" | "{NONE}" => Ok(DatePattern::None),
            "epoch" | "{EPOCH}" => Ok(DatePattern::Epoch),
            "" => Err("empty datepattern".into()),
            fmt => {
                use chrono::format::{Item, StrftimeItems};
                if StrftimeItems::new(fmt).any(|i| matches!(i, Item::Error)) {
                    return Err(format!("invalid datepattern `{fmt}`: use strftime fields like %Y-%m-%d %H:%M:%S, or none, or epoch"));
                }
                if !fmt.contains("%H") && !fmt.contains("%T") && !fmt.contains("%s") {
                    return Err(format!("datepattern `{fmt}` has no time of day (%H or %T)"));
                }
                Ok(DatePattern::Format(fmt.to_string()))
            }
        }
    }
}

/// Splits lines for one (filter, jail) pair: the filter's `datepattern` and the jail's
/// `logtimezone`. The default detects the format itself and reads local time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Framer {
    pub tz: LogTz,
    pub pattern: Option<DatePattern>,
}

/// Splits `line` with automatic detection and local time.
pub fn split_line(line: &[u8], now: Timestamp) -> Framed<'_> {
    Framer::default().split(line, now)
}

impl Framer {
    pub fn split<'a>(&self, line: &'a [u8], now: Timestamp) -> Framed<'a> {
        let line = trim_end(line);
        match &self.pattern {
            None => self.detect(line, now),
            Some(DatePattern::None) => Framed {
                time: None,
                message: line,
                process: None,
            },
            Some(DatePattern::Epoch) => match epoch(line) {
                Some((t, end)) => Framed {
                    time: Some(t),
                    message: skip_spaces(&line[end..]),
                    process: None,
                },
                None => Framed {
                    time: None,
                    message: line,
                    process: None,
                },
            },
            Some(DatePattern::Format(fmt)) => self.with_format(line, fmt),
        }
    }

    fn detect<'a>(&self, line: &'a [u8], now: Timestamp) -> Framed<'a> {
        // `[28325:00010-3735542592] stamp ...`: a process/thread id some applications
        // (Lotus Domino with thread ids on) write before their stamp.
        if let Some(rest) = thread_id_prefix(line) {
            let framed = self.detect(rest, now);
            if framed.time.is_some() {
                return framed;
            }
        }
        let mut i = 0;
        // `<PRI>` of a raw syslog message.
        if line.first() == Some(&b'<') {
            if let Some(close) = line.iter().take(5).position(|&b| b == b'>') {
                if close > 1 && line[1..close].iter().all(u8::is_ascii_digit) {
                    i = close + 1;
                }
            }
        }
        // RFC 5424: `1 TIMESTAMP HOST APP PROCID MSGID SD MSG`.
        if line[i..].starts_with(b"1 ") {
            if let Some((t, end)) = self.iso(&line[i + 2..]) {
                let rest = &line[i + 2 + end..];
                return Framed {
                    time: Some(t),
                    message: rfc5424_message(rest),
                    process: rfc5424_process(rest),
                };
            }
        }
        // multilog's TAI64N label: the message follows, with no header.
        if let Some((t, end)) = tai64n(&line[i..]) {
            return Framed {
                time: Some(t),
                message: skip_spaces(&line[i + end..]),
                process: None,
            };
        }
        let bracket = line.get(i) == Some(&b'[');
        let start = i + usize::from(bracket);
        let body = &line[start..];
        let found = self
            .syslog(body, now)
            .map(|(t, n)| (t, n, true))
            // Syslog writes ISO stamps with `T` (rsyslog, journalctl short-iso); a space
            // marks an application's own log, where no syslog header follows.
            .or_else(|| self.iso(body).map(|(t, n)| (t, n, body[10] == b'T')))
            .or_else(|| self.slash_date(body).map(|(t, n)| (t, n, false)))
            .or_else(|| self.dmy(body).map(|(t, n)| (t, n, false)))
            .or_else(|| self.dmy_numeric(body).map(|(t, n)| (t, n, false)))
            .or_else(|| self.ctime(body).map(|(t, n)| (t, n, false)))
            .or_else(|| {
                if bracket {
                    None
                } else {
                    epoch(body).map(|(t, n)| (t, n, false))
                }
            });
        if let Some((time, n, syslog_like)) = found {
            let mut end = start + n;
            if bracket {
                // `[stamp]`, `[stamp]:` or `[stamp] `: anything else is not a stamp.
                if line.get(end) != Some(&b']') {
                    return self.clf_anywhere(line);
                }
                end += 1;
                if line.get(end) == Some(&b':') {
                    end += 1;
                }
            }
            // `stamp: message` (Proxmox Backup Server) loses the colon too.
            if !bracket && line.get(end) == Some(&b':') && line.get(end + 1) == Some(&b' ') {
                end += 1;
            }
            let rest = skip_spaces(&line[end..]);
            let message = if bracket {
                rest
            } else if syslog_like {
                strip_syslog_header(rest)
            } else {
                // An application's own stamp, or a syslog one written with a space
                // (`2022-10-19 05:34:02 +0000 host sshd[1]: `): only the unmistakable
                // `host tag[pid]: ` is a header there.
                strip_pid_header(rest).unwrap_or(rest)
            };
            let header = &rest[..rest.len() - message.len()];
            let message = strip_inner_framing(message);
            return Framed {
                time: Some(time),
                message,
                process: names_process(header).then_some(header),
            };
        }
        self.clf_anywhere(line)
    }

    /// No leading stamp: a CLF stamp anywhere gives the time; the line stays whole.
    fn clf_anywhere<'a>(&self, line: &'a [u8]) -> Framed<'a> {
        let mut from = 0;
        for _ in 0..4 {
            let Some(pos) = line[from..].iter().position(|&b| b == b'[') else {
                break;
            };
            let at = from + pos + 1;
            if let Some(t) = clf(&line[at..]) {
                return Framed {
                    time: Some(t),
                    message: line,
                    process: None,
                };
            }
            from = at;
        }
        // A journal entry exported without its time (`host sshd[42]: message`): the
        // unmistakable header with a pid goes, as after a stamp.
        if let Some(message) = strip_pid_header(line) {
            let header = &line[..line.len() - message.len()];
            return Framed {
                time: None,
                message: strip_inner_framing(message),
                process: Some(header),
            };
        }
        Framed {
            time: None,
            message: line,
            process: None,
        }
    }

    fn with_format<'a>(&self, line: &'a [u8], fmt: &str) -> Framed<'a> {
        let bracket = line.first() == Some(&b'[');
        let start = usize::from(bracket);
        let head = &line[start..line.len().min(start + 96)];
        let text = match std::str::from_utf8(head) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or(""),
        };
        let parsed = DateTime::parse_and_remainder(text, fmt)
            .map(|(t, rest)| (t.with_timezone(&Utc), rest))
            .ok()
            .or_else(|| {
                let (naive, rest) = NaiveDateTime::parse_and_remainder(text, fmt).ok()?;
                Some((self.tz.resolve(naive)?, rest))
            });
        match parsed {
            Some((time, rest)) => {
                let mut end = start + text.len() - rest.len();
                if bracket && line.get(end) == Some(&b']') {
                    end += 1;
                }
                Framed {
                    time: Some(time),
                    message: skip_spaces(&line[end..]),
                    process: None,
                }
            }
            None => Framed {
                time: None,
                message: line,
                process: None,
            },
        }
    }

    /// `Nov 21 08:13:46`, `Nov  1 08:13:46` or `Nov 1 08:13:46`: the year is the
    /// latest that is at most a day in the future.
    fn syslog(&self, b: &[u8], now: Timestamp) -> Option<(Timestamp, usize)> {
        if b.len() < 14 || b[3] != b' ' {
            return None;
        }
        let month = month(&b[..3])?;
        let (day, at) = day_of_month(b, 4)?;
        let (h, m, s, n) = clock(b, at)?;
        if !matches!(b.get(n), None | Some(b' ' | b']')) {
            return None;
        }
        // Lines come many to a minute: the minute's instant is remembered when each of
        // its seconds resolves to it plus the seconds (one year, one offset of whole
        // minutes).
        let minute = (month << 24) | (day << 16) | (h << 8) | m;
        if s < 60 {
            if let Some((k, first, at, tz)) = MINUTE.with(|c| c.get()) {
                if k == minute && at == now && tz == self.tz {
                    let t = chrono::Timelike::with_second(&first, s)?;
                    return Some((Timestamp::from_naive_utc_and_offset(t, Utc), n));
                }
            }
        }
        let t = self.year_less(month, day, h, m, s, now)?;
        if s < 60 {
            let first = self.year_less(month, day, h, m, 0, now);
            let last = self.year_less(month, day, h, m, 59, now);
            if let (Some(first), Some(last)) = (first, last) {
                let secs = |t: Timestamp| (t - first).num_seconds();
                let whole = chrono::Timelike::second(&first) == 0;
                if whole && secs(last) == 59 && secs(t) == i64::from(s) {
                    MINUTE.with(|c| c.set(Some((minute, first.naive_utc(), now, self.tz))));
                }
            }
        }
        Some((t, n))
    }

    /// A year-less wall-clock time: the latest year that does not put it more than a
    /// day ahead of `now` (compared on wall-clock values, with room for any zone).
    fn year_less(
        &self,
        month: u32,
        day: u32,
        h: u32,
        m: u32,
        s: u32,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let (limit, year) = syslog_horizon(now);
        let naive = [year + 1, year, year - 1]
            .into_iter()
            .filter_map(|y| NaiveDate::from_ymd_opt(y, month, day)?.and_hms_opt(h, m, s))
            .find(|t| *t <= limit)?;
        self.tz.resolve(naive)
    }

    /// `2026-11-21T08:13:46[.123][Z|+01:00|+0100| UTC]` (or a space for `T`).
    fn iso(&self, b: &[u8]) -> Option<(Timestamp, usize)> {
        if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
            return None;
        }
        let date = ymd(&b[0..4], &b[5..7], &b[8..10])?;
        self.time_and_zone(b, date, 11)
    }

    /// `2026/11/21 08:13:46` (nginx error log, Go's log package).
    fn slash_date(&self, b: &[u8]) -> Option<(Timestamp, usize)> {
        if b.len() < 19 || b[4] != b'/' || b[7] != b'/' || b[10] != b' ' {
            return None;
        }
        let date = ymd(&b[0..4], &b[5..7], &b[8..10])?;
        self.time_and_zone(b, date, 11)
    }

    /// `21-Nov-2026 08:13:46[.123]` (BIND, Roundcube, PHP).
    fn dmy(&self, b: &[u8]) -> Option<(Timestamp, usize)> {
        if b.len() < 20 || b[2] != b'-' || b[6] != b'-' || b[11] != b' ' {
            return None;
        }
        self.time_and_zone(b, day_month_year(b)?, 12)
    }

    /// `21-11-2026 08:13:46` or `21/11/2026 08:13:46`: day first, as fail2ban reads
    /// it (Lotus Domino and other applications writing the European order).
    fn dmy_numeric(&self, b: &[u8]) -> Option<(Timestamp, usize)> {
        if b.len() < 19 || b[10] != b' ' || !matches!(b[2], b'-' | b'/') || b[5] != b[2] {
            return None;
        }
        let date = NaiveDate::from_ymd_opt(
            digits(&b[6..10])? as i32,
            digits(&b[3..5])?,
            digits(&b[0..2])?,
        )?;
        // Applications pad the time with spaces too (`03-07-2005 23:07:20   SMTP`).
        self.time_and_zone(b, date, 11)
    }

    /// `Sat Nov 21 08:13:46[.123456] 2026` (Apache error log, ctime).
    /// Also `Mon Jun 8 12:08:53 2020` (vsftpd: one space before a one-digit day).
    fn ctime(&self, b: &[u8]) -> Option<(Timestamp, usize)> {
        if b.len() < 23 || b[3] != b' ' || b[7] != b' ' {
            return None;
        }
        let mon = month(&b[4..7])?;
        let (day, at) = day_of_month(b, 8)?;
        let (h, m, s, n) = clock(b, at)?;
        let nanos = fraction(b, n);
        if b.get(nanos.1) != Some(&b' ') {
            return None;
        }
        let y = nanos.1 + 1;
        let year = digits(b.get(y..y + 4)?)? as i32;
        let naive = NaiveDate::from_ymd_opt(year, mon, day)?.and_hms_nano_opt(h, m, s, nanos.0)?;
        Some((self.tz.resolve(naive)?, y + 4))
    }

    /// `HH:MM:SS[.frac][zone]` at `at`, on `date`.
    fn time_and_zone(&self, b: &[u8], date: NaiveDate, at: usize) -> Option<(Timestamp, usize)> {
        let (h, m, s, n) = clock(b, at)?;
        let (nanos, mut i) = fraction(b, n);
        let naive = date.and_hms_nano_opt(h, m, s, nanos)?;
        let explicit = match b.get(i) {
            Some(b'Z') => {
                i += 1;
                Some(0)
            }
            Some(b'+' | b'-') => {
                let (secs, used) = offset(&b[i..])?;
                i += used;
                Some(secs)
            }
            // ` UTC`, ` GMT`, or a full ` +0100` / ` +01:00` after a space.
            Some(b' ') => {
                let after = &b[i + 1..];
                let zone = if after.starts_with(b"UTC") || after.starts_with(b"GMT") {
                    Some((0, 3))
                } else {
                    offset(after).filter(|(_, used)| *used >= 5)
                };
                zone.map(|(secs, used)| {
                    i += used + 1;
                    secs
                })
            }
            _ => None,
        };
        let time = match explicit {
            Some(secs) => naive.and_utc() - chrono::Duration::seconds(i64::from(secs)),
            None => self.tz.resolve(naive)?,
        };
        // The stamp must end at a boundary, not run into a word.
        match b.get(i) {
            None | Some(b' ' | b']' | b'|' | b',' | b'\t' | b':') => Some((time, i)),
            _ => None,
        }
    }
}

/// The day of a month at `at`: `21 `, ` 1 ` (padded) or `1 `; with where the clock
/// starts.
fn day_of_month(b: &[u8], at: usize) -> Option<(u32, usize)> {
    let (digits_at, len) = match (b.get(at)?, b.get(at + 1)?) {
        (b' ', _) => (at + 1, 1),
        (_, b' ') => (at, 1),
        _ => (at, 2),
    };
    let day = digits(b.get(digits_at..digits_at + len)?)?;
    (b.get(digits_at + len) == Some(&b' ') && (1..=31).contains(&day))
        .then_some((day, digits_at + len + 1))
}

/// The line without its line end and trailing blanks (which no message ends with
/// on purpose, and regexes anchored with `$` would trip over).
fn trim_end(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r' | b' ' | b'\t'] = line {
        line = rest;
    }
    line
}

fn skip_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    b
}

#[cfg(test)]
mod tests;
