//! Log sources: where lines come from, behind one trait. A [`Source`] opens where its
//! saved position left off and hands out batches of records; the one generic loop in
//! `follow.rs` drives every source: it hands each batch to a [`Sink`], and saves the
//! source's position only behind a barrier the sink answers once what came before is
//! saved. Sources: `file` (rotation, truncation, resume), `journal` (journalctl),
//! `pipe` (a named pipe a logger writes into). Nothing here knows filters, jails or
//! the store: positions are opaque bytes behind [`Positions`].

pub mod file;
mod file_source;
mod follow;
pub mod journal;
mod lines;
pub mod pipe;
pub mod watch;

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use file::{FilePosition, FileTail, Start};
pub use file_source::{FileSource, Unsaved};
pub use follow::{follow, Follow};
pub use journal::JournalSource;
pub use lines::{Batch, Fields, LineSplitter, Lines, Meta, Record};
pub use pipe::PipeSource;
pub use watch::DirWatcher;

/// Answered once everything handed on before it is saved downstream; only then is the
/// position of the source that sent it saved. Dropped unanswered when it could not
/// be saved: the position stays, and those lines are read again next time.
pub type Barrier = oneshot::Sender<()>;

/// A place log records come from.
pub trait Source: Send + 'static {
    /// Names the source in the daemon's log and its per-source counter.
    fn name(&self) -> String;
    /// The key its position is saved under; `None` for a source that cannot resume.
    fn key(&self) -> Option<Vec<u8>>;
    /// Opens the source where `saved` (an earlier `position`) left off, when that
    /// still applies; records will be cut at `cap` bytes. Logs what it found; never
    /// fails (a source that cannot be read yet retries in `read`).
    fn open(&mut self, saved: Option<Vec<u8>>, cap: usize) -> impl Future<Output = ()> + Send;
    /// Waits until there is something new and puts it in `batch`, each record at most
    /// `batch.cap()` bytes. The batch may be empty when only the position moved.
    /// Returns false once the source has ended for good. Need not be cancel safe:
    /// the loop stops the source when it cancels a read.
    fn read(&mut self, batch: &mut Batch) -> impl Future<Output = bool> + Send;
    /// Where a restart resumes after everything handed out so far.
    fn position(&self) -> Option<Vec<u8>>;
}

/// Where the follow loop hands what a source read.
pub trait Sink: Send {
    /// Takes one batch; false when nobody downstream listens any more.
    fn take(&mut self, batch: &Batch) -> impl Future<Output = bool> + Send;
    /// Passes `barrier` on behind everything taken so far; false when nobody listens.
    fn barrier(&mut self, barrier: Barrier) -> impl Future<Output = bool> + Send;
}

/// Why a position could not be loaded or saved (the store's own error).
pub type PositionError = Box<dyn std::error::Error + Send + Sync>;

/// Durable read positions: opaque bytes per source key, each key written by one
/// source only.
pub trait Positions: Send + Sync {
    fn load(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PositionError>;
    fn save(&self, key: &[u8], position: &[u8]) -> Result<(), PositionError>;
}

/// Version written into every position a source saves; older ones still load.
pub const POSITION_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    v: u32,
    #[serde(flatten)]
    position: T,
}

/// A position as saved: JSON with its format version.
pub fn encode_position<T: Serialize>(position: T) -> Vec<u8> {
    serde_json::to_vec(&Versioned {
        v: POSITION_VERSION,
        position,
    })
    .unwrap_or_default()
}

/// A saved position, or `None` when it is unreadable or from a newer gaoler (the
/// source then starts as if nothing was saved).
pub fn decode_position<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let saved: Versioned<T> = serde_json::from_slice(bytes).ok()?;
    (saved.v <= POSITION_VERSION).then_some(saved.position)
}
