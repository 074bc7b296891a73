//! A named pipe (FIFO) as a source: a logger writes lines into it (rsyslog's
//! `ompipe`, syslog-ng's `pipe()`, `docker logs -f ... > pipe`) and gaoler reads
//! them as they come. gaoler creates the pipe (mode 0600) when it is missing and
//! opens it read-write, so opening never waits for a writer and a writer that closes
//! is no end of file. A pipe keeps no position: lines written while gaoler is down
//! wait in the writer or the pipe's kernel buffer, or are lost.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use tokio::net::unix::pipe;

use super::{Batch, LineSplitter, Source};

/// Bytes read from the pipe at a time.
const CHUNK: usize = 64 * 1024;

/// A named pipe followed as a source.
pub struct PipeSource {
    path: PathBuf,
    receiver: Option<pipe::Receiver>,
    lines: LineSplitter,
    cap: usize,
    buf: Vec<u8>,
}

impl PipeSource {
    pub fn new(path: PathBuf) -> Self {
        PipeSource {
            path,
            receiver: None,
            lines: LineSplitter::default(),
            cap: 1,
            buf: vec![0; CHUNK],
        }
    }
}

/// Creates the FIFO at `path` (mode 0600) unless one is there; an existing file of
/// another type is an error (gaoler never follows a regular file as a pipe).
pub fn make_fifo(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "it exists and is not a named pipe",
            ))
        }
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

/// Opens the FIFO at `path` for reading without waiting for a writer.
fn open(path: &Path) -> io::Result<pipe::Receiver> {
    make_fifo(path)?;
    // Read-write: the open never blocks, and there is always a writer, so a logger
    // that closes and reopens the pipe is not an end of file.
    pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
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
        match open(&self.path) {
            Ok(r) => {
                tracing::info!(pipe = %self.path.display(), "following a named pipe");
                self.receiver = Some(r);
            }
            Err(e) => {
                tracing::error!(pipe = %self.path.display(), error = %crate::util::io_reason(&e), "cannot open the named pipe; its jails read nothing from it")
            }
        }
    }

    async fn read(&mut self, batch: &mut Batch) -> bool {
        let Some(receiver) = self.receiver.as_ref() else {
            return false;
        };
        loop {
            if receiver.readable().await.is_err() {
                return false;
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

    #[tokio::test]
    async fn a_regular_file_is_never_followed_as_a_pipe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("not-a-pipe");
        std::fs::write(&path, b"x\n").expect("file");
        let mut source = PipeSource::new(path.clone());
        source.open(None, 16).await;
        let mut batch = Batch::new(16);
        assert!(!source.read(&mut batch).await, "ended, not read");
        assert_eq!(std::fs::read(&path).expect("untouched"), b"x\n");
    }
}
