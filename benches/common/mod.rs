//! Helpers the daemon benchmarks share: a config directory, the daemon's RSS, its
//! `ctl stats`, and waiting until it has read a number of lines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A daemon (dry-run backend) with one jail `sshd` on `flood.log`, in a temp dir.
pub struct BenchDaemon {
    pub dir: tempfile::TempDir,
    child: Child,
}

impl BenchDaemon {
    /// Starts it with `jail_extra` appended to the jail and `daemon_extra` to [daemon].
    pub fn start(daemon_extra: &str, jail_extra: &str) -> BenchDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path();
        let filters = Path::new(env!("CARGO_MANIFEST_DIR")).join("filters");
        std::fs::write(
            cfg.join("gaoler.toml"),
            format!("[daemon]\nstate_dir = \"state\"\nsocket = \"gaoler.sock\"\nfilter_path = [\"{}\"]\nlog_level = \"error\"\n{daemon_extra}\n[firewall]\nbackend = \"log\"\n", filters.display()),
        )
        .expect("config");
        std::fs::create_dir_all(cfg.join("jails")).expect("jails");
        std::fs::write(
            cfg.join("jails/sshd.toml"),
            format!("filter = \"sshd\"\nlogpath = \"flood.log\"\n{jail_extra}\n"),
        )
        .expect("jail");
        std::fs::write(cfg.join("flood.log"), "").expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_gaoler"))
            .args(["run", "--config"])
            .arg(cfg)
            .stderr(Stdio::null())
            .spawn()
            .expect("daemon");
        let d = BenchDaemon { dir, child };
        let start = Instant::now();
        while d.stats().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("flood.log")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ctl stats --json`.
    pub fn stats(&self) -> Option<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_gaoler"))
            .args(["ctl", "stats", "--json", "--config"])
            .arg(self.dir.path())
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn lines_read(&self) -> u64 {
        lines_read_in(self.dir.path())
    }

    /// Waits (up to 10 minutes) until `lines` lines were read; the time it took.
    pub fn wait_for_lines(&self, lines: u64, since: Instant) -> Option<Duration> {
        while since.elapsed() < Duration::from_secs(600) {
            if self.lines_read() >= lines {
                return Some(since.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// `lines_read` of the daemon whose config directory is `dir`.
pub fn lines_read_in(dir: &Path) -> u64 {
    Command::new(env!("CARGO_BIN_EXE_gaoler"))
        .args(["ctl", "stats", "--json", "--config"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|s| s["lines_read"].as_u64())
        .unwrap_or(0)
}

/// Resident memory of `pid` in KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}
