//! Configuration: the validated model the daemon runs on ([`Config`], one
//! [`JailConfig`] per jail file). `load` reads `gaoler.toml`, `jails/*.toml` and the
//! filters the jails name (`filters.rs` compiles them); every problem in every file is
//! collected and reported as `file:line:col: message`. Nothing here starts tasks or
//! touches state.

mod diag;
mod filters;
mod fleet;
mod jail;
mod load;
mod notify;
mod raw;
mod value;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use diag::{line_col, ConfigErrors, Diagnostic};
pub use filters::{load_filter, load_filter_with};
pub use load::{is_glob, load, socket_group, socket_path};
pub use raw::{Action, BackendKind, FileWatch, LogFormat, OnStop, Protocol};
pub use value::{parse_net, parse_port, PortRange};

use crate::filter::{Filter, LogTz, TrustedProxies};
use crate::source::journal::Matches;
use crate::types::{BanTime, IgnoreList, Increment};

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
    /// `[fleet]`: ban sharing with other hosts (`None`: this host alone).
    pub fleet: Option<FleetConfig>,
    /// Every jail file, enabled or not, sorted by name.
    pub jails: Vec<JailConfig>,
    /// `[[notify]]` of gaoler.toml, then of the jail files (each limited to its jail).
    pub notify: Vec<NotifyConfig>,
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

/// One `[[notify]]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// Where it is written (`gaoler.toml:12`), for logs.
    pub name: String,
    pub on_ban: bool,
    pub on_unban: bool,
    /// The jails whose events it gets (`None`: every jail).
    pub jails: Option<Vec<String>>,
    pub action: NotifyAction,
    /// How long one run (an exec, or one webhook attempt) may take.
    pub timeout: Duration,
    /// Webhook attempts after the first, with backoff (1 s, doubling).
    pub retries: u32,
    /// Events run at once.
    pub concurrency: usize,
    /// Events held waiting; past it the oldest is dropped (and counted).
    pub queue: usize,
}

/// What a notifier does with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAction {
    /// Runs the program (argv, placeholders filled, no shell) with the event's JSON
    /// on its standard input.
    Exec(Vec<String>),
    /// POSTs the event's JSON, or `body` with its placeholders filled (JSON-escaped).
    Webhook {
        url: String,
        headers: Vec<(String, String)>,
        body: Option<String>,
    },
}

/// `[fleet]`, checked: servers, this host's name and key, whom to trust, what to share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// NATS server URLs (`nats://host:port`, `tls://host:port`).
    pub servers: Vec<String>,
    /// This host's name in the fleet (the origin its bans carry elsewhere).
    pub host: String,
    /// This host's ed25519 secret key file (mode 0600).
    pub key: PathBuf,
    /// Public keys (base64) of the hosts whose bans are applied here.
    pub trusted_keys: Vec<String>,
    /// Jails whose bans are published (`None`: every jail).
    pub share: Option<Vec<String>>,
    /// Apply other hosts' bans here.
    pub apply: bool,
    pub stream: String,
    pub subject: String,
    /// Copies JetStream keeps of the stream (3 on a three-node cluster).
    pub replicas: usize,
    /// NATS authentication: a creds file, an nkey seed file, user and password, or a token.
    pub credentials: Option<PathBuf>,
    pub nkey: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// TLS: the CA to trust, and a client certificate and key.
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The broadest prefix accepted from another host.
    pub max_prefix_v4: u8,
    pub max_prefix_v6: u8,
    /// Decisions accepted per minute from one origin.
    pub rate_per_origin: u32,
}

impl FleetConfig {
    /// Whether `jail`'s bans are published.
    pub fn shares(&self, jail: &str) -> bool {
        self.share
            .as_ref()
            .is_none_or(|list| list.iter().any(|j| j == jail))
    }

    /// The settings only a restart applies (the connection and the stream); reload
    /// may change `share`, `apply`, `trusted_keys` and the limits.
    pub fn restart_only(&self) -> impl PartialEq + '_ {
        (
            &self.servers,
            &self.host,
            &self.key,
            &self.stream,
            &self.subject,
            self.replicas,
            (
                &self.credentials,
                &self.nkey,
                &self.user,
                &self.password,
                &self.token,
            ),
            (&self.tls_ca, &self.tls_cert, &self.tls_key),
        )
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
    /// Named pipes a logger writes into (created when missing).
    pub pipe: Vec<PathBuf>,
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

/// A jail the daemon runs: an enabled jail, or the native `recidive` (all ports,
/// its bans computed from the store). What the ban manager, the firewall layout,
/// the counters and `ctl status` need of each, from one list.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveJail {
    pub name: String,
    /// The filter's name (`ctl status`); for recidive, what it bans on.
    pub filter: String,
    /// The kernel sets its bans go to.
    pub set: String,
    pub bantime: BanTime,
    pub ignore: IgnoreList,
    pub increment: Option<Increment>,
    /// Empty: all ports.
    pub ports: Vec<PortRange>,
    pub protocol: Protocol,
    pub action: Action,
}

impl Config {
    /// The enabled jails, in name order, then `recidive` when it is on.
    pub fn active_jails(&self) -> Vec<ActiveJail> {
        // Recidive bans on every port: what any jail protects, it protects.
        let every_ignore = IgnoreList::new(
            self.enabled_jails()
                .flat_map(|j| j.ignore.nets().iter().copied())
                .collect(),
        );
        let recidive = self.recidive.as_ref().map(|r| ActiveJail {
            name: RECIDIVE.to_string(),
            filter: "(bans from all jails)".to_string(),
            set: RECIDIVE.to_string(),
            bantime: r.bantime,
            ignore: every_ignore,
            increment: None,
            ports: Vec::new(),
            protocol: Protocol::All,
            action: Action::Drop,
        });
        self.enabled_jails()
            .map(|j| ActiveJail {
                name: j.name.clone(),
                filter: j.filter_name.clone(),
                set: j.set.clone(),
                bantime: j.bantime,
                ignore: j.ignore.clone(),
                increment: j.increment.clone(),
                ports: j.ports.clone(),
                protocol: j.protocol,
                action: j.action,
            })
            .chain(recidive)
            .collect()
    }
}

#[cfg(test)]
mod tests;
