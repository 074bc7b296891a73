//! The number of current bans, kept apart from sled's files, so that bans sled loses
//! silently (a flipped bit makes it stop reading its log early, and it starts clean
//! with what it read) are noticed. Before each commit the ledger records, synced, the
//! count before and after it; once sled's flush returned, the commit is confirmed (the
//! count after it, twice). At start the bans found must match one of the two: only a
//! commit never confirmed (a crash between the ledger and sled's flush) lets the count
//! before it through, so a database that comes back without the last commit it
//! finished is caught. One fixed-size record, rewritten in place: it never needs room
//! on a full disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The ledger's file name in the state directory.
pub const FILE: &str = "ledger";
const SIZE: usize = 64;
const MAGIC: &str = "gaoler-ledger-1";

/// The count before and after the last commit begun.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub before: u64,
    pub after: u64,
}

impl Counts {
    /// True when a database holding `found` bans is one the ledger expects.
    pub fn accepts(&self, found: u64) -> bool {
        found == self.before || found == self.after
    }
}

pub struct Ledger {
    file: File,
}

impl Ledger {
    /// Opens (creating) the ledger in `state_dir`, with what it holds: `None` when it
    /// is new or unreadable (a torn write), and then the database's count is taken.
    pub fn open(state_dir: &Path) -> io::Result<(Ledger, Option<Counts>)> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(state_dir.join(FILE))?;
        let mut buf = [0u8; SIZE];
        let read = file.read_at(&mut buf, 0).unwrap_or(0);
        let counts = decode(&buf[..read]);
        Ok((Ledger { file }, counts))
    }

    /// Records `counts` durably: a commit from `before` to `after` is about to begin.
    pub fn write(&self, counts: Counts) -> io::Result<()> {
        self.put(counts)?;
        self.file.sync_data()
    }

    /// Records that the commit begun last is durable in sled, which now holds `count`
    /// bans: the count before it is no longer a state the database may come back in.
    /// Not synced, to keep one sync a commit: the write survives the process being
    /// killed (it is in the kernel's cache once this returns), the next `write` or
    /// `sync` makes it durable, and a power cut that loses it leaves the record of the
    /// commit begun, which accepts the count after it too. Written only after sled's
    /// flush returned, it never reaches the disk ahead of the bans it counts.
    pub fn confirm(&self, count: u64) -> io::Result<()> {
        self.put(Counts {
            before: count,
            after: count,
        })
    }

    /// Makes the last record durable (at a clean stop).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn put(&self, counts: Counts) -> io::Result<()> {
        self.file.write_all_at(&encode(counts), 0)
    }
}

/// FNV-1a: enough to tell a torn or damaged record from a good one.
fn checksum(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn encode(c: Counts) -> [u8; SIZE] {
    let body = format!("{MAGIC} {} {}", c.before, c.after);
    let line = format!("{body} {:016x}", checksum(&body));
    let mut out = [b' '; SIZE];
    out[SIZE - 1] = b'\n';
    let n = line.len().min(SIZE - 1);
    out[..n].copy_from_slice(&line.as_bytes()[..n]);
    out
}

fn decode(bytes: &[u8]) -> Option<Counts> {
    let text = std::str::from_utf8(bytes).ok()?.trim_end();
    let (body, sum) = text.rsplit_once(' ')?;
    if u64::from_str_radix(sum, 16).ok()? != checksum(body) {
        return None;
    }
    let mut parts = body.split(' ');
    if parts.next()? != MAGIC {
        return None;
    }
    let before = parts.next()?.parse().ok()?;
    let after = parts.next()?.parse().ok()?;
    Some(Counts { before, after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_a_damaged_one_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ledger, none) = Ledger::open(dir.path()).expect("open");
        assert_eq!(none, None, "new");
        let c = Counts {
            before: 2_000,
            after: 18_446_744_073_709_551_615,
        };
        ledger.write(c).expect("write");
        drop(ledger);
        let (_, read) = Ledger::open(dir.path()).expect("open");
        assert_eq!(read, Some(c));
        assert!(c.accepts(2_000) && !c.accepts(1_999));
        // One flipped bit anywhere in the record is caught.
        let path = dir.path().join(FILE);
        let good = std::fs::read(&path).expect("read");
        for i in 0..SIZE - 1 {
            let mut bad = good.clone();
            bad[i] ^= 0x04;
            assert_eq!(decode(&bad), None, "flip at {i}");
        }
    }
}
