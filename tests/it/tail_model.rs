//! A randomized model test of the file follower: random sequences of writes (some lines
//! split across two writes), reads, logrotate-style renames, copytruncates and restarts
//! (drop the follower, resume from its saved position). Every complete line written
//! must be delivered exactly once, in order.
//!
//! What no follower can do is excluded by construction, as a daemon woken by inotify
//! would: a copytruncate or a restart right after unread writes to a file that is then
//! gone (so a read comes first), and two renames between reads.

use std::io::Write;
use std::path::Path;

use gaoler::source::{FileTail, Lines};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Action {
    /// Append `n` new lines; with `split`, the last one in two writes with a read between.
    Write {
        n: usize,
        split: bool,
    },
    Read,
    /// logrotate's default: rename the file away, create a new one.
    Rotate,
    /// logrotate's copytruncate: empty the file in place.
    Truncate,
    /// Stop the follower and start a new one from the saved position.
    Restart,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (1usize..4, any::<bool>()).prop_map(|(n, split)| Action::Write { n, split }),
        3 => Just(Action::Read),
        1 => Just(Action::Rotate),
        1 => Just(Action::Truncate),
        1 => Just(Action::Restart),
    ]
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("append");
    f.write_all(bytes).expect("write");
}

struct Model {
    dir: tempfile::TempDir,
    tail: FileTail,
    written: Vec<String>,
    read: Vec<String>,
    next: usize,
    rotated_since_read: bool,
    rotations: usize,
}

impl Model {
    fn new() -> Model {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        append(&path, b"");
        let mut tail = FileTail::new(&path, 4096);
        tail.open_at_end().expect("open");
        Model {
            dir,
            tail,
            written: Vec::new(),
            read: Vec::new(),
            next: 0,
            rotated_since_read: false,
            rotations: 0,
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("app.log")
    }

    fn read(&mut self) {
        loop {
            let mut lines = Lines::default();
            let report = self.tail.read(&mut lines).expect("read");
            self.read.extend(
                lines
                    .iter()
                    .map(|l| String::from_utf8_lossy(l).into_owned()),
            );
            if !report.more {
                break;
            }
        }
        self.rotated_since_read = false;
    }

    fn apply(&mut self, action: &Action) {
        match action {
            Action::Write { n, split } => {
                for i in 0..*n {
                    // Unique, and of varying length so truncations are not masked.
                    let line = format!("line {} {}", self.next, "x".repeat(self.next % 7));
                    self.next += 1;
                    self.written.push(line.clone());
                    let bytes = format!("{line}\n").into_bytes();
                    if *split && i + 1 == *n {
                        let cut = bytes.len() / 2;
                        append(&self.path(), &bytes[..cut]);
                        self.read();
                        append(&self.path(), &bytes[cut..]);
                    } else {
                        append(&self.path(), &bytes);
                    }
                }
            }
            Action::Read => self.read(),
            Action::Rotate => {
                if self.rotated_since_read {
                    self.read();
                }
                self.rotations += 1;
                let to = self.dir.path().join(format!("app.log.{}", self.rotations));
                std::fs::rename(self.path(), to).expect("rename");
                append(&self.path(), b"");
                self.rotated_since_read = true;
            }
            Action::Truncate => {
                self.read();
                std::fs::write(self.path(), b"").expect("truncate");
            }
            Action::Restart => {
                self.read();
                let saved = self.tail.position();
                self.tail = FileTail::new(&self.path(), 4096);
                self.tail.resume(saved).expect("resume");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_complete_line_is_delivered_exactly_once_in_order(actions in prop::collection::vec(action(), 1..40)) {
        let mut m = Model::new();
        for a in &actions {
            m.apply(a);
        }
        m.read();
        prop_assert_eq!(&m.read, &m.written);
    }
}
