//! The ctl protocol: versioned `Request`/`Response` types shared by daemon and client,
//! and their framing (one JSON document per line, at most `MAX_FRAME` bytes).

pub mod access;
mod answer;
pub mod client;
mod handler;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::types::{Ban, Timestamp};

/// Bumped when a request or response changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request or response line accepted.
pub const MAX_FRAME: usize = 64 * 1024;
/// Responses can list many bans; the client accepts more than a request may carry.
pub const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// What `ctl` asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Ping,
    Version,
    Status {
        #[serde(default)]
        jail: Option<String>,
    },
    Banned {
        #[serde(default)]
        jail: Option<String>,
        /// Each ban's `matches` (read from the store; `ctl banned --json` asks).
        #[serde(default)]
        matches: bool,
    },
    Ban {
        jail: String,
        ip: String,
        /// A duration (`2`, `10m`) or `permanent`; the jail's bantime when absent.
        #[serde(default)]
        bantime: Option<String>,
    },
    Unban {
        #[serde(default)]
        ip: Option<String>,
        #[serde(default)]
        jail: Option<String>,
        #[serde(default)]
        all: bool,
    },
    Stats,
    /// The fleet's connection and counters.
    Fleet,
    /// One address (or prefix): its current bans with their evidence, and its past
    /// bans.
    Show {
        ip: String,
    },
    /// Follow bans and unbans as they happen (of one jail, or all): a `Following`
    /// frame, then an `Event` frame each, until the client goes.
    Events {
        #[serde(default)]
        jail: Option<String>,
    },
    Reload,
    /// The daemon's own log level from now on (until a restart or a reload).
    LogLevel {
        level: String,
    },
    /// Reopen `log_file` (after logrotate moved it).
    FlushLogs,
}

/// A request on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestFrame {
    pub v: u32,
    pub request: Request,
}

/// One ban as `ctl banned --json` shows it (SPEC.md's stable shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanView {
    pub ip: String,
    pub jail: String,
    pub banned_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub count: u32,
    /// The fleet host that decided the ban (`null`: this host).
    #[serde(default)]
    pub origin: Option<String>,
    /// The log lines that led to the ban, oldest first (`[]` for a ban by hand, a
    /// ban from the fleet, or when not asked for).
    #[serde(default)]
    pub matches: Vec<String>,
}

impl From<&Ban> for BanView {
    fn from(b: &Ban) -> Self {
        BanView {
            ip: b.target.to_string(),
            jail: b.jail.clone(),
            banned_at: b.banned_at,
            expires_at: b.expires_at,
            count: b.count,
            origin: b.origin.as_ref().map(|o| o.host.clone()),
            matches: Vec::new(),
        }
    }
}

/// One jail in `ctl status --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailStatus {
    pub name: String,
    pub filter: String,
    pub currently_banned: u64,
    pub total_banned: u64,
    pub currently_failed: u64,
    pub total_failed: u64,
    /// Current bans; filled in when one jail was asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub banned: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub jails: Vec<JailStatus>,
}

/// `ctl show IP --json`: what is known of an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowReport {
    /// The address or prefix asked about.
    pub ip: String,
    /// Its current bans, and those of prefixes that cover it, with `matches`.
    pub bans: Vec<BanView>,
    /// Its bans that ended, per jail (the store's history).
    pub past: Vec<PastBans>,
}

/// The ended bans of a target in one jail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastBans {
    pub ip: String,
    pub jail: String,
    /// How many times it was banned there (the last ban's count).
    pub count: u32,
    pub last_banned_at: Timestamp,
}

/// `ctl fleet --json`: ban sharing since start (SPEC "Fleet").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetReport {
    /// `[fleet]` is configured.
    pub enabled: bool,
    pub connected: bool,
    /// The NATS server connected to, or the last connection error.
    pub server: String,
    /// This host's decisions JetStream acknowledged.
    pub published: u64,
    /// Messages taken from the stream (this host's own included).
    pub received: u64,
    /// Other hosts' bans now in force here.
    pub applied: u64,
    /// Messages refused: by the checks, and by this host's jails.
    pub rejected: u64,
    /// Rejections by reason (`malformed`, `untrusted`, ..., `refused_by_jail`).
    pub rejected_by: std::collections::BTreeMap<String, u64>,
    /// This host's decisions waiting to be published.
    pub outbox: u64,
    /// Messages in the stream this host has not taken yet.
    pub lag: u64,
}

impl FleetReport {
    /// The fleet's counters as `ctl fleet` shows them.
    pub fn of(f: &crate::stats::FleetCounters, enabled: bool) -> FleetReport {
        use std::sync::atomic::Ordering::Relaxed;
        let rejected_by: std::collections::BTreeMap<String, u64> =
            f.rejections().into_iter().collect();
        FleetReport {
            enabled,
            connected: f.connected.load(Relaxed),
            server: f.server.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            published: f.published.load(Relaxed),
            received: f.received.load(Relaxed),
            applied: f.applied.load(Relaxed),
            rejected: rejected_by.values().sum(),
            rejected_by,
            outbox: f.outbox.load(Relaxed),
            lag: f.lag.load(Relaxed),
        }
    }
}

/// `ctl stats --json`: totals since start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    pub lines_read: u64,
    pub failures: u64,
    pub bans: u64,
    pub tracked: u64,
    pub evicted: u64,
    /// Kernel repairs made by the reconciler since start.
    #[serde(default)]
    pub repairs: u64,
    /// Lines longer than `max_line_length`: counted, never matched.
    #[serde(default)]
    pub lines_cut: u64,
    /// Sessions of multi-line filters forgotten before they ended, at `max_sessions`.
    #[serde(default)]
    pub sessions_evicted: u64,
    /// Lines a look-around regex gave up on at its backtracking limit: skipped.
    #[serde(default)]
    pub lines_over_limit: u64,
    /// `[[notify]]` events handled: sent, failed, timed out, dropped (full queue).
    #[serde(default)]
    pub notify_sent: u64,
    #[serde(default)]
    pub notify_failed: u64,
    #[serde(default)]
    pub notify_timed_out: u64,
    #[serde(default)]
    pub notify_dropped: u64,
}

/// What `ctl reload` did: jails by what happened to them, and to the bans.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Jails that stay, failure counts kept.
    pub kept: Vec<String>,
    /// Jails that stay with new counting rules (maxretry, findtime, ignoreip,
    /// prefixes): their failure counts start again.
    pub reset: Vec<String>,
    /// Bans lifted because their jail was removed.
    pub lifted: usize,
    /// The nftables table was rebuilt (jails, ports, actions or sets changed).
    pub rebuilt: bool,
}

/// What the daemon answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Response {
    Pong {
        version: String,
    },
    Version {
        version: String,
        protocol: u32,
    },
    Status(StatusReport),
    Bans {
        bans: Vec<BanView>,
    },
    Banned {
        /// Boxed: the other answers are small.
        ban: Box<BanView>,
    },
    Unbanned {
        bans: Vec<BanView>,
    },
    Stats(StatsReport),
    Fleet(FleetReport),
    Show(ShowReport),
    /// `Events` is served: events follow.
    Following,
    Event(Box<crate::notify::Event>),
    Reloaded(ReloadReport),
    LogLevel {
        level: String,
    },
    /// `file`: the log file reopened; `None` when the daemon logs to stderr.
    LogsFlushed {
        file: Option<String>,
    },
    /// `usage`: the request was wrong (exit 2); otherwise the daemon failed (exit 1).
    Error {
        usage: bool,
        message: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub v: u32,
    pub response: Response,
}

/// Decodes one request line. Errors are answers to send back, never panics.
pub fn decode_request(line: &[u8]) -> Result<Request, Response> {
    let usage = |message: String| Response::Error {
        usage: true,
        message,
    };
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| usage(format!("malformed request (not JSON): {e}")))?;
    match value.get("v") {
        Some(v) if v.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => {}
        Some(v) if v.as_u64().is_some() => {
            return Err(usage(format!(
                "this daemon speaks ctl protocol {PROTOCOL_VERSION} but the client sent {v}: use the gaoler binary of the running daemon's version"
            )))
        }
        // Present but not a version (-1, "1", 1.5): say so, not that it is missing.
        Some(v) => {
            return Err(usage(format!(
                "malformed request: the protocol version `v` must be a whole number (this daemon speaks {PROTOCOL_VERSION}), not {v}"
            )))
        }
        None => return Err(usage("malformed request: no protocol version `v`".into())),
    }
    serde_json::from_value::<RequestFrame>(value)
        .map(|f| f.request)
        .map_err(|e| usage(format!("malformed request: {e}")))
}

#[cfg(test)]
mod tests;
