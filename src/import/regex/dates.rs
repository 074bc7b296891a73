//! What fail2ban's removal of a date leaves in its regexes, fitted to gaoler's
//! framing: fail2ban removes only the date's text and keeps what stood around it
//! (brackets, blanks, a `:`, a zone offset), gaoler removes the whole stamp.

use super::text::{
    atom_end, group_open_len, is_flag_group, quantifier_end, split_alternatives, utf8_len,
};

/// What stands where fail2ban removed a date in brackets (`[]`, as common.conf's
/// `__date_ambit` and apache's prefix write it). Past the start of a line the stamp
/// stays in gaoler's text (an access log's `[21/Nov/2026:08:13:46 +0000]`), so it
/// matches one bracketed field; at the start gaoler's framing removes it
/// ([`line_start`]).
pub const DATE_AMBIT: &str = r"\[[^\]]*\]";

/// Every `\[\]` (outside a class) as [`DATE_AMBIT`].
pub(super) fn date_ambits(s: &str) -> String {
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
