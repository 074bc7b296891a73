//! The placeholders filters are written with (`<HOST>`, `<ADDR>`, `<USER>`) and the
//! parsing of a captured address. An address is only ever what `<HOST>` captured.

use std::net::IpAddr;

/// Capture group holding the offender's address.
pub const HOST_GROUP: &str = "host";
/// Capture group holding a user name, when the filter has `<USER>`.
pub const USER_GROUP: &str = "user";
/// Capture group holding a second place a user name may stand (fail2ban's
/// `<F-ALT_USER>`), used when `user` captured nothing.
pub const ALT_USER_GROUP: &str = "alt_user";
/// Capture group holding an X-Forwarded-For value, when the filter has `<XFF>`.
pub const XFF_GROUP: &str = "xff";

/// The shapes of an address. Deliberately loose (small automata, fast captures):
/// what `<HOST>` captures is then parsed, and a capture that is not an address is a miss.
const IPV4: &str = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}";
const IPV6: &str = r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*";

/// Replaces `<HOST>`/`<ADDR>` with an address pattern, `<USER>` with a user capture
/// and `<XFF>` with the capture of a quoted X-Forwarded-For field's content (a `\"`
/// inside, as Gunicorn writes a client's quote, does not end it).
pub fn expand_placeholders(source: &str) -> String {
    let host = format!(r"\[?(?P<{HOST_GROUP}>{IPV4}|{IPV6})\]?");
    // A user name before the address is lazy: it ends at the first place where the
    // rest of the line fits, so the address is the first the server wrote after it
    // (see `Candidates`). After the address it is greedy, up to what the server
    // writes last.
    let first_host = ["<HOST>", "<ADDR>"]
        .iter()
        .filter_map(|p| source.find(p))
        .min();
    let lazy = matches!((source.find("<USER>"), first_host), (Some(u), Some(h)) if u < h);
    let user = if lazy { ".*?" } else { ".*" };
    source
        .replacen("<HOST>", &host, 1)
        .replace("<HOST>", &format!(r"(?:{IPV4}|{IPV6})"))
        .replacen("<ADDR>", &host, 1)
        .replace("<ADDR>", &format!(r"(?:{IPV4}|{IPV6})"))
        .replacen("<USER>", &format!(r"(?P<{USER_GROUP}>{user})"), 1)
        .replace("<USER>", user)
        .replacen("<XFF>", &format!(r#"(?P<{XFF_GROUP}>(?:[^"\\]|\\.)*)"#), 1)
}

/// Puts filter variables into a regex: `${name}` becomes the variable's value. A
/// `${name}` that is not among `vars` is an error naming the ones there are.
pub fn substitute_vars(
    source: &str,
    vars: &std::collections::BTreeMap<&str, &str>,
) -> Result<String, String> {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find("${") {
        let (head, tail) = rest.split_at(at);
        out.push_str(head);
        let Some(end) = tail.find('}') else {
            out.push_str(tail);
            return Ok(out);
        };
        let name = &tail[2..end];
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.is_empty() {
            // Not a variable reference (`${` cannot start anything in a regex anyway).
            out.push_str("${");
            rest = &tail[2..];
            continue;
        }
        match vars.get(name) {
            Some(value) => out.push_str(value),
            None => {
                let known: Vec<&str> = vars.keys().copied().collect();
                return Err(if known.is_empty() {
                    format!("unknown variable `${{{name}}}`: the filter has no [vars]")
                } else {
                    format!(
                        "unknown variable `${{{name}}}` (the filter's [vars] are {})",
                        known.join(", ")
                    )
                });
            }
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The address a `<HOST>` capture names, IPv4-mapped IPv6 turned into IPv4. A
/// trailing `.` or `:` (end of a sentence, a port separator) is not part of it.
pub fn parse(bytes: &[u8]) -> Option<IpAddr> {
    parse_trimmed(bytes).map(|(ip, _)| ip)
}

/// Parses `bytes` as an address, trimming trailing `.`/`:`; returns the length used.
fn parse_trimmed(mut bytes: &[u8]) -> Option<(IpAddr, usize)> {
    loop {
        if let Some(ip) = std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| t.parse::<IpAddr>().ok())
        {
            // `0.0.0.0` and `::` are nobody: never an offender.
            let ip = ip.to_canonical();
            return (!ip.is_unspecified()).then_some((ip, bytes.len()));
        }
        match bytes {
            [rest @ .., b'.' | b':'] => bytes = rest,
            _ => return None,
        }
    }
}

/// Bytes an address is written with: hex digits, `.` and `:`.
const ADDRESS_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_hexdigit() || c == b'.' || c == b':';
        b += 1;
    }
    t
};

fn is_address_byte(b: u8) -> bool {
    ADDRESS_BYTES[b as usize]
}

/// Cheap shape check before parsing: three dots and digits (IPv4) or two colons (IPv6).
fn could_be_address(token: &[u8]) -> bool {
    let (mut dots, mut colons, mut hex_letters) = (0, 0, false);
    for &b in token {
        match b {
            b'.' => dots += 1,
            b':' => colons += 1,
            b'0'..=b'9' => {}
            _ => hex_letters = true,
        }
    }
    colons >= 2 || (dots >= 3 && !hex_letters)
}

/// The first few addresses in a line as (start, end, address), leftmost first. The
/// address a failregex captures is the first of them that has a valid prefix before
/// it and a valid suffix after it: the first address the server wrote. Text the client
/// controls comes after it (a free tail) or is bounded by what the server writes
/// after it (a user name, with `<USER>` lazy), so a forged address there never comes
/// first. A line with more addresses than these is left to the capture engine.
pub struct Candidates {
    found: [Option<(usize, usize, IpAddr)>; Candidates::MAX],
}

impl Candidates {
    const MAX: usize = 8;

    pub fn find(line: &[u8]) -> Candidates {
        let mut found = [None; Candidates::MAX];
        let mut n = 0;
        let mut from = 0;
        // An address token holds a `.` or a `:`: look for those, and take the run of
        // address bytes around each.
        while n < Candidates::MAX {
            let Some(at) = memchr::memchr2(b'.', b':', &line[from..]) else {
                break;
            };
            let mut start = from + at;
            while start > from && is_address_byte(line[start - 1]) {
                start -= 1;
            }
            let mut end = from + at + 1;
            while end < line.len() && is_address_byte(line[end]) {
                end += 1;
            }
            let token = &line[start..end];
            if could_be_address(token) {
                if let Some((ip, used)) = parse_trimmed(token) {
                    found[n] = Some((start, start + used, ip));
                    n += 1;
                }
            }
            from = end;
        }
        Candidates { found }
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, usize, IpAddr)> + '_ {
        self.found.iter().map_while(|c| *c)
    }

    /// Every address token of the line is here (fewer than the most kept).
    pub fn complete(&self) -> bool {
        self.found[Candidates::MAX - 1].is_none()
    }
}

/// A filter regex as syntax, in the dialect filters compile in (bytes, ASCII).
fn syntax(expanded: &str) -> Option<regex_syntax::hir::Hir> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(expanded)
        .ok()
}

/// Where the `host` group stands in a regex's top-level sequence.
fn host_at(subs: &[regex_syntax::hir::Hir]) -> Option<usize> {
    use regex_syntax::hir::HirKind;
    subs.iter().position(
        |h| matches!(h.kind(), HirKind::Capture(c) if c.name.as_deref() == Some(HOST_GROUP)),
    )
}

/// Whether a regex's `<HOST>` (a direct part of its top-level sequence) stands
/// between bytes that cannot be part of an address (`from 1.2.3.4 port`, `[1.2.3.4]`,
/// or the start or the anchored end of the line): then it can only be a whole address token of
/// the line, which [`Candidates`] lists, so when no candidate fits, the regex does
/// not match.
pub fn host_is_delimited(expanded: &str) -> bool {
    use regex_syntax::hir::{HirKind, Look};
    let Some(hir) = syntax(expanded) else {
        return false;
    };
    let HirKind::Concat(subs) = hir.kind() else {
        return false;
    };
    let Some(at) = host_at(subs) else {
        return false;
    };
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    use regex_syntax::hir::Hir;
    // Every text that can stand right before the address ends with a non-address byte
    // (or nothing, at the start of the line), and every text right after it starts
    // with one (or nothing, at its end).
    let edge = |part: &[Hir], suffix: bool, anchored: bool| {
        let kind = if suffix {
            ExtractKind::Suffix
        } else {
            ExtractKind::Prefix
        };
        let seq = Extractor::new()
            .kind(kind)
            .extract(&Hir::concat(part.to_vec()));
        seq.literals().is_some_and(|lits| {
            !lits.is_empty()
                && lits.iter().all(|l| {
                    let byte = if suffix {
                        l.as_bytes().last()
                    } else {
                        l.as_bytes().first()
                    };
                    match byte {
                        Some(&b) => !is_address_byte(b),
                        None => anchored && l.is_exact(),
                    }
                })
        })
    };
    let starts = matches!(
        subs.first().map(|h| h.kind()),
        Some(HirKind::Look(Look::Start))
    );
    let ends = matches!(
        subs.last().map(|h| h.kind()),
        Some(HirKind::Look(Look::End))
    );
    let left = edge(&subs[..at], true, starts);
    // An address last in an unanchored regex may be the start of a longer token.
    let right = edge(&subs[at + 1..], false, ends);
    left && right
}

/// The literal texts a regex anchored with `^` must start with (one of them), when
/// they are few and none is empty: a line starting with none of them cannot match.
pub fn prefix_literals(expanded: &str) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    use regex_syntax::hir::{HirKind, Look};
    let hir = syntax(expanded)?;
    let HirKind::Concat(subs) = hir.kind() else {
        return None;
    };
    if !matches!(
        subs.first().map(|h| h.kind()),
        Some(HirKind::Look(Look::Start))
    ) {
        return None;
    }
    let mut seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    // A dozen bytes tell lines apart as well as whole words, and merge variants.
    seq.keep_first_bytes(12);
    seq.dedup();
    let literals = seq.literals()?;
    if literals.is_empty() || literals.len() > 64 || literals.iter().any(|l| l.is_empty()) {
        return None;
    }
    Some(literals.iter().map(|l| l.as_bytes().to_vec()).collect())
}

/// The longest literal text every match of a regex contains past its literal start:
/// a literal part of its top-level sequence. `None` when it has none of at least 3
/// bytes.
pub fn required_literal(expanded: &str) -> Option<Vec<u8>> {
    use regex_syntax::hir::HirKind;
    let hir = syntax(expanded)?;
    let HirKind::Concat(subs) = hir.kind() else {
        return None;
    };
    // Past the literal start the gate checks already: the leading anchors, optional
    // parts and literals.
    let from = subs
        .iter()
        .position(|h| match h.kind() {
            HirKind::Look(_) | HirKind::Literal(_) => false,
            HirKind::Repetition(r) => r.min > 0,
            _ => true,
        })
        .unwrap_or(subs.len());
    subs.iter()
        .skip(from)
        .filter_map(|h| match h.kind() {
            HirKind::Literal(l) => Some(l.0.to_vec()),
            _ => None,
        })
        .filter(|l| l.len() >= 3)
        .max_by_key(Vec::len)
}

/// For a regex whose `host` group is a direct part of its top-level sequence: regexes
/// for exactly what stands before the group (`\A...\z`) and what follows it (`\A...`).
pub fn split_at_host(expanded: &str) -> Option<(String, String)> {
    use regex_syntax::hir::{Hir, HirKind, Look};
    let hir = syntax(expanded)?;
    let HirKind::Concat(subs) = hir.kind() else {
        return None;
    };
    let at = host_at(subs)?;
    let mut before = subs[..at].to_vec();
    before.push(Hir::look(Look::End));
    let mut after = vec![Hir::look(Look::Start)];
    after.extend_from_slice(&subs[at + 1..]);
    Some((
        Hir::concat(before).to_string(),
        Hir::concat(after).to_string(),
    ))
}

/// For a regex ending in free text (`...(?:: .*)?$`, `...:.*$`): a regex that matches
/// a line without a newline exactly when it does, with that free tail left out, so a
/// yes/no answer stops where the free text starts instead of scanning to the end of
/// the line. `None` when the regex has no such tail.
pub fn without_free_tail(expanded: &str) -> Option<String> {
    use regex_syntax::hir::{HirKind, Look};
    let hir = syntax(expanded)?;
    let HirKind::Concat(subs) = hir.kind() else {
        return None;
    };
    let (last, body) = subs.split_last()?;
    if !matches!(last.kind(), HirKind::Look(Look::End)) {
        return None;
    }
    let mut found = false;
    let probe = tail_free(&regex_syntax::hir::Hir::concat(body.to_vec()), &mut found);
    found.then(|| probe.to_string())
}

/// A regex `t` such that, on text without a newline, `h` matches up to the end of the
/// text exactly when `t` matches a prefix of it: `.*` and `.+` at the end become
/// nothing or one byte, and where nothing can be left out, `t` is `h$`. Sets `found`
/// when something was left out. Captures go (the result only answers yes or no).
fn tail_free(h: &regex_syntax::hir::Hir, found: &mut bool) -> regex_syntax::hir::Hir {
    use regex_syntax::hir::{Hir, HirKind, Look};
    let anchored = || Hir::concat(vec![h.clone(), Hir::look(Look::End)]);
    match h.kind() {
        HirKind::Repetition(r) if r.max.is_none() && r.min <= 1 && any_but_newline(&r.sub) => {
            *found = true;
            if r.min == 0 {
                Hir::empty()
            } else {
                (*r.sub).clone()
            }
        }
        // (x|y)$ is x$|y$, and x?$ is x$|$.
        HirKind::Repetition(r) if r.min == 0 && r.max == Some(1) => {
            Hir::alternation(vec![tail_free(&r.sub, found), Hir::look(Look::End)])
        }
        HirKind::Alternation(alts) => {
            Hir::alternation(alts.iter().map(|a| tail_free(a, found)).collect())
        }
        HirKind::Capture(c) => tail_free(&c.sub, found),
        // ab$ is a(b$).
        HirKind::Concat(subs) => match subs.split_last() {
            Some((last, init)) => {
                let mut parts = init.to_vec();
                parts.push(tail_free(last, found));
                Hir::concat(parts)
            }
            None => anchored(),
        },
        _ => anchored(),
    }
}

/// `.` (without or with `s`): every byte but possibly the newline.
fn any_but_newline(h: &regex_syntax::hir::Hir) -> bool {
    use regex_syntax::hir::{Class, HirKind};
    match h.kind() {
        HirKind::Class(Class::Bytes(c)) => {
            let mut missing = 256usize;
            for r in c.iter() {
                missing -= usize::from(r.end() - r.start()) + 1;
            }
            missing == 0
                || (missing == 1 && c.iter().all(|r| !(r.start()..=r.end()).contains(&b'\n')))
        }
        _ => false,
    }
}
