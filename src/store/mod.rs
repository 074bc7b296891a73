//! Durable state behind small traits: current bans and per-(jail, target) ban
//! history (`BanStore`, owned by the ban manager), and the log sources' read positions
//! (`source::Positions`: opaque bytes, one key per source). `sled` is the real store; `memory` is a fake for unit tests of the core.
//! Records carry a format version so old state directories keep loading.

mod database;
mod ledger;
mod memory;
mod positions;
mod sled_store;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use memory::{MemoryOutbox, MemoryStore, SharedStore};
pub use positions::MemoryPositions;
pub use sled_store::{SledOutbox, SledPositions, SledReader, SledStore};

use crate::types::{Ban, Target, Timestamp};

/// Version written into every record; readers accept this and older.
pub const FORMAT_VERSION: u32 = 2;

/// One change to the store; a batch of them is applied atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChange {
    /// Record a ban (new or renewed). While it stands, it is its target's history.
    Put(Ban),
    /// The ban ended (expired, lifted): remove it and keep its count as history.
    Remove(Ban),
    /// Add the ban to its target's recent bans in any jail (for recidive).
    NoteRecent(Ban),
    /// Queue a decision for the fleet's publisher (its serialized form), saved with
    /// the ban it is about so that neither goes without the other.
    Publish(Vec<u8>),
    /// The log lines behind a ban (its evidence): saved in the record of the `Put` of
    /// the same ban in the same commit (format 2), and so removed with it. Without
    /// such a `Put` in the commit it is not saved.
    Evidence {
        jail: String,
        target: Target,
        matches: Vec<String>,
    },
}

/// The fleet's outbox: decisions saved with their bans and waiting to be published,
/// oldest first. The ban manager adds to it (`StoreChange::Publish`, in its commits);
/// the publisher reads it and removes what the message engine acknowledged.
pub trait Outbox: Send + Sync {
    /// Up to `max` waiting entries numbered `from` or later, oldest first, with their
    /// sequence numbers (`from` 0: from the oldest).
    fn waiting(&self, from: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// These entries were published (or cannot be): forget them, in one write.
    fn published(&self, seqs: &[u64]) -> Result<(), StoreError>;
    /// How many entries wait.
    fn depth(&self) -> u64;
}

/// Reads the store beside the ban manager (which owns its writes), for the control
/// socket's answers: bans' evidence and past bans.
pub trait StoreReader: Send + Sync {
    /// As [`BanStore::evidence`].
    fn evidence(&self, jail: &str, target: &Target) -> Result<Vec<String>, StoreError>;
    /// As [`BanStore::history`].
    fn history(&self, jail: &str, target: &Target) -> Result<Option<History>, StoreError>;
}

/// What the store remembers of a target's past bans in one jail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub count: u32,
    pub last_banned_at: Timestamp,
}

impl History {
    /// The history `ban` (whose `count` includes it) stands for.
    pub fn of(ban: &Ban) -> History {
        History {
            count: ban.count,
            last_banned_at: ban.banned_at,
        }
    }
}

/// Durable ban state.
pub trait BanStore: Send {
    /// Every stored ban, expired ones included (the caller decides what to keep).
    fn bans(&self) -> Result<Vec<Ban>, StoreError>;
    /// The history kept when the last ban of `target` in `jail` ended, if any. A
    /// current ban is not looked at: the ban manager holds those in memory.
    fn history(&self, jail: &str, target: &Target) -> Result<Option<History>, StoreError>;
    /// Applies `changes` atomically; once this returns `Ok` they survive a crash.
    fn commit(&mut self, changes: &[StoreChange]) -> Result<(), StoreError>;
    /// Forgets the history of targets last banned before `before` that have no current
    /// ban; returns how many records went.
    fn purge_history(&mut self, before: Timestamp) -> Result<usize, StoreError>;
    /// The latest bans of `target` in any jail, oldest first (at most `RECENT_BANS`).
    fn recent_bans(&self, target: &Target) -> Result<Vec<RecentBan>, StoreError>;
    /// The evidence of the current ban of `target` in `jail`: the log lines that
    /// made it, oldest first (empty for a manual or received ban, and for bans saved
    /// before format 2).
    fn evidence(&self, jail: &str, target: &Target) -> Result<Vec<String>, StoreError>;
    /// Damage not yet healed: the database was found damaged (at open, or by a
    /// reopen) and a new one started. Kept across restarts until `healed`.
    fn damage(&self) -> Option<Damage> {
        None
    }
    /// The caller saved every ban it could into the new database.
    fn healed(&mut self) {}
}

/// How many recent bans are remembered per target (for recidive).
pub const RECENT_BANS: usize = 32;

/// One entry of a target's recent bans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentBan {
    pub jail: String,
    pub at: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct RecentRecord {
    v: u32,
    bans: Vec<RecentBan>,
}

fn recent_key(target: &Target) -> Vec<u8> {
    format!("r/{target}").into_bytes()
}

/// `list` with `ban` added, keeping the newest `RECENT_BANS`.
fn with_recent(mut list: Vec<RecentBan>, ban: &Ban) -> Vec<RecentBan> {
    list.push(RecentBan {
        jail: ban.jail.clone(),
        at: ban.banned_at,
    });
    if list.len() > RECENT_BANS {
        list.drain(..list.len() - RECENT_BANS);
    }
    list
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path} is in use by another gaoler process (its database is locked)")]
    Locked { path: PathBuf },
    #[error("cannot open the state database in {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("state database in {path} has format version {found}, newer than this gaoler ({FORMAT_VERSION}): upgrade gaoler or move the directory away")]
    Newer { path: PathBuf, found: u32 },
    #[error("state database error while {doing}: {reason}")]
    Db { doing: &'static str, reason: String },
    /// sled cannot read its own files (a flipped bit, a torn write on a full disk),
    /// or panicked reading them.
    #[error("the state database in {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// What a store lost to damage and where the damaged files went: the ban manager
/// then saves again every ban it holds, or at start rebuilds from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Why the database was found damaged.
    pub reason: String,
    /// Where the damaged database was moved, kept for a post-mortem.
    pub moved_to: Option<PathBuf>,
    /// Current bans the store should hold (by its count kept apart) but does not;
    /// `None` when the whole database was replaced.
    pub missing: Option<u64>,
}

/// A stored ban: the ban plus the record format version, and (format 2) the log
/// lines that made it. The restore reads a record as a plain `Ban`, skipping them.
#[derive(Serialize, Deserialize)]
struct BanRecord {
    v: u32,
    #[serde(flatten)]
    ban: Ban,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    matches: Vec<String>,
}

/// The evidence of a stored ban record, the rest of it skipped.
#[derive(Deserialize)]
struct EvidenceOnly {
    #[serde(default)]
    matches: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct HistoryRecord {
    v: u32,
    #[serde(flatten)]
    history: History,
}

fn ban_key(jail: &str, target: &Target) -> Vec<u8> {
    format!("b/{jail}/{target}").into_bytes()
}

/// An outbox entry's key: `o/` and its sequence number, big-endian so keys sort in
/// the order entries were made.
fn outbox_key(seq: u64) -> Vec<u8> {
    let mut key = b"o/".to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn history_key(jail: &str, target: &Target) -> Vec<u8> {
    format!("h/{jail}/{target}").into_bytes()
}

#[cfg(test)]
mod tests;
