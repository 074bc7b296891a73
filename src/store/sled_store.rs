//! The durable `BanStore` on sled: one tree, keys `b/<jail>/<target>` (current bans)
//! and `h/<jail>/<target>` (history), JSON values with a version. Each commit is one
//! atomic sled batch followed by one flush.

use std::path::{Path, PathBuf};

use super::positions::{
    encode_cursor, encode_file, file_key, CursorRecord, FilePosition, PositionRecord,
    PositionStore, JOURNAL_KEY,
};
use super::{
    ban_key, history_key, recent_key, with_recent, BanRecord, BanStore, History, HistoryRecord,
    RecentBan, RecentRecord, StoreChange, StoreError, FORMAT_VERSION,
};
use crate::types::{Ban, Target};

const META_FORMAT: &[u8] = b"meta/format";

/// Ban state in a sled database under the state directory.
pub struct SledStore {
    path: PathBuf,
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
}

impl SledStore {
    /// Opens (creating if needed) the database in `state_dir/db`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join("db");
        let open_err = |reason: String| StoreError::Open {
            path: state_dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(state_dir).map_err(|e| open_err(crate::util::io_reason(&e)))?;
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(|e| match e {
                // sled reports a held lock as an I/O error with this text.
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    StoreError::Locked {
                        path: state_dir.to_path_buf(),
                    }
                }
                sled::Error::Io(io) => open_err(crate::util::io_reason(&io)),
                other => open_err(other.to_string()),
            })?;
        let tree = db.open_tree("state").map_err(|e| open_err(e.to_string()))?;
        let store = SledStore {
            path: state_dir.to_path_buf(),
            db,
            tree,
        };
        store.check_format()?;
        Ok(store)
    }

    /// The read positions, in their own tree of the same database.
    pub fn positions(&self) -> Result<SledPositions, StoreError> {
        let tree = self
            .db
            .open_tree("positions")
            .map_err(db_err("opening positions"))?;
        Ok(SledPositions {
            db: self.db.clone(),
            tree,
        })
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let found = self
            .tree
            .get(META_FORMAT)
            .map_err(db_err("reading the format"))?;
        match found {
            Some(v) => {
                let found = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .unwrap_or(u32::MAX);
                if found > FORMAT_VERSION {
                    return Err(StoreError::Newer {
                        path: self.path.clone(),
                        found,
                    });
                }
            }
            None => {
                self.tree
                    .insert(META_FORMAT, FORMAT_VERSION.to_string().as_bytes())
                    .map_err(db_err("writing the format"))?;
                self.db.flush().map_err(db_err("flushing"))?;
            }
        }
        Ok(())
    }
}

/// The record at `key`, decoded; `None` when absent or unreadable (a newer format).
fn read_json<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: impl AsRef<[u8]>,
    doing: &'static str,
) -> Result<Option<T>, StoreError> {
    let value = tree.get(key).map_err(db_err(doing))?;
    Ok(value.and_then(|v| serde_json::from_slice::<T>(&v).ok()))
}

fn db_err(doing: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |e| StoreError::Db {
        doing,
        reason: e.to_string(),
    }
}

impl BanStore for SledStore {
    fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        // sled's scan and the decoding cost about the same: one thread walks the
        // tree and hands records over in chunks while this one decodes them.
        const CHUNK: usize = 1024;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(sled::IVec, sled::IVec)>>(8);
        std::thread::scope(|scope| {
            let walker = scope.spawn(move || -> Result<(), StoreError> {
                let mut chunk = Vec::with_capacity(CHUNK);
                for item in self.tree.scan_prefix(b"b/") {
                    chunk.push(item.map_err(db_err("reading bans"))?);
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
            for (key, value) in rx.iter().flatten() {
                // Read as a plain `Ban` (its `v` is ignored): serde's `flatten` buffers
                // every field first, which made reading 100,000 bans twice as slow.
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
                Ok(walked) => walked.map(|()| out),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    fn history(&self, jail: &str, target: &Target) -> Result<Option<History>, StoreError> {
        Ok(
            read_json::<HistoryRecord>(&self.tree, history_key(jail, target), "reading history")?
                .map(|r| r.history),
        )
    }

    fn commit(&mut self, changes: &[StoreChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        // Recent-ban lists changed by this batch (a target may be banned twice in it).
        let mut recent: std::collections::HashMap<Target, Vec<RecentBan>> =
            std::collections::HashMap::new();
        for change in changes {
            match change {
                StoreChange::Put(ban) => {
                    let rec = BanRecord {
                        v: FORMAT_VERSION,
                        ban: ban.clone(),
                    };
                    batch.insert(ban_key(&ban.jail, &ban.target), to_json(&rec)?);
                }
                StoreChange::Remove(ban) => {
                    let hist = HistoryRecord {
                        v: FORMAT_VERSION,
                        history: History::of(ban),
                    };
                    batch.remove(ban_key(&ban.jail, &ban.target));
                    batch.insert(history_key(&ban.jail, &ban.target), to_json(&hist)?);
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
        let t0 = std::time::Instant::now();
        self.tree
            .apply_batch(batch)
            .map_err(db_err("writing bans"))?;
        let t1 = std::time::Instant::now();
        self.db.flush().map_err(db_err("flushing bans to disk"))?;
        tracing::debug!(
            changes = changes.len(),
            apply_us = (t1 - t0).as_micros() as u64,
            flush_us = t1.elapsed().as_micros() as u64,
            "store commit"
        );
        Ok(())
    }

    fn recent_bans(&self, target: &Target) -> Result<Vec<RecentBan>, StoreError> {
        Ok(
            read_json::<RecentRecord>(&self.tree, recent_key(target), "reading recent bans")?
                .map(|r| r.bans)
                .unwrap_or_default(),
        )
    }

    fn purge_history(&mut self, before: crate::types::Timestamp) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.tree.scan_prefix(b"h/") {
            let (key, value) = item.map_err(db_err("reading history"))?;
            let old = serde_json::from_slice::<HistoryRecord>(&value)
                .map_or(true, |r| r.history.last_banned_at < before);
            // `h/<jail>/<target>` has a current ban at `b/<jail>/<target>`.
            let mut ban_key = key.to_vec();
            ban_key[0] = b'b';
            let banned = self
                .tree
                .contains_key(&ban_key)
                .map_err(db_err("reading bans"))?;
            if old && !banned {
                batch.remove(key);
                n += 1;
            }
        }
        let mut recent_gone = 0;
        for item in self.tree.scan_prefix(b"r/") {
            let (key, value) = item.map_err(db_err("reading recent bans"))?;
            let old = serde_json::from_slice::<RecentRecord>(&value)
                .map_or(true, |r| r.bans.last().is_none_or(|b| b.at < before));
            if old {
                batch.remove(key);
                recent_gone += 1;
            }
        }
        if n + recent_gone > 0 {
            self.tree
                .apply_batch(batch)
                .map_err(db_err("purging history"))?;
            self.db.flush().map_err(db_err("flushing"))?;
        }
        Ok(n)
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
    db: sled::Db,
    tree: sled::Tree,
}

impl SledPositions {
    fn put(&self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.tree
            .insert(key, value)
            .map_err(db_err("saving a read position"))?;
        self.db
            .flush()
            .map_err(db_err("flushing a read position"))?;
        Ok(())
    }
}

impl PositionStore for SledPositions {
    fn file(&self, path: &Path) -> Result<Option<FilePosition>, StoreError> {
        Ok(
            read_json::<PositionRecord>(&self.tree, file_key(path), "reading a read position")?
                .map(|r| r.position),
        )
    }

    fn save_file(&self, path: &Path, position: &FilePosition) -> Result<(), StoreError> {
        self.put(&file_key(path), encode_file(position))
    }

    fn journal_cursor(&self) -> Result<Option<String>, StoreError> {
        Ok(
            read_json::<CursorRecord>(&self.tree, JOURNAL_KEY, "reading the journal cursor")?
                .map(|r| r.cursor),
        )
    }

    fn save_journal_cursor(&self, cursor: &str) -> Result<(), StoreError> {
        self.put(JOURNAL_KEY, encode_cursor(cursor))
    }
}
