//! What the ban manager takes and answers: decisions from the jails (with the
//! readers' barriers between them), requests from `ctl`, a reloaded configuration,
//! and the errors a request can meet.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::policy::{policies, BanPolicy};
use crate::config::{Config, RecidiveConfig};
use crate::firewall::{FirewallError, Layout};
use crate::source::Barrier;
use crate::store::StoreError;
use crate::types::{Ban, BanTime, Origin, Target, Timestamp};

/// A jail's verdict that `target` is to be banned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub jail: String,
    pub target: Target,
    pub failures: u32,
    /// The address whose failure made the decision: a prefix ban that would cover a
    /// protected address is narrowed to it.
    pub addr: Option<IpAddr>,
    /// The log lines behind the failures, oldest first: the ban's evidence.
    pub matches: Vec<String>,
}

/// A ban another host of the fleet decided: applied in the jail of the same name,
/// with the start, end and count its origin decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub jail: String,
    pub target: Target,
    pub banned_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub count: u32,
    pub origin: Origin,
}

/// Another host lifted its ban: the ban here goes only if it came from that origin
/// (same host, key and ban id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lift {
    pub jail: String,
    pub target: Target,
    pub origin: Origin,
}

/// Which jails' bans this host announces to its fleet (`[fleet] share`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sharing {
    /// `None`: every jail.
    pub jails: Option<std::collections::BTreeSet<String>>,
}

impl Sharing {
    pub fn shares(&self, jail: &str) -> bool {
        self.jails.as_ref().is_none_or(|j| j.contains(jail))
    }
}

/// What the jail task (and the fleet's consumer) sends the ban manager, in order.
#[derive(Debug)]
pub enum Decided {
    Ban(Decision),
    /// A ban from the fleet.
    Received(Received),
    /// An unban from the fleet.
    Lift(Lift),
    /// Answered once the decisions sent before it are saved; a reader then saves its
    /// read position. Unanswered (dropped) when they could not be saved.
    Saved(Barrier),
}

/// A request from `ctl`, answered on `reply`.
#[derive(Debug)]
pub enum Command {
    Ban {
        jail: String,
        target: Target,
        bantime: Option<BanTime>,
        reply: oneshot::Sender<Result<Ban, BanError>>,
    },
    Unban {
        target: Option<Target>,
        jail: Option<String>,
        reply: oneshot::Sender<Result<Vec<Ban>, BanError>>,
    },
    /// Every current ban, sorted by jail then target; one list shared by whoever asks
    /// before the next change, so the manager neither copies nor sorts per client.
    List {
        reply: oneshot::Sender<Arc<Vec<Ban>>>,
    },
    /// Answered as soon as the manager gets to it: the systemd watchdog's sign of life.
    Alive { reply: oneshot::Sender<()> },
    /// A reload: new jail policies and table.
    Reconfigure {
        config: Box<Reconfig>,
        reply: oneshot::Sender<Result<Reconfigured, BanError>>,
    },
}

/// What the ban manager takes from a reloaded configuration.
#[derive(Clone, Debug)]
pub struct Reconfig {
    pub jails: BTreeMap<String, BanPolicy>,
    pub layout: Layout,
    pub recidive: Option<RecidiveConfig>,
    pub history_horizon: Duration,
    pub reconcile_every: Option<Duration>,
    /// What this host announces to its fleet (`None`: no fleet).
    pub sharing: Option<Sharing>,
}

impl Reconfig {
    pub fn from_config(config: &Config) -> Reconfig {
        Reconfig {
            jails: policies(config),
            layout: Layout::from_config(config),
            recidive: config.recidive.clone(),
            history_horizon: config.daemon.dbpurgeage,
            reconcile_every: reconcile_every(config.firewall.reconcile_interval),
            sharing: sharing(config),
        }
    }
}

/// `[fleet] share` as the manager keeps it.
pub fn sharing(config: &Config) -> Option<Sharing> {
    config.fleet.as_ref().map(|f| Sharing {
        jails: f.share.as_ref().map(|j| j.iter().cloned().collect()),
    })
}

/// `reconcile_interval` as the manager keeps it: zero is off.
pub(super) fn reconcile_every(interval: Duration) -> Option<Duration> {
    (!interval.is_zero()).then_some(interval)
}

/// What a reload did to the bans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Bans lifted because their jail is gone.
    pub lifted: usize,
    /// The table was rebuilt (jails, ports, actions or sets changed).
    pub rebuilt: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BanError {
    #[error("no enabled jail named `{0}` (see `gaoler ctl status`)")]
    UnknownJail(String),
    #[error("{target} is in the ignore list of jail `{jail}` (ignoreip or loopback): not banned")]
    Ignored { target: Target, jail: String },
    #[error("{target} would cover a protected address (loopback, this host's own addresses or an ignoreip range of jail `{jail}`): not banned; ban a narrower prefix")]
    Protected { target: Target, jail: String },
    #[error("{target} overlaps {existing}, already banned in jail `{jail}`: lift that ban first")]
    Overlaps {
        target: Target,
        existing: Target,
        jail: String,
    },
    #[error("{target} in jail `{jail}`: the ban had already ended")]
    Ended { target: Target, jail: String },
    #[error("the state database refused the change: {0}")]
    Store(#[from] StoreError),
    #[error("cannot read the saved bans: {0}")]
    Load(StoreError),
    #[error("cannot build the firewall table: {0}")]
    Install(FirewallError),
    #[error("the change is saved, but the kernel refused it; it is being retried: {0}")]
    Firewall(#[from] FirewallError),
}

impl BanError {
    /// True when the request itself was wrong (exit 2) rather than the system (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            BanError::UnknownJail(_)
                | BanError::Ignored { .. }
                | BanError::Protected { .. }
                | BanError::Overlaps { .. }
        )
    }
}

/// What the restore at start did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub loaded: usize,
    /// Bans rebuilt from the kernel's table after the store was found damaged.
    pub recovered: usize,
    pub expired: usize,
    pub orphaned: usize,
    /// Time spent reading the store, and building the table in the kernel.
    pub store_ms: u64,
    pub kernel_ms: u64,
}
