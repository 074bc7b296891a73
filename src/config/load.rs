//! Reading a configuration directory: `gaoler.toml` with its `[defaults]`, then
//! every `jails/*.toml` over them. Each value is checked where it is written, and
//! every error is collected with its file:line:col; filters are compiled by
//! `filters.rs`. The small readers at the end serve commands that need only a part.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::diag::{line_col, ConfigErrors, Diagnostic};
use super::jail::builtin_defaults;
use super::raw::{self, RawMain};
use super::value;
use super::{
    Config, DaemonConfig, FirewallConfig, NotifyConfig, RecidiveConfig, DEFAULT_MAX_LINE,
    DEFAULT_SOCKET, RECIDIVE, SHIPPED_FILTERS,
};
use crate::filter::Filter;
use crate::types::BanTime;

/// A position in a config file, kept with a value whose check needs other files.
#[derive(Debug, Clone)]
pub(super) struct Pos {
    pub(super) file: PathBuf,
    pub(super) line: usize,
    pub(super) col: usize,
}

impl Pos {
    pub(super) fn new(file: &Path, text: &str, offset: usize) -> Self {
        let (line, col) = line_col(text, offset);
        Pos {
            file: file.to_path_buf(),
            line,
            col,
        }
    }

    pub(super) fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
            message: message.into(),
        }
    }
}

/// A filter file and the variable values it was compiled with.
type FilterKey = (PathBuf, Vec<(String, String)>);

/// Collects errors and warnings while one configuration is read.
pub(super) struct Loader {
    pub(super) errors: Vec<Diagnostic>,
    pub(super) warnings: Vec<Diagnostic>,
    pub(super) filter_path: Vec<PathBuf>,
    pub(super) dir: PathBuf,
    /// Filters by resolved file and variable values, compiled once however many
    /// jails use them.
    pub(super) filters: HashMap<FilterKey, Option<Arc<Filter>>>,
    /// The `[[notify]]` of the jail files, as they are read.
    pub(super) jail_notify: Vec<NotifyConfig>,
}

/// Reads and validates the configuration in `dir`.
pub fn load(dir: &Path) -> Result<Config, ConfigErrors> {
    let main_path = dir.join("gaoler.toml");
    let mut loader = Loader {
        errors: Vec::new(),
        warnings: Vec::new(),
        filter_path: Vec::new(),
        dir: dir.to_path_buf(),
        filters: HashMap::new(),
        jail_notify: Vec::new(),
    };
    let raw = match crate::util::read_config_file(&main_path) {
        Ok(text) => match toml::from_str::<RawMain>(&text) {
            Ok(raw) => Some((raw, text)),
            Err(e) => {
                loader
                    .errors
                    .push(Diagnostic::from_toml(&main_path, &text, &e));
                // Keep the filter path anyway, so jails are not also reported as
                // naming missing filters because of an unrelated error here.
                let raw = RawMain {
                    daemon: lenient_filter_path(&text).map(|fp| raw::RawDaemon {
                        filter_path: Some(value::OneOrMany(fp)),
                        ..raw::RawDaemon::default()
                    }),
                    ..RawMain::default()
                };
                Some((raw, text))
            }
        },
        Err(e) => {
            loader.errors.push(Diagnostic::file(
                &main_path,
                format!(
                    "cannot read the main config file: {} (is --config {} the right directory?)",
                    crate::util::io_reason(&e),
                    dir.display()
                ),
            ));
            None
        }
    };
    let (raw, text) = raw.unwrap_or_default();
    let daemon = loader.daemon(raw.daemon.unwrap_or_default(), &main_path, &text);
    let firewall = loader.firewall(raw.firewall.unwrap_or_default(), &main_path, &text);
    let metrics = loader.metrics(raw.metrics.unwrap_or_default(), &main_path, &text);
    let recidive = raw
        .recidive
        .and_then(|r| loader.recidive(r, &main_path, &text));
    let defaults = loader.jail_options(raw.defaults.unwrap_or_default(), &main_path, &text);
    let defaults = defaults.over(&builtin_defaults());
    loader.filter_path = daemon.filter_path.clone();
    let jails = loader.jails(&defaults);
    let fleet = raw
        .fleet
        .and_then(|f| loader.fleet(f, &main_path, &text, &jails));
    let mut notify = loader.notifiers(raw.notify.unwrap_or_default(), &main_path, &text, None);
    notify.append(&mut loader.jail_notify);

    if recidive.is_some() {
        if let Some(j) = jails.iter().find(|j| j.name == RECIDIVE) {
            let file = dir.join("jails").join(format!("{}.toml", j.name));
            loader.errors.push(Diagnostic::file(
                &file,
                "jail name `recidive` is taken by [recidive] in gaoler.toml: rename this jail or disable [recidive]",
            ));
        }
    }
    if loader.errors.is_empty() {
        Ok(Config {
            dir: dir.to_path_buf(),
            daemon,
            firewall,
            recidive,
            metrics,
            fleet,
            jails,
            notify,
            warnings: loader.warnings,
        })
    } else {
        Err(ConfigErrors(loader.errors))
    }
}

/// `[daemon] filter_path` read from a gaoler.toml that failed strict parsing.
fn lenient_filter_path(text: &str) -> Option<Vec<String>> {
    let table: toml::Table = toml::from_str(text).ok()?;
    match table.get("daemon")?.get("filter_path")? {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Array(items) => items.iter().map(|v| v.as_str().map(String::from)).collect(),
        _ => None,
    }
}

/// True when a logpath is a glob pattern rather than one file.
pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// True for names usable as a jail, table or set name in nftables and on the CLI.
pub(super) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 48
}

impl Loader {
    pub(super) fn path(&self, value: &str) -> PathBuf {
        self.dir.join(value)
    }

    pub(super) fn int_in(
        &mut self,
        v: &Spanned<i64>,
        range: std::ops::RangeInclusive<i64>,
        what: &str,
        file: &Path,
        text: &str,
    ) -> Option<i64> {
        if range.contains(v.get_ref()) {
            Some(*v.get_ref())
        } else {
            self.errors.push(Diagnostic::at(
                file,
                text,
                v.span(),
                format!(
                    "{what} must be between {} and {}, not {}",
                    range.start(),
                    range.end(),
                    v.get_ref()
                ),
            ));
            None
        }
    }

    fn daemon(&mut self, raw: raw::RawDaemon, file: &Path, text: &str) -> DaemonConfig {
        let log_level = match raw.log_level {
            Some(level) => {
                let l = level.get_ref().to_ascii_lowercase();
                if !crate::units::LEVELS.contains(&l.as_str()) {
                    self.errors.push(Diagnostic::at(
                        file,
                        text,
                        level.span(),
                        format!(
                            "unknown log_level `{}`: use error, warn, info, debug or trace",
                            level.get_ref()
                        ),
                    ));
                }
                l
            }
            None => "info".into(),
        };
        let max_tracked = raw
            .max_tracked
            .and_then(|v| self.int_in(&v, 1..=1_000_000_000, "max_tracked", file, text))
            .map_or(1_000_000, |v| v as usize);
        let max_line_length = raw
            .max_line_length
            .and_then(|v| self.int_in(&v, 256..=16 * 1024 * 1024, "max_line_length", file, text))
            .map_or(DEFAULT_MAX_LINE, |v| v as usize);
        DaemonConfig {
            state_dir: self.path(raw.state_dir.as_deref().unwrap_or("/var/lib/gaoler")),
            socket: self.path(raw.socket.as_deref().unwrap_or(DEFAULT_SOCKET)),
            socket_group: raw.socket_group.filter(|g| !g.is_empty()),
            log_level,
            log_format: raw.log_format.unwrap_or_default(),
            log_file: raw
                .log_file
                .filter(|f| !f.is_empty())
                .map(|f| self.path(&f)),
            filter_path: match raw.filter_path {
                Some(list) => list.0.iter().map(|p| self.path(p)).collect(),
                None => default_filter_path(&self.dir),
            },
            max_tracked,
            max_line_length,
            file_watch: raw.file_watch.unwrap_or_default(),
            dbpurgeage: raw
                .dbpurgeage
                .map_or(Duration::from_secs(30 * 86_400), |d| d.0),
            poll_interval: match raw.poll_interval {
                Some(p)
                    if p.get_ref().0 < Duration::from_millis(100)
                        || p.get_ref().0 > Duration::from_secs(3600) =>
                {
                    self.errors.push(Diagnostic::at(
                        file,
                        text,
                        p.span(),
                        "poll_interval must be between 100ms and 1h",
                    ));
                    Duration::from_secs(1)
                }
                Some(p) => p.get_ref().0,
                None => Duration::from_secs(1),
            },
        }
    }

    fn firewall(&mut self, raw: raw::RawFirewall, file: &Path, text: &str) -> FirewallConfig {
        let table = match raw.table {
            Some(t) if !valid_name(t.get_ref()) => {
                self.errors.push(Diagnostic::at(
                    file,
                    text,
                    t.span(),
                    format!(
                        "invalid table name `{}`: use letters, digits, `_` and `-`, starting with a letter, at most 48 characters",
                        t.get_ref()
                    ),
                ));
                String::new()
            }
            Some(t) => t.into_inner(),
            None => "gaoler".into(),
        };
        let priority = raw
            .priority
            .and_then(|p| self.int_in(&p, -400..=400, "priority", file, text))
            .map_or(-10, |p| p as i32);
        FirewallConfig {
            backend: raw.backend.unwrap_or_default(),
            table,
            priority,
            on_stop: raw.on_stop.unwrap_or_default(),
            reconcile_interval: raw
                .reconcile_interval
                .map_or(Duration::from_secs(60), |d| d.0),
        }
    }

    /// `[metrics] listen`: empty or absent is off; otherwise an IP address and a port.
    fn metrics(&mut self, raw: raw::RawMetrics, file: &Path, text: &str) -> Option<SocketAddr> {
        let listen = raw.listen?;
        let value = listen.get_ref().trim();
        if value.is_empty() {
            return None;
        }
        let problem = match value.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => return Some(addr),
            Ok(_) => "the port must not be 0",
            Err(_) => "expected an IP address and a port, such as \"127.0.0.1:9179\" or \"[::1]:9179\" (host names are not resolved)",
        };
        self.errors.push(Diagnostic::at(
            file,
            text,
            listen.span(),
            format!("invalid [metrics] listen `{}`: {problem}", listen.get_ref()),
        ));
        None
    }

    /// `[recidive]`, when enabled.
    fn recidive(
        &mut self,
        raw: raw::RawRecidive,
        file: &Path,
        text: &str,
    ) -> Option<RecidiveConfig> {
        let maxretry = raw
            .maxretry
            .and_then(|m| self.int_in(&m, 1..=1000, "recidive maxretry", file, text))
            .map_or(3, |m| m as u32);
        (raw.enabled == Some(true)).then(|| RecidiveConfig {
            maxretry,
            findtime: raw.findtime.map_or(Duration::from_secs(86_400), |d| d.0),
            bantime: raw
                .bantime
                .map_or(BanTime::Finite(Duration::from_secs(7 * 86_400)), |b| b.0),
        })
    }
}

/// Where filters are looked for unless gaoler.toml says otherwise.
pub(super) fn default_filter_path(dir: &Path) -> Vec<PathBuf> {
    vec![dir.join("filters"), PathBuf::from(SHIPPED_FILTERS)]
}

/// `[daemon]` of `dir/gaoler.toml` alone, for commands that need only it.
pub(super) fn read_daemon_settings(dir: &Path) -> Option<raw::RawDaemon> {
    let text = crate::util::read_config_file(&dir.join("gaoler.toml")).ok()?;
    toml::from_str::<RawMain>(&text).ok()?.daemon
}

/// The control socket configured in `dir/gaoler.toml`, read without the rest of the
/// configuration (so `ctl` works even while a jail file is being edited).
pub fn socket_path(dir: &Path) -> PathBuf {
    read_daemon_settings(dir)
        .and_then(|d| d.socket)
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), |s| dir.join(s))
}

/// The `socket_group` configured in `dir/gaoler.toml`, if any (read like `socket_path`).
pub fn socket_group(dir: &Path) -> Option<String> {
    read_daemon_settings(dir)
        .and_then(|d| d.socket_group)
        .filter(|g| !g.is_empty())
}
