//! fail2ban's configuration files as fail2ban reads them: INI sections with indented
//! continuation lines and `;` inline comments, `[INCLUDES] before/after`, `.local`
//! files merged over `.conf` (keeping the replaced values as `known/...`), and its two
//! interpolations: `%(name)s` (also `%(section/name)s`, `%(known/name)s`) and the
//! `<name>` tags of filter definitions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One section's options, in file order (a later value replaces an earlier one).
pub type Section = Vec<(String, String)>;

/// Every section of a set of files, merged in reading order.
#[derive(Default, Debug)]
pub struct Ini {
    /// Section names in order of first appearance (`DEFAULT` and `INCLUDES` excluded).
    pub order: Vec<String>,
    sections: HashMap<String, Section>,
    /// Values a later file replaced, per section: what `%(known/name)s` reads.
    known: HashMap<String, Section>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

fn get<'a>(section: &'a Section, key: &str) -> Option<&'a str> {
    section
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn set(section: &mut Section, key: &str, value: String) {
    match section.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => section.push((key.to_string(), value)),
    }
}

/// Parses one file's text into its sections, in order.
pub fn parse(text: &str) -> Vec<(String, Section)> {
    let mut out: Vec<(String, Section)> = Vec::new();
    let mut last_key: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let value = strip_inline_comment(trimmed);
        // An indented line continues the last option's value.
        if line.starts_with([' ', '\t']) {
            if let (Some(key), Some((_, section))) = (&last_key, out.last_mut()) {
                if let Some(slot) = section.iter_mut().rev().find(|(k, _)| k == key) {
                    slot.1.push('\n');
                    slot.1.push_str(value);
                    continue;
                }
            }
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            out.push((name.trim().to_string(), Vec::new()));
            last_key = None;
            continue;
        }
        let split = trimmed.find(['=', ':']);
        let (Some(at), Some((_, section))) = (split, out.last_mut()) else {
            continue; // fail2ban would refuse the file; the report names what is missing
        };
        let key = trimmed[..at].trim().to_string();
        let value = strip_inline_comment(trimmed[at + 1..].trim()).to_string();
        set(section, &key, value);
        last_key = Some(key);
    }
    out
}

/// `value` without a `;` comment preceded by white space (configparser's rule).
fn strip_inline_comment(value: &str) -> &str {
    let bytes = value.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i] == b';' && bytes[i - 1].is_ascii_whitespace() {
            return value[..i].trim_end();
        }
    }
    value
}

/// `path` followed by its `.local` sibling when there is one.
fn with_local(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    let local = path.with_extension("local");
    if local != path && local.is_file() {
        out.push(local);
    }
    out
}

impl Ini {
    /// Reads `files` in order, each with its includes (and its `.local` after it
    /// when `locals`: jail files list their .local files themselves).
    pub fn read(files: &[PathBuf], locals: bool) -> Ini {
        let mut ini = Ini::default();
        for f in files {
            let paths = if locals {
                with_local(f)
            } else {
                vec![f.clone()]
            };
            for path in paths {
                ini.read_one(&path, 0);
            }
        }
        ini
    }

    fn read_one(&mut self, path: &Path, depth: usize) {
        if depth > 10 || !path.is_file() {
            return;
        }
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        let parsed = parse(&text);
        let dir = path.parent().unwrap_or(Path::new("."));
        let includes = |which: &str| -> Vec<PathBuf> {
            parsed
                .iter()
                .filter(|(name, _)| name == "INCLUDES")
                .filter_map(|(_, s)| get(s, which))
                .flat_map(|v| {
                    v.split_whitespace()
                        .map(|f| dir.join(f))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let (before, after) = (includes("before"), includes("after"));
        for f in &before {
            for p in with_local(f) {
                self.read_one(&p, depth + 1);
            }
        }
        self.files.push(path.to_path_buf());
        for (name, options) in parsed {
            if name == "INCLUDES" {
                continue;
            }
            self.merge(&name, options);
        }
        for f in &after {
            for p in with_local(f) {
                self.read_one(&p, depth + 1);
            }
        }
    }

    /// Merges `options` into section `name`, keeping replaced values as known.
    pub fn merge(&mut self, name: &str, options: Section) {
        if name != "DEFAULT" && !self.order.iter().any(|n| n == name) {
            self.order.push(name.to_string());
        }
        let section = self.sections.entry(name.to_string()).or_default();
        for (k, v) in options {
            if let Some(old) = get(section, &k) {
                set(
                    self.known.entry(name.to_string()).or_default(),
                    &k,
                    old.to_string(),
                );
            }
            set(section, &k, v);
        }
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.get(name)
    }

    /// The raw (uninterpolated) value of `key` in `section` or `[DEFAULT]`.
    pub fn raw(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .get(section)
            .and_then(|s| get(s, key))
            .or_else(|| self.sections.get("DEFAULT").and_then(|s| get(s, key)))
    }
}

/// Where option values come from while interpolating: layers looked up first to
/// last, then the ini's `section` and `[DEFAULT]`.
pub struct Scope<'a> {
    pub ini: &'a Ini,
    pub section: &'a str,
    pub layers: Vec<&'a Section>,
}

impl Scope<'_> {
    fn lookup(&self, key: &str) -> Option<String> {
        if key == "__name__" {
            return Some(self.section.to_string());
        }
        if let Some(v) = self
            .layers
            .iter()
            .find_map(|l| get(l, key))
            .filter(|_| key.contains('/'))
        {
            // A layer may set `section/name` (what `%(known/name)s` reads) too.
            return Some(v.to_string());
        }
        if let Some((sec, opt)) = key.split_once('/') {
            let section = if sec.eq_ignore_ascii_case("known") {
                self.ini.known.get(self.section)
            } else {
                self.ini.sections.get(sec)
            };
            return section
                .and_then(|s| get(s, opt))
                .or_else(|| self.ini.raw("DEFAULT", opt))
                .map(str::to_string);
        }
        self.layers
            .iter()
            .find_map(|l| get(l, key))
            .or_else(|| self.ini.raw(self.section, key))
            .map(str::to_string)
    }

    /// `key`'s value with `%(name)s` references expanded; `None` when unset.
    pub fn get(&self, key: &str) -> Option<String> {
        self.lookup(key).map(|v| self.expand(&v, 0))
    }

    /// `%(name)s` expanded in `value` (names that are not set are left as they are).
    pub fn expand(&self, value: &str, depth: usize) -> String {
        if depth > 20 || !value.contains('%') {
            return value.to_string();
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(r) = tail.strip_prefix("%%") {
                out.push('%');
                rest = r;
            } else if let Some((name, r)) = tail
                .strip_prefix("%(")
                .and_then(|t| t.split_once(")s"))
                .filter(|(n, _)| !n.contains(['(', ' ', '\n']))
            {
                match self.lookup(name) {
                    Some(v) => out.push_str(&self.expand(&v, depth + 1)),
                    None => out.push_str(&tail[..name.len() + 4]),
                }
                rest = r;
            } else {
                out.push('%');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        out
    }

    /// fail2ban's `<name>` tags expanded where `name` is an option (innermost first,
    /// so `<lt_<logtype>/x>` works); regex tags such as `<HOST>` stay.
    pub fn expand_tags(&self, value: &str) -> String {
        let mut value = value.to_string();
        for _ in 0..30 {
            let mut changed = false;
            let mut out = String::with_capacity(value.len());
            let mut rest = value.as_str();
            while let Some(open) = rest.find('<') {
                let after = &rest[open + 1..];
                let end = after.find(['<', '>']);
                match end {
                    Some(e) if after.as_bytes()[e] == b'>' && e > 0 => {
                        let name = &after[..e];
                        let replacement = (!name.starts_with(['/', '?', '!', '='])
                            && name.chars().all(|c| {
                                c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.')
                            }))
                        .then(|| self.get(name))
                        .flatten();
                        out.push_str(&rest[..open]);
                        match replacement {
                            Some(v) => {
                                out.push_str(&v);
                                changed = true;
                            }
                            None => out.push_str(&rest[open..open + e + 2]),
                        }
                        rest = &after[e + 1..];
                    }
                    _ => {
                        out.push_str(&rest[..open + 1]);
                        rest = after;
                    }
                }
            }
            out.push_str(rest);
            value = out;
            if !changed {
                break;
            }
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_lines_comments_and_delimiters() {
        let s = parse("# c\n[a]\nx = 1 ; note\ny: two\n    three\n; gone\nz = a;b\n[b]\nk=v\n");
        assert_eq!(s.len(), 2);
        assert_eq!(get(&s[0].1, "x"), Some("1"));
        assert_eq!(get(&s[0].1, "y"), Some("two\nthree"));
        assert_eq!(get(&s[0].1, "z"), Some("a;b"));
        assert_eq!(get(&s[1].1, "k"), Some("v"));
    }

    #[test]
    fn interpolation_sections_known_and_tags() {
        let mut ini = Ini::default();
        ini.merge(
            "DEFAULT",
            vec![
                ("d".into(), "def".into()),
                ("logtype".into(), "file".into()),
            ],
        );
        ini.merge("lt_file", vec![("p".into(), "FILEPREFIX".into())]);
        ini.merge("j", vec![("a".into(), "one".into())]);
        ini.merge("j", vec![("a".into(), "%(known/a)s two".into())]);
        ini.merge(
            "j",
            vec![
                (
                    "b".into(),
                    "%(a)s %(d)s %(__name__)s %(lt_file/p)s 100%%".into(),
                ),
                ("t".into(), "^<lt_<logtype>/p> <HOST> <missing>".into()),
            ],
        );
        let scope = Scope {
            ini: &ini,
            section: "j",
            layers: vec![],
        };
        assert_eq!(
            scope.get("b").as_deref(),
            Some("one two def j FILEPREFIX 100%")
        );
        assert_eq!(
            scope.expand_tags(&scope.get("t").expect("t")),
            "^FILEPREFIX <HOST> <missing>"
        );
    }
}
