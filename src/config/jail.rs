//! One jail file: its keys checked where they are written, `[defaults]` put under
//! them (`ignoreip` adds to the defaults' list), its filter found and compiled, and
//! what a jail needs to read something checked. The result is a [`JailConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::diag::Diagnostic;
use super::load::{is_glob, valid_name, Loader, Pos};
use super::raw::{self, Action, Protocol, RawJail};
use super::value::{self, PortRange};
use super::JailConfig;
use crate::filter::{LogTz, TrustedProxies};
use crate::source::journal::Matches;
use crate::types::{BanTime, IgnoreList, Increment};

/// Jail options after their own checks, before `[defaults]` is applied.
#[derive(Default, Clone)]
pub(super) struct JailOptions {
    enabled: Option<bool>,
    filter: Option<(String, Pos)>,
    logpath: Option<Vec<String>>,
    pipe: Option<Vec<String>>,
    journal: Option<Matches>,
    maxretry: Option<u32>,
    findtime: Option<Duration>,
    bantime: Option<BanTime>,
    ports: Option<Vec<PortRange>>,
    protocol: Option<Protocol>,
    action: Option<Action>,
    ignoreip: Vec<IpNet>,
    ignoreself: Option<bool>,
    ipv4_prefix: Option<u8>,
    ipv6_prefix: Option<u8>,
    logtimezone: Option<LogTz>,
    set: Option<String>,
    trusted_proxies: Option<Vec<IpNet>>,
    trusted_proxies_only: Option<bool>,
    /// Values for the filter's variables, each with where it was written.
    filter_vars: Option<Vec<(String, String, Pos)>>,
    /// Set: `Some(None)` when the section disables escalation.
    increment: Option<Option<Increment>>,
}

impl JailOptions {
    /// `self` where set, else `defaults`. `ignoreip` adds to the defaults' list.
    pub(super) fn over(self, defaults: &JailOptions) -> JailOptions {
        let d = defaults.clone();
        let mut ignoreip = d.ignoreip;
        ignoreip.extend(self.ignoreip);
        JailOptions {
            enabled: self.enabled.or(d.enabled),
            filter: self.filter.or(d.filter),
            logpath: self.logpath.or(d.logpath),
            pipe: self.pipe.or(d.pipe),
            journal: self.journal.or(d.journal),
            maxretry: self.maxretry.or(d.maxretry),
            findtime: self.findtime.or(d.findtime),
            bantime: self.bantime.or(d.bantime),
            ports: self.ports.or(d.ports),
            protocol: self.protocol.or(d.protocol),
            action: self.action.or(d.action),
            ignoreip,
            ignoreself: self.ignoreself.or(d.ignoreself),
            set: self.set.or(d.set),
            trusted_proxies: self.trusted_proxies.or(d.trusted_proxies),
            trusted_proxies_only: self.trusted_proxies_only.or(d.trusted_proxies_only),
            filter_vars: self.filter_vars.or(d.filter_vars),
            ipv4_prefix: self.ipv4_prefix.or(d.ipv4_prefix),
            ipv6_prefix: self.ipv6_prefix.or(d.ipv6_prefix),
            logtimezone: self.logtimezone.or(d.logtimezone),
            increment: self.increment.or(d.increment),
        }
    }
}

pub(super) fn builtin_defaults() -> JailOptions {
    JailOptions {
        enabled: Some(true),
        maxretry: Some(5),
        findtime: Some(Duration::from_secs(600)),
        bantime: Some(BanTime::Finite(Duration::from_secs(3600))),
        protocol: Some(Protocol::Tcp),
        action: Some(Action::Drop),
        ignoreip: Vec::new(),
        ipv4_prefix: Some(32),
        ipv6_prefix: Some(128),
        ..JailOptions::default()
    }
}

impl Loader {
    pub(super) fn jail_options(&mut self, raw: RawJail, file: &Path, text: &str) -> JailOptions {
        if let Some(n) = raw.notify.as_ref().and_then(|n| n.first()) {
            // Only [defaults] still has it here (a jail file's was taken out).
            self.errors.push(Diagnostic::at(
                file,
                text,
                n.span(),
                "[[defaults.notify]]: write [[notify]] at the top level of gaoler.toml (it applies to every jail)",
            ));
        }
        let maxretry = raw
            .maxretry
            .and_then(|v| self.int_in(&v, 1..=1_000_000, "maxretry", file, text))
            .map(|v| v as u32);
        let ipv4_prefix = raw
            .ipv4_prefix
            .as_ref()
            .and_then(|v| self.int_in(v, 8..=32, "ipv4_prefix", file, text))
            .map(|v| v as u8);
        let ipv6_prefix = raw
            .ipv6_prefix
            .as_ref()
            .and_then(|v| self.int_in(v, 16..=128, "ipv6_prefix", file, text))
            .map(|v| v as u8);
        let set = raw.set.as_ref().and_then(|name| {
            if valid_name(name.get_ref()) {
                Some(name.get_ref().clone())
            } else {
                self.errors.push(Diagnostic::at(file, text, name.span(), format!("invalid set name `{}`: use letters, digits, `_` and `-`, starting with a letter, at most 48 characters", name.get_ref())));
                None
            }
        });
        let filter_vars = raw.filter_vars.as_ref().map(|vars| {
            vars.iter()
                .map(|(k, v)| {
                    let pos = Pos::new(file, text, v.span().start);
                    (k.clone(), v.get_ref().clone(), pos)
                })
                .collect()
        });
        let increment = raw
            .bantime_increment
            .clone()
            .map(|inc| self.increment(inc, file, text));
        let logtimezone =
            raw.logtimezone
                .as_ref()
                .and_then(|tz| match LogTz::parse(tz.get_ref()) {
                    Ok(tz) => Some(tz),
                    Err(e) => {
                        self.errors.push(Diagnostic::at(file, text, tz.span(), e));
                        None
                    }
                });
        JailOptions {
            increment,
            logtimezone,
            enabled: raw.enabled,
            filter: raw.filter.map(|f| {
                let pos = Pos::new(file, text, f.span().start);
                (f.into_inner(), pos)
            }),
            logpath: raw.logpath.map(|l| l.0),
            pipe: raw.pipe.map(|l| l.0),
            journal: raw
                .journal
                .and_then(|j| match Matches::parse(&j.get_ref().0) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        self.errors.push(Diagnostic::at(file, text, j.span(), e));
                        None
                    }
                }),
            maxretry,
            findtime: raw.findtime.map(|d| d.0),
            bantime: raw.bantime.map(|b| b.0),
            ports: raw.ports.map(|p| p.0),
            protocol: raw.protocol,
            action: raw.action,
            ignoreip: match raw.ignoreip {
                None => Vec::new(),
                Some(list) => {
                    let span = list.span();
                    let mut nets = Vec::new();
                    for entry in list.into_inner().0 {
                        match entry {
                            value::IgnoreValue::Net(n) => nets.push(n),
                            value::IgnoreValue::File(f) => {
                                match value::read_ignore_file(&self.path(&f)) {
                                    Ok(found) => nets.extend(found),
                                    Err(e) => self.errors.push(Diagnostic::at(
                                        file,
                                        text,
                                        span.clone(),
                                        e,
                                    )),
                                }
                            }
                        }
                    }
                    nets
                }
            },
            ignoreself: raw.ignoreself,
            set,
            trusted_proxies: raw
                .trusted_proxies
                .map(|list| list.0.into_iter().map(|n| n.0).collect()),
            trusted_proxies_only: raw.trusted_proxies_only,
            filter_vars,
            ipv4_prefix,
            ipv6_prefix,
        }
    }

    /// `[bantime_increment]`: enabled unless it says `enabled = false`.
    fn increment(&mut self, raw: raw::RawIncrement, file: &Path, text: &str) -> Option<Increment> {
        let factor = match raw.factor {
            Some(f) if !(f.get_ref().is_finite() && *f.get_ref() > 0.0) => {
                self.errors.push(Diagnostic::at(
                    file,
                    text,
                    f.span(),
                    format!("factor must be a positive number, not {}", f.get_ref()),
                ));
                2.0
            }
            Some(f) => *f.get_ref(),
            None => 2.0,
        };
        let multipliers = match raw.multipliers {
            Some(m) if m.get_ref().iter().any(|x| !(x.is_finite() && *x > 0.0)) => {
                self.errors.push(Diagnostic::at(
                    file,
                    text,
                    m.span(),
                    "multipliers must all be positive numbers",
                ));
                Vec::new()
            }
            Some(m) => m.into_inner(),
            None => Vec::new(),
        };
        (raw.enabled != Some(false)).then(|| Increment {
            factor,
            multipliers,
            maxtime: raw.maxtime.map(|d| d.0),
            rndtime: raw.rndtime.map_or(Duration::ZERO, |d| d.0),
        })
    }

    pub(super) fn jails(&mut self, defaults: &JailOptions) -> Vec<JailConfig> {
        let jails_dir = self.dir.join("jails");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&jails_dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                self.errors.push(Diagnostic::file(
                    &jails_dir,
                    format!("cannot list jails: {}", crate::util::io_reason(&e)),
                ));
                Vec::new()
            }
        };
        files.sort();
        files
            .iter()
            .filter_map(|file| self.jail(file, defaults))
            .collect()
    }

    fn jail(&mut self, file: &Path, defaults: &JailOptions) -> Option<JailConfig> {
        let name = file.file_stem()?.to_string_lossy().into_owned();
        let text = match crate::util::read_config_file(file) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("cannot read jail file: {}", crate::util::io_reason(&e));
                self.errors.push(Diagnostic::file(file, msg));
                return None;
            }
        };
        if !valid_name(&name) {
            self.errors.push(Diagnostic::file(
                file,
                format!("invalid jail name `{name}` (from the file name): use letters, digits, `_` and `-`, starting with a letter, at most 48 characters"),
            ));
        }
        let raw: RawJail = match toml::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                self.errors.push(Diagnostic::from_toml(file, &text, &e));
                return None;
            }
        };
        let mut raw = raw;
        let notify = raw.notify.take().unwrap_or_default();
        let notify = self.notifiers(notify, file, &text, Some(&name));
        self.jail_notify.extend(notify);
        let opts = self.jail_options(raw, file, &text).over(defaults);
        let whole = Pos::new(file, &text, 0);
        let Some((filter_name, filter_pos)) = opts.filter.clone() else {
            self.errors.push(whole.error(format!(
                "jail `{name}` names no filter: add `filter = \"NAME\"`"
            )));
            return None;
        };
        let vars = opts.filter_vars.clone().unwrap_or_default();
        let filter = self.filter(&filter_name, &filter_pos, &vars);
        let paths = |list: Option<Vec<String>>| -> Vec<PathBuf> {
            list.unwrap_or_default()
                .iter()
                .map(|p| self.path(p))
                .collect()
        };
        let logpath = paths(opts.logpath);
        let pipe = paths(opts.pipe);
        let journal = opts.journal;
        let enabled = opts.enabled.unwrap_or(true);
        if enabled && logpath.is_empty() && pipe.is_empty() && journal.is_none() {
            self.errors.push(whole.error(format!(
                "jail `{name}` reads nothing: set `logpath = [\"/var/log/...\"]`, `pipe = [\"/run/gaoler/NAME.pipe\"]` or `journal = [...]`"
            )));
        }
        for p in &pipe {
            use std::os::unix::fs::FileTypeExt;
            if logpath.contains(p) {
                self.errors.push(whole.error(format!(
                    "jail `{name}` names {} as both a logpath and a pipe: a named pipe goes in `pipe` only",
                    p.display()
                )));
            } else if std::fs::symlink_metadata(p).is_ok_and(|m| !m.file_type().is_fifo()) {
                self.errors.push(whole.error(format!(
                    "pipe {} exists and is not a named pipe: gaoler creates the pipe itself, or name a file in `logpath`",
                    p.display()
                )));
            }
        }
        if enabled && !logpath.is_empty() && journal.is_some() {
            self.warnings.push(whole.error(format!(
                "jail `{name}` reads both logpath and the journal: a message that reaches both (through rsyslog) is counted twice"
            )));
        }
        for p in &logpath {
            let text_path = p.to_string_lossy();
            if is_glob(&text_path) {
                if let Err(e) = glob::Pattern::new(&text_path) {
                    self.errors.push(
                        whole.error(format!("logpath `{text_path}` is not a valid glob: {e}")),
                    );
                }
            }
        }
        if opts.trusted_proxies_only == Some(true)
            && opts.trusted_proxies.as_ref().is_none_or(|t| t.is_empty())
        {
            self.errors.push(whole.error(format!(
                "jail `{name}` sets trusted_proxies_only but no trusted_proxies: list the proxies its lines come through"
            )));
        }
        let filter = filter?;
        let set = opts.set.clone().unwrap_or_else(|| name.clone());
        Some(JailConfig {
            set,
            name,
            enabled,
            filter_name,
            filter,
            logpath,
            pipe,
            journal,
            maxretry: opts.maxretry.unwrap_or(5),
            findtime: opts.findtime.unwrap_or(Duration::from_secs(600)),
            bantime: opts
                .bantime
                .unwrap_or(BanTime::Finite(Duration::from_secs(3600))),
            ports: opts.ports.unwrap_or_default(),
            protocol: opts.protocol.unwrap_or_default(),
            action: opts.action.unwrap_or_default(),
            ignore: IgnoreList::new(opts.ignoreip),
            ipv4_prefix: opts.ipv4_prefix.unwrap_or(32),
            ipv6_prefix: opts.ipv6_prefix.unwrap_or(128),
            logtimezone: opts.logtimezone.unwrap_or_default(),
            increment: opts.increment.flatten(),
            ignoreself: opts.ignoreself.unwrap_or(true),
            trusted_proxies: TrustedProxies::new(opts.trusted_proxies.unwrap_or_default())
                .only(opts.trusted_proxies_only.unwrap_or(false)),
        })
    }
}
