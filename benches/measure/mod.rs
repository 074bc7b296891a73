//! Helpers the throughput benchmarks share: a deterministic generator for corpora,
//! best-of-N timing, and pinning a command to one core.

use std::process::Command;
use std::time::Instant;

/// How many times each measurement runs; the best is reported.
pub const RUNS: usize = 3;

/// A small deterministic generator (xorshift; no external crates).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Runs `f` `RUNS` times: the shortest time in seconds, and the last result.
pub fn best<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut last = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let r = f();
        best = best.min(start.elapsed().as_secs_f64());
        last = Some(r);
    }
    (best, last.expect("at least one run"))
}

/// `cmd` pinned to one core when taskset exists, so a figure is single-core throughput.
pub fn one_core(cmd: &str) -> Command {
    if Command::new("taskset").arg("--version").output().is_ok() {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", cmd]);
        c
    } else {
        Command::new(cmd)
    }
}
