//! A private network namespace for the benches that run nftables: named after the
//! bench and its process, loopback up; every process left in it is killed and the
//! namespace deleted when it is dropped, also when the bench panics.

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

pub struct Netns(pub String);

impl Netns {
    /// `ip netns add <prefix>-<pid>`, then loopback up; needs root.
    pub fn new(prefix: &str) -> Netns {
        let name = format!("{prefix}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add failed: run as root");
        let ns = Netns(name);
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `args` as a command inside the namespace.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    /// Runs `args` inside the namespace; panics when it fails.
    pub fn run(&self, args: &[&str]) {
        let ok = self.cmd(args).status().is_ok_and(|s| s.success());
        assert!(ok, "{args:?}");
    }

    /// `nft args` inside the namespace: what it printed.
    pub fn nft(&self, args: &[&str]) -> String {
        let mut c = self.cmd(&["nft"]);
        let out = c.args(args).stderr(Stdio::null()).output().expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `nft args` inside the namespace: whether it succeeded.
    pub fn nft_ok(&self, args: &[&str]) -> bool {
        let mut c = self.cmd(&["nft"]);
        c.args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn on_thread<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(path).expect("netns handle");
            // SAFETY: setns on this thread only, with a valid namespace fd.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns failed");
            f()
        })
        .join()
        .expect("netns thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
