//! A log file as a [`Source`]: a [`FileTail`] read off the runtime, woken by inotify
//! or its poll timer, its position saved as a versioned [`FilePosition`] under
//! `f/<path>`. What it meets (a start, a rotation, a read error) is logged once per
//! change, never per read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::file::{FilePosition, FileTail, Start};
use super::{decode_position, encode_position, Batch, Source};

/// Where a reader of a file with no saved position starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsaved {
    /// At the end: a file present when gaoler starts (its past is history).
    End,
    /// At the start: a file that appeared while gaoler runs (all of it is new).
    Start,
}

/// A log file as a [`Source`]: a `FileTail` read off the runtime, woken by inotify
/// (`wake`) or every `poll`.
pub struct FileSource {
    path: PathBuf,
    unsaved: Unsaved,
    wake: Option<Arc<Notify>>,
    poll: Duration,
    /// `None` before `open`, and while a read runs on the blocking pool.
    tail: Option<FileTail>,
    /// The position as of the last batch handed out.
    reported: Option<FilePosition>,
    /// The last read error, logged once until it changes.
    last_error: Option<String>,
}

impl FileSource {
    pub fn new(path: PathBuf, unsaved: Unsaved, wake: Option<Arc<Notify>>, poll: Duration) -> Self {
        FileSource {
            path,
            unsaved,
            wake,
            poll,
            tail: None,
            reported: None,
            last_error: None,
        }
    }

    /// Waits for an inotify event or the poll timer.
    async fn wait(&self) {
        let notified = async {
            match &self.wake {
                Some(w) => w.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(self.poll) => {}
        }
    }
}

/// The key a file's position is saved under.
pub(super) fn file_key(path: &Path) -> Vec<u8> {
    let mut key = b"f/".to_vec();
    key.extend_from_slice(path.as_os_str().as_encoded_bytes());
    key
}

impl Source for FileSource {
    fn name(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    fn key(&self) -> Option<Vec<u8>> {
        Some(file_key(&self.path))
    }

    async fn open(&mut self, saved: Option<Vec<u8>>, cap: usize) {
        let path = &self.path;
        let saved: Option<FilePosition> = saved.as_deref().and_then(decode_position);
        let mut tail = FileTail::new(path, cap);
        let start = match (saved, self.unsaved) {
            (None, Unsaved::Start) => tail.resume_from_start(),
            (saved, _) => tail.resume(saved),
        };
        match start {
            Ok(Start::AtEnd) => tracing::info!(file = %path.display(), "following from the end"),
            Ok(Start::Resumed { offset }) => {
                tracing::info!(file = %path.display(), offset, "resuming where gaoler left off")
            }
            Ok(Start::Replaced) => {
                tracing::info!(file = %path.display(), "file was replaced while gaoler was down; reading it from the start")
            }
            Ok(Start::Truncated) => {
                tracing::info!(file = %path.display(), "file was truncated while gaoler was down; reading it from the start")
            }
            Ok(Start::New) => {
                tracing::info!(file = %path.display(), "following a new file from its start")
            }
            Ok(Start::Missing) => {
                tracing::warn!(file = %path.display(), "log file does not exist yet; it will be read once it appears")
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %crate::util::io_reason(&e), "cannot open log file; retrying")
            }
        }
        self.reported = saved;
        self.tail = Some(tail);
    }

    async fn read(&mut self, batch: &mut Batch) -> bool {
        loop {
            let Some(mut tail) = self.tail.take() else {
                return false;
            };
            let mut lines = std::mem::take(batch.lines_mut());
            let done = tokio::task::spawn_blocking(move || {
                let r = tail.read(&mut lines);
                (tail, lines, r)
            })
            .await;
            let Ok((tail, lines, result)) = done else {
                return false;
            };
            *batch.lines_mut() = lines;
            let position = tail.position();
            self.tail = Some(tail);
            let more = match result {
                Ok(report) => {
                    if self.last_error.take().is_some() {
                        tracing::info!(file = %self.path.display(), "log file readable again; following it");
                    }
                    if report.rotated {
                        tracing::info!(file = %self.path.display(), "log file rotated; following the new file");
                    }
                    if report.truncated {
                        tracing::info!(file = %self.path.display(), "log file truncated; reading from its start");
                    }
                    report.more
                }
                Err(e) => {
                    let reason = crate::util::io_reason(&e);
                    if self.last_error.as_ref() != Some(&reason) {
                        tracing::warn!(file = %self.path.display(), error = %reason, "cannot read log file; retrying");
                        self.last_error = Some(reason);
                    }
                    false
                }
            };
            if !batch.is_empty() || position != self.reported {
                self.reported = position;
                return true;
            }
            if !more {
                self.wait().await;
            }
        }
    }

    fn position(&self) -> Option<Vec<u8>> {
        self.reported.map(encode_position)
    }
}
