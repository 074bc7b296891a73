//! The nftables backend: the only code that knows nftables. Writes transactions in
//! nft's own syntax (`script`), runs `nft -f -` itself so that nft's error text is
//! captured and reported, and reads the table back as JSON (`inventory`).
//!
//! Layout (`plan`): table `inet <table>`; one chain `input` hooked at the configured
//! priority, whose verdict maps (`tcp dport vmap`, `udp dport vmap`) jump to dispatch
//! chains `ports-<n>` holding the rules of the jails guarding those ports (rules of
//! jails on all ports sit in `input`); per set group (a jail, or a shared `set`) the
//! sets `<set>-v4` / `<set>-v6` (addresses, `flags timeout`) and `<set>-n4` /
//! `<set>-n6` (prefixes, `flags interval,timeout`), each created with its rules by
//! the transaction that adds its first element.

mod inventory;
mod plan;
mod script;

use std::path::PathBuf;
use std::process::Stdio;

use std::io::Write;

use super::{Change, Element, Firewall, FirewallError, Inventory, Layout};
pub use inventory::parse_inventory;
pub use plan::{Plan, CHAIN};
pub use script::{change_script, install_script, set_name};

/// Runs `nft` for gaoler's table.
pub struct NftFirewall {
    nft: PathBuf,
    table: String,
    /// The table as gaoler built it (which sets are in the kernel); `None` until the
    /// first `install`. Boxed: the backend is a variant of `firewall::Backend`.
    plan: Option<Box<Plan>>,
}

impl NftFirewall {
    /// A backend for table `inet <table>`, running `nft` from `PATH`.
    pub fn new(table: &str) -> Self {
        NftFirewall {
            nft: PathBuf::from("nft"),
            table: table.to_string(),
            plan: None,
        }
    }

    async fn run(
        &self,
        what: &str,
        args: &[&str],
        input: Option<String>,
    ) -> Result<Vec<u8>, FirewallError> {
        let mut child = tokio::process::Command::new(&self.nft)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => FirewallError::NftMissing,
                _ => FirewallError::Spawn(format!(
                    "{}: {}",
                    self.nft.display(),
                    crate::util::io_reason(&e)
                )),
            })?;
        if let (Some(text), Some(stdin)) = (input, child.stdin.take()) {
            // Fed by its own thread, so a large script keeps flowing while the caller
            // does other work (even blocking work, like the store's flush beside it).
            // A failed write shows up as nft's own error below.
            match stdin.into_owned_fd() {
                Ok(fd) => {
                    std::thread::spawn(move || {
                        let _ = std::fs::File::from(fd).write_all(text.as_bytes());
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot feed nft its input"),
            }
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| FirewallError::Spawn(crate::util::io_reason(&e)))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let stderr = if stderr.is_empty() {
                format!("nft exited with {}", out.status)
            } else {
                stderr
            };
            let what = what.to_string();
            // ENOENT: the table, or a set or chain of it, is not there.
            Err(if stderr.contains("No such file or directory") {
                FirewallError::TableMissing { what, stderr }
            } else {
                FirewallError::Rejected { what, stderr }
            })
        }
    }

    /// Runs one script as one transaction.
    async fn send(&self, what: &str, script: String) -> Result<(), FirewallError> {
        let started = std::time::Instant::now();
        let bytes = script.len();
        let result = self.run(what, &["-f", "-"], Some(script)).await.map(|_| ());
        tracing::debug!(
            what,
            bytes,
            total_us = started.elapsed().as_micros() as u64,
            "nft transaction"
        );
        result
    }
}

impl Firewall for NftFirewall {
    /// `nft list chains`: nft 1.0.6 answers `list tables` only after fetching every
    /// set's elements, one kernel lookup per set, which takes seconds once a ruleset
    /// holds tens of thousands of sets; the chains come without them.
    async fn probe(&mut self) -> Result<(), FirewallError> {
        self.run("listing chains", &["list", "chains"], None)
            .await
            .map(|_| ())
    }

    /// A fresh plan for `layout`: on success it replaces the old one, on failure the
    /// kernel (one transaction) and the old plan are as they were.
    async fn install(&mut self, layout: &Layout, bans: &[Element]) -> Result<(), FirewallError> {
        let mut plan = Plan::new(layout);
        let (script, sets) = install_script(&plan, bans);
        let what = format!(
            "building table inet {} with {} bans",
            layout.table,
            bans.len()
        );
        self.send(&what, script).await?;
        plan.created(sets);
        self.table = layout.table.clone();
        self.plan = Some(Box::new(plan));
        Ok(())
    }

    async fn apply(&mut self, changes: &[Change]) -> Result<(), FirewallError> {
        let Some(plan) = self.plan.as_ref() else {
            return Err(FirewallError::NotInstalled);
        };
        let (script, sets) = change_script(plan, changes);
        if script.is_empty() {
            return Ok(());
        }
        let what = format!("{} set changes", changes.len());
        self.send(&what, script).await?;
        if let Some(plan) = self.plan.as_mut() {
            plan.created(sets);
        }
        Ok(())
    }

    async fn remove(&mut self) -> Result<(), FirewallError> {
        let what = format!("removing table inet {}", self.table);
        self.send(&what, script::remove_script(&self.table)).await
    }

    /// Cheaply, as `probe`: `nft list chains inet` names each table with its chains.
    async fn table_exists(&mut self) -> Result<Option<bool>, FirewallError> {
        let out = self
            .run("listing chains", &["list", "chains", "inet"], None)
            .await?;
        let ours = format!("table inet {} {{", self.table);
        Ok(Some(
            String::from_utf8_lossy(&out)
                .lines()
                .any(|l| l.trim() == ours),
        ))
    }

    /// Follows `nft monitor tables` and signals each `delete table inet <table>`.
    /// gaoler's own rebuilds delete and add the table in one transaction, so a signal
    /// is a reason to look (`table_exists`), not proof.
    fn watch(&mut self) -> Option<tokio::sync::mpsc::Receiver<()>> {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(&self.nft)
            .args(["monitor", "tables"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| tracing::warn!(error = %crate::util::io_reason(&e), "cannot watch nftables events; a removed table is found by the reconciler"))
            .ok()?;
        let stdout = child.stdout.take()?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let deleted = format!("delete table inet {}", self.table);
        tokio::spawn(async move {
            let _child = child;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == deleted && tx.try_send(()).is_err() && tx.is_closed() {
                    return;
                }
            }
            tracing::debug!("nft monitor ended; a removed table is found by the reconciler");
        });
        Some(rx)
    }

    async fn inventory(&mut self, layout: &Layout) -> Result<Option<Inventory>, FirewallError> {
        // Built for another layout, or never (a table left by the last run): its
        // elements are read from whichever of the layout's sets are there, and it is
        // incomplete, so it is built.
        let own = self.plan.as_ref().filter(|p| p.layout == *layout);
        let other;
        let plan = match own {
            Some(plan) => plan,
            None => {
                other = Plan::with_every_set(layout);
                &other
            }
        };
        let args = ["-j", "list", "table", "inet", layout.table.as_str()];
        match self.run("listing the table", &args, None).await {
            Ok(out) => {
                let mut inventory = parse_inventory(&out, plan);
                inventory.complete &= own.is_some();
                Ok(Some(inventory))
            }
            // No table at all: nothing is there.
            Err(FirewallError::TableMissing { .. }) => Ok(Some(Inventory::default())),
            Err(e) => Err(e),
        }
    }
}
