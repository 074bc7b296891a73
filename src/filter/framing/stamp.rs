//! The pieces of a timestamp, read from bytes: numeric fields, month names, clock
//! times with fractions, UTC offsets, and the stamps that stand alone (CLF's
//! bracket, epoch seconds). Each returns what it read and where it stopped.

use chrono::{DateTime, NaiveDate};

use crate::types::Timestamp;

/// `[+-]HH:MM`, `[+-]HHMM` or `[+-]HH` -> (seconds east, bytes used).
pub(super) fn offset(b: &[u8]) -> Option<(i32, usize)> {
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hh = digits(b.get(1..3)?)? as i32;
    let (mm, used) = if b.get(3) == Some(&b':') {
        (digits(b.get(4..6)?)? as i32, 6)
    } else if let Some(mm) = b.get(3..5).and_then(digits) {
        (mm as i32, 5)
    } else {
        (0, 3)
    };
    (hh <= 14 && mm < 60).then_some((sign * (hh * 3600 + mm * 60), used))
}

/// `21/Nov/2026:08:13:46 +0000]` (after the `[`).
pub(super) fn clf(b: &[u8]) -> Option<Timestamp> {
    if b.len() < 26
        || b[2] != b'/'
        || b[6] != b'/'
        || b[11] != b':'
        || b[20] != b' '
        || b[26..].first() != Some(&b']')
    {
        return None;
    }
    let date = day_month_year(b)?;
    let (h, m, s, _) = clock(b, 12)?;
    let (secs, used) = offset(&b[21..])?;
    if used != 5 {
        return None;
    }
    Some(date.and_hms_opt(h, m, s)?.and_utc() - chrono::Duration::seconds(i64::from(secs)))
}

/// `1763712826[.123] ` at the start: seconds since the epoch, between 2001 and 2096.
pub(super) fn epoch(b: &[u8]) -> Option<(Timestamp, usize)> {
    let int_end = b
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(b.len());
    if int_end != 10 {
        return None;
    }
    let secs = b[..10]
        .iter()
        .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
    if !(978_307_200..=4_000_000_000).contains(&secs) {
        return None;
    }
    let (nanos, end) = fraction(b, 10);
    if !matches!(b.get(end), None | Some(b' ')) {
        return None;
    }
    let t = DateTime::from_timestamp(secs, nanos)?;
    Some((t, end))
}

/// A TAI64N label (`@4000000068a1b2c30a1b2c3d`, daemontools' multilog and s6):
/// `@`, 16 hex digits of TAI seconds from 2^62, 8 of nanoseconds. TAI runs 10 s
/// ahead of UTC at the epoch of the label, which is what `tai64nlocal` subtracts.
pub(super) fn tai64n(b: &[u8]) -> Option<(Timestamp, usize)> {
    let hex = b.get(1..25).filter(|_| b.first() == Some(&b'@'))?;
    if !hex.iter().all(u8::is_ascii_hexdigit) || !matches!(b.get(25), None | Some(b' ')) {
        return None;
    }
    let text = std::str::from_utf8(hex).ok()?;
    let label = u64::from_str_radix(&text[..16], 16).ok()?;
    let nanos = u32::from_str_radix(&text[16..], 16).ok()?;
    let secs = label.checked_sub((1u64 << 62) + 10)?;
    let t = DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)?;
    Some((t, 25))
}

/// `.123` or `,123` at `at` -> (nanoseconds, index after it).
pub(super) fn fraction(b: &[u8], at: usize) -> (u32, usize) {
    if !matches!(b.get(at), Some(b'.' | b',')) {
        return (0, at);
    }
    let start = at + 1;
    let end = start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    if end == start {
        return (0, at);
    }
    let used = &b[start..end.min(start + 9)];
    let nanos = digits(used).map_or(0, |d| d * 10u32.pow(9 - used.len() as u32));
    (nanos, end)
}

/// `HH:MM:SS` at `at` -> (h, m, s, index after it).
pub(super) fn clock(b: &[u8], at: usize) -> Option<(u32, u32, u32, usize)> {
    let c = b.get(at..at + 8)?;
    if c[2] != b':' || c[5] != b':' {
        return None;
    }
    Some((
        digits(&c[0..2])?,
        digits(&c[3..5])?,
        digits(&c[6..8])?,
        at + 8,
    ))
}

/// `21-Nov-2026` or `21/Nov/2026` at the start of `b` (the separators are checked by
/// the caller).
pub(super) fn day_month_year(b: &[u8]) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(
        digits(b.get(7..11)?)? as i32,
        month(&b[3..6])?,
        digits(&b[0..2])?,
    )
}

pub(super) fn ymd(y: &[u8], m: &[u8], d: &[u8]) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(digits(y)? as i32, digits(m)?, digits(d)?)
}

pub(super) fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 9 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')),
    )
}

pub(super) fn month(b: &[u8]) -> Option<u32> {
    Some(match b {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    })
}
