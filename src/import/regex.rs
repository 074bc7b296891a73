//! One fail2ban regex (Python `re`, after interpolation) to gaoler's dialect (Rust
//! `regex` with `<HOST>`, and look-around or backreferences where fail2ban uses them,
//! which gaoler runs on its backtracking engine): fail2ban's tags become groups or
//! `<HOST>`, and Python-only syntax is rewritten where an equivalent exists. What has
//! none is refused with the reason, which the report and the written filter show.

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

/// What stands where fail2ban removed a date in brackets (`[]`, as common.conf's
/// `__date_ambit` and apache's prefix write it). Past the start of a line the stamp
/// stays in gaoler's text (an access log's `[21/Nov/2026:08:13:46 +0000]`), so it
/// matches one bracketed field; at the start gaoler's framing removes it
/// ([`line_start`]).
pub const DATE_AMBIT: &str = r"\[[^\]]*\]";

/// Every `\[\]` (outside a class) as [`DATE_AMBIT`].
fn date_ambits(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let (mut i, mut in_class) = (0, false);
    while i < b.len() {
        if b[i] == b'\\' {
            if !in_class && s[i..].starts_with(r"\[\]") {
                out.push_str(DATE_AMBIT);
                i += 4;
                continue;
            }
            let n = 1 + utf8_len(b.get(i + 1).copied().unwrap_or(b'\\'));
            out.push_str(&s[i..(i + n).min(s.len())]);
            i += n;
            continue;
        }
        match b[i] {
            b'[' if !in_class => {
                in_class = true;
                out.push('[');
                i += 1;
                if s[i..].starts_with('^') {
                    out.push('^');
                    i += 1;
                }
                if s[i..].starts_with(']') {
                    out.push(']');
                    i += 1;
                }
                continue;
            }
            b']' if in_class => in_class = false,
            _ => {}
        }
        let n = utf8_len(b[i]);
        out.push_str(&s[i..i + n]);
        i += n;
    }
    out
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

/// A regex that meets the start of a line, fitted to what gaoler's framing leaves
/// there: fail2ban removes only a date's text, so its regexes read what stood around
/// it; gaoler removes the stamp with its brackets, its fraction and offset, a `: `
/// after it and the blanks before the message. Where those stood first in the
/// regex (past what can match nothing), a bracketed date ([`DATE_AMBIT`]) is dropped,
/// blanks, a `:` and a zone offset become optional.
pub fn line_start(re: &str) -> String {
    let (out, _) = lenient_alts(re, &mut false);
    out
}

/// [`lenient_seq`] over each top-level alternative of `s`; whether one of them can
/// now match nothing.
fn lenient_alts(s: &str, colon: &mut bool) -> (String, bool) {
    let mut out = String::with_capacity(s.len() + 8);
    let mut empty = false;
    for (n, alt) in split_alternatives(s).into_iter().enumerate() {
        if n > 0 {
            out.push('|');
        }
        let mut c = *colon;
        let (a, e) = lenient_seq(alt, &mut c);
        out.push_str(&a);
        empty |= e;
    }
    (out, empty)
}

fn split_alternatives(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let (mut parts, mut from) = (Vec::new(), 0);
    let (mut i, mut depth, mut in_class) = (0, 0usize, false);
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'[' if !in_class => {
                in_class = true;
                if s[i + 1..].starts_with("^]") {
                    i += 2;
                } else if s[i + 1..].starts_with(']') {
                    i += 1;
                }
            }
            b']' if in_class => in_class = false,
            b'(' if !in_class => depth += 1,
            b')' if !in_class => depth = depth.saturating_sub(1),
            b'|' if !in_class && depth == 0 => {
                parts.push(&s[from..i]);
                from = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&s[from..]);
    parts
}

/// The end of the atom starting at `i` (an escape, a class, a group, one character).
fn atom_end(s: &str, i: usize) -> Option<usize> {
    let b = s.as_bytes();
    match b[i] {
        b'\\' => Some(i + 1 + utf8_len(*b.get(i + 1)?)),
        b'(' => matching_paren(s, i).map(|c| c + 1),
        b'[' => {
            let mut j = i + 1;
            if s[j..].starts_with('^') {
                j += 1;
            }
            if s[j..].starts_with(']') {
                j += 1;
            }
            while j < b.len() && b[j] != b']' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            (j < b.len()).then_some(j + 1)
        }
        c => Some(i + utf8_len(c)),
    }
}

/// The end of the quantifier (with its lazy or possessive mark) starting at `i`.
fn quantifier_end(s: &str, i: usize) -> usize {
    let b = s.as_bytes();
    let mut j = i;
    match b.get(j) {
        Some(b'?' | b'*' | b'+') => j += 1,
        Some(b'{') => match s[j..].find('}') {
            Some(e)
                if s[j + 1..j + e]
                    .bytes()
                    .all(|c| c.is_ascii_digit() || c == b',') =>
            {
                j += e + 1
            }
            _ => return i,
        },
        _ => return i,
    }
    if matches!(b.get(j), Some(b'?' | b'+')) {
        j += 1;
    }
    j
}

/// Whether a quantifier lets its atom match nothing.
fn may_skip(q: &str) -> bool {
    q.starts_with(['?', '*']) || q.starts_with("{0") || q.starts_with("{,")
}

/// One alternative with its leading date remnants dropped and leading blanks made
/// optional; whether all of it can now match nothing.
fn lenient_seq(s: &str, colon: &mut bool) -> (String, bool) {
    let mut out = String::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        // A zone offset after the removed time (` +0300`).
        for zone in [r"[+-]\d{4}", r"[-+]\d{4}", r"[+-]\d{2}:?\d{2}"] {
            if rest.starts_with(zone) && !may_skip(&rest[zone.len()..]) {
                out.push_str(&format!("(?:{zone})?"));
                i += zone.len();
            }
        }
        if i >= s.len() {
            break;
        }
        let rest = &s[i..];
        if let Some(r) = rest.strip_prefix(DATE_AMBIT) {
            i += DATE_AMBIT.len() + quantifier_end(r, 0);
            continue;
        }
        let Some(end) = atom_end(s, i) else {
            out.push_str(rest);
            return (out, false);
        };
        let q_end = quantifier_end(s, end);
        let (atom, q) = (&s[i..end], &s[end..q_end]);
        i = q_end;
        if matches!(atom, "^" | r"\A") || (atom.starts_with("(?") && is_flag_group(atom)) {
            out.push_str(atom);
            out.push_str(q);
            continue;
        }
        if matches!(
            atom,
            " " | r"\s" | r"\ " | "[ ]" | r"\t" | r"[ \t]" | r"[\t ]"
        ) {
            out.push_str(atom);
            out.push_str(match q {
                "" => "?",
                "+" => "*",
                "+?" => "*?",
                q if q.starts_with("{1") => "*",
                q => q,
            });
            continue;
        }
        if atom == ":" && q.is_empty() && !*colon {
            *colon = true;
            out.push_str(":?");
            continue;
        }
        if atom.starts_with('(') {
            let look = ["(?=", "(?!", "(?<=", "(?<!"]
                .iter()
                .any(|l| atom.starts_with(l));
            if look {
                out.push_str(&s[i - atom.len() - q.len()..]);
                return (out, false);
            }
            let open = group_open_len(atom);
            let inner = &atom[open..atom.len() - 1];
            let (new_inner, inner_empty) = lenient_alts(inner, colon);
            out.push_str(&atom[..open]);
            out.push_str(&new_inner);
            out.push(')');
            out.push_str(q);
            if inner_empty || may_skip(q) {
                continue;
            }
            out.push_str(&s[i..]);
            return (out, false);
        }
        out.push_str(atom);
        out.push_str(q);
        if !may_skip(q) {
            out.push_str(&s[i..]);
            return (out, false);
        }
    }
    (out, true)
}

/// `(?i)` and the like: flags for what follows, no group.
fn is_flag_group(atom: &str) -> bool {
    atom.len() > 3
        && atom[2..atom.len() - 1]
            .bytes()
            .all(|c| c.is_ascii_alphabetic() || c == b'-')
}

/// The length of a group's opening: `(`, `(?:`, `(?P<name>`, `(?i:`.
fn group_open_len(atom: &str) -> usize {
    if let Some(r) = atom
        .strip_prefix("(?P<")
        .or_else(|| atom.strip_prefix("(?<"))
    {
        return atom.len() - r.len() + r.find('>').map_or(0, |e| e + 1);
    }
    if let Some(r) = atom.strip_prefix("(?") {
        return 2 + r.find(':').map_or(0, |e| e + 1);
    }
    1
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

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// The index of the `)` closing the group that opens at `open`.
fn matching_paren(s: &str, open: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let (mut depth, mut i, mut in_class) = (0usize, open, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'(' if !in_class => depth += 1,
            b')' if !in_class => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
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
mod tests {
    use super::*;

    #[test]
    fn tags_become_groups_and_host() {
        assert_eq!(
            translate(
                "^Failed for <F-USER>\\S+</F-USER> from <ADDR> <F-ID>\\d+</F-ID>$",
                false
            ),
            Ok("^Failed for (?P<user>\\S+) from <HOST> (?:\\d+)$".into())
        );
        // A second user field is a plain group (Rust forbids a repeated name).
        assert_eq!(
            translate("^<F-USER>a</F-USER>|<F-USER>b</F-USER> <HOST>$", false),
            Ok("^(?P<user>a)|(?:b) <HOST>$".into())
        );
        assert_eq!(
            translate_any("^<F-CONTENT>.+</F-CONTENT>$"),
            Ok("^(?P<content>.+)$".into())
        );
        assert!(translate("^<F-CONTENT>.+</F-CONTENT>$", false).is_err());
        assert_eq!(
            translate("^<ADDR>(?::<F-PORT/>)? x", false),
            Ok("^<HOST>(?::(?:\\w+))? x".into())
        );
    }

    #[test]
    fn python_syntax_rewritten_where_equivalent() {
        assert_eq!(
            translate("^a{,3} <HOST>\\Z", false),
            Ok("^a{0,3} <HOST>\\z".into())
        );
        assert_eq!(
            translate("^x(?#note) <HOST>(?=\\s|$)", false),
            Ok("^x <HOST>(?:\\s|$)".into())
        );
        assert_eq!(
            translate("(?<=from )<HOST>$", false),
            Ok("(?:from )<HOST>$".into())
        );
        assert_eq!(
            translate("^[]a] <HOST>$", false),
            Ok("^[\\]a] <HOST>$".into())
        );
        assert_eq!(
            translate("^[^]] <HOST>$", false),
            Ok("^[^\\]] <HOST>$".into())
        );
        assert_eq!(
            translate("^[(?!] <HOST>$", false),
            Ok("^[(?!] <HOST>$".into())
        );
        assert_eq!(
            translate("^[^[]* <HOST>$", false),
            Ok("^[^\\[]* <HOST>$".into())
        );
        assert_eq!(
            translate("^[a&&b] <HOST>$", false),
            Ok("^[a\\&\\&b] <HOST>$".into())
        );
        assert_eq!(
            translate("^{[^}]+} <HOST>$", false),
            Ok("^\\{[^}]+} <HOST>$".into())
        );
        assert_eq!(
            translate("^a{2} <HOST>$", false),
            Ok("^a{2} <HOST>$".into())
        );
    }

    #[test]
    fn look_around_and_backreferences_are_kept_for_the_backtracking_engine() {
        for re in [
            r"^(a) \1 <HOST> x",
            r"^(?P<x>a) (?P=x) <HOST> x",
            r"^(?!root) <HOST> x",
            r"^a(?=b) <HOST> x",
        ] {
            assert_eq!(translate(re, false).as_deref(), Ok(re));
        }
        // Python groups named like gaoler's placeholders are renamed.
        assert_eq!(
            translate(r"^(?P<USER>\S+) again (?P=USER) <HOST>$", false),
            Ok(r"^(?P<f2b_USER>\S+) again (?P=f2b_USER) <HOST>$".into())
        );
        // A literal backslash-n in the log is no newline.
        assert!(translate(r"^x '(?:\\n)?' <HOST>$", false).is_ok());
        assert!(translate(r"^x\ny <HOST>$", false).is_err());
    }

    #[test]
    fn multi_line_tags_give_session_roles() {
        assert_eq!(
            tagged("^<F-NOFAIL>Connection from</F-NOFAIL> <HOST>"),
            Tagged::Note
        );
        assert_eq!(
            tagged(r"^<F-MLFFORGET><F-MLFGAINED>Accepted \w+</F-MLFGAINED></F-MLFFORGET> for"),
            Tagged::Success
        );
        assert_eq!(
            tagged("^<F-NOFAIL><F-MLFFORGET>Connection closed</F-MLFFORGET></F-NOFAIL> by <HOST>"),
            Tagged::End
        );
        assert_eq!(tagged("^Failed for <HOST>"), Tagged::Fail);
        // Without sessions a failure needs an address; with them it may lack one.
        assert!(translate("^Too many failures", false).is_err());
        assert_eq!(
            translate("^Too many failures", true).as_deref(),
            Ok("^Too many failures")
        );
    }

    #[test]
    fn what_has_no_equivalent_is_refused_with_the_reason() {
        for (re, why) in [
            ("^a<SKIPLINES>b <HOST>", "SKIPLINES"),
            ("^a <DNS>", "host names"),
        ] {
            let err = translate(re, false).expect_err(re);
            assert!(err.contains(why), "{re}: {err}");
        }
    }

    #[test]
    fn date_remnants_and_blanks_at_the_line_start() {
        // fail2ban's `[]` where a bracketed date stood: gone at the start, one
        // bracketed field elsewhere (an access log keeps its stamp in gaoler's text).
        let apache = translate(r"^\[\]\s\[(:?error|\S+:\S+)\] \[client <HOST>\] x", false)
            .expect("translates");
        assert_eq!(
            line_start(&apache),
            r"^\s?\[(:?error|\S+:\S+)\] \[client <HOST>\] x"
        );
        let access = translate(r#"^<HOST> - \S+ \[\] "GET"#, false).expect("translates");
        assert_eq!(line_start(&access), r#"^<HOST> - \S+ \[[^\]]*\] "GET"#);
        // Blanks first (also inside optional groups, and past what may be empty)
        // become optional; so do a `:` and a zone offset the stamp left.
        assert_eq!(
            line_start(r"^(?: \[\d+\]| \w+ exim\[\d+\]:)? \w+ failed <HOST>"),
            r"^(?: ?\[\d+\]| ?\w+ exim\[\d+\]:)? ?\w+ failed <HOST>"
        );
        assert_eq!(line_start(r"^\s+\d\s<HOST>"), r"^\s*\d\s<HOST>");
        assert_eq!(line_start(r"^: Failed <HOST>"), r"^:? ?Failed <HOST>");
        assert_eq!(
            line_start(r"^\s[+-]\d{4} \S+ <HOST>"),
            r"^\s?(?:[+-]\d{4})? ?\S+ <HOST>"
        );
        assert_eq!(
            line_start(r"^\s*(\[[^\]]*\])?(\S+ IMAP Error)?: (?P<content>.+)$"),
            // (an emptied group stays: backreferences count groups)
            r"^\s*()?(\S+ IMAP Error)?:? ?(?P<content>.+)$"
        );
        // What comes after the first required part stays.
        assert_eq!(line_start(r"^Failed \s+<HOST>"), r"^Failed \s+<HOST>");
        assert_eq!(line_start(r"^(?!x) <HOST>"), r"^(?!x) <HOST>");
    }

    #[test]
    fn alternatives_each_holding_the_address_share_one() {
        assert_eq!(
            translate(r"^\[(?:IPv6:<IP6>|<IP4>)\]: x", false).as_deref(),
            Ok(r"^\[(?:(?:IPv6:|)<HOST>(?:|))\]: x")
        );
        // An address nested deeper in an alternative stays where it is.
        assert_eq!(
            translate(r"^(?:a(<HOST>)|<HOST>) x", false).as_deref(),
            Ok(r"^(?:a(<HOST>)|<HOST>) x")
        );
    }

    #[test]
    fn a_port_after_a_final_address_and_global_flags() {
        assert_eq!(
            translate("^x from <ADDR>", false).as_deref(),
            Ok(r"^x from <HOST>(?::\d+)?")
        );
        assert_eq!(
            translate(r"^x from <HOST>\b", false).as_deref(),
            Ok(r"^x from <HOST>(?::\d+)?\b")
        );
        assert_eq!(
            translate("^x <HOST>: (?:(?i)expn|vrfy)", false).as_deref(),
            Ok("(?i)^x <HOST>: (?:expn|vrfy)")
        );
    }

    #[test]
    fn datepatterns() {
        assert_eq!(datepattern("{^LN-BEG}"), Ok(None));
        assert_eq!(
            datepattern("^%%Y-%%m-%%d %%H:%%M:%%S"),
            Ok(Some("%Y-%m-%d %H:%M:%S".into()))
        );
        assert_eq!(
            datepattern("^%ExY-%Exm-%Exd %ExH:%ExM:%ExS"),
            Ok(Some("%Y-%m-%d %H:%M:%S".into()))
        );
        assert!(datepattern("{^LN-BEG}%ExY%Exm%Exd  ?%H:%M:%S").is_err());
        assert_eq!(datepattern("{EPOCH}"), Ok(Some("epoch".into())));
        // One format of its own beside the default detection is that format.
        assert_eq!(
            datepattern("{^LN-BEG}%%b-%%d-%%Exy %%H:%%M:%%S\n{^LN-BEG}"),
            Ok(Some("%b-%d-%y %H:%M:%S".into()))
        );
        assert!(datepattern("^%%Y %%H:%%M\n^%%d %%H:%%M").is_err());
        assert_eq!(datepattern("{NONE}"), Ok(Some("none".into())));
        assert!(datepattern("%%d/%%b/%%Y:%%H:%%M:%%S %%z").is_err());
        // Escaped punctuation is itself; brackets around the stamp are gaoler's own.
        assert_eq!(
            datepattern("^\\[%%d/%%b/%%Y %%H:%%M:%%S\\]"),
            Ok(Some("%d/%b/%Y %H:%M:%S".into()))
        );
        assert!(datepattern("^\\[%%d %%H\\]+").is_err());
    }
}
