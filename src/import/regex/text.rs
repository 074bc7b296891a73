//! Walking a regex's text (Python's syntax, which fail2ban's filters are written in):
//! characters, atoms and their quantifiers, groups, top-level alternatives.

pub(super) fn split_alternatives(s: &str) -> Vec<&str> {
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
pub(super) fn atom_end(s: &str, i: usize) -> Option<usize> {
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
pub(super) fn quantifier_end(s: &str, i: usize) -> usize {
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

/// `(?i)` and the like: flags for what follows, no group.
pub(super) fn is_flag_group(atom: &str) -> bool {
    atom.len() > 3
        && atom[2..atom.len() - 1]
            .bytes()
            .all(|c| c.is_ascii_alphabetic() || c == b'-')
}

/// The length of a group's opening: `(`, `(?:`, `(?P<name>`, `(?i:`.
pub(super) fn group_open_len(atom: &str) -> usize {
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

pub(super) fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// The index of the `)` closing the group that opens at `open`.
pub(super) fn matching_paren(s: &str, open: usize) -> Option<usize> {
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
