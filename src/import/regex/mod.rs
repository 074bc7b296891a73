//! One fail2ban regex (Python `re`, after interpolation) to gaoler's dialect (Rust
//! `regex` with `<HOST>`, and look-around or backreferences where fail2ban uses them,
//! which gaoler runs on its backtracking engine): fail2ban's tags become groups or
//! `<HOST>`, and Python-only syntax is rewritten where an equivalent exists. What has
//! none is refused with the reason, which the report and the written filter show.

mod dates;
mod text;

use dates::date_ambits;
pub use dates::line_start;
use text::{group_open_len, matching_paren, split_alternatives, utf8_len};

/// What a fail2ban regex's multi-line tags say about its line (gaoler's session
/// roles): `<F-MLFGAINED>` a success, `<F-NOFAIL>` with `<F-MLFFORGET>` the end of
/// the session, `<F-NOFAIL>` alone only its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tagged {
    Fail,
    Success,
    End,
    Note,
}

/// The session role fail2ban's tags in `source` give its line.
pub fn tagged(source: &str) -> Tagged {
    let forget = source.contains("<F-MLFFORGET>") || source.contains("<F-MLFFFORGET>");
    if source.contains("<F-MLFGAINED>") {
        Tagged::Success
    } else if source.contains("<F-NOFAIL>") && forget {
        Tagged::End
    } else if source.contains("<F-NOFAIL>") {
        Tagged::Note
    } else {
        Tagged::Fail
    }
}

/// Whether a fail2ban regex ties lines into sessions (multi-line).
pub fn is_multiline(source: &str) -> bool {
    [
        "<F-MLFID>",
        "<F-NOFAIL>",
        "<F-MLFGAINED>",
        "<F-MLFFORGET>",
        "<F-MLFFFORGET>",
    ]
    .iter()
    .any(|t| source.contains(t))
}

/// Translates the failregex `source`; `Err` says why it cannot be. Without
/// `sessions` it must capture an address.
pub fn translate(source: &str, sessions: bool) -> Result<String, String> {
    let s = translate_any(source)?;
    if !sessions && !s.contains("<HOST>") {
        return Err("has no <HOST> (fail2ban takes the address from another line of the same session: multi-line)".into());
    }
    Ok(s)
}

/// Translates any fail2ban regex (failregex, ignoreregex, prefregex).
pub fn translate_any(source: &str) -> Result<String, String> {
    let mut s = source.trim().to_string();
    for (tag, why) in [
        ("<SKIPLINES>", "spans several lines (<SKIPLINES>)"),
        (
            "<DNS>",
            "matches host names (<DNS>): gaoler never resolves names",
        ),
        ("<CIDR>", "matches a network (<CIDR>)"),
        ("<SUBNET>", "matches a network (<SUBNET>)"),
    ] {
        if s.contains(tag) {
            return Err(why.into());
        }
    }
    if matches_newline(&s) {
        return Err("spans several lines (\\n)".into());
    }
    // Python groups named like gaoler's placeholders (`(?P<USER>...)`, then
    // `(?P=USER)`) are renamed, so the placeholders stay gaoler's.
    for name in ["HOST", "ADDR", "USER", "XFF"] {
        s = s
            .replace(&format!("(?P<{name}>"), &format!("(?P<f2b_{name}>"))
            .replace(&format!("(?P={name})"), &format!("(?P=f2b_{name})"));
    }
    // Address tags: gaoler's <HOST> is one IPv4 or IPv6 address.
    for tag in ["<ADDR>", "<IP4>", "<IP6>"] {
        s = s.replace(tag, "<HOST>");
    }
    s = field_tags(&s)?;
    let s = python_syntax(&s)?;
    let s = merge_host_alternatives(&s);
    Ok(global_flags_first(&host_port(&date_ambits(&s))))
}

/// A group whose alternatives each hold the address (`(?:IPv6:<IP6>|<IP4>)`): gaoler
/// captures only a regex's first `<HOST>`, so the address is taken out of the
/// alternatives, `(?:IPv6:|)<HOST>(?:|)`: what stands before and after it are the
/// alternatives now.
fn merge_host_alternatives(s: &str) -> String {
    let b = s.as_bytes();
    let (mut i, mut in_class) = (0, false);
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'(' if !in_class => {
                if let Some(close) = matching_paren(s, i) {
                    let atom = &s[i..=close];
                    let open = group_open_len(atom);
                    let alts = split_alternatives(&atom[open..atom.len() - 1]);
                    let split: Vec<_> = alts.iter().filter_map(|a| split_at_top_host(a)).collect();
                    let look = atom.starts_with("(?=")
                        || atom.starts_with("(?!")
                        || atom.starts_with("(?<");
                    if alts.len() > 1 && split.len() == alts.len() && !look {
                        let before: Vec<&str> = split.iter().map(|(p, _)| *p).collect();
                        let after: Vec<&str> = split.iter().map(|(_, a)| *a).collect();
                        let merged = format!(
                            "{}(?:{})<HOST>(?:{}))",
                            &atom[..open],
                            before.join("|"),
                            after.join("|")
                        );
                        return merge_host_alternatives(&format!(
                            "{}{merged}{}",
                            &s[..i],
                            &s[close + 1..]
                        ));
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    s.to_string()
}

/// An alternative holding `<HOST>` once, outside any group: what stands around it.
fn split_at_top_host(alt: &str) -> Option<(&str, &str)> {
    let at = alt.find("<HOST>")?;
    if alt[at + 6..].contains("<HOST>") {
        return None;
    }
    let before = &alt[..at];
    let (mut depth, mut i, mut in_class) = (0i32, 0, false);
    let b = before.as_bytes();
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'(' if !in_class => depth += 1,
            b')' if !in_class => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    (depth == 0 && !in_class).then(|| (before, &alt[at + 6..]))
}

/// fail2ban's address ends where the address does: a regex ending right after it
/// (or a `\b` there) leaves a `:port` behind unread. gaoler's `<HOST>` must be
/// followed by what ends the address, so the port is read as optional.
fn host_port(s: &str) -> String {
    let mut out = s.to_string();
    for tail in ["", r"\b"] {
        let end = format!("<HOST>{tail}");
        if out.ends_with(&end) && !out.ends_with(&format!("\\{end}")) {
            out.truncate(out.len() - tail.len());
            out.push_str(r"(?::\d+)?");
            out.push_str(tail);
        }
    }
    out
}

/// Python applies an inline global flag (`(?i)`) to the whole regex wherever it
/// stands; Rust from where it stands to the end of its group. Moved to the front.
fn global_flags_first(s: &str) -> String {
    let b = s.as_bytes();
    let mut flags = String::new();
    let mut out = String::with_capacity(s.len());
    let (mut i, mut in_class) = (0, false);
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            let n = 1 + utf8_len(b.get(i + 1).copied().unwrap_or(b'\\'));
            out.push_str(&s[i..(i + n).min(s.len())]);
            i += n;
            continue;
        }
        if in_class {
            in_class = c != b']';
        } else if c == b'[' {
            in_class = true;
            // a leading `]` or `^]` is no end of the class
            let lead = ["^]", "]"].iter().find(|l| s[i + 1..].starts_with(**l));
            if let Some(l) = lead {
                out.push('[');
                out.push_str(l);
                i += 1 + l.len();
                continue;
            }
        } else if c == b'(' && i > 0 {
            let rest = &s[i..];
            if let Some(end) = rest.find(')') {
                let inner = &rest[2..end];
                if rest.starts_with("(?")
                    && !inner.is_empty()
                    && inner
                        .bytes()
                        .all(|f| matches!(f, b'i' | b's' | b'u' | b'x' | b'm'))
                {
                    for f in inner.chars().filter(|f| matches!(f, 'i' | 's' | 'x' | 'm')) {
                        if !flags.contains(f) {
                            flags.push(f);
                        }
                    }
                    i += end + 1;
                    continue;
                }
            }
        }
        let n = utf8_len(c);
        out.push_str(&s[i..i + n]);
        i += n;
    }
    if flags.is_empty() {
        out
    } else {
        format!("(?{flags}){out}")
    }
}

/// `<F-USER>x</F-USER>` becomes `(?P<user>x)` (the first one; Rust forbids two groups
/// of one name), `<F-CONTENT>` the prefregex's `content` group, every other `<F-...>`
/// a plain group, and a self-closing field (`<F-PORT/>`) a word.
fn field_tags(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let (mut user, mut alt_user) = (false, false);
    while let Some(at) = [rest.find("<F-"), rest.find("</F-")]
        .into_iter()
        .flatten()
        .min()
    {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let Some(end) = tail.find('>') else {
            return Err("has an unclosed <F-...> tag".into());
        };
        let tag = &tail[..=end];
        if tag.starts_with("</") {
            out.push(')');
        } else if tag.ends_with("/>") {
            out.push_str("(?:\\w+)");
        } else {
            let name = &tag[3..tag.len() - 1];
            match name {
                "USER" if !user => {
                    user = true;
                    out.push_str("(?P<user>");
                }
                "ALT_USER" if !alt_user => {
                    alt_user = true;
                    out.push_str("(?P<alt_user>");
                }
                "CONTENT" => out.push_str("(?P<content>"),
                _ => out.push_str("(?:"),
            }
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Python `re` syntax Rust's `regex` lacks, rewritten or refused.
fn python_syntax(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut in_class = false;
    while i < bytes.len() {
        let c = bytes[i];
        let rest = &s[i..];
        if c == b'\\' {
            let next = bytes.get(i + 1).copied().unwrap_or(b'\\');
            match next {
                b'Z' if !in_class => out.push_str("\\z"),
                _ => out.push_str(&s[i..i + 1 + utf8_len(next)]),
            }
            i += 1 + utf8_len(next);
            continue;
        }
        if in_class {
            // Inside a class Python takes `[`, `&&`, `~~` and `--` literally; Rust
            // reads nested classes and set operations there.
            if c == b'[' || c == b'&' || c == b'~' || (c == b'-' && bytes.get(i + 1) == Some(&b'-'))
            {
                out.push('\\');
            }
            if c == b']' {
                in_class = false;
            }
            out.push_str(&rest[..utf8_len(c)]);
            i += utf8_len(c);
            continue;
        }
        if c == b'[' {
            in_class = true;
            out.push('[');
            i += 1;
            // `[]...]` and `[^]...]`: a leading `]` is a literal.
            for lead in ["^]", "]", "^"] {
                if s[i..].starts_with(lead) {
                    out.push_str(&lead.replace(']', "\\]"));
                    i += lead.len();
                    break;
                }
            }
            continue;
        }
        if rest.starts_with("(?#") {
            // A comment group: dropped.
            match rest.find(')') {
                Some(end) => {
                    i += end + 1;
                    continue;
                }
                None => return Err("has an unclosed (?#...) comment".into()),
            }
        }
        if rest.starts_with("(?=") || rest.starts_with("(?<=") {
            // A lookahead at the very end, or a lookbehind at the very start of an
            // unanchored regex, decides the same lines when it consumes its text.
            let open = if rest.starts_with("(?=") { 3 } else { 4 };
            let close = matching_paren(s, i).ok_or("has an unbalanced group")?;
            let at_end =
                s[close + 1..].trim_end_matches('$').is_empty() && !s[close + 1..].contains('$');
            let at_start = i == 0;
            if (open == 3 && at_end) || (open == 4 && at_start) {
                out.push_str("(?:");
                out.push_str(&python_syntax(&s[i + open..close])?);
                out.push(')');
                i = close + 1;
                continue;
            }
            // Elsewhere it stays look-around: the backtracking engine runs it.
        }
        if c == b'{' {
            if rest.starts_with("{,") {
                out.push_str("{0,");
                i += 2;
                continue;
            }
            // Python reads a `{` that starts no repetition as a literal.
            let counted = rest[1..].split_once('}').is_some_and(|(n, _)| {
                !n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == ',')
            });
            if !counted {
                out.push_str("\\{");
                i += 1;
                continue;
            }
        }
        out.push_str(&rest[..utf8_len(c)]);
        i += utf8_len(c);
    }
    Ok(out)
}

/// A `\n` escape (a newline), not an escaped backslash before an `n`.
fn matches_newline(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\\' {
            if b[i + 1] == b'n' {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// A fail2ban `datepattern` as gaoler's: `Ok(None)` means gaoler finds the time
/// itself; `Err` says why the pattern was left out (gaoler then detects it too).
pub fn datepattern(source: &str) -> Result<Option<String>, String> {
    let s = source.trim();
    if s.contains('\n') {
        // One format of its own beside fail2ban's default detection: gaoler reads
        // that format (its own detection knows the usual ones, not this one).
        let own: Vec<_> = s
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(datepattern)
            .collect();
        return match own.as_slice() {
            [Ok(Some(p)), rest @ ..] | [rest @ .., Ok(Some(p))]
                if rest.iter().all(|r| matches!(r, Ok(None))) =>
            {
                Ok(Some(p.clone()))
            }
            _ => Err("several date patterns: gaoler detects the format itself".into()),
        };
    }
    match s {
        "" | "{^LN-BEG}" | "{DATE}" | "^{DATE}" | "{^LN-BEG}{DATE}" => return Ok(None),
        "{NONE}" => return Ok(Some("none".into())),
        "{EPOCH}" | "EPOCH" | "^EPOCH" | "{^LN-BEG}EPOCH" => return Ok(Some("epoch".into())),
        _ => {}
    }
    let anchored = s.starts_with('^') || s.starts_with("{^LN-BEG}");
    let body = s
        .trim_start_matches("{^LN-BEG}")
        .trim_start_matches('^')
        .replace("%Ex", "%")
        .replace("%%", "%");
    if !anchored {
        return Err(format!(
            "`{s}` is searched anywhere in the line: gaoler detects the time itself"
        ));
    }
    // An escaped punctuation mark (`\[`) is that mark.
    let body = unescape_punctuation(&body);
    // gaoler reads a stamp in brackets with the format of what stands inside.
    let body = match body.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
        Some(inner) => inner.to_string(),
        None => body,
    };
    if body.contains(['\\', '(', '{', '|', '*', '+', '?']) {
        return Err(format!("`{s}` is a regex: gaoler detects the time itself"));
    }
    crate::filter::DatePattern::parse(&body)
        .map(|_| Some(body.clone()))
        .map_err(|e| format!("{e}: gaoler detects the time itself"))
}

/// `\[` as `[`, and so for every escaped ASCII punctuation mark; other escapes stay.
fn unescape_punctuation(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match chars.peek() {
            Some(&n) if c == '\\' && n.is_ascii_punctuation() && n != '\\' => {
                out.push(n);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
