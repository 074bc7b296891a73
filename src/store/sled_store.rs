//! The durable `BanStore` on sled: one tree, keys `b/<jail>/<target>` (current bans),
//! `h/<jail>/<target>` (history), `r/<target>` (recent bans) and `o/<seq>` (the
//! fleet's outbox, `SledOutbox`), JSON values with a version. Each commit is one
//! atomic sled batch followed by one flush, the ledger's count written before it and
//! confirmed after it. The handles, reopening and damage are `database.rs`'s; the
//! read positions live in a second tree of the same database (`SledPositions`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::database::{panic_text, Database, Handles};
use super::{
    ban_key, history_key, outbox_key, recent_key, with_recent, BanRecord, BanStore, Damage,
    EvidenceOnly, History, HistoryRecord, Outbox, RecentBan, RecentRecord, StoreChange, StoreError,
    StoreReader, FORMAT_VERSION,
};
use crate::source::{PositionError, Positions};
use crate::types::{Ban, Target};

/// A thread reading every stored ban.
type ReadAhead = std::thread::JoinHandle<Result<Vec<Ban>, StoreError>>;

/// Ban state in a sled database under the state directory.
pub struct SledStore {
    db: Arc<Database>,
    /// The bans `read_ahead` is reading, until `bans` takes them or a commit makes
    /// them stale.
    ahead: Mutex<Option<ReadAhead>>,
}

impl SledStore {
    /// Opens (creating if needed) the database in `state_dir/db`.
    /// A damaged database is moved aside (`db.damaged-<unix time>`, kept for a
    /// post-mortem, and the mark of damage not yet healed) and a new one started.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let db = Database::open(state_dir)?;
        Ok(SledStore {
            db: Arc::new(db),
            ahead: Mutex::new(None),
        })
    }

    /// Starts reading every stored ban on a thread of its own, so the restore at
    /// start finds them read while the rest of the daemon was being set up; the
    /// next `bans` takes them (a commit before that makes them stale: `bans` then
    /// reads again).
    pub fn read_ahead(&self) {
        let db = self.db.clone();
        let started = std::thread::Builder::new()
            .name("gaoler-read-ahead".into())
            .spawn(move || read_bans(&db));
        *self.ahead.lock().unwrap_or_else(|p| p.into_inner()) = started.ok();
    }

    /// The fleet's outbox, for its publisher.
    pub fn outbox(&self) -> SledOutbox {
        SledOutbox {
            db: self.db.clone(),
        }
    }

    /// A reader of bans' evidence, for the control socket.
    pub fn reader(&self) -> SledReader {
        SledReader {
            db: self.db.clone(),
        }
    }

    /// The read positions, in their own tree of the same database.
    pub fn positions(&self) -> SledPositions {
        SledPositions {
            db: self.db.clone(),
        }
    }

    /// As after a write that failed (tests): the next commit reopens the database.
    #[cfg(test)]
    pub(super) fn mark_broken(&self) {
        self.db
            .broken
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Runs `f` on the raw handles (tests).
    #[cfg(test)]
    pub(super) fn raw<R>(&self, f: impl FnOnce(&Handles) -> R) -> R {
        let guard = self.db.handles().expect("open");
        f(guard.as_ref().expect("open"))
    }
}

/// The record at `key` of the tree `pick` chooses, decoded; `None` when absent or
/// unreadable (a newer format).
fn read_json<T: serde::de::DeserializeOwned>(
    db: &Database,
    pick: fn(&Handles) -> &sled::Tree,
    key: impl AsRef<[u8]>,
    doing: &'static str,
) -> Result<Option<T>, StoreError> {
    let value = db.with(doing, |h| pick(h).get(key))?;
    Ok(value.and_then(|v| serde_json::from_slice::<T>(&v).ok()))
}

fn state(h: &Handles) -> &sled::Tree {
    &h.tree
}

/// Every stored ban. sled's scan and the decoding cost about the same: one thread
/// walks the tree and hands records over in chunks while this one decodes them.
fn read_bans(db: &Database) -> Result<Vec<Ban>, StoreError> {
    let (bans, records) = scan_bans(db)?;
    db.counted(records, bans.len() as u64);
    Ok(bans)
}

/// The decodable bans, and how many ban records there are.
fn scan_bans(db: &Database) -> Result<(Vec<Ban>, u64), StoreError> {
    const CHUNK: usize = 1024;
    db.with("reading bans", |h| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(sled::IVec, sled::IVec)>>(8);
        std::thread::scope(|scope| {
            let walker = scope.spawn(move || -> sled::Result<()> {
                let mut chunk = Vec::with_capacity(CHUNK);
                for item in h.tree.scan_prefix(b"b/") {
                    chunk.push(item?);
                    if chunk.len() == CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                        if tx.send(full).is_err() {
                            return Ok(());
                        }
                    }
                }
                let _ = tx.send(chunk);
                Ok(())
            });
            let mut out = Vec::new();
            let mut records = 0u64;
            for (key, value) in rx.iter().flatten() {
                records += 1;
                // Read as a plain `Ban` (its `v` is ignored): serde's `flatten`
                // buffers every field first, which made reading 100,000 bans twice
                // as slow.
                match serde_json::from_slice::<Ban>(&value) {
                    Ok(ban) => out.push(ban),
                    Err(e) => tracing::warn!(
                        key = %String::from_utf8_lossy(&key),
                        error = %e,
                        "skipping an unreadable ban record in the state database"
                    ),
                }
            }
            match walker.join() {
                Ok(walked) => walked.map(|()| (out, records)),
                Err(panic) => Err(sled::Error::ReportableBug(format!(
                    "sled panicked reading the bans: {}",
                    panic_text(&panic)
                ))),
            }
        })
    })
}

impl BanStore for SledStore {
    /// Every stored ban. A database found damaged while reading is moved aside and
    /// a new one started: no bans, and the damage to report (`take_damage`).
    fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        let ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner()).take();
        let read = match ahead.map(std::thread::JoinHandle::join) {
            Some(Ok(read)) => read,
            Some(Err(panic)) => Err(StoreError::Corrupt {
                path: self.db.state_dir.clone(),
                reason: format!("reading the bans panicked: {}", panic_text(&panic)),
            }),
            None => read_bans(&self.db),
        };
        match read {
            Err(StoreError::Corrupt { reason, .. }) => {
                self.db.replace(reason)?;
                Ok(Vec::new())
            }
            other => other,
        }
    }

    fn damage(&self) -> Option<Damage> {
        self.db.damage()
    }

    fn healed(&mut self) {
        self.db.healed();
    }

    fn history(&self, jail: &str, target: &Target) -> Result<Option<History>, StoreError> {
        read_history(&self.db, jail, target)
    }

    fn evidence(&self, jail: &str, target: &Target) -> Result<Vec<String>, StoreError> {
        read_evidence(&self.db, jail, target)
    }

    fn commit(&mut self, changes: &[StoreChange]) -> Result<(), StoreError> {
        // Bans read ahead of this commit are stale now.
        self.ahead
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if changes.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        // Ban records put (true) or removed (false), in order, for the count.
        let mut ban_keys: Vec<(Vec<u8>, bool)> = Vec::with_capacity(changes.len());
        // Recent-ban lists changed by this batch (a target may be banned twice in it).
        let mut recent: std::collections::HashMap<Target, Vec<RecentBan>> =
            std::collections::HashMap::new();
        // Evidence goes into the record of its ban's `Put` in this commit.
        let evidence: std::collections::HashMap<(&str, &Target), &Vec<String>> = changes
            .iter()
            .filter_map(|c| match c {
                StoreChange::Evidence {
                    jail,
                    target,
                    matches,
                } => Some(((jail.as_str(), target), matches)),
                _ => None,
            })
            .collect();
        for change in changes {
            match change {
                StoreChange::Put(ban) => {
                    let rec = BanRecord {
                        v: FORMAT_VERSION,
                        ban: ban.clone(),
                        matches: evidence
                            .get(&(ban.jail.as_str(), &ban.target))
                            .map(|m| m.to_vec())
                            .unwrap_or_default(),
                    };
                    let key = ban_key(&ban.jail, &ban.target);
                    batch.insert(key.clone(), to_json(&rec)?);
                    ban_keys.push((key, true));
                }
                StoreChange::Remove(ban) => {
                    let hist = HistoryRecord {
                        v: FORMAT_VERSION,
                        history: History::of(ban),
                    };
                    let key = ban_key(&ban.jail, &ban.target);
                    batch.remove(key.clone());
                    ban_keys.push((key, false));
                    batch.insert(history_key(&ban.jail, &ban.target), to_json(&hist)?);
                }
                // Written with its ban's record, above.
                StoreChange::Evidence { .. } => {}
                StoreChange::Publish(decision) => {
                    // sled's ids grow across restarts: entries keep their order.
                    let seq = self
                        .db
                        .with("numbering an outbox entry", |h| h.db.generate_id())?;
                    batch.insert(outbox_key(seq), decision.clone());
                }
                StoreChange::NoteRecent(ban) => {
                    let list = match recent.remove(&ban.target) {
                        Some(l) => l,
                        None => self.recent_bans(&ban.target)?,
                    };
                    recent.insert(ban.target, with_recent(list, ban));
                }
            }
        }
        for (target, bans) in recent {
            let rec = RecentRecord {
                v: FORMAT_VERSION,
                bans,
            };
            batch.insert(recent_key(&target), to_json(&rec)?);
        }
        // The ledger first: a crash after it leaves the count before or after this.
        self.db.ready()?;
        let before = self.db.count()?;
        let after = if ban_keys.is_empty() {
            before
        } else {
            let delta = self.db.with("counting bans", |h| {
                let mut present: std::collections::HashMap<&[u8], bool> =
                    std::collections::HashMap::new();
                let mut delta = 0i64;
                for (key, put) in &ban_keys {
                    let was = match present.get(key.as_slice()) {
                        Some(p) => *p,
                        None => h.tree.contains_key(key)?,
                    };
                    delta += i64::from(*put) - i64::from(was);
                    present.insert(key, *put);
                }
                Ok(delta)
            })?;
            before.saturating_add_signed(delta)
        };
        if after != before {
            self.db.ledger(before, after)?;
        }
        self.db.write("writing bans", |h| {
            let t0 = std::time::Instant::now();
            h.tree.apply_batch(batch)?;
            let t1 = std::time::Instant::now();
            h.flush()?;
            tracing::debug!(
                changes = changes.len(),
                apply_us = (t1 - t0).as_micros() as u64,
                flush_us = t1.elapsed().as_micros() as u64,
                "store commit"
            );
            Ok(())
        })?;
        *self.db.count.lock().unwrap_or_else(|p| p.into_inner()) = Some(after);
        // Durable now: the count before this commit is no longer one to accept.
        self.db.confirm(after);
        Ok(())
    }

    fn recent_bans(&self, target: &Target) -> Result<Vec<RecentBan>, StoreError> {
        Ok(
            read_json::<RecentRecord>(&self.db, state, recent_key(target), "reading recent bans")?
                .map(|r| r.bans)
                .unwrap_or_default(),
        )
    }

    fn purge_history(&mut self, before: crate::types::Timestamp) -> Result<usize, StoreError> {
        let (batch, gone, history_gone) = self.db.with("reading history", |h| {
            let mut batch = sled::Batch::default();
            let mut history_gone = 0;
            for item in h.tree.scan_prefix(b"h/") {
                let (key, value) = item?;
                let old = serde_json::from_slice::<HistoryRecord>(&value)
                    .map_or(true, |r| r.history.last_banned_at < before);
                // `h/<jail>/<target>` has a current ban at `b/<jail>/<target>`.
                let mut ban_key = key.to_vec();
                ban_key[0] = b'b';
                if old && !h.tree.contains_key(&ban_key)? {
                    batch.remove(key);
                    history_gone += 1;
                }
            }
            let mut gone = history_gone;
            for item in h.tree.scan_prefix(b"r/") {
                let (key, value) = item?;
                let old = serde_json::from_slice::<RecentRecord>(&value)
                    .map_or(true, |r| r.bans.last().is_none_or(|b| b.at < before));
                if old {
                    batch.remove(key);
                    gone += 1;
                }
            }
            Ok((batch, gone, history_gone))
        })?;
        if gone > 0 {
            self.db.write("purging history", |h| {
                h.tree.apply_batch(batch)?;
                h.flush()?;
                Ok(())
            })?;
        }
        Ok(history_gone)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Db {
        doing: "encoding a record",
        reason: e.to_string(),
    })
}

/// Read positions in the sled database; cheap to share between readers.
pub struct SledPositions {
    db: Arc<Database>,
}

impl SledPositions {
    fn put(&self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.db.write("saving a read position", |h| {
            h.positions.insert(key, value)?;
            h.flush()?;
            Ok(())
        })
    }
}

impl Positions for SledPositions {
    fn load(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PositionError> {
        let value = self
            .db
            .with("reading a read position", |h| h.positions.get(key))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn save(&self, key: &[u8], position: &[u8]) -> Result<(), PositionError> {
        Ok(self.put(key, position.to_vec())?)
    }
}

fn read_history(db: &Database, jail: &str, target: &Target) -> Result<Option<History>, StoreError> {
    Ok(
        read_json::<HistoryRecord>(db, state, history_key(jail, target), "reading history")?
            .map(|r| r.history),
    )
}

fn read_evidence(db: &Database, jail: &str, target: &Target) -> Result<Vec<String>, StoreError> {
    Ok(
        read_json::<EvidenceOnly>(db, state, ban_key(jail, target), "reading evidence")?
            .map(|r| r.matches)
            .unwrap_or_default(),
    )
}

/// The ban records' evidence (`b/<jail>/<target>`) and the history records
/// (`h/<jail>/<target>`) of the ban store's tree, read beside the ban manager (sled
/// is safe to read from several threads).
pub struct SledReader {
    db: Arc<Database>,
}

impl StoreReader for SledReader {
    fn evidence(&self, jail: &str, target: &Target) -> Result<Vec<String>, StoreError> {
        read_evidence(&self.db, jail, target)
    }
    fn history(&self, jail: &str, target: &Target) -> Result<Option<History>, StoreError> {
        read_history(&self.db, jail, target)
    }
}

/// The outbox entries (`o/<seq>`) of the ban store's tree, for the fleet's publisher:
/// it only reads them and removes those published; the ban manager adds them in its
/// commits.
#[derive(Clone)]
pub struct SledOutbox {
    db: Arc<Database>,
}

impl Outbox for SledOutbox {
    fn waiting(&self, from: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.db.with("reading the fleet outbox", |h| {
            h.tree
                .range(outbox_key(from)..)
                .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(b"o/")))
                .take(max)
                .map(|item| {
                    let (key, value) = item?;
                    let mut seq = [0u8; 8];
                    if let Some(tail) = key.get(2..10) {
                        seq.copy_from_slice(tail);
                    }
                    Ok((u64::from_be_bytes(seq), value.to_vec()))
                })
                .collect()
        })
    }

    fn published(&self, seqs: &[u64]) -> Result<(), StoreError> {
        // Not flushed: a crash may publish them again, which the message ids dedup.
        let mut batch = sled::Batch::default();
        for seq in seqs {
            batch.remove(outbox_key(*seq));
        }
        self.db.with("removing published outbox entries", move |h| {
            h.tree.apply_batch(batch)
        })
    }

    fn depth(&self) -> u64 {
        self.db
            .with("counting the fleet outbox", |h| {
                Ok(h.tree.scan_prefix(b"o/").keys().count() as u64)
            })
            .unwrap_or(0)
    }
}
