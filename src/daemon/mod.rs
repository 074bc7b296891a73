//! `run`: the only place that wires the stages together. It opens the store, restores
//! bans into a fresh kernel table, binds the control socket, and starts the tasks:
//! one reader per log file and one for the journal -> the jail task -> the ban
//! manager, plus the ctl server and, with `[metrics] listen`, the metrics server.

mod pipeline;
mod sources;

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ban::{self, BanError, BanManager};
use crate::config::{Backend as BackendKind, Config, RECIDIVE};
use crate::firewall::{Backend, Firewall, FirewallError, Layout, LogFirewall, NftFirewall};
use crate::ipc::server::{self, Handler, SocketError};
use crate::jail::{Jail, JailRules, Jails};
use crate::metrics::{self, MetricsError};
use crate::source::journal::{self, StartAt};
use crate::stats::Stats;
use crate::store::{PositionStore, SledStore, StoreError};
use crate::types::{Clock, SystemClock};
use sources::FileSources;

/// The journal reader's command.
const JOURNALCTL: &str = "journalctl";
/// Capacity of the channel from readers to the jail task.
const FAILURE_QUEUE: usize = 4096;
/// Capacity of the channel from the jail task to the ban manager.
const DECISION_QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("restoring bans at start failed: {0}")]
    Restore(#[from] BanError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    // ignoreself: the host's own addresses join the ignore list of those jails.
    let own = crate::util::host_addresses();
    let mut config = config;
    for jail in config.jails.iter_mut().filter(|j| j.ignoreself) {
        jail.ignore = jail.ignore.with(own.iter().copied());
    }
    let jails: Vec<_> = config.enabled_jails().cloned().collect();
    let recidive = config.recidive.as_ref().map(|_| RECIDIVE);
    let stats = Arc::new(Stats::new(
        jails.iter().map(|j| j.name.as_str()).chain(recidive),
    ));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    let mut firewall = match config.firewall.backend {
        BackendKind::Nftables => Backend::Nft(NftFirewall::new(&config.firewall.table)),
        BackendKind::Log => Backend::Log(LogFirewall),
    };
    firewall.probe().await?;
    let store = SledStore::open(&config.daemon.state_dir)?;
    let positions: Arc<dyn PositionStore> = Arc::new(store.positions()?);
    // Bound before any task starts (after the store, which refuses a second daemon
    // with a clearer message than a taken port would), served once ready.
    let metrics_listener = match config.metrics {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let mut manager = BanManager::new(
        firewall,
        Box::new(store),
        ban::policies(&config),
        clock.clone(),
        stats.clone(),
    )
    .with_history_horizon(config.daemon.dbpurgeage)
    .with_recidive(config.recidive.clone())
    .with_reconcile(config.firewall.reconcile_interval);

    let (failure_tx, failure_rx) = mpsc::channel(FAILURE_QUEUE);
    let (decision_tx, decision_rx) = mpsc::channel(DECISION_QUEUE);
    let (command_tx, command_rx) = mpsc::channel(64);
    let tasks = TaskTracker::new();

    let counting = Jails::new(
        jails
            .iter()
            .map(|j| Jail::new(JailRules::from(j)))
            .collect(),
        config.daemon.max_tracked,
    );
    tasks.spawn(pipeline::count_failures(
        jails.iter().map(|j| j.name.clone()).collect(),
        counting,
        failure_rx,
        decision_tx,
        clock.clone(),
        stats.clone(),
        shutdown.clone(),
    ));

    // One reader per file (literal or glob match), however many jails read it, and
    // one for the journal.
    let cx = pipeline::ReaderContext {
        failures: failure_tx.clone(),
        stats: stats.clone(),
        clock: clock.clone(),
        shutdown: shutdown.clone(),
        max_line: config.daemon.max_line_length,
        positions,
        poll: config.daemon.poll_interval,
    };
    let cx_journal = cx.clone();
    let mut files = FileSources::new(&jails, config.daemon.file_watch, cx.clone(), tasks.clone());
    files.start_new(true);
    if files.has_globs() {
        tasks.spawn(sources::rescan_globs(
            Arc::new(Mutex::new(files)),
            cx.clone(),
        ));
    } else {
        // Keep the inotify watcher alive for as long as the readers run.
        tasks.spawn(async move {
            let _files = files;
            cx.shutdown.cancelled().await;
        });
    }
    let journal = sources::journal_subscribers(&jails);
    if !journal.is_empty() {
        // Decided before READY, so that nothing logged after it can be missed.
        let start = match cx_journal.positions.journal_cursor() {
            Ok(Some(cursor)) => Some(StartAt::After(cursor)),
            other => {
                if let Err(e) = other {
                    tracing::warn!(error = %e, "cannot read the saved journal cursor");
                }
                match journal::tail(JOURNALCTL).await {
                    Ok(start) => Some(start),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        tracing::error!("journal sources need `journalctl` (systemd); jails reading the journal see nothing");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::util::io_reason(&e), "cannot read the journal's tail; following from now");
                        Some(StartAt::Now)
                    }
                }
            }
        };
        if let Some(start) = start {
            tasks.spawn(pipeline::follow_journal(
                journal,
                JOURNALCTL.to_string(),
                start,
                cx_journal,
            ));
        }
    }
    drop(failure_tx);

    // The table is rebuilt while the readers already read: their failures and the
    // jails' decisions wait in the bounded queues until the manager runs.
    let restored = match manager.restore(&Layout::from_config(&config)).await {
        Ok(r) => r,
        Err(e) => return Err(stop_early(&tasks, &shutdown, e.into()).await),
    };
    tracing::info!(
        restored = restored.loaded,
        expired = restored.expired,
        orphaned = restored.orphaned,
        store_ms = restored.store_ms,
        kernel_ms = restored.kernel_ms,
        table = %config.firewall.table,
        "firewall table built"
    );
    let listener = match server::bind(&config.daemon.socket) {
        Ok(l) => l,
        Err(e) => return Err(stop_early(&tasks, &shutdown, e.into()).await),
    };
    tasks.spawn(manager.run(
        decision_rx,
        command_rx,
        shutdown.clone(),
        config.firewall.on_stop,
    ));

    let handler = Arc::new(Handler {
        commands: command_tx,
        stats: stats.clone(),
        jails: jails
            .iter()
            .map(|j| (j.name.clone(), j.filter_name.clone()))
            .chain(recidive.map(|r| (r.to_string(), "(bans from all jails)".to_string())))
            .collect(),
    });
    tasks.spawn(server::serve(listener, handler, shutdown.clone()));
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        }
        tasks.spawn(metrics::serve(listener, stats.clone(), shutdown.clone()));
    }

    let summary = format!("{} jails, {} bans restored", jails.len(), restored.loaded);
    tracing::info!(socket = %config.daemon.socket.display(), "gaoler is ready: {summary}");
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&summary),
    ]);

    shutdown.cancelled().await;
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping");
    tasks.close();
    tasks.wait().await;
    let _ = std::fs::remove_file(&config.daemon.socket);
    tracing::info!("stopped");
    Ok(())
}

/// Stops the tasks already started when start-up fails, then hands back the error.
async fn stop_early(
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
    error: DaemonError,
) -> DaemonError {
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    error
}

fn notify_systemd(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT. SIGHUP is logged (reload comes later).
pub fn handle_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); break; }
                _ = int.recv() => { tracing::info!("SIGINT received"); break; }
                _ = hup.recv() => tracing::warn!("SIGHUP received: reload is not implemented in this version; restart gaoler to apply config changes"),
            }
        }
        shutdown.cancel();
    });
    Ok(())
}
