//! Splits a raw log line into its timestamp and the message filters see: a leading
//! timestamp (syslog `Nov 21 08:13:46`, RFC 3339 / ISO 8601) and then a syslog header
//! (`host tag[pid]: `) are removed. Pure: `now` is passed in to infer a missing year.

use chrono::{Datelike, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};

use crate::types::Timestamp;

/// A line split into when it happened (if it says) and what it says.
#[derive(Debug, PartialEq, Eq)]
pub struct Framed<'a> {
    pub time: Option<Timestamp>,
    pub message: &'a [u8],
}

/// Splits `line` into timestamp and message. A line with no recognised timestamp is
/// all message; a timestamp with no syslog header leaves the rest as the message.
pub fn split_line(line: &[u8], now: Timestamp) -> Framed<'_> {
    let line = trim_end(line);
    let parsed = syslog_time(line, now).or_else(|| iso_time(line));
    match parsed {
        Some((time, rest)) => Framed {
            time: Some(time),
            message: strip_syslog_header(rest),
        },
        None => Framed {
            time: None,
            message: line,
        },
    }
}

fn trim_end(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = line {
        line = rest;
    }
    line
}

fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')),
    )
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `Nov 21 08:13:46 rest` / `Nov  1 08:13:46 rest`; the year is the latest one that
/// does not put the line more than a day in the future.
fn syslog_time(line: &[u8], now: Timestamp) -> Option<(Timestamp, &[u8])> {
    if line.len() < 16 || line[3] != b' ' || line[6] != b' ' || line[15] != b' ' {
        return None;
    }
    let month = MONTHS.iter().position(|m| &line[..3] == *m)? as u32 + 1;
    let day_field = if line[4] == b' ' {
        &line[5..6]
    } else {
        &line[4..6]
    };
    let day = digits(day_field)?;
    let (h, m, s) = clock(&line[7..15])?;
    let this_year = now.with_timezone(&Local).year();
    let limit = now + chrono::Duration::days(1);
    [this_year, this_year - 1]
        .into_iter()
        .filter_map(|y| local(NaiveDate::from_ymd_opt(y, month, day)?.and_hms_opt(h, m, s)?))
        .find(|t| *t <= limit)
        .map(|t| (t, &line[16..]))
}

fn clock(b: &[u8]) -> Option<(u32, u32, u32)> {
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    Some((digits(&b[0..2])?, digits(&b[3..5])?, digits(&b[6..8])?))
}

fn local(naive: NaiveDateTime) -> Option<Timestamp> {
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// `2026-11-21T08:13:46[.123456][Z|+01:00|+0100] rest` (also with a space for `T`).
fn iso_time(line: &[u8]) -> Option<(Timestamp, &[u8])> {
    if line.len() < 20 || line[4] != b'-' || line[7] != b'-' || !matches!(line[10], b'T' | b' ') {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        digits(&line[0..4])? as i32,
        digits(&line[5..7])?,
        digits(&line[8..10])?,
    )?;
    let (h, m, s) = clock(&line[11..19])?;
    let mut i = 19;
    let mut nanos = 0u32;
    if line.get(i) == Some(&b'.') || line.get(i) == Some(&b',') {
        let start = i + 1;
        let mut end = start;
        while end < line.len() && line[end].is_ascii_digit() {
            end += 1;
        }
        let frac = &line[start..end.min(start + 9)];
        nanos = digits(frac)? * 10u32.pow(9 - frac.len() as u32);
        i = end;
    }
    let naive = date.and_hms_nano_opt(h, m, s, nanos)?;
    let (time, after) = match line.get(i) {
        Some(b'Z') => (naive.and_utc(), i + 1),
        Some(sign @ (b'+' | b'-')) => {
            let tz = &line[i + 1..];
            let (oh, om, used) = if tz.len() >= 5 && tz[2] == b':' {
                (digits(&tz[0..2])?, digits(&tz[3..5])?, 5)
            } else if tz.len() >= 4 {
                (digits(&tz[0..2])?, digits(&tz[2..4])?, 4)
            } else {
                return None;
            };
            let offset = (oh * 3600 + om * 60) as i64;
            let offset = if *sign == b'+' { offset } else { -offset };
            let utc = naive.and_utc() - chrono::Duration::seconds(offset);
            (utc, i + 1 + used)
        }
        _ => (local(naive)?, i),
    };
    match line.get(after) {
        Some(b' ') => Some((time, &line[after + 1..])),
        None => Some((time, &line[after..])),
        _ => None,
    }
}

/// Removes `host tag[pid]: ` or `host tag: ` when the message starts with one.
fn strip_syslog_header(rest: &[u8]) -> &[u8] {
    let Some(host_end) = rest.iter().position(|&b| b == b' ') else {
        return rest;
    };
    if host_end == 0 || rest[..host_end].contains(&b':') && !rest[..host_end].contains(&b'.') {
        // Not a host name: `sshd[1]: ...` right after the time (no host field).
        return tag(rest).unwrap_or(rest);
    }
    tag(&rest[host_end + 1..]).unwrap_or(rest)
}

/// `tag[pid]: message` or `tag: message` -> `message`.
fn tag(s: &[u8]) -> Option<&[u8]> {
    let end = s
        .iter()
        .position(|&b| b == b':' || b == b'[' || b == b' ')?;
    if end == 0 {
        return None;
    }
    let mut i = end;
    if s[i] == b'[' {
        let close = s[i..].iter().position(|&b| b == b']')? + i;
        digits(&s[i + 1..close])?;
        i = close + 1;
    }
    if s.get(i) == Some(&b':') && s.get(i + 1) == Some(&b' ') {
        Some(&s[i + 2..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn syslog_line_loses_time_and_header() {
        let line = b"Nov 21 08:13:46 srv sshd[1234]: Failed password for root from 192.0.2.7 port 22 ssh2\n";
        let framed = split_line(line, now());
        assert_eq!(
            framed.message,
            b"Failed password for root from 192.0.2.7 port 22 ssh2"
        );
        let expected = local(
            NaiveDate::from_ymd_opt(2026, 11, 21)
                .and_then(|d| d.and_hms_opt(8, 13, 46))
                .expect("date"),
        );
        assert_eq!(framed.time, expected);
    }

    #[test]
    fn syslog_year_is_never_in_the_future() {
        // A December line read in November is from last year.
        let framed = split_line(b"Dec 24 10:00:00 srv cron[1]: x", now());
        let t = framed.time.expect("time").with_timezone(&Local);
        assert_eq!(t.year(), 2025);
        // Single-digit days are space padded.
        let framed = split_line(b"Nov  1 10:00:00 srv cron[1]: x", now());
        assert_eq!(framed.time.expect("time").with_timezone(&Local).day(), 1);
        assert_eq!(framed.message, b"x");
    }

    #[test]
    fn rfc3339_with_fraction_and_offset() {
        let framed = split_line(
            b"2026-11-21T09:13:46.250000+01:00 srv sshd[9]: Invalid user x from 192.0.2.7 port 4",
            now(),
        );
        let expected = Utc
            .with_ymd_and_hms(2026, 11, 21, 8, 13, 46)
            .single()
            .expect("time")
            + chrono::Duration::milliseconds(250);
        assert_eq!(framed.time, Some(expected));
        assert_eq!(framed.message, b"Invalid user x from 192.0.2.7 port 4");
        let z = split_line(b"2026-11-21T08:13:46Z srv app: hello", now());
        assert_eq!(z.message, b"hello");
    }

    #[test]
    fn lines_without_timestamp_are_all_message() {
        let line = b"192.0.2.7 - - [21/Nov/2026:08:13:46 +0000] \"GET / HTTP/1.1\" 401 0";
        let framed = split_line(line, now());
        assert_eq!(framed.time, None);
        assert_eq!(framed.message, &line[..]);
    }

    #[test]
    fn header_without_pid_and_message_without_header() {
        assert_eq!(
            split_line(b"Nov 21 08:13:46 srv kernel: oops", now()).message,
            b"oops"
        );
        assert_eq!(
            split_line(b"Nov 21 08:13:46 just some text", now()).message,
            b"just some text"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for line in [
            &b""[..],
            b"Nov",
            b"Nov 99 99:99:99 x",
            b"2026-13-45T25:61:61Z x",
            b"2026-11-21T08:13:46.",
            b"2026-11-21T08:13:46+1",
            b"\xff\xfe\x00 garbage",
            b"Nov 21 08:13:46 h t[: x",
        ] {
            let _ = split_line(line, now());
        }
    }
}
