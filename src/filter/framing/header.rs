//! What stands between a stamp and the message: syslog headers (`host tag[pid]: `,
//! with a `facility.severity`, or a bracketed tag), RFC 5424's fields, what some
//! services put before their message (Solaris' `[ID n ...]`, a second stamp), a
//! thread id before a stamp, and the process a header names.

use super::skip_spaces;
use super::stamp::{clock, day_month_year, digits, fraction};

/// What follows a leading `[hex:hex-hex] `, an id made of hex digits, `:` and `-`
/// with at least one separator.
pub(super) fn thread_id_prefix(line: &[u8]) -> Option<&[u8]> {
    if line.first() != Some(&b'[') {
        return None;
    }
    let close = line.iter().take(48).position(|&b| b == b']')?;
    let id = line.get(1..close)?;
    let ok = id.len() >= 3
        && id
            .iter()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'-'))
        && id.iter().any(|b| matches!(b, b':' | b'-'));
    (ok && line.get(close + 1) == Some(&b' ')).then(|| skip_spaces(&line[close + 1..]))
}

/// A header names a process when its tag carries a pid: `sshd[42]`.
pub(super) fn names_process(header: &[u8]) -> bool {
    header
        .windows(2)
        .any(|w| w[0] == b'[' && w[1].is_ascii_digit())
}

/// `HOST APP PROCID` after an RFC 5424 timestamp, when PROCID is given.
pub(super) fn rfc5424_process(rest: &[u8]) -> Option<&[u8]> {
    let rest = skip_spaces(rest);
    let mut end = 0;
    for field in 0..3 {
        let len = rest[end..].iter().position(|&b| b == b' ')?;
        if field == 2 && &rest[end..end + len] == b"-" {
            return None;
        }
        end += len + 1;
    }
    Some(&rest[..end])
}

/// After an RFC 5424 timestamp: skip HOST APP PROCID MSGID and the structured data.
pub(super) fn rfc5424_message(mut rest: &[u8]) -> &[u8] {
    rest = skip_spaces(rest);
    for _ in 0..4 {
        match rest.iter().position(|&b| b == b' ') {
            Some(p) => rest = &rest[p + 1..],
            None => return &[],
        }
    }
    if rest.first() == Some(&b'-') {
        rest = &rest[1..];
    } else {
        // One or more `[id k="v" ...]` elements; `\]` escapes inside values.
        while rest.first() == Some(&b'[') {
            // A `]` inside a quoted value ends nothing, escaped or not (some senders
            // do not escape it).
            let mut i = 1;
            let mut quoted = false;
            while i < rest.len() && (quoted || rest[i] != b']') {
                match rest[i] {
                    b'\\' => i += 1,
                    b'"' => quoted = !quoted,
                    _ => {}
                }
                i += 1;
            }
            rest = rest.get(i + 1..).unwrap_or(&[]);
        }
    }
    let rest = skip_spaces(rest);
    rest.strip_prefix("\u{feff}".as_bytes()).unwrap_or(rest)
}

/// `host tag[pid]: message` (with an optional `facility.severity` after the host)
/// -> `message`; `None` for anything else.
pub(super) fn strip_pid_header(rest: &[u8]) -> Option<&[u8]> {
    let host_end = rest.iter().position(|&b| b == b' ')?;
    if host_end == 0 || rest[0] == b'[' {
        return None;
    }
    let after = skip_priority(&rest[host_end + 1..]);
    let open = after
        .iter()
        .position(|&b| b == b'[' || b == b' ' || b == b':')?;
    if open == 0 || after[open] != b'[' {
        return None;
    }
    tag(after)
}

/// Skips `auth.info ` (a facility.severity field some syslog daemons write after the
/// host, and Solaris inside `[ID n ...]`).
pub(super) fn skip_priority(s: &[u8]) -> &[u8] {
    const FACILITIES: [&[u8]; 19] = [
        b"kern",
        b"user",
        b"mail",
        b"daemon",
        b"auth",
        b"syslog",
        b"lpr",
        b"news",
        b"uucp",
        b"cron",
        b"authpriv",
        b"ftp",
        b"local0",
        b"local1",
        b"local2",
        b"local3",
        b"local4",
        b"local5",
        b"local6",
    ];
    const SEVERITIES: [&[u8]; 10] = [
        b"emerg", b"alert", b"crit", b"err", b"error", b"warn", b"warning", b"notice", b"info",
        b"debug",
    ];
    let Some(end) = s.iter().position(|&b| b == b' ') else {
        return s;
    };
    let Some(dot) = s[..end].iter().position(|&b| b == b'.') else {
        return s;
    };
    let (facility, severity) = (&s[..dot], &s[dot + 1..end]);
    if (FACILITIES.contains(&facility) || facility == b"local7") && SEVERITIES.contains(&severity) {
        &s[end + 1..]
    } else {
        s
    }
}

/// What some services put at the start of the message itself: Solaris' `[ID 800047
/// auth.info] `, or an application's own second stamp (BIND's `19-Oct-2022
/// 05:34:02.425 `). The syslog stamp before it already gave the time.
pub(super) fn strip_inner_framing(message: &[u8]) -> &[u8] {
    if let Some(rest) = message.strip_prefix(b"[ID ") {
        if let Some(close) = rest.iter().position(|&b| b == b']') {
            let inside = &rest[..close];
            let num_end = inside
                .iter()
                .position(|&b| b == b' ')
                .unwrap_or(inside.len());
            if num_end > 0 && inside[..num_end].iter().all(u8::is_ascii_digit) {
                return skip_spaces(&rest[close + 1..]);
            }
        }
    }
    // `dd-Mon-yyyy HH:MM:SS[.fff] `, checked by shape only (the time is known).
    if message.len() > 21
        && message[2] == b'-'
        && message[6] == b'-'
        && message[11] == b' '
        && day_month_year(message).is_some()
        && clock(message, 12).is_some()
    {
        let (_, end) = fraction(message, 20);
        if message.get(end) == Some(&b' ') {
            return skip_spaces(&message[end..]);
        }
    }
    message
}

/// Removes `host tag[pid]: ` or `host tag: ` when the message starts with one.
pub(super) fn strip_syslog_header(rest: &[u8]) -> &[u8] {
    let Some(host_end) = rest.iter().position(|&b| b == b' ') else {
        return rest;
    };
    // `[4264] FATAL: ...` is a pid and a severity, not a host and a tag; `[sshd]: ` or
    // `[sshd] ` (no host, the tag in brackets) is a tag.
    if rest.first() == Some(&b'[') {
        return bracketed_tag(rest).unwrap_or(rest);
    }
    if host_end == 0 || rest[..host_end].contains(&b':') && !rest[..host_end].contains(&b'.') {
        // No host field: `sshd[1]: ...` right after the time.
        return tag(rest).unwrap_or(rest);
    }
    tag(skip_priority(&rest[host_end + 1..])).unwrap_or(rest)
}

/// `[tag]: message` or `[tag] message` -> `message`, for a tag that is a name.
pub(super) fn bracketed_tag(s: &[u8]) -> Option<&[u8]> {
    let close = s.iter().take(34).position(|&b| b == b']')?;
    let name = &s[1..close];
    let is_name = name.first().is_some_and(u8::is_ascii_alphabetic)
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !is_name {
        return None;
    }
    let after = &s[close + 1..];
    let after = after.strip_prefix(b":").unwrap_or(after);
    after.starts_with(b" ").then(|| skip_spaces(after))
}

/// `tag[pid]: message` or `tag: message` -> `message`.
pub(super) fn tag(s: &[u8]) -> Option<&[u8]> {
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
