//! One fail2ban filter (its `[Definition]` and `[Init]`, with a jail's options) to a
//! gaoler filter file: every regex translated and compiled by gaoler's own filter
//! engine, what cannot be carried over written as a comment with the reason.

use std::fmt::Write as _;

use super::ini::{Ini, Scope, Section};
use super::regex::Tagged;
use super::{regex, Outcome, Report};
use crate::filter::SessionRules;

/// One converted filter, ready to write.
pub struct FilterOut {
    pub text: String,
    pub journalmatch: Option<String>,
}

/// The syslog (or journal) prefix fail2ban's filters match is already split off by
/// gaoler's framing, so common.conf's prefix regex becomes empty: in each of its log
/// types, and as what a filter's own `__prefix_line` extends (`%(known/__prefix_line)s
/// (?:\w{14,20}: )?` keeps its queue id). A filter that defines `__prefix_line`
/// itself keeps its own.
fn prefix_overrides(ini: &Ini) -> Section {
    let mut o: Section = ["known", "lt_file", "lt_short", "lt_journal", "lt_rfc5424"]
        .iter()
        .map(|s| (format!("{s}/__prefix_line"), String::new()))
        .collect();
    let own = ["Definition", "Init"]
        .iter()
        .filter_map(|s| ini.section(s))
        .any(|s| s.iter().any(|(k, _)| k == "__prefix_line"));
    if !own {
        o.push(("__prefix_line".into(), String::new()));
    }
    o
}

/// Lookups for a filter: `overrides`, then a jail's `opts`, then `[Init]`, then
/// `[Definition]` and `[DEFAULT]`.
fn scope<'a>(ini: &'a Ini, overrides: &'a Section, opts: &'a Section) -> Scope<'a> {
    let mut layers = vec![overrides, opts];
    if let Some(init) = ini.section("Init") {
        layers.push(init);
    }
    Scope {
        ini,
        section: "Definition",
        layers,
    }
}

/// The options of `opts` the filter defines with another value (an option it does
/// not define changes nothing in it).
pub fn non_default_options(ini: &Ini, opts: &[(String, String)]) -> Section {
    let none = Vec::new();
    let scope = scope(ini, &none, &none);
    opts.iter()
        .filter(|(k, v)| scope.get(k).is_some_and(|own| own.trim() != v.trim()))
        .cloned()
        .collect()
}

/// Whether gaoler's filter engine takes these regexes (as a filter with sessions
/// when `session` is given); else its messages.
fn compiles(
    fail: &[String],
    ignore: &[String],
    pref: Option<&str>,
    session: Option<&SessionRules>,
) -> Result<(), String> {
    crate::filter::Filter::build("import", fail, ignore, pref, session)
        .map(|_| ())
        .map_err(|errs| {
            errs.iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        })
}

/// Whether one translated regex compiles in the place its role gives it.
fn compiles_as(re: &str, role: Tagged, sessions: bool) -> Result<(), String> {
    let one = std::slice::from_ref(&re.to_string()).to_vec();
    if !sessions {
        return compiles(&one, &[], None, None);
    }
    let mut rules = SessionRules {
        key: "process".into(),
        ..SessionRules::default()
    };
    let fail = match role {
        Tagged::Fail => one,
        Tagged::Success => {
            rules.success = one;
            vec!["^<HOST>$".to_string()]
        }
        Tagged::End => {
            rules.end = one;
            vec!["^<HOST>$".to_string()]
        }
        Tagged::Note => {
            rules.note = one;
            vec!["^<HOST>$".to_string()]
        }
    };
    compiles(&fail, &[], None, Some(&rules))
}

/// The non-empty lines of a multi-line value.
fn lines(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// What came over of one filter.
#[derive(Default)]
struct Translated {
    fail: Vec<String>,
    ignore: Vec<String>,
    prefregex: Option<String>,
    datepattern: Option<String>,
    /// fail2ban ties lines into sessions (`<F-MLFID>`, `<F-NOFAIL>`, ...): gaoler's
    /// session per process, with these success, end and note regexes.
    sessions: bool,
    success: Vec<String>,
    end: Vec<String>,
    note: Vec<String>,
    /// (fail2ban's regex, why it was left out)
    left_out: Vec<(String, String)>,
}

impl Translated {
    fn render(&self, base: &str) -> String {
        let mut text = format!(
            "description = {}\n\n",
            quote(&format!("fail2ban filter {base} (imported)"))
        );
        text.push_str("failregex = [\n");
        for re in &self.fail {
            let _ = writeln!(text, "  {},", quote(re));
        }
        text.push_str("]\n");
        for (source, why) in &self.left_out {
            let _ = writeln!(text, "# left out: {why}\n#   {}", source.replace('\n', " "));
        }
        text.push_str("\nignoreregex = [\n");
        for re in &self.ignore {
            let _ = writeln!(text, "  {},", quote(re));
        }
        text.push_str("]\n");
        if let Some(p) = &self.prefregex {
            let _ = writeln!(text, "prefregex = {}", quote(p));
        }
        if let Some(d) = &self.datepattern {
            let _ = writeln!(text, "datepattern = {}", quote(d));
        }
        if self.sessions {
            text.push_str("\n# fail2ban's multi-line tags, as a session per logging process.\n[session]\nkey = \"process\"\n");
            for (list, regexes) in [
                ("success", &self.success),
                ("end", &self.end),
                ("note", &self.note),
            ] {
                let _ = writeln!(text, "{list} = [");
                for re in regexes {
                    let _ = writeln!(text, "  {},", quote(re));
                }
                text.push_str("]\n");
            }
        }
        text
    }
}

/// Translates the filter read as `ini` (fail2ban name `base`, with `opts` for its
/// [Init]) as gaoler filter `name`, adding its line to `report`; `None` when no
/// failregex came over.
pub fn convert(
    ini: &Ini,
    base: &str,
    name: &str,
    opts: &[(String, String)],
    report: &mut Report,
) -> Option<FilterOut> {
    let overrides = prefix_overrides(ini);
    let opts: Section = opts.to_vec();
    let scope = scope(ini, &overrides, &opts);
    let value = |key: &str| scope.get(key).map(|v| scope.expand_tags(&v));
    let fail_sources = lines(value("failregex"));
    if fail_sources.is_empty() {
        report.add(
            "filter",
            name,
            Outcome::Skipped,
            vec!["no failregex (a file for other filters to include, or empty)".into()],
        );
        return None;
    }
    let mut t = Translated::default();
    let mut notes = Vec::new();
    let pref_source = value("prefregex").filter(|p| !p.trim().is_empty());
    t.sessions = fail_sources.iter().any(|s| regex::is_multiline(s))
        || pref_source.as_deref().is_some_and(regex::is_multiline);
    // An address in the prefregex: each failregex goes inside it, in place of its
    // content, so each regex has its address.
    let merged = pref_source
        .as_deref()
        .filter(|p| p.contains("<HOST>") || p.contains("<ADDR>"))
        .and_then(content_span)
        .map(|(before, after)| (before.to_string(), after.to_string()));
    // fail2ban searches the content with each failregex: one not anchored at the
    // start may begin past it, one not anchored at the end leaves the rest of the
    // content unread.
    let fail_sources: Vec<String> = match &merged {
        Some((before, after)) => fail_sources
            .iter()
            .map(|f| {
                let f = f.trim();
                let lead = if f.starts_with('^') { "" } else { ".*?" };
                let tail = if ends_anchored(f) { "" } else { ".*" };
                format!(
                    "{before}{lead}(?:{}){tail}{after}",
                    f.trim_start_matches('^')
                )
            })
            .collect(),
        None => fail_sources,
    };
    // What meets the start of the line: the prefregex when it stays one, else each
    // regex.
    let at_start = |re: String| {
        if pref_source.is_none() || merged.is_some() {
            regex::line_start(&re)
        } else {
            re
        }
    };
    for source in &fail_sources {
        let role = regex::tagged(source);
        let checked = regex::translate(source, t.sessions)
            .map(at_start)
            .and_then(|re| compiles_as(&re, role, t.sessions).map(|()| re));
        match (checked, role) {
            (Ok(re), Tagged::Fail) => t.fail.push(re),
            (Ok(re), Tagged::Success) => t.success.push(re),
            (Ok(re), Tagged::End) => t.end.push(re),
            (Ok(re), Tagged::Note) => t.note.push(re),
            (Err(why), _) => t.left_out.push((source.clone(), why)),
        }
    }
    if t.sessions {
        notes.push(
            "multi-line (fail2ban's <F-MLFID>/<F-NOFAIL>/<F-MLFGAINED>): a session per logging process".into(),
        );
    }
    let probe = ["^<HOST>$".to_string()];
    for source in lines(value("ignoreregex")) {
        let checked = regex::translate_any(&source)
            .map(at_start)
            .and_then(|re| compiles(&probe, std::slice::from_ref(&re), None, None).map(|()| re));
        match checked {
            Ok(re) => t.ignore.push(re),
            Err(why) => {
                notes.push(format!(
                    "an ignoreregex was left out ({why}): bans may be wider than in fail2ban"
                ));
                t.left_out.push((source, format!("ignoreregex: {why}")));
            }
        }
    }
    t.prefregex = pref_source.filter(|_| merged.is_none()).and_then(|p| {
        prefregex(&p, &t)
            .map_err(|why| notes.push(format!("prefregex left out: {why}")))
            .ok()
    });
    t.datepattern = value("datepattern").and_then(|d| {
        regex::datepattern(&d)
            .map_err(|why| notes.push(format!("datepattern: {why}")))
            .ok()
            .flatten()
    });
    if let Some(n) = value("maxlines")
        .and_then(|m| m.trim().parse::<u32>().ok())
        .filter(|&n| n > 1)
    {
        notes.push(format!("maxlines = {n}: gaoler matches one line at a time"));
    }
    let outcome = match (t.fail.is_empty(), t.left_out.is_empty()) {
        (true, _) => Outcome::Skipped,
        (false, true) => Outcome::Converted,
        (false, false) => Outcome::Partial,
    };
    if t.fail.is_empty() {
        let mut reasons: Vec<String> = t.left_out.iter().map(|(_, why)| why.clone()).collect();
        reasons.dedup();
        notes.splice(0..0, reasons);
    } else if !t.left_out.is_empty() {
        notes.insert(
            0,
            format!(
                "{} of {} failregex converted; the rest are commented in filters/{name}.toml with the reason",
                t.fail.len(),
                fail_sources.len()
            ),
        );
    }
    report.add("filter", name, outcome, notes);
    (!t.fail.is_empty()).then(|| FilterOut {
        text: t.render(base),
        journalmatch: value("journalmatch").filter(|j| !j.trim().is_empty()),
    })
}

/// fail2ban's prefregex translated; it must keep a content group and compile with
/// the filter's other regexes.
fn prefregex(source: &str, t: &Translated) -> Result<String, String> {
    let re = regex::line_start(&regex::translate_any(source)?);
    if !re.contains("(?P<content>") {
        return Err("it has no <F-CONTENT>".into());
    }
    let session = t.sessions.then(|| SessionRules {
        key: "process".into(),
        ..SessionRules::default()
    });
    compiles(&t.fail, &t.ignore, Some(&re), session.as_ref()).map(|()| re)
}

/// Whether a regex ends in an (unescaped) `$`.
fn ends_anchored(re: &str) -> bool {
    let Some(body) = re.strip_suffix('$') else {
        return false;
    };
    body.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 0
}

/// A fail2ban prefregex around its `<F-CONTENT>...</F-CONTENT>`: what stands before
/// and after the content (its end anchor included).
fn content_span(pref: &str) -> Option<(&str, &str)> {
    let open = pref.find("<F-CONTENT>")?;
    let close = pref.find("</F-CONTENT>")?;
    (open < close).then(|| (&pref[..open], &pref[close + "</F-CONTENT>".len()..]))
}

/// A TOML string: a literal `'''...'''` when it can be, else an escaped one.
fn quote(s: &str) -> String {
    if !s.contains("'''") && !s.contains(['\n', '\r']) && !s.ends_with('\'') {
        format!("'''{s}'''")
    } else {
        toml::Value::from(s).to_string()
    }
}
