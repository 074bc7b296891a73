//! Configuration: reads `gaoler.toml`, `jails/*.toml` and the filters the jails name,
//! and turns them into a validated [`Config`]. Every problem in every file is collected
//! and reported as `file:line:col: message`; nothing here starts tasks or touches state.

mod diag;
mod raw;
mod value;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

pub use diag::{line_col, ConfigErrors, Diagnostic};
pub use raw::{Action, BackendKind, FileWatch, LogFormat, OnStop, Protocol};
pub use value::{parse_net, parse_port, PortRange};

use crate::filter::{DatePattern, Decode, Filter, LogTz, RegexRole, TrustedProxies};
use crate::source::journal::Matches;
use crate::types::{BanTime, IgnoreList, Increment};
use raw::{RawFilter, RawJail, RawMain};

/// Default directory for `--config`.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/gaoler";
/// Where the daemon listens for `ctl` unless gaoler.toml says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/gaoler/gaoler.sock";
/// Where packages install the shipped filter catalog.
pub const SHIPPED_FILTERS: &str = "/usr/share/gaoler/filters";
/// Longest log line handed to filters; the rest of a longer line is dropped.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `--config` directory everything was read from.
    pub dir: PathBuf,
    pub daemon: DaemonConfig,
    pub firewall: FirewallConfig,
    /// Native cross-jail escalation, when enabled.
    pub recidive: Option<RecidiveConfig>,
    /// `[metrics] listen`: where `/metrics` is served (`None`: not served).
    pub metrics: Option<SocketAddr>,
    /// Every jail file, enabled or not, sorted by name.
    pub jails: Vec<JailConfig>,
    /// Settings that are valid but have no effect in this version.
    pub warnings: Vec<Diagnostic>,
}

impl Config {
    pub fn enabled_jails(&self) -> impl Iterator<Item = &JailConfig> {
        self.jails.iter().filter(|j| j.enabled)
    }

    pub fn jail(&self, name: &str) -> Option<&JailConfig> {
        self.jails.iter().find(|j| j.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub log_level: String,
    pub log_format: LogFormat,
    /// gaoler's own log goes to this file instead of stderr (`ctl flush-logs` reopens it).
    pub log_file: Option<PathBuf>,
    pub filter_path: Vec<PathBuf>,
    pub max_tracked: usize,
    pub max_line_length: usize,
    pub file_watch: FileWatch,
    /// How often files are checked without an inotify event.
    pub poll_interval: Duration,
    /// Ban history older than this is forgotten (and no longer escalates).
    pub dbpurgeage: Duration,
}

#[derive(Debug, Clone)]
pub struct FirewallConfig {
    pub backend: BackendKind,
    pub table: String,
    pub priority: i32,
    pub on_stop: OnStop,
    pub reconcile_interval: Duration,
}

/// Jail name of the native recidive bans.
pub const RECIDIVE: &str = "recidive";

/// `[recidive]`: an address banned `maxretry` times, in any jails, within `findtime` is
/// banned on all ports for `bantime` (jail `recidive`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecidiveConfig {
    pub maxretry: u32,
    pub findtime: Duration,
    pub bantime: BanTime,
}

/// One jail, with `[defaults]` applied.
#[derive(Debug, Clone)]
pub struct JailConfig {
    pub name: String,
    pub enabled: bool,
    pub filter_name: String,
    pub filter: Arc<Filter>,
    /// Files or glob patterns (`/var/log/nginx/*access.log`).
    pub logpath: Vec<PathBuf>,
    /// Journal matches, when the jail reads the systemd journal.
    pub journal: Option<Matches>,
    pub maxretry: u32,
    pub findtime: Duration,
    pub bantime: BanTime,
    pub ports: Vec<PortRange>,
    pub protocol: Protocol,
    pub action: Action,
    pub ignore: IgnoreList,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// How timestamps without an offset in this jail's logs are read.
    pub logtimezone: LogTz,
    /// Longer bans for repeat offenders, when enabled.
    pub increment: Option<Increment>,
    /// Never ban the host's own addresses (added to `ignore` when the daemon starts).
    pub ignoreself: bool,
    /// The kernel sets its bans go to: its own name, or one shared with other jails.
    pub set: String,
    /// Peers whose lines name the client in X-Forwarded-For.
    pub trusted_proxies: TrustedProxies,
}

/// A position in a config file, kept with a value whose check needs other files.
#[derive(Debug, Clone)]
struct Pos {
    file: PathBuf,
    line: usize,
    col: usize,
}

impl Pos {
    fn new(file: &Path, text: &str, offset: usize) -> Self {
        let (line, col) = line_col(text, offset);
        Pos {
            file: file.to_path_buf(),
            line,
            col,
        }
    }

    fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
            message: message.into(),
        }
    }
}

/// Jail options after their own checks, before `[defaults]` is applied.
#[derive(Default, Clone)]
struct JailOptions {
    enabled: Option<bool>,
    filter: Option<(String, Pos)>,
    logpath: Option<Vec<String>>,
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
    fn over(self, defaults: &JailOptions) -> JailOptions {
        let d = defaults.clone();
        let mut ignoreip = d.ignoreip;
        ignoreip.extend(self.ignoreip);
        JailOptions {
            enabled: self.enabled.or(d.enabled),
            filter: self.filter.or(d.filter),
            logpath: self.logpath.or(d.logpath),
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

/// A filter file and the variable values it was compiled with.
type FilterKey = (PathBuf, Vec<(String, String)>);

/// Collects errors and warnings while one configuration is read.
struct Loader {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    filter_path: Vec<PathBuf>,
    dir: PathBuf,
    /// Filters by resolved file and variable values, compiled once however many
    /// jails use them.
    filters: HashMap<FilterKey, Option<Arc<Filter>>>,
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
    };
    let raw = match std::fs::read_to_string(&main_path) {
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
            jails,
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

fn builtin_defaults() -> JailOptions {
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

/// True when a logpath is a glob pattern rather than one file.
pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// True for names usable as a jail, table or set name in nftables and on the CLI.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 48
}

impl Loader {
    fn path(&self, value: &str) -> PathBuf {
        self.dir.join(value)
    }

    fn int_in(
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

    fn jail_options(&mut self, raw: RawJail, file: &Path, text: &str) -> JailOptions {
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

    fn jails(&mut self, defaults: &JailOptions) -> Vec<JailConfig> {
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
        let text = match std::fs::read_to_string(file) {
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
        let logpath: Vec<PathBuf> = opts
            .logpath
            .unwrap_or_default()
            .iter()
            .map(|p| self.path(p))
            .collect();
        let journal = opts.journal;
        let enabled = opts.enabled.unwrap_or(true);
        if enabled && logpath.is_empty() && journal.is_none() {
            self.errors.push(whole.error(format!(
                "jail `{name}` reads nothing: set `logpath = [\"/var/log/...\"]` or `journal = [...]`"
            )));
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

    /// Finds a filter by name along `filter_path` (or by path) and compiles it once
    /// per set of variable values.
    fn filter(
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
        let text = match std::fs::read_to_string(path) {
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
        let fail: Vec<String> = raw
            .failregex
            .get_ref()
            .iter()
            .map(|r| fill(r, &mut self.errors))
            .collect();
        let ignore: Vec<String> = raw
            .ignoreregex
            .iter()
            .map(|r| fill(r, &mut self.errors))
            .collect();
        let pref = raw.prefregex.as_ref().map(|p| fill(p, &mut self.errors));
        if bad_var {
            return None;
        }
        if raw.failregex.get_ref().is_empty() {
            self.errors.push(Diagnostic::at(
                path,
                &text,
                raw.failregex.span(),
                "failregex is empty: a filter needs at least one regex with <HOST>",
            ));
            return None;
        }
        match Filter::new(name, &fail, &ignore, pref.as_deref()) {
            Ok(f) => Some(Arc::new(
                f.with_datepattern(datepattern).with_decode(decode),
            )),
            Err(errors) => {
                for e in errors {
                    let span = match e.role {
                        RegexRole::Fail(i) => raw.failregex.get_ref()[i].span(),
                        RegexRole::Ignore(i) => raw.ignoreregex[i].span(),
                        RegexRole::Pref => raw.prefregex.as_ref().map_or(0..0, |p| p.span()),
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

#[cfg(test)]
mod tests;

/// Where filters are looked for unless gaoler.toml says otherwise.
fn default_filter_path(dir: &Path) -> Vec<PathBuf> {
    vec![dir.join("filters"), PathBuf::from(SHIPPED_FILTERS)]
}

/// `[daemon]` of `dir/gaoler.toml` alone, for commands that need only it.
fn read_daemon_settings(dir: &Path) -> Option<raw::RawDaemon> {
    let text = std::fs::read_to_string(dir.join("gaoler.toml")).ok()?;
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

/// Finds and compiles one filter for `test-filter`: by name along the filter path of
/// the configuration in `dir` (the default path when there is no gaoler.toml), or by
/// a path to a `.toml` file relative to the current directory.
pub fn load_filter(dir: &Path, name: &str) -> Result<Arc<Filter>, ConfigErrors> {
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
    };
    let pos = Pos {
        file: PathBuf::from("<command line>"),
        line: 1,
        col: 1,
    };
    match loader.filter(name, &pos, &[]) {
        Some(f) if loader.errors.is_empty() => Ok(f),
        _ => Err(ConfigErrors(loader.errors)),
    }
}
