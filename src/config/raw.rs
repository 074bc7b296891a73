//! The TOML files exactly as written: a mirror of SPEC.md's schema with
//! `deny_unknown_fields`, so a typo in a key is an error at its position.
//! No defaults and no cross-checks here; `config::load` does those.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::value::{BanTimeValue, DurationValue, IgnoreValue, NetValue, OneOrMany, PortRange};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMain {
    pub daemon: Option<RawDaemon>,
    pub firewall: Option<RawFirewall>,
    pub recidive: Option<RawRecidive>,
    pub metrics: Option<RawMetrics>,
    pub fleet: Option<RawFleet>,
    pub defaults: Option<RawJail>,
    pub notify: Option<Vec<Spanned<RawNotify>>>,
}

/// `[[notify]]`: a notifier run on ban and unban events (SPEC "Evidence and
/// notifications").
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub on: Option<Spanned<Vec<String>>>,
    pub jails: Option<Spanned<Vec<String>>>,
    pub exec: Option<Spanned<Vec<String>>>,
    pub webhook: Option<Spanned<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body: Option<String>,
    pub timeout: Option<Spanned<DurationValue>>,
    pub retries: Option<Spanned<i64>>,
    pub concurrency: Option<Spanned<i64>>,
    pub queue: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub state_dir: Option<String>,
    pub socket: Option<String>,
    pub socket_group: Option<String>,
    pub log_level: Option<Spanned<String>>,
    pub log_format: Option<LogFormat>,
    pub log_file: Option<String>,
    pub filter_path: Option<OneOrMany<String>>,
    pub max_tracked: Option<Spanned<i64>>,
    pub max_line_length: Option<Spanned<i64>>,
    pub file_watch: Option<FileWatch>,
    pub poll_interval: Option<Spanned<DurationValue>>,
    pub dbpurgeage: Option<DurationValue>,
}

/// How the daemon writes its own log lines.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (journald adds its own timestamp).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// How file sources notice new lines.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FileWatch {
    /// inotify, with a poll every `poll_interval` as a safety net.
    #[default]
    Auto,
    /// Only polling (file systems without inotify, such as some network mounts).
    Poll,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Nftables,
    Log,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnStop {
    #[default]
    Keep,
    Flush,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFirewall {
    pub backend: Option<BackendKind>,
    pub table: Option<Spanned<String>>,
    pub priority: Option<Spanned<i64>>,
    pub on_stop: Option<OnStop>,
    pub reconcile_interval: Option<DurationValue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRecidive {
    pub enabled: Option<bool>,
    pub maxretry: Option<Spanned<i64>>,
    pub findtime: Option<DurationValue>,
    pub bantime: Option<BanTimeValue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<Spanned<String>>,
}

/// `[fleet]`: ban sharing over NATS JetStream (SPEC "Fleet").
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    pub servers: Option<Spanned<Vec<String>>>,
    pub host: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub trusted_keys: Option<Vec<Spanned<String>>>,
    pub share: Option<Vec<Spanned<String>>>,
    pub apply: Option<bool>,
    pub stream: Option<Spanned<String>>,
    pub subject: Option<Spanned<String>>,
    pub replicas: Option<Spanned<i64>>,
    pub credentials: Option<Spanned<String>>,
    pub nkey: Option<Spanned<String>>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub tls: Option<RawFleetTls>,
    pub max_prefix_v4: Option<Spanned<i64>>,
    pub max_prefix_v6: Option<Spanned<i64>>,
    pub rate_per_origin: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFleetTls {
    pub ca: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    All,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Drop,
    Reject,
}

/// A jail file, and also `[defaults]` in gaoler.toml (any jail key may stand there).
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawJail {
    pub enabled: Option<bool>,
    pub filter: Option<Spanned<String>>,
    pub logpath: Option<OneOrMany<String>>,
    pub pipe: Option<OneOrMany<String>>,
    pub journal: Option<Spanned<OneOrMany<String>>>,
    pub maxretry: Option<Spanned<i64>>,
    pub findtime: Option<DurationValue>,
    pub bantime: Option<BanTimeValue>,
    pub ports: Option<OneOrMany<PortRange>>,
    pub protocol: Option<Protocol>,
    pub ignoreip: Option<Spanned<OneOrMany<IgnoreValue>>>,
    pub ignoreself: Option<bool>,
    pub ipv6_prefix: Option<Spanned<i64>>,
    pub ipv4_prefix: Option<Spanned<i64>>,
    pub action: Option<Action>,
    pub set: Option<Spanned<String>>,
    pub logtimezone: Option<Spanned<String>>,
    pub trusted_proxies: Option<OneOrMany<NetValue>>,
    pub trusted_proxies_only: Option<bool>,
    /// Values for the filter's `[vars]`, by name.
    pub filter_vars: Option<BTreeMap<String, Spanned<String>>>,
    pub bantime_increment: Option<RawIncrement>,
    pub notify: Option<Vec<Spanned<RawNotify>>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawIncrement {
    pub enabled: Option<bool>,
    pub factor: Option<Spanned<f64>>,
    pub multipliers: Option<Spanned<Vec<f64>>>,
    pub maxtime: Option<DurationValue>,
    pub rndtime: Option<DurationValue>,
}

/// A filter file (`filters/<name>.toml`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    #[allow(dead_code)]
    pub description: Option<String>,
    pub failregex: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub ignoreregex: Vec<Spanned<String>>,
    pub prefregex: Option<Spanned<String>>,
    pub datepattern: Option<Spanned<String>>,
    /// `"url"`: decode `%XX` escapes before matching.
    pub decode: Option<Spanned<String>>,
    /// Variables (`${name}` in the regexes) with their defaults; jails may set them.
    #[serde(default)]
    pub vars: BTreeMap<String, Spanned<String>>,
    /// How lines tie into sessions, and what each kind of line says about one.
    pub session: Option<RawSession>,
    /// Named sets of extra failregexes, chosen by the variable `mode`.
    #[serde(default)]
    pub modes: BTreeMap<String, RawMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    /// `"process"`, or a regex with a `(?P<session>...)` group.
    pub key: Spanned<String>,
    #[serde(default)]
    pub hold: Vec<Spanned<String>>,
    #[serde(default)]
    pub success: Vec<Spanned<String>>,
    #[serde(default)]
    pub end: Vec<Spanned<String>>,
    #[serde(default)]
    pub note: Vec<Spanned<String>>,
    pub max_sessions: Option<Spanned<i64>>,
    pub max_age: Option<Spanned<DurationValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMode {
    /// Failregexes this mode adds, after the filter's own.
    #[serde(default)]
    pub failregex: Vec<Spanned<String>>,
    /// Other modes whose failregexes this one also adds.
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
}
