//! Follows one log file: reads what was appended, hands out complete lines (a line
//! longer than the cap is cut, never buffered without bound), notices rename-style
//! rotation (new inode at the path: the old file is finished first), truncation
//! (copytruncate: start again at 0) and delete + re-create, and resumes after a restart
//! from a saved position when the file is still the same one (device, inode, and a hash
//! of its first line). Only a regular file is followed, opened without blocking: a
//! FIFO, a device or a directory at the path is refused and looked at again on the
//! next read. Blocking I/O; callers run it off the runtime.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{LineSplitter, Lines};

/// Where a file reader stands, and which file it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    pub dev: u64,
    pub ino: u64,
    /// Hash of the file's first line (its first 1 KiB), once it had one.
    pub head: Option<u64>,
    /// Bytes of complete lines handled.
    pub offset: u64,
}

/// Bytes read before `read` returns so the caller can process them.
const READ_BUDGET: usize = 1024 * 1024;

/// What one `read` saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// More data is waiting: call `read` again after handling these lines.
    pub more: bool,
    pub rotated: bool,
    pub truncated: bool,
}

/// Where a follower started, given what was saved.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// Nothing saved: from the end (only what is written from now on).
    AtEnd,
    /// The same file as saved: from the saved offset (lines written while down too).
    Resumed { offset: u64 },
    /// Another file than the saved one (rotated or replaced while down): from its start.
    Replaced,
    /// The saved file, shorter than the saved offset (truncated while down): from 0.
    Truncated,
    /// No file yet: read from its start once it appears.
    Missing,
    /// A file that appeared while gaoler runs: from its start.
    New,
}

/// The state of following one path.
#[derive(Debug)]
pub struct FileTail {
    path: PathBuf,
    file: Option<File>,
    id: Option<(u64, u64)>,
    /// Bytes read from the current file.
    offset: u64,
    /// Bytes of complete lines handed out (what a restart resumes from).
    consumed: u64,
    /// Hash of the current file's first line, once known.
    head: Option<u64>,
    lines: LineSplitter,
    max_line: usize,
    buf: Vec<u8>,
}

impl FileTail {
    /// A follower of `path` that cuts lines at `max_line` bytes.
    pub fn new(path: &Path, max_line: usize) -> Self {
        FileTail {
            path: path.to_path_buf(),
            file: None,
            id: None,
            offset: 0,
            consumed: 0,
            head: None,
            lines: LineSplitter::default(),
            max_line: max_line.max(1),
            buf: vec![0; 64 * 1024],
        }
    }

    /// Opens the file positioned at its end (only what is written from now on is
    /// read). A missing file is not an error: it is read from its start once it exists.
    pub fn open_at_end(&mut self) -> io::Result<bool> {
        self.resume(None).map(|start| start != Start::Missing)
    }

    /// Opens the file where `saved` left off when it is still the same file, from its
    /// start when it was replaced or truncated, and at its end when nothing was saved.
    pub fn resume(&mut self, saved: Option<FilePosition>) -> io::Result<Start> {
        let f = match open_regular(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Start::Missing),
            Err(e) => return Err(e),
        };
        let meta = f.metadata()?;
        let id = (meta.dev(), meta.ino());
        let head = first_line_hash(&f);
        let (start, offset) = match saved {
            None => (Start::AtEnd, meta.len()),
            Some(p) if (p.dev, p.ino) == id && (p.head.is_none() || p.head == head) => {
                if meta.len() >= p.offset {
                    (Start::Resumed { offset: p.offset }, p.offset)
                } else {
                    (Start::Truncated, 0)
                }
            }
            Some(_) => (Start::Replaced, 0),
        };
        self.file = Some(f);
        self.id = Some(id);
        self.offset = offset;
        self.consumed = offset;
        self.head = head;
        self.lines.clear();
        if let Some(f) = self.file.as_mut() {
            f.seek(SeekFrom::Start(offset))?;
        }
        Ok(start)
    }

    /// Opens the file at its start (a file that appeared while gaoler runs).
    pub fn resume_from_start(&mut self) -> io::Result<Start> {
        match self.resume(None)? {
            Start::Missing => Ok(Start::Missing),
            _ => {
                self.offset = 0;
                self.consumed = 0;
                if let Some(f) = self.file.as_mut() {
                    f.seek(SeekFrom::Start(0))?;
                }
                Ok(Start::New)
            }
        }
    }

    /// What to save so that a restart resumes after the last complete line.
    pub fn position(&self) -> Option<FilePosition> {
        let (dev, ino) = self.id?;
        Some(FilePosition {
            dev,
            ino,
            head: self.head,
            offset: self.consumed,
        })
    }

    /// Reads what is available into `out` (complete lines only).
    pub fn read(&mut self, out: &mut Lines) -> io::Result<ReadReport> {
        let mut report = ReadReport::default();
        let mut budget = READ_BUDGET;
        loop {
            if self.rewritten_in_place()? {
                // copytruncate: start the same file again from 0, before reading on.
                if let Some(f) = self.file.as_mut() {
                    f.seek(SeekFrom::Start(0))?;
                }
                self.offset = 0;
                self.consumed = 0;
                self.head = None;
                self.lines.clear();
                report.truncated = true;
            }
            if self.drain(out, &mut budget)? {
                report.more = true;
                return Ok(report);
            }
            match std::fs::metadata(&self.path) {
                Ok(meta) if self.id == Some((meta.dev(), meta.ino())) => return Ok(report),
                Ok(meta) => {
                    // Rotated (or appeared): the old file was read to its end above.
                    self.lines.finish(out);
                    match open_regular(&self.path) {
                        Ok(f) => {
                            report.rotated |= self.id.is_some();
                            self.file = Some(f);
                            self.id = Some((meta.dev(), meta.ino()));
                            self.offset = 0;
                            self.consumed = 0;
                            self.head = None;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
                        Err(e) => return Err(e),
                    }
                }
                // Moved away and not re-created yet: keep reading the old file.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
                Err(e) => return Err(e),
            }
        }
    }

    /// True when the open file was truncated in place: it is shorter than what was
    /// read, or was refilled past that already, which a different first line gives away.
    fn rewritten_in_place(&self) -> io::Result<bool> {
        let Some(f) = self.file.as_ref() else {
            return Ok(false);
        };
        if f.metadata()?.len() < self.offset {
            return Ok(true);
        }
        Ok(self.head.is_some() && first_line_hash(f) != self.head)
    }

    /// Reads the open file to EOF or until the budget is spent (returns true then).
    fn drain(&mut self, out: &mut Lines, budget: &mut usize) -> io::Result<bool> {
        let Some(file) = self.file.as_mut() else {
            return Ok(false);
        };
        loop {
            let n = match file.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let base = self.offset;
            self.offset += n as u64;
            let done = self.lines.feed(&self.buf[..n], self.max_line, out);
            if done > 0 {
                self.consumed = base + done as u64;
            }
            if self.head.is_none() && self.consumed > 0 {
                self.head = first_line_hash(file);
            }
            *budget = budget.saturating_sub(n);
            if *budget == 0 {
                return Ok(true);
            }
        }
    }
}

/// Opens `path` for reading when it is a regular file, without ever blocking: a FIFO,
/// a device (a symlink to `/dev/zero`) or a directory put at a log's path is refused,
/// never waited on nor read without end.
fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if f.metadata()?.is_file() {
        Ok(f)
    } else {
        Err(io::Error::other(
            "is not a regular file (a pipe, a device or a directory): only regular files are followed (a named pipe goes in `pipe`)",
        ))
    }
}

/// FNV-1a of the first line (at most its first 1 KiB), if the file has a whole one.
fn first_line_hash(file: &File) -> Option<u64> {
    let mut buf = [0u8; 1024];
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    let line = match memchr::memchr(b'\n', &buf[..n]) {
        Some(end) => &buf[..end],
        None if n == buf.len() => &buf[..],
        None => return None,
    };
    Some(line.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file_source::file_key;
    use crate::source::{decode_position, encode_position};
    use std::io::Write;

    fn append(path: &Path, text: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        f.write_all(text).expect("write");
    }

    fn read_all(tail: &mut FileTail) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let mut lines = Lines::default();
            let report = tail.read(&mut lines).expect("read");
            out.extend(lines.iter().map(|l| l.to_vec()));
            if !report.more {
                return out;
            }
        }
    }

    fn strs(lines: &[Vec<u8>]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    #[test]
    fn starts_at_the_end_and_hands_out_complete_lines_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"old line\n");
        let mut tail = FileTail::new(&path, 1024);
        assert!(tail.open_at_end().expect("open"));
        append(&path, b"one\ntw");
        assert_eq!(strs(&read_all(&mut tail)), vec!["one"]);
        append(&path, b"o\n");
        assert_eq!(strs(&read_all(&mut tail)), vec!["two"]);
    }

    #[test]
    fn long_lines_are_cut_and_the_next_line_is_intact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let mut tail = FileTail::new(&path, 16);
        tail.open_at_end().expect("open");
        let mut big = vec![b'x'; 1_000_000];
        big.push(b'\n');
        append(&path, &big);
        append(&path, b"after\n");
        let lines = read_all(&mut tail);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), 16);
        assert_eq!(lines[1], b"after");
    }

    #[test]
    fn a_missing_file_is_read_from_its_start_once_it_appears() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("later.log");
        let mut tail = FileTail::new(&path, 1024);
        assert!(!tail.open_at_end().expect("open"));
        assert!(read_all(&mut tail).is_empty());
        append(&path, b"first\n");
        assert_eq!(strs(&read_all(&mut tail)), vec!["first"]);
    }

    #[test]
    fn rename_rotation_finishes_the_old_file_then_follows_the_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"");
        let mut tail = FileTail::new(&path, 1024);
        tail.open_at_end().expect("open");
        append(&path, b"before\nlast-without-newline");
        std::fs::rename(&path, dir.path().join("a.log.1")).expect("rename");
        append(&path, b"new\n");
        assert_eq!(
            strs(&read_all(&mut tail)),
            vec!["before", "last-without-newline", "new"]
        );
    }

    #[test]
    fn truncation_starts_again_from_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"");
        let mut tail = FileTail::new(&path, 1024);
        tail.open_at_end().expect("open");
        append(&path, b"one long line before the truncate\n");
        assert_eq!(read_all(&mut tail).len(), 1);
        std::fs::File::create(&path).expect("truncate");
        append(&path, b"x\n");
        assert_eq!(strs(&read_all(&mut tail)), vec!["x"]);
    }

    /// A follower of `path` resumed from `saved`, as after a restart.
    fn restarted(path: &Path, saved: Option<FilePosition>) -> (FileTail, Start) {
        let mut tail = FileTail::new(path, 1024);
        let start = tail.resume(saved).expect("resume");
        (tail, start)
    }

    #[test]
    fn resume_reads_lines_written_while_down_and_none_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"history\n");
        let (mut tail, start) = restarted(&path, None);
        assert_eq!(start, Start::AtEnd);
        append(&path, b"one\ntwo\npart");
        assert_eq!(strs(&read_all(&mut tail)), vec!["one", "two"]);
        let saved = tail.position();
        drop(tail);
        // While down: the partial line completes and more arrives.
        append(&path, b"ial\nthree\n");
        let (mut tail, start) = restarted(&path, saved);
        assert!(matches!(start, Start::Resumed { .. }), "{start:?}");
        assert_eq!(strs(&read_all(&mut tail)), vec!["partial", "three"]);
    }

    #[test]
    fn a_file_replaced_while_down_is_read_from_its_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"old first line\n");
        let (mut tail, _) = restarted(&path, None);
        append(&path, b"old more\n");
        read_all(&mut tail);
        let saved = tail.position();
        drop(tail);
        // Rotated while down (rename + create).
        std::fs::rename(&path, dir.path().join("a.log.1")).expect("rename");
        append(&path, b"new one\nnew two\n");
        let (mut tail, start) = restarted(&path, saved);
        assert_eq!(start, Start::Replaced);
        assert_eq!(strs(&read_all(&mut tail)), vec!["new one", "new two"]);
    }

    #[test]
    fn delete_and_recreate_with_a_reused_inode_is_noticed_by_the_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"first version\nline\n");
        let (tail, _) = restarted(&path, None);
        let saved = tail.position().expect("position");
        drop(tail);
        std::fs::remove_file(&path).expect("rm");
        append(&path, b"second version\n");
        // Pretend the file system reused the inode: only the first line tells them apart.
        let meta = std::fs::metadata(&path).expect("meta");
        let same_inode = FilePosition {
            dev: meta.dev(),
            ino: meta.ino(),
            ..saved
        };
        let (mut tail, start) = restarted(&path, Some(same_inode));
        assert_eq!(start, Start::Replaced);
        assert_eq!(strs(&read_all(&mut tail)), vec!["second version"]);
    }

    #[test]
    fn truncated_while_down_starts_again_at_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"x\n");
        let (mut tail, _) = restarted(&path, None);
        append(&path, b"a long line that makes the file longer\n");
        read_all(&mut tail);
        let saved = tail.position();
        drop(tail);
        std::fs::File::create(&path).expect("truncate");
        append(&path, b"x\nafter\n");
        let (mut tail, start) = restarted(&path, saved);
        assert_eq!(start, Start::Truncated);
        assert_eq!(strs(&read_all(&mut tail)), vec!["x", "after"]);
    }

    #[test]
    fn delete_and_recreate_while_running_follows_the_new_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"");
        let (mut tail, _) = restarted(&path, None);
        append(&path, b"before\n");
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(strs(&read_all(&mut tail)), vec!["before"]);
        append(&path, b"after\n");
        assert_eq!(strs(&read_all(&mut tail)), vec!["after"]);
    }

    #[test]
    fn copytruncate_refilled_past_the_old_offset_is_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"");
        let (mut tail, _) = restarted(&path, None);
        append(&path, b"first line before\n");
        assert_eq!(read_all(&mut tail).len(), 1);
        // Truncated and written again beyond the old offset before the next read.
        std::fs::write(&path, b"first line after!\nsecond line after\n").expect("rewrite");
        assert_eq!(
            strs(&read_all(&mut tail)),
            vec!["first line after!", "second line after"]
        );
    }

    #[test]
    fn the_saved_offset_never_includes_a_partial_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"");
        let (mut tail, _) = restarted(&path, None);
        append(&path, b"done\nhalf");
        read_all(&mut tail);
        assert_eq!(tail.position().map(|p| p.offset), Some(5));
        assert!(tail.position().and_then(|p| p.head).is_some());
    }

    #[test]
    fn version_1_position_records_still_load() {
        // As gaoler 0.1 saved them under `f/<path>`.
        let v1 = br#"{"v":1,"dev":2049,"ino":131,"head":1234567,"offset":4096}"#;
        assert_eq!(
            decode_position::<FilePosition>(v1),
            Some(FilePosition {
                dev: 2049,
                ino: 131,
                head: Some(1234567),
                offset: 4096
            })
        );
        assert_eq!(
            decode_position::<FilePosition>(&encode_position(FilePosition {
                dev: 1,
                ino: 2,
                head: None,
                offset: 3
            }))
            .map(|p| p.offset),
            Some(3)
        );
        assert_eq!(
            decode_position::<FilePosition>(br#"{"v":99,"dev":1,"ino":2,"head":null,"offset":3}"#),
            None,
            "newer"
        );
        assert_eq!(
            file_key(Path::new("/var/log/auth.log")),
            b"f//var/log/auth.log"
        );
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_fifo_a_device_or_a_directory_at_a_logpath_is_refused_without_blocking() {
        // Regressions (issue 19): a FIFO at a logpath blocked its reader in open; a
        // symlink to /dev/zero read without end ("log file truncated" 8,600 times a
        // second); a log re-created as a directory, then a file, left the jail blind.
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo.log");
        mkfifo(&fifo);
        let mut tail = FileTail::new(&fifo, 1024);
        let e = tail.resume(None).expect_err("refused");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let mut lines = Lines::default();
        assert!(tail.read(&mut lines).is_err() && lines.is_empty());

        let zero = dir.path().join("zero.log");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        let mut tail = FileTail::new(&zero, 1024);
        assert!(tail.resume(None).is_err());
        assert!(tail.read(&mut lines).is_err() && lines.is_empty());

        // A followed log replaced by a directory, then by a file again.
        let path = dir.path().join("a.log");
        append(&path, b"");
        let (mut tail, _) = restarted(&path, None);
        append(&path, b"before\n");
        assert_eq!(strs(&read_all(&mut tail)), vec!["before"]);
        std::fs::remove_file(&path).expect("rm");
        std::fs::create_dir(&path).expect("a directory at the path");
        assert!(tail.read(&mut lines).is_err(), "the directory is refused");
        std::fs::remove_dir(&path).expect("rmdir");
        append(&path, b"after\n");
        assert_eq!(
            strs(&read_all(&mut tail)),
            vec!["after"],
            "followed again, no reload"
        );
    }
}
