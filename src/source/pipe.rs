//! A named pipe (FIFO) as a source: a logger writes lines into it (rsyslog's
//! `ompipe`, syslog-ng's `pipe()`, `docker logs -f ... > pipe`) and gaoler reads
//! them as they come. gaoler creates the pipe (mode 0600) when it is missing and
//! opens it read-write, so opening never waits for a writer and a writer that closes
//! is no end of file. A pipe keeps no position: lines written while gaoler is down
//! wait in the writer or the pipe's kernel buffer, or are lost.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::unix::pipe;

use super::{Batch, LineSplitter, Source};

/// Bytes read from the pipe at a time.
const CHUNK: usize = 64 * 1024;
/// How often the path is looked at again: a pipe removed, replaced, or of another
/// type is noticed within this.
const RECHECK: Duration = Duration::from_secs(1);

/// A named pipe followed as a source.
pub struct PipeSource {
    path: PathBuf,
    /// The pipe being read, and its (device, inode).
    open: Option<(pipe::Receiver, (u64, u64))>,
    /// Why the path cannot be followed, as last logged (once per change).
    refused: Option<String>,
    recheck: Duration,
    lines: LineSplitter,
    cap: usize,
    buf: Vec<u8>,
}

impl PipeSource {
    pub fn new(path: PathBuf) -> Self {
        PipeSource {
            path,
            open: None,
            refused: None,
            recheck: RECHECK,
            lines: LineSplitter::default(),
            cap: 1,
            buf: vec![0; CHUNK],
        }
    }

    /// Follows the pipe at the path unless it is the one open already. A path that
    /// cannot be followed is logged once per reason; the pipe open until then (which
    /// writers that hold it still write to) is kept.
    fn check(&mut self) {
        if let (Some((_, id)), Ok(meta)) = (&self.open, std::fs::symlink_metadata(&self.path)) {
            if meta.file_type().is_fifo() && (meta.dev(), meta.ino()) == *id {
                return;
            }
        }
        match open(&self.path) {
            Ok(opened) => {
                let again = self.open.is_some() || self.refused.is_some();
                tracing::info!(pipe = %self.path.display(), "{}", if again { "following the named pipe now at this path" } else { "following a named pipe" });
                self.open = Some(opened);
                self.refused = None;
                self.lines.clear();
            }
            Err(e) => {
                let reason = crate::util::io_reason(&e);
                if self.refused.as_ref() != Some(&reason) {
                    tracing::error!(pipe = %self.path.display(), error = %reason, "cannot follow the named pipe; looking again every second");
                    self.refused = Some(reason);
                }
            }
        }
    }
}

/// Creates the FIFO at `path` (mode 0600) unless one is there; an existing file of
/// another type is an error (gaoler never follows a regular file as a pipe).
pub fn make_fifo(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => return Ok(()),
        Ok(_) => return Err(not_a_pipe()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn not_a_pipe() -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        "it exists and is not a named pipe",
    )
}

/// Opens the FIFO at `path` for reading without waiting for a writer; returns it
/// with its (device, inode).
fn open(path: &Path) -> io::Result<(pipe::Receiver, (u64, u64))> {
    make_fifo(path)?;
    // Read-write: the open never blocks, and there is always a writer, so a logger
    // that closes and reopens the pipe is not an end of file. Non-blocking and
    // checked after opening too: the path may have changed since.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_fifo() {
        return Err(not_a_pipe());
    }
    Ok((pipe::Receiver::from_file(file)?, (meta.dev(), meta.ino())))
}

impl Source for PipeSource {
    fn name(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    fn key(&self) -> Option<Vec<u8>> {
        None
    }

    async fn open(&mut self, _saved: Option<Vec<u8>>, cap: usize) {
        self.cap = cap;
        self.check();
    }

    /// Reads until a line is complete, looking at the path again every `recheck`
    /// (also while lines keep coming). Ends only when reading the pipe fails.
    async fn read(&mut self, batch: &mut Batch) -> bool {
        let mut recheck = tokio::time::interval(self.recheck);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.tick().await;
        loop {
            let Some((receiver, _)) = self.open.as_ref() else {
                recheck.tick().await;
                self.check();
                continue;
            };
            tokio::select! {
                ready = receiver.readable() => {
                    if let Err(e) = ready {
                        tracing::error!(pipe = %self.path.display(), error = %crate::util::io_reason(&e), "waiting on the named pipe failed; its jails read nothing more from it");
                        return false;
                    }
                }
                _ = recheck.tick() => {
                    self.check();
                    continue;
                }
            }
            match receiver.try_read(&mut self.buf) {
                Ok(n) => {
                    self.lines.feed(&self.buf[..n], self.cap, batch.lines_mut());
                    if !batch.is_empty() {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!(pipe = %self.path.display(), error = %crate::util::io_reason(&e), "reading the named pipe failed; its jails read nothing more from it");
                    return false;
                }
            }
        }
    }

    fn position(&self) -> Option<Vec<u8>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn lines_written_into_the_pipe_are_read_whoever_writes_and_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("auth.pipe");
        let mut source = PipeSource::new(path.clone());
        // Opening creates the pipe and does not wait for a writer.
        source.open(None, 16).await;
        let meta = std::fs::metadata(&path).expect("created");
        assert!(meta.file_type().is_fifo());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        for text in [&b"first\nsec"[..], b"ond line that is long\n"] {
            // Each writer opens, writes and closes: no end of file for the reader.
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("writer");
            w.write_all(text).expect("write");
        }
        let mut got = Vec::new();
        while got.len() < 2 {
            let mut batch = Batch::new(16);
            assert!(source.read(&mut batch).await);
            got.extend(
                batch
                    .records()
                    .map(|r| String::from_utf8_lossy(r.text).into_owned()),
            );
        }
        assert_eq!(got, ["first", "second line that"]);
        assert_eq!(source.key(), None);
    }

    fn lines_of(batch: &Batch) -> Vec<String> {
        batch
            .records()
            .map(|r| String::from_utf8_lossy(r.text).into_owned())
            .collect()
    }

    fn write_line(path: &Path, text: &str) {
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .expect("writer");
        w.write_all(text.as_bytes()).expect("write");
    }

    /// Reads one batch, or `None` when nothing comes within two seconds.
    async fn next(source: &mut PipeSource) -> Option<Vec<String>> {
        let mut batch = Batch::new(64);
        let read = tokio::time::timeout(Duration::from_secs(2), source.read(&mut batch));
        match read.await {
            Ok(more) => {
                assert!(more, "the source never ends");
                Some(lines_of(&batch))
            }
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn a_path_that_changes_type_is_looked_at_again_and_a_new_pipe_is_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("auth.pipe");
        // A regular file first: never followed, never touched, never blocking.
        std::fs::write(&path, b"x\n").expect("file");
        let mut source = PipeSource::new(path.clone());
        source.recheck = Duration::from_millis(50);
        source.open(None, 64).await;
        assert!(source.open.is_none() && source.refused.is_some());
        assert_eq!(next(&mut source).await, None, "nothing read from a file");
        assert_eq!(std::fs::read(&path).expect("untouched"), b"x\n");
        // Removed: the pipe is created and followed.
        std::fs::remove_file(&path).expect("rm");
        let reader = tokio::spawn(async move {
            let got = next(&mut source).await;
            (source, got)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(std::fs::metadata(&path)
            .expect("made")
            .file_type()
            .is_fifo());
        write_line(&path, "one\n");
        let (mut source, got) = reader.await.expect("task");
        assert_eq!(got, Some(vec!["one".to_string()]));
        // Replaced by a new pipe (a logger recreated it): the new one is followed.
        std::fs::remove_file(&path).expect("rm");
        make_fifo(&path).expect("new pipe");
        let reader = tokio::spawn(async move {
            let got = next(&mut source).await;
            (source, got)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        write_line(&path, "two\n");
        let (_, got) = reader.await.expect("task");
        assert_eq!(got, Some(vec!["two".to_string()]));
    }
}
