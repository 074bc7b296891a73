//! The kernel side of a ban behind one trait. `nft` is the only backend that touches
//! the system; `log` is the dry run; `memory` is a fake for unit tests of the core.
//! Nothing here decides who is banned: it applies what the ban manager says.

mod log;
mod memory;
pub mod nft;

use std::future::Future;
use std::time::Duration;

pub use log::LogFirewall;
pub use memory::MemoryFirewall;
pub use nft::NftFirewall;

use crate::config::{Action, Config, PortRange, Protocol};
use crate::types::Target;

/// What gaoler's table enforces: per jail, traffic from its set group's bans to its
/// ports is dropped or rejected. How (chains, maps, sets) is the backend's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub table: String,
    pub priority: i32,
    pub jails: Vec<Rule>,
}

/// What one jail blocks: traffic from its sets to its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub jail: String,
    /// The sets this jail's rules read: its own name, or a `set` shared with others.
    pub set: String,
    /// Empty: all ports.
    pub ports: Vec<PortRange>,
    pub protocol: Protocol,
    pub action: Action,
}

impl Layout {
    /// The layout for the jails `config` runs (`recidive` on all ports).
    pub fn from_config(config: &Config) -> Self {
        Layout {
            table: config.firewall.table.clone(),
            priority: config.firewall.priority,
            jails: config
                .active_jails()
                .into_iter()
                .map(|j| Rule {
                    jail: j.name,
                    set: j.set,
                    ports: j.ports,
                    protocol: j.protocol,
                    action: j.action,
                })
                .collect(),
        }
    }
}

/// A banned target in a set (named after a jail, or shared), with the time left
/// (`None`: permanent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub set: String,
    pub target: Target,
    pub timeout: Option<Duration>,
}

/// One change to the kernel's sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Put a new `target` in the jail's set with this timeout (a plain add).
    Ban(Element),
    /// Put `target` in the jail's set with this timeout, replacing an element that may
    /// be there already (a re-ban, a corrected timeout).
    Renew(Element),
    /// Take `target` out of the set; not an error when it is not there.
    Unban { set: String, target: Target },
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("the `nft` command was not found: install the nftables package (Debian/Ubuntu: apt-get install nftables; Fedora/RHEL: dnf install nftables), or set [firewall] backend = \"log\" for a dry run")]
    NftMissing,
    #[error("cannot run `nft`: {0}")]
    Spawn(String),
    #[error("nft rejected the transaction ({what}): {stderr}")]
    Rejected { what: String, stderr: String },
    /// nft refused because gaoler's table, or a set or chain of it, is not there.
    #[error("nft rejected the transaction ({what}): {stderr}")]
    TableMissing { what: String, stderr: String },
    #[error("the firewall table is not installed yet")]
    NotInstalled,
}

impl FirewallError {
    /// True when the change failed because gaoler's table (or a set or chain of it)
    /// is not in the kernel: the table must be rebuilt, not the change retried.
    pub fn table_missing(&self) -> bool {
        matches!(
            self,
            FirewallError::NotInstalled | FirewallError::TableMissing { .. }
        )
    }
}

/// What the kernel holds of gaoler's table, for the reconciler.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// The table, its chains, every rule and every set gaoler created are there (a
    /// backend may create a set only with its first element).
    pub complete: bool,
    /// Elements by (set, target): seconds until the kernel drops them (`None`: never).
    pub elements: std::collections::HashMap<(String, Target), Option<u64>>,
}

/// Applies ban decisions to the kernel (or pretends to).
pub trait Firewall: Send {
    /// Checks that the backend can work at all; called once at start.
    fn probe(&mut self) -> impl Future<Output = Result<(), FirewallError>> + Send;
    /// (Re)builds gaoler's table with exactly `bans` in it, in one transaction.
    fn install(
        &mut self,
        layout: &Layout,
        bans: &[Element],
    ) -> impl Future<Output = Result<(), FirewallError>> + Send;
    /// Applies `changes` in one transaction.
    fn apply(
        &mut self,
        changes: &[Change],
    ) -> impl Future<Output = Result<(), FirewallError>> + Send;
    /// Removes gaoler's table (`on_stop = "flush"`).
    fn remove(&mut self) -> impl Future<Output = Result<(), FirewallError>> + Send;
    /// Reads back what the kernel holds for `layout`; `None` when there is no kernel
    /// to compare with (the dry run).
    fn inventory(
        &mut self,
        layout: &Layout,
    ) -> impl Future<Output = Result<Option<Inventory>, FirewallError>> + Send;
    /// Whether gaoler's table is in the kernel at all, asked cheaply (no elements
    /// listed); `None` when there is no kernel to ask (the dry run).
    fn table_exists(&mut self) -> impl Future<Output = Result<Option<bool>, FirewallError>> + Send {
        async { Ok(None) }
    }
    /// A signal each time the table may have been removed behind gaoler's back (a
    /// `flush ruleset`, as `systemctl restart nftables` does); `None` when the
    /// backend cannot watch. Called once, from within the runtime.
    fn watch(&mut self) -> Option<tokio::sync::mpsc::Receiver<()>> {
        None
    }
}

/// The backend chosen by `[firewall] backend`.
pub enum Backend {
    Nft(NftFirewall),
    Log(LogFirewall),
}

impl Firewall for Backend {
    async fn probe(&mut self) -> Result<(), FirewallError> {
        match self {
            Backend::Nft(f) => f.probe().await,
            Backend::Log(f) => f.probe().await,
        }
    }

    async fn install(&mut self, layout: &Layout, bans: &[Element]) -> Result<(), FirewallError> {
        match self {
            Backend::Nft(f) => f.install(layout, bans).await,
            Backend::Log(f) => f.install(layout, bans).await,
        }
    }

    async fn apply(&mut self, changes: &[Change]) -> Result<(), FirewallError> {
        match self {
            Backend::Nft(f) => f.apply(changes).await,
            Backend::Log(f) => f.apply(changes).await,
        }
    }

    async fn remove(&mut self) -> Result<(), FirewallError> {
        match self {
            Backend::Nft(f) => f.remove().await,
            Backend::Log(f) => f.remove().await,
        }
    }

    async fn inventory(&mut self, layout: &Layout) -> Result<Option<Inventory>, FirewallError> {
        match self {
            Backend::Nft(f) => f.inventory(layout).await,
            Backend::Log(f) => f.inventory(layout).await,
        }
    }

    async fn table_exists(&mut self) -> Result<Option<bool>, FirewallError> {
        match self {
            Backend::Nft(f) => f.table_exists().await,
            Backend::Log(f) => f.table_exists().await,
        }
    }

    fn watch(&mut self) -> Option<tokio::sync::mpsc::Receiver<()>> {
        match self {
            Backend::Nft(f) => f.watch(),
            Backend::Log(f) => f.watch(),
        }
    }
}
