//! What sources hand out: `Lines` (complete lines in one buffer), `LineSplitter`
//! (a byte stream cut into lines, each at most `cap` bytes, never buffered without
//! bound), and `Batch` (the lines of one read, with a journal entry's time and
//! fields when the source has them). Pure data; no I/O.

use std::collections::HashMap;

use crate::types::Timestamp;

/// A batch of complete lines in one buffer. A line cut at the cap is marked: its
/// end, where the server wrote what comes after the client's text, is gone.
#[derive(Default, Debug)]
pub struct Lines {
    data: Vec<u8>,
    ends: Vec<usize>,
    /// Indexes of the lines that were cut, in order (rare).
    cut: Vec<usize>,
}

impl Lines {
    pub(crate) fn push(&mut self, line: &[u8]) {
        self.data.extend_from_slice(line);
        self.ends.push(self.data.len());
    }

    /// Pushes the first bytes of a line that was longer than the cap.
    pub(crate) fn push_cut(&mut self, head: &[u8]) {
        self.cut.push(self.ends.len());
        self.push(head);
    }

    /// How many of the lines were cut.
    pub fn cut(&self) -> usize {
        self.cut.len()
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
        self.cut.clear();
    }

    /// The lines, without their newline.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.iter_marked().map(|(line, _)| line)
    }

    /// The lines, each with whether it was cut.
    pub fn iter_marked(&self) -> impl Iterator<Item = (&[u8], bool)> {
        let mut start = 0;
        let mut cut = self.cut.iter().peekable();
        self.ends.iter().enumerate().map(move |(i, &end)| {
            let line = &self.data[start..end];
            start = end;
            (line, cut.next_if_eq(&&i).is_some())
        })
    }
}

/// Cuts a byte stream into lines. A line longer than the cap keeps its first `cap`
/// bytes; the rest, up to its newline, is dropped as it arrives.
#[derive(Default, Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// The current line passed the cap; drop bytes until its newline.
    overlong: bool,
}

impl LineSplitter {
    /// Pushes every line that `bytes` completes to `out`. Returns how many bytes of
    /// `bytes` belong to complete lines (up to and including the last newline).
    pub fn feed(&mut self, bytes: &[u8], cap: usize, out: &mut Lines) -> usize {
        let cap = cap.max(1);
        let mut done = 0;
        let mut rest = bytes;
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            let cut = self.overlong || self.partial.len() + pos > cap;
            self.extend(&rest[..pos], cap);
            if cut {
                out.push_cut(&self.partial);
            } else {
                out.push(&self.partial);
            }
            self.partial.clear();
            self.overlong = false;
            done += pos + 1;
            rest = &rest[pos + 1..];
        }
        let room = cap.saturating_sub(self.partial.len());
        if !self.overlong {
            self.partial
                .extend_from_slice(&rest[..rest.len().min(room)]);
            self.overlong = rest.len() > room;
        }
        done
    }

    fn extend(&mut self, head: &[u8], cap: usize) {
        if !self.overlong {
            let room = cap.saturating_sub(self.partial.len());
            self.partial
                .extend_from_slice(&head[..head.len().min(room)]);
        }
    }

    /// The last line of a finished stream may lack its newline: it is complete.
    pub fn finish(&mut self, out: &mut Lines) {
        if self.overlong {
            out.push_cut(&self.partial);
        } else if !self.partial.is_empty() {
            out.push(&self.partial);
        }
        self.clear();
    }

    /// Forgets a started line (the stream starts again).
    pub fn clear(&mut self) {
        self.partial.clear();
        self.overlong = false;
    }
}

/// Journal fields some jail matches on, by name.
pub type Fields = HashMap<String, String>;

/// What a structured source (the journal) knows of a record besides its text: its
/// time, and the fields jails match on. Such a record is a message without a syslog
/// header, so it is not framed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub time: Option<Timestamp>,
    pub fields: Fields,
}

/// The records of one read: lines of text, each at most `cap` bytes; with a `Meta`
/// each when the source is structured.
#[derive(Debug)]
pub struct Batch {
    lines: Lines,
    /// Empty, or one per line.
    meta: Vec<Meta>,
    cap: usize,
}

/// One record of a batch.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub text: &'a [u8],
    pub meta: Option<&'a Meta>,
    /// The record was longer than the cap and `text` is its head: what the server
    /// wrote after the client's text may be gone, so it is never matched.
    pub cut: bool,
}

impl Batch {
    /// An empty batch whose records are cut at `cap` bytes.
    pub fn new(cap: usize) -> Batch {
        Batch {
            lines: Lines::default(),
            meta: Vec::new(),
            cap: cap.max(1),
        }
    }

    /// The longest record handed on, in bytes.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// For sources of plain lines (files, pipes): they push whole lines here, cut at
    /// `cap` as they split them.
    pub fn lines_mut(&mut self) -> &mut Lines {
        debug_assert!(self.meta.is_empty(), "plain lines after structured records");
        &mut self.lines
    }

    /// A plain line, cut at `cap`.
    pub fn push_line(&mut self, text: &[u8]) {
        debug_assert!(self.meta.is_empty(), "plain lines after structured records");
        self.push_capped(text);
    }

    /// A structured record: `text` (cut at `cap`) with its time and fields.
    pub fn push_entry(&mut self, text: &[u8], meta: Meta) {
        debug_assert_eq!(self.meta.len(), self.lines.len(), "structured after plain");
        self.push_capped(text);
        self.meta.push(meta);
    }

    fn push_capped(&mut self, text: &[u8]) {
        if text.len() > self.cap {
            self.lines.push_cut(&text[..self.cap]);
        } else {
            self.lines.push(text);
        }
    }

    /// How many records were cut at the cap.
    pub fn cut(&self) -> usize {
        self.lines.cut()
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn clear(&mut self) {
        self.lines.clear();
        self.meta.clear();
    }

    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        let mut meta = self.meta.iter();
        self.lines.iter_marked().map(move |(text, cut)| Record {
            text,
            meta: meta.next(),
            cut,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(lines: &Lines) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    #[test]
    fn the_splitter_hands_out_complete_lines_and_cuts_long_ones() {
        let mut s = LineSplitter::default();
        let mut out = Lines::default();
        assert_eq!(s.feed(b"one\ntw", 8, &mut out), 4);
        assert_eq!(s.feed(b"o\n", 8, &mut out), 2);
        assert_eq!(strs(&out), ["one", "two"]);
        out.clear();
        // 20 bytes over three feeds, cut at 8; the next line is intact.
        s.feed(b"0123456", 8, &mut out);
        s.feed(b"789abcdef", 8, &mut out);
        assert_eq!(s.feed(b"ghij\nnext\n", 8, &mut out), 10);
        assert_eq!(strs(&out), ["01234567", "next"]);
        let marks: Vec<bool> = out.iter_marked().map(|(_, cut)| cut).collect();
        assert_eq!(marks, [true, false], "the cut line is marked");
        out.clear();
        // Exactly the cap is whole; one byte over is cut, also in one feed.
        s.feed(
            b"abcdefgh
abcdefghi
",
            8,
            &mut out,
        );
        let marks: Vec<bool> = out.iter_marked().map(|(_, cut)| cut).collect();
        assert_eq!(
            (strs(&out), marks),
            (
                vec!["abcdefgh".into(), "abcdefgh".into()],
                vec![false, true]
            )
        );
        out.clear();
        s.feed(b"tail", 8, &mut out);
        s.finish(&mut out);
        assert_eq!(strs(&out), ["tail"]);
        assert_eq!(out.cut(), 0);
        s.feed(b"a long tail", 8, &mut out);
        s.finish(&mut out);
        assert_eq!(out.cut(), 1, "an unfinished overlong last line is cut");
    }

    #[test]
    fn a_batch_cuts_entries_and_keeps_their_meta_in_order() {
        let mut b = Batch::new(4);
        let meta = |f: &str| Meta {
            time: None,
            fields: Fields::from([("_COMM".to_string(), f.to_string())]),
        };
        b.push_entry(b"abcdef", meta("a"));
        b.push_entry(b"xy", meta("b"));
        let got: Vec<(&[u8], Option<&str>)> = b
            .records()
            .map(|r| {
                (
                    r.text,
                    r.meta
                        .and_then(|m| m.fields.get("_COMM"))
                        .map(String::as_str),
                )
            })
            .collect();
        assert_eq!(got, [(&b"abcd"[..], Some("a")), (&b"xy"[..], Some("b"))]);
        let cut: Vec<bool> = b.records().map(|r| r.cut).collect();
        assert_eq!(cut, [true, false]);
        b.clear();
        b.lines_mut().push(b"plain");
        assert!(b.records().all(|r| r.meta.is_none()));
    }
}
