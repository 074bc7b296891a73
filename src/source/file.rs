//! Follows one log file: reads what was appended, hands out complete lines (a line
//! longer than the cap is cut, never buffered without bound), notices rename-style
//! rotation (new inode at the path: the old file is finished first) and truncation
//! (copytruncate: start again at 0). Blocking I/O; callers run it off the runtime.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes read before `read` returns so the caller can process them.
const READ_BUDGET: usize = 1024 * 1024;

/// A batch of complete lines in one buffer.
#[derive(Default, Debug)]
pub struct Lines {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Lines {
    fn push(&mut self, line: &[u8]) {
        self.data.extend_from_slice(line);
        self.ends.push(self.data.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    /// The lines, without their newline.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let line = &self.data[start..end];
            start = end;
            line
        })
    }
}

/// What one `read` saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// More data is waiting: call `read` again after handling these lines.
    pub more: bool,
    pub rotated: bool,
    pub truncated: bool,
}

/// The state of following one path.
#[derive(Debug)]
pub struct FileTail {
    path: PathBuf,
    file: Option<File>,
    id: Option<(u64, u64)>,
    offset: u64,
    partial: Vec<u8>,
    /// The current line passed the cap; drop bytes until its newline.
    overlong: bool,
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
            partial: Vec::new(),
            overlong: false,
            max_line: max_line.max(1),
            buf: vec![0; 64 * 1024],
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file positioned at its end (only what is written from now on is
    /// read). A missing file is not an error: it is read from its start once it exists.
    pub fn open_at_end(&mut self) -> io::Result<bool> {
        match File::open(&self.path) {
            Ok(mut f) => {
                let meta = f.metadata()?;
                self.offset = f.seek(SeekFrom::End(0))?;
                self.id = Some((meta.dev(), meta.ino()));
                self.file = Some(f);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads what is available into `out` (complete lines only).
    pub fn read(&mut self, out: &mut Lines) -> io::Result<ReadReport> {
        let mut report = ReadReport::default();
        let mut budget = READ_BUDGET;
        loop {
            if self.drain(out, &mut budget)? {
                report.more = true;
                return Ok(report);
            }
            match std::fs::metadata(&self.path) {
                Ok(meta) => {
                    let id = (meta.dev(), meta.ino());
                    if self.id != Some(id) {
                        // Rotated (or appeared): the old file was read to its end above.
                        self.finish_partial(out);
                        match File::open(&self.path) {
                            Ok(f) => {
                                report.rotated |= self.id.is_some();
                                self.file = Some(f);
                                self.id = Some(id);
                                self.offset = 0;
                                continue;
                            }
                            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
                            Err(e) => return Err(e),
                        }
                    }
                    if meta.len() < self.offset {
                        // Truncated in place (copytruncate): start again from 0.
                        if let Some(f) = self.file.as_mut() {
                            f.seek(SeekFrom::Start(0))?;
                        }
                        self.offset = 0;
                        self.partial.clear();
                        self.overlong = false;
                        report.truncated = true;
                        continue;
                    }
                    return Ok(report);
                }
                // Moved away and not re-created yet: keep reading the old file.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
                Err(e) => return Err(e),
            }
        }
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
            self.offset += n as u64;
            let mut rest = &self.buf[..n];
            while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
                let (head, tail) = (&rest[..pos], &rest[pos + 1..]);
                if !self.overlong {
                    let room = self.max_line.saturating_sub(self.partial.len());
                    self.partial
                        .extend_from_slice(&head[..head.len().min(room)]);
                }
                out.push(&self.partial);
                self.partial.clear();
                self.overlong = false;
                rest = tail;
            }
            if !self.overlong {
                let room = self.max_line.saturating_sub(self.partial.len());
                self.partial
                    .extend_from_slice(&rest[..rest.len().min(room)]);
                self.overlong = rest.len() > room;
            }
            *budget = budget.saturating_sub(n);
            if *budget == 0 {
                return Ok(true);
            }
        }
    }

    /// The last line of a finished (rotated) file may lack its newline: it is complete.
    fn finish_partial(&mut self, out: &mut Lines) {
        if !self.partial.is_empty() {
            out.push(&self.partial);
            self.partial.clear();
        }
        self.overlong = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
