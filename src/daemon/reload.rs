//! A reload (`ctl reload`, SIGHUP): the configuration directory is read and checked
//! whole first; if anything is wrong, nothing changes and the answer lists every
//! error as `file:line:col`. Otherwise the ban manager takes the new policies (bans
//! of removed jails are lifted, a changed table is rebuilt in one transaction), and
//! the readers and jail task are replaced by a new generation that keeps the failure
//! windows of jails counting by the same rules.

use tokio::sync::{mpsc, oneshot};

use super::generation::{Generation, Shared};
use super::{jail_names, with_own_addresses};
use crate::ban::{BanError, Command, Reconfig};
use crate::config::{self, Config, ConfigErrors, JailConfig};
use crate::ipc::ReloadReport;
use crate::jail::Counting;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{count} error(s) in the configuration:\n{0}", count = .0.0.len())]
    Invalid(ConfigErrors),
    #[error("{0} cannot change while gaoler runs: restart it to apply that")]
    NeedsRestart(String),
    #[error(transparent)]
    Manager(BanError),
    #[error("the ban manager has stopped")]
    Stopped,
}

impl ReloadError {
    /// A configuration the user must fix (ctl exits 2), rather than a failure.
    pub fn is_config(&self) -> bool {
        matches!(self, ReloadError::Invalid(_) | ReloadError::NeedsRestart(_))
    }
}

/// The generation running after a reload, and what the reload did.
pub struct Reloaded {
    pub generation: Generation,
    pub outcome: Result<(Config, ReloadReport), ReloadError>,
}

/// Reloads from `running.dir`; `current` keeps running when the reload is refused.
pub async fn reload(
    running: &Config,
    current: Generation,
    shared: &Shared,
    manager: &mpsc::Sender<Command>,
) -> Reloaded {
    let refused = |generation, e| Reloaded {
        generation,
        outcome: Err(e),
    };
    let next = match config::load(&running.dir) {
        Ok(c) => with_own_addresses(c),
        Err(errors) => return refused(current, ReloadError::Invalid(errors)),
    };
    for w in &next.warnings {
        tracing::warn!("{w}");
    }
    if let Some(fixed) = restart_only_changes(running, &next) {
        return refused(current, ReloadError::NeedsRestart(fixed));
    }

    // The ban manager first: if it refuses (the store failing), nothing has changed.
    let (reply, answer) = oneshot::channel();
    let asked = Command::Reconfigure {
        config: Box::new(Reconfig::from_config(&next)),
        reply,
    };
    if manager.send(asked).await.is_err() {
        return refused(current, ReloadError::Stopped);
    }
    // A table the kernel refuses changes nothing: the old one keeps running.
    let (lifted, rebuilt) = match answer.await {
        Ok(Ok(done)) => (done.lifted, done.rebuilt),
        Ok(Err(e)) => return refused(current, ReloadError::Manager(e)),
        Err(_) => return refused(current, ReloadError::Stopped),
    };
    shared.stats.ensure_jails(jail_names(&next));

    // Readers and jail task: the old ones stop where everything read is counted.
    let before: Vec<JailConfig> = running.enabled_jails().cloned().collect();
    let after: Vec<JailConfig> = next.enabled_jails().cloned().collect();
    let windows = current.stop(running.daemon.max_tracked).await;
    let mut report = ReloadReport {
        lifted,
        rebuilt,
        ..ReloadReport::default()
    };
    let keep: Vec<Option<usize>> = after
        .iter()
        .map(|j| {
            let old = before.iter().position(|o| o.name == j.name);
            match old {
                None => report.added.push(j.name.clone()),
                Some(o) if Counting::from(&before[o]) == Counting::from(j) => {
                    report.kept.push(j.name.clone())
                }
                Some(_) => report.reset.push(j.name.clone()),
            }
            old
        })
        .collect();
    report.removed = before
        .iter()
        .filter(|o| !after.iter().any(|j| j.name == o.name))
        .map(|o| o.name.clone())
        .collect();
    let counting = windows.reshape(
        after.iter().map(Counting::from).collect(),
        &keep,
        next.daemon.max_tracked,
    );
    let generation = Generation::start(&after, &next.daemon, counting, shared).await;
    Reloaded {
        generation,
        outcome: Ok((next, report)),
    }
}

/// The settings of `next` that differ from `running` and only a restart can change.
fn restart_only_changes(running: &Config, next: &Config) -> Option<String> {
    let (a, b) = (&running.daemon, &next.daemon);
    let (f, g) = (&running.firewall, &next.firewall);
    let changed: Vec<&str> = [
        ("[daemon] state_dir", a.state_dir != b.state_dir),
        ("[daemon] socket", a.socket != b.socket),
        ("[daemon] socket_group", a.socket_group != b.socket_group),
        ("[firewall] backend", f.backend != g.backend),
        ("[firewall] table", f.table != g.table),
        ("[firewall] on_stop", f.on_stop != g.on_stop),
        ("[metrics] listen", running.metrics != next.metrics),
        ("[daemon] log_format", a.log_format != b.log_format),
        ("[daemon] log_file", a.log_file != b.log_file),
        (
            "[fleet] (added or removed)",
            running.fleet.is_some() != next.fleet.is_some(),
        ),
        (
            "[fleet] servers, host, key, stream, subject, replicas, authentication or tls",
            match (&running.fleet, &next.fleet) {
                (Some(x), Some(y)) => x.restart_only() != y.restart_only(),
                _ => false,
            },
        ),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect();
    (!changed.is_empty()).then(|| changed.join(", "))
}
