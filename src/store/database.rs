//! The one owner of sled's handles, under the state directory: opens the database,
//! reopens it after a write error (sled keeps an I/O error once it has seen one), and
//! guards against its damage: the ledger's count is checked once the bans are counted
//! (each commit is confirmed in it once sled's flush returned), a database sled cannot
//! read (or panics on) is moved aside as `db.damaged-<time>` and a new one started,
//! and the damage is reported until the ban manager has saved the bans again. The
//! records themselves are `sled_store.rs`'s.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use super::ledger::{Counts, Ledger};
use super::{Damage, StoreError, FORMAT_VERSION};

const META_FORMAT: &[u8] = b"meta/format";

/// The open database and its two trees.
pub(super) struct Handles {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
    pub(super) positions: sled::Tree,
    /// sled's log file, synced after each flush (see `flush`).
    pub(super) log: std::fs::File,
}

impl Handles {
    /// Makes everything written so far durable. sled's own flush syncs with
    /// `sync_file_range`, which leaves the file's size and the disk's cache unsynced:
    /// an ext4 journal abort right after a flush lost the last 20 KB of bans (the
    /// read-only disk test). `fdatasync` on the log file closes that gap.
    pub(super) fn flush(&self) -> sled::Result<()> {
        self.db.flush()?;
        self.log.sync_data().map_err(sled::Error::Io)
    }
}

/// The database under the state directory, shared by the ban store and the read
/// positions; the one owner of the sled handles, so it can drop and reopen them.
pub(super) struct Database {
    pub(super) state_dir: PathBuf,
    /// `None` after a reopen failed; the next use tries again.
    pub(super) open: RwLock<Option<Handles>>,
    /// A write failed with an I/O error: sled will fail every later one.
    pub(super) broken: AtomicBool,
    /// The last reopen that failed, and why: another is tried only a while later,
    /// so that a storm of reads and writes on a full disk fails fast.
    pub(super) failed_reopen: Mutex<Option<(std::time::Instant, String)>>,
    /// Why the database was last found damaged, while it is not healed.
    pub(super) damage: Mutex<Option<String>>,
    /// sled reported its files damaged: the next reopen starts a new database.
    pub(super) corrupt: Mutex<Option<String>>,
    /// The count kept apart (`None` when its file cannot be opened: logged).
    pub(super) ledger: Option<Ledger>,
    /// What the ledger held at open, until the database's count is known.
    pub(super) expected: Mutex<Option<Counts>>,
    /// What the ledger holds now, as far as this process wrote or read it.
    pub(super) recorded: Mutex<Option<Counts>>,
    /// Ban records in the database, once counted (read at start, or before the first
    /// commit).
    pub(super) count: Mutex<Option<u64>>,
    /// Bans the ledger counts and the database lost, while not healed.
    pub(super) missing: Mutex<Option<u64>>,
}

/// How long after a failed reopen the next one is tried.
const REOPEN_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

impl Database {
    /// Opens the database in `state_dir`, a damaged one moved aside first.
    pub(super) fn open(state_dir: &Path) -> Result<Database, StoreError> {
        let (handles, moved) = match open_checked(state_dir) {
            Err(StoreError::Corrupt { reason, .. }) => {
                move_aside(state_dir, &reason)?;
                (open_checked(state_dir)?, Some(reason))
            }
            other => (other?, None),
        };
        let (ledger, expected) = match Ledger::open(state_dir) {
            Ok((ledger, counts)) => (Some(ledger), counts),
            Err(e) => {
                tracing::warn!(state_dir = %state_dir.display(), error = %crate::util::io_reason(&e), "cannot open the ledger: bans the database loses would go unnoticed");
                (None, None)
            }
        };
        let db = Database {
            state_dir: state_dir.to_path_buf(),
            open: RwLock::new(Some(handles)),
            broken: AtomicBool::new(false),
            failed_reopen: Mutex::new(None),
            damage: Mutex::new(None),
            corrupt: Mutex::new(None),
            ledger,
            expected: Mutex::new(expected),
            recorded: Mutex::new(expected),
            count: Mutex::new(None),
            missing: Mutex::new(None),
        };
        if let Some(reason) = moved {
            db.note_damage(&reason);
            db.started_over();
        }
        Ok(db)
    }

    /// Runs `f` on the open handles; an I/O error marks the database for a reopen.
    pub(super) fn with<R>(
        &self,
        doing: &'static str,
        f: impl FnOnce(&Handles) -> sled::Result<R>,
    ) -> Result<R, StoreError> {
        let guard = self.handles()?;
        let Some(handles) = guard.as_ref() else {
            return Err(StoreError::Db {
                doing,
                reason: "the state database is closed".into(),
            });
        };
        f(handles).map_err(|e| {
            let corrupt = is_corruption(&e);
            if corrupt || matches!(e, sled::Error::Io(_)) {
                self.broken.store(true, Ordering::Release);
            }
            if corrupt {
                *self.corrupt.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                StoreError::Corrupt {
                    path: self.state_dir.clone(),
                    reason: e.to_string(),
                }
            } else {
                db_err(doing)(e)
            }
        })
    }

    /// Like `with`, after reopening the database if a write failed before.
    pub(super) fn write<R>(
        &self,
        doing: &'static str,
        f: impl FnOnce(&Handles) -> sled::Result<R>,
    ) -> Result<R, StoreError> {
        self.ready()?;
        self.with(doing, f)
    }

    /// Reopens the database if a write failed before. A commit calls this before it
    /// counts: a failed write may have left in sled's memory what never reached the
    /// disk, and a count taken before the reopen would outlive it.
    pub(super) fn ready(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        Ok(())
    }

    /// The handles, opening the database first if a reopen failed before.
    pub(super) fn handles(&self) -> Result<RwLockReadGuard<'_, Option<Handles>>, StoreError> {
        let guard = self.open.read().unwrap_or_else(|p| p.into_inner());
        if guard.is_some() {
            return Ok(guard);
        }
        drop(guard);
        self.reopen()?;
        Ok(self.open.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Moves the damaged database aside and starts a new one.
    pub(super) fn replace(&self, reason: String) -> Result<(), StoreError> {
        let mut slot = self.open.write().unwrap_or_else(|p| p.into_inner());
        close(slot.take());
        self.note_damage(&reason);
        move_aside(&self.state_dir, &reason)?;
        self.started_over();
        *slot = Some(open_checked(&self.state_dir)?);
        self.broken.store(false, Ordering::Release);
        Ok(())
    }

    /// The database holds `records` ban records, `readable` of which decode: checked
    /// against the ledger the first time, and the count to keep from then on.
    pub(super) fn counted(&self, records: u64, readable: u64) {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        if count.is_some() {
            return;
        }
        *count = Some(records);
        let expected = self
            .expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(c) = expected {
            if !c.accepts(readable) {
                let lost = c.after.max(c.before).saturating_sub(readable);
                tracing::error!(ledger_before = c.before, ledger_after = c.after, records, readable, "the state database holds other bans than its ledger counts: sled lost or damaged some of its records");
                *self.missing.lock().unwrap_or_else(|p| p.into_inner()) = Some(lost);
                self.note_damage(&format!(
                    "{readable} readable bans found where the ledger counts {}",
                    c.after
                ));
            }
        }
    }

    /// The ban records in the database, counted now if they were not yet.
    pub(super) fn count(&self) -> Result<u64, StoreError> {
        if let Some(n) = *self.count.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(n);
        }
        let records = self.with("counting bans", |h| {
            let mut n = 0u64;
            for item in h.tree.scan_prefix(b"b/").keys() {
                item?;
                n += 1;
            }
            Ok(n)
        })?;
        self.counted(records, records);
        Ok(records)
    }

    /// Records in the ledger that a commit takes the count from `before` to `after`.
    pub(super) fn ledger(&self, before: u64, after: u64) -> Result<(), StoreError> {
        let Some(ledger) = &self.ledger else {
            return Ok(());
        };
        let counts = Counts { before, after };
        let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        // Unknown until the write is done: a failed one may have torn the record.
        *recorded = None;
        ledger.write(counts).map_err(|e| StoreError::Db {
            doing: "writing the ledger",
            reason: crate::util::io_reason(&e),
        })?;
        *recorded = Some(counts);
        Ok(())
    }

    /// A commit is durable in sled, which holds `count` bans: the ledger stops
    /// accepting the count before it. Without this, a database that came back
    /// without the last commit (a flipped bit in its records, after a clean stop)
    /// matched the ledger's count before that commit and went unnoticed. A failure is
    /// only logged: the commit stands, and the record of it begun still counts it.
    pub(super) fn confirm(&self, count: u64) {
        let Some(ledger) = &self.ledger else {
            return;
        };
        let counts = Counts {
            before: count,
            after: count,
        };
        let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        if *recorded == Some(counts) {
            return;
        }
        *recorded = None;
        match ledger.confirm(count) {
            Ok(()) => *recorded = Some(counts),
            Err(e) => {
                tracing::warn!(state_dir = %self.state_dir.display(), bans = count, error = %crate::util::io_reason(&e), "cannot confirm a commit in the ledger: until the next one, losing it would go unnoticed");
            }
        }
    }

    /// After a reopen: the database is counted again before the next commit and
    /// must hold what the ledger says (the count before or after the commit that
    /// failed, as a restart would check), or it lost records on the way (a torn write).
    pub(super) fn recount(&self) {
        if let Some(n) = self.count.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let recorded = *self.recorded.lock().unwrap_or_else(|p| p.into_inner());
            *self.expected.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(recorded.unwrap_or(Counts {
                    before: n,
                    after: n,
                }));
        }
    }

    /// A new, empty database replaces the damaged one: its count is 0.
    pub(super) fn started_over(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) = Some(0);
        self.expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Err(e) = self.ledger(0, 0) {
            tracing::warn!(error = %e, "cannot reset the ledger for the new database");
        }
    }

    pub(super) fn note_damage(&self, reason: &str) {
        *self.damage.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
    }

    /// Damage not yet healed: a database moved aside, now or before a restart.
    pub(super) fn damage(&self) -> Option<Damage> {
        let moved = unhealed(&self.state_dir);
        let reason = self
            .damage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let missing = *self.missing.lock().unwrap_or_else(|p| p.into_inner());
        if moved.is_empty() && missing.is_none() {
            return None;
        }
        Some(Damage {
            reason: reason.unwrap_or_else(|| "found damaged before the last restart".into()),
            moved_to: moved.last().cloned(),
            missing,
        })
    }

    /// Marks every damaged database moved aside as healed.
    pub(super) fn healed(&self) {
        for path in unhealed(&self.state_dir) {
            let mut done = path.clone().into_os_string();
            done.push(HEALED);
            if let Err(e) = std::fs::rename(&path, &done) {
                tracing::warn!(path = %path.display(), error = %crate::util::io_reason(&e), "cannot mark the damaged database as healed; the next start rebuilds from the kernel again");
            }
        }
        *self.damage.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.missing.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Drops the handles (sled's file lock goes with them) and opens the database again.
    pub(super) fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.open.write().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() && !self.broken.load(Ordering::Acquire) {
            return Ok(()); // another thread reopened it meanwhile
        }
        let mut failed = self.failed_reopen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, reason)) = failed.as_ref() {
            if at.elapsed() < REOPEN_AFTER {
                return Err(StoreError::Open {
                    path: self.state_dir.clone(),
                    reason: reason.clone(),
                });
            }
        }
        close(slot.take());
        let corrupt = self
            .corrupt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let opened = match corrupt {
            Some(reason) => {
                self.note_damage(&reason);
                move_aside(&self.state_dir, &reason).and_then(|()| {
                    self.started_over();
                    open_checked(&self.state_dir)
                })
            }
            None => match open_checked(&self.state_dir) {
                Err(StoreError::Corrupt { reason, .. }) => {
                    self.note_damage(&reason);
                    move_aside(&self.state_dir, &reason).and_then(|()| {
                        self.started_over();
                        open_checked(&self.state_dir)
                    })
                }
                Ok(h) => {
                    self.recount();
                    Ok(h)
                }
                Err(e) => Err(e),
            },
        };
        let handles = match opened {
            Ok(h) => h,
            Err(e) => {
                let reason = match &e {
                    StoreError::Open { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                *failed = Some((std::time::Instant::now(), reason));
                return Err(e);
            }
        };
        *failed = None;
        *slot = Some(handles);
        self.broken.store(false, Ordering::Release);
        tracing::warn!(path = %self.state_dir.display(), "reopened the state database after a write error");
        Ok(())
    }
}

/// Drops sled's handles. sled syncs its file when the last handle goes and panics
/// if that fails (a file system turned read-only before sled itself saw an error):
/// caught here, since the sync failing is already known and reported.
pub(super) fn close(handles: Option<Handles>) {
    if let Some(h) = handles {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(h))).is_err() {
            tracing::warn!("sled could not sync its file while closing the state database");
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        close(
            self.open
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        // The last confirmation is not synced by the commit that wrote it.
        if let Some(ledger) = &self.ledger {
            if let Err(e) = ledger.sync() {
                tracing::warn!(state_dir = %self.state_dir.display(), error = %crate::util::io_reason(&e), "cannot sync the ledger while closing the state database");
            }
        }
    }
}

/// Opens (creating if needed) the database in `state_dir/db`.
pub(super) fn open_handles(state_dir: &Path) -> Result<Handles, StoreError> {
    let path = state_dir.join("db");
    let open_err = |reason: String| StoreError::Open {
        path: state_dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(state_dir).map_err(|e| open_err(crate::util::io_reason(&e)))?;
    let corrupt = |reason: String| StoreError::Corrupt {
        path: state_dir.to_path_buf(),
        reason,
    };
    // sled panics on some damage (`tried to serialize Uninitialized`): caught here,
    // at the boundary, and reported as damage rather than a crash loop.
    let opened = std::panic::catch_unwind(|| {
        sled::Config::new()
            .path(&path)
            .cache_capacity(64 * 1024 * 1024)
            .open()
    })
    .map_err(|panic| corrupt(format!("sled panicked opening it: {}", panic_text(&panic))))?;
    let db = opened.map_err(|e| match e {
        e if is_corruption(&e) => corrupt(e.to_string()),
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
    // sled writes its `conf` file without syncing it: a crash (or an ext4 journal
    // abort) soon after the first start left it empty, and sled then began a new,
    // empty database over the old one (seen in the read-only disk test).
    sync_files(&[&path.join("conf"), &path, state_dir])
        .map_err(|e| open_err(crate::util::io_reason(&e)))?;
    let tree_err = |e: sled::Error| {
        if is_corruption(&e) {
            corrupt(e.to_string())
        } else {
            open_err(e.to_string())
        }
    };
    let tree = db.open_tree("state").map_err(tree_err)?;
    let positions = db.open_tree("positions").map_err(tree_err)?;
    let log =
        std::fs::File::open(path.join("db")).map_err(|e| open_err(crate::util::io_reason(&e)))?;
    Ok(Handles {
        db,
        tree,
        positions,
        log,
    })
}

/// fsyncs each file or directory of `paths`.
pub(super) fn sync_files(paths: &[&Path]) -> std::io::Result<()> {
    for path in paths {
        std::fs::File::open(path)?.sync_all()?;
    }
    Ok(())
}

pub(super) fn open_checked(state_dir: &Path) -> Result<Handles, StoreError> {
    let handles = open_handles(state_dir)?;
    check_format(state_dir, &handles)?;
    Ok(handles)
}

/// Prefix of a damaged database moved aside; `.healed` is added once the bans
/// were saved again into the new one.
const DAMAGED: &str = "db.damaged-";
const HEALED: &str = ".healed";

/// Renames the damaged `state_dir/db` to a free `db.damaged-<unix time>[-n]`: a
/// rename needs no room on a full disk, and survives a crash.
pub(super) fn move_aside(state_dir: &Path, reason: &str) -> Result<(), StoreError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut target = state_dir.join(format!("{DAMAGED}{stamp}"));
    let mut n = 1;
    while target.exists() {
        target = state_dir.join(format!("{DAMAGED}{stamp}-{n}"));
        n += 1;
    }
    std::fs::rename(state_dir.join("db"), &target)
        .and_then(|()| std::fs::File::open(state_dir)?.sync_all())
        .map_err(|e| StoreError::Open {
            path: state_dir.to_path_buf(),
            reason: format!(
                "it is damaged ({reason}) and cannot be moved aside: {}",
                crate::util::io_reason(&e)
            ),
        })?;
    tracing::error!(state_dir = %state_dir.display(), moved_to = %target.display(), %reason, "the state database is damaged: moved aside, starting a new one; the bans are saved again from what the daemon holds, or at start from the kernel's table");
    Ok(())
}

/// The damaged databases moved aside and not yet healed.
pub(super) fn unhealed(state_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(DAMAGED) && !n.ends_with(HEALED))
        })
        .collect();
    found.sort();
    found
}

/// sled's words for "my files are damaged".
pub(super) fn is_corruption(e: &sled::Error) -> bool {
    matches!(
        e,
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)
    )
}

pub(super) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

pub(super) fn check_format(state_dir: &Path, h: &Handles) -> Result<(), StoreError> {
    let found = h
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
                    path: state_dir.to_path_buf(),
                    found,
                });
            }
            if found < FORMAT_VERSION {
                // Its records load as they are; marked, so that an older gaoler (which
                // would leave a lifted ban's evidence behind) refuses it.
                h.tree
                    .insert(META_FORMAT, FORMAT_VERSION.to_string().as_bytes())
                    .map_err(db_err("writing the format"))?;
                h.flush().map_err(db_err("flushing"))?;
            }
        }
        None => {
            h.tree
                .insert(META_FORMAT, FORMAT_VERSION.to_string().as_bytes())
                .map_err(db_err("writing the format"))?;
            h.flush().map_err(db_err("flushing"))?;
        }
    }
    Ok(())
}

pub(super) fn db_err(doing: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |e| StoreError::Db {
        doing,
        reason: e.to_string(),
    }
}
