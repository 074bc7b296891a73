//! Filters as jails name them: found by name along `filter_path` (or by path),
//! their variables filled in from the filter's `[vars]` and the jail's
//! `filter_vars`, and compiled once per distinct set of values. Errors point at the
//! regex or the setting at fault.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use super::diag::ConfigErrors;
use super::diag::Diagnostic;
use super::load::{default_filter_path, read_daemon_settings, valid_name, Loader, Pos};
use super::raw::RawFilter;
use crate::filter::{
    DatePattern, Decode, Filter, RegexRole, Role, SessionRules, DEFAULT_MAX_AGE_SECS,
    DEFAULT_MAX_SESSIONS,
};

impl Loader {
    /// Finds a filter by name along `filter_path` (or by path) and compiles it once
    /// per set of variable values.
    pub(super) fn filter(
        &mut self,
        name: &str,
        pos: &Pos,
        vars: &[(String, String, Pos)],
    ) -> Option<Arc<Filter>> {
        let candidates: Vec<PathBuf> = if name.contains('/') || name.ends_with(".toml") {
            vec![self.path(name)]
        } else if valid_name(name) {
            self.filter_path
                .iter()
                .map(|d| d.join(format!("{name}.toml")))
                .collect()
        } else {
            self.errors
                .push(pos.error(format!("invalid filter name `{name}`")));
            return None;
        };
        let Some(path) = candidates.iter().find(|p| p.is_file()).cloned() else {
            let searched: Vec<String> =
                candidates.iter().map(|p| p.display().to_string()).collect();
            self.errors.push(pos.error(format!(
                "filter `{name}` not found (looked for {})",
                searched.join(", ")
            )));
            return None;
        };
        let key = (
            path.clone(),
            vars.iter()
                .map(|(k, v, _)| (k.clone(), v.clone()))
                .collect::<Vec<_>>(),
        );
        if let Some(done) = self.filters.get(&key) {
            return done.clone();
        }
        let compiled = self.compile_filter(name, &path, vars);
        self.filters.insert(key, compiled.clone());
        compiled
    }

    fn compile_filter(
        &mut self,
        name: &str,
        path: &Path,
        jail_vars: &[(String, String, Pos)],
    ) -> Option<Arc<Filter>> {
        let text = match crate::util::read_config_file(path) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("cannot read filter: {}", crate::util::io_reason(&e));
                self.errors.push(Diagnostic::file(path, msg));
                return None;
            }
        };
        let raw: RawFilter = match toml::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                self.errors.push(Diagnostic::from_toml(path, &text, &e));
                return None;
            }
        };
        let datepattern = match &raw.datepattern {
            Some(dp) => match DatePattern::parse(dp.get_ref()) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.errors.push(Diagnostic::at(path, &text, dp.span(), e));
                    return None;
                }
            },
            None => None,
        };
        let decode = match &raw.decode {
            None => Decode::None,
            Some(d) if d.get_ref() == "url" => Decode::Url,
            Some(d) => {
                let msg = format!("unknown decode `{}`: the only one is \"url\"", d.get_ref());
                self.errors.push(Diagnostic::at(path, &text, d.span(), msg));
                return None;
            }
        };
        let vars = self.filter_vars(name, &raw, jail_vars)?;
        // `fill` borrows `raw`'s strings; the compiled sources are owned.
        // Every regex with the variables put in; a `${x}` the filter lacks is an error.
        let mut bad_var = false;
        let mut fill = |source: &Spanned<String>, errors: &mut Vec<Diagnostic>| {
            match crate::filter::substitute_vars(source.get_ref(), &vars) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(Diagnostic::at(path, &text, source.span(), e));
                    bad_var = true;
                    String::new()
                }
            }
        };
        // The failregexes: the filter's own, then those of the mode `mode` selects.
        let mut fail_sources: Vec<&Spanned<String>> = raw.failregex.get_ref().iter().collect();
        if !raw.modes.is_empty() {
            let chosen = vars.get("mode").copied().unwrap_or_default();
            match mode_regexes(&raw, chosen) {
                Ok(extra) => fail_sources.extend(extra),
                Err(msg) => {
                    let at = jail_vars.iter().find(|(k, _, _)| k == "mode");
                    match at {
                        Some((_, _, pos)) => self.errors.push(pos.error(msg)),
                        None => {
                            let span = raw.vars.get("mode").map_or(0..0, |v| v.span());
                            self.errors.push(Diagnostic::at(path, &text, span, msg));
                        }
                    }
                    return None;
                }
            }
        }
        let fail: Vec<String> = fail_sources
            .iter()
            .map(|r| fill(r, &mut self.errors))
            .collect();
        let ignore: Vec<String> = raw
            .ignoreregex
            .iter()
            .map(|r| fill(r, &mut self.errors))
            .collect();
        let pref = raw.prefregex.as_ref().map(|p| fill(p, &mut self.errors));
        let session = raw.session.as_ref().map(|rs| {
            let mut list = |l: &Vec<Spanned<String>>| -> Vec<String> {
                l.iter().map(|r| fill(r, &mut self.errors)).collect()
            };
            SessionRules {
                key: rs.key.get_ref().clone(),
                hold: list(&rs.hold),
                success: list(&rs.success),
                end: list(&rs.end),
                note: list(&rs.note),
                max_sessions: rs
                    .max_sessions
                    .as_ref()
                    .map_or(DEFAULT_MAX_SESSIONS, |n| (*n.get_ref()).max(1) as usize),
                max_age_secs: rs.max_age.as_ref().map_or(DEFAULT_MAX_AGE_SECS, |d| {
                    d.get_ref().0.as_secs().max(1) as i64
                }),
            }
        });
        if bad_var {
            return None;
        }
        // With modes, the filter's own list may be empty when every mode adds some.
        if fail_sources.is_empty() {
            let msg = if raw.modes.is_empty() {
                "failregex is empty: a filter needs at least one regex with <HOST>".to_string()
            } else {
                format!(
                    "failregex is empty in mode `{}`: a filter needs at least one regex with <HOST>",
                    vars.get("mode").copied().unwrap_or_default()
                )
            };
            self.errors
                .push(Diagnostic::at(path, &text, raw.failregex.span(), msg));
            return None;
        }
        match Filter::build(name, &fail, &ignore, pref.as_deref(), session.as_ref()) {
            Ok(f) => Some(Arc::new(
                f.with_datepattern(datepattern).with_decode(decode),
            )),
            Err(errors) => {
                for e in errors {
                    let span = match (e.role, raw.session.as_ref()) {
                        (RegexRole::Fail(i), _) => fail_sources[i].span(),
                        (RegexRole::Ignore(i), _) => raw.ignoreregex[i].span(),
                        (RegexRole::Pref, _) => raw.prefregex.as_ref().map_or(0..0, |p| p.span()),
                        (RegexRole::SessionKey, Some(rs)) => rs.key.span(),
                        (RegexRole::Session(role, i), Some(rs)) => {
                            let list = match role {
                                Role::Hold => &rs.hold,
                                Role::Success => &rs.success,
                                Role::End => &rs.end,
                                Role::Note | Role::Fail => &rs.note,
                            };
                            list.get(i).map_or(0..0, |r| r.span())
                        }
                        (RegexRole::SessionKey | RegexRole::Session(..), None) => 0..0,
                    };
                    self.errors
                        .push(Diagnostic::at(path, &text, span, e.message));
                }
                None
            }
        }
    }

    /// The filter's `[vars]` with the jail's `filter_vars` put in; a variable the
    /// filter does not have is an error where the jail sets it.
    fn filter_vars<'a>(
        &mut self,
        name: &str,
        raw: &'a RawFilter,
        jail_vars: &'a [(String, String, Pos)],
    ) -> Option<BTreeMap<&'a str, &'a str>> {
        let mut vars: BTreeMap<&str, &str> = raw
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.get_ref().as_str()))
            .collect();
        let known: Vec<&str> = raw.vars.keys().map(String::as_str).collect();
        let mut unknown = false;
        for (key, value, pos) in jail_vars {
            match vars.get_mut(key.as_str()) {
                Some(slot) => *slot = value,
                None => {
                    let has = if known.is_empty() {
                        "it has none".to_string()
                    } else {
                        format!("it has {}", known.join(", "))
                    };
                    self.errors.push(
                        pos.error(format!("filter `{name}` has no variable `{key}` ({has})")),
                    );
                    unknown = true;
                }
            }
        }
        (!unknown).then_some(vars)
    }
}

/// The failregexes mode `chosen` adds (with those of the modes it includes), or why
/// it is not one of the filter's modes.
fn mode_regexes<'a>(raw: &'a RawFilter, chosen: &str) -> Result<Vec<&'a Spanned<String>>, String> {
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut todo = vec![chosen];
    while let Some(name) = todo.pop() {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        let Some(mode) = raw.modes.get(name) else {
            let known: Vec<&str> = raw.modes.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown mode `{name}`: this filter's modes are {}",
                known.join(", ")
            ));
        };
        out.extend(mode.failregex.iter());
        todo.extend(mode.include.iter().rev().map(|m| m.get_ref().as_str()));
    }
    Ok(out)
}

/// Finds and compiles one filter for `test-filter`: by name along the filter path of
/// the configuration in `dir` (the default path when there is no gaoler.toml), or by
/// a path to a `.toml` file relative to the current directory.
pub fn load_filter(dir: &Path, name: &str) -> Result<Arc<Filter>, ConfigErrors> {
    load_filter_with(dir, name, &[])
}

/// Like [`load_filter`], with variables set as a jail's `filter_vars` would (`mode`
/// among them, for a filter with modes).
pub fn load_filter_with(
    dir: &Path,
    name: &str,
    vars: &[(String, String)],
) -> Result<Arc<Filter>, ConfigErrors> {
    let filter_path = read_daemon_settings(dir)
        .and_then(|d| d.filter_path)
        .map(|list| list.0.iter().map(|p| dir.join(p)).collect())
        .unwrap_or_else(|| default_filter_path(dir));
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let mut loader = Loader {
        errors: Vec::new(),
        warnings: Vec::new(),
        filter_path,
        dir: base,
        filters: HashMap::new(),
        jail_notify: Vec::new(),
    };
    let pos = Pos {
        file: PathBuf::from("<command line>"),
        line: 1,
        col: 1,
    };
    let vars: Vec<(String, String, Pos)> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.clone(), pos.clone()))
        .collect();
    match loader.filter(name, &pos, &vars) {
        Some(f) if loader.errors.is_empty() => Ok(f),
        _ => Err(ConfigErrors(loader.errors)),
    }
}
