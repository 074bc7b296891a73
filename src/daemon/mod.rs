//! `run`: the only place that wires the stages together. It takes its side effects
//! from the caller (the firewall, the store, the clock, the bound control socket and
//! metrics listener, the shutdown signal), restores bans into a fresh kernel table,
//! and starts the tasks: a reader per source -> the jail task -> the ban manager,
//! plus the ctl server and, with `[metrics] listen`, the metrics server. `main`
//! builds the real edges; tests drive `run` in-process with fakes.

mod generation;
mod pipeline;
mod reload;
mod sources;
mod windows;

use std::sync::{Arc, RwLock};

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ban::{self, BanError, BanManager};
use crate::config::{Config, JailConfig};
use crate::firewall::{Firewall, FirewallError, Layout};
use crate::fleet;
use crate::ipc::access::{NoSuchGroup, SocketGroup};
use crate::ipc::server::{self, Handler, SocketError};
use crate::ipc::Response;
use crate::jail::{Counting, Jail, Jails};
use crate::logging::LogControl;
use crate::metrics::{self, MetricsError};
use crate::source::Positions;
use crate::stats::Stats;
use crate::store::{BanStore, StoreError};
use crate::types::Clock;
use generation::Generation;

pub use reload::ReloadError;

/// Capacity of the channel from the jail task to the ban manager.
const DECISION_QUEUE: usize = 4096;
/// Batches of ban events waiting for the event hub (each a batch of bans or one
/// unban); past it they are dropped and counted, never waited for.
const HUB_QUEUE: usize = 1024;

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
    Group(#[from] NoSuchGroup),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("[fleet] key: {0}")]
    FleetKey(#[from] crate::fleet::keys::KeyError),
}

/// The side effects the daemon runs on, built by its caller: `main` opens sled,
/// probes nft and binds the sockets; a test passes fakes.
pub struct Edges<F: Firewall> {
    pub firewall: F,
    pub store: Box<dyn BanStore>,
    /// Reads bans' evidence from the same store, for the control socket.
    pub evidence: Arc<dyn crate::store::StoreReader>,
    pub positions: Arc<dyn Positions>,
    pub clock: Arc<dyn Clock>,
    /// The control socket, bound (`ipc::server::bind`); served once the table is built.
    pub control: UnixListener,
    /// Who besides root may use it (`socket_group`, resolved).
    pub group: Option<SocketGroup>,
    /// `[metrics] listen`, bound.
    pub metrics: Option<TcpListener>,
    /// The daemon's own log: level and file.
    pub logs: Arc<LogControl>,
    /// With `[fleet]`: this host's signing key and the store's outbox.
    pub fleet: Option<FleetEdge>,
}

/// What the fleet needs from `main`: the key it signs with, read at start, and the
/// store's outbox its publisher drains.
pub struct FleetEdge {
    pub key: ed25519_dalek::SigningKey,
    pub outbox: Arc<dyn crate::store::Outbox>,
}

/// Runs the daemon until `shutdown` is cancelled; each message on `hangups` (SIGHUP)
/// reloads the configuration, as `ctl reload` does. The control socket's file is
/// removed when it returns.
pub async fn run<F: Firewall + 'static>(
    config: Config,
    edges: Edges<F>,
    shutdown: CancellationToken,
    hangups: mpsc::Receiver<()>,
) -> Result<(), DaemonError> {
    let socket = config.daemon.socket.clone();
    let result = serve(config, edges, shutdown, hangups).await;
    let _ = std::fs::remove_file(&socket);
    result
}

async fn serve<F: Firewall + 'static>(
    config: Config,
    edges: Edges<F>,
    shutdown: CancellationToken,
    mut hangups: mpsc::Receiver<()>,
) -> Result<(), DaemonError> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let config = with_own_addresses(config);
    let Edges {
        firewall,
        store,
        evidence,
        positions,
        clock,
        control,
        group,
        metrics: metrics_listener,
        logs,
        fleet: fleet_edge,
    } = edges;
    let stats = Arc::new(Stats::new(jail_names(&config)));
    let mut manager = BanManager::new(
        firewall,
        store,
        ban::policies(&config),
        clock.clone(),
        stats.clone(),
    )
    .with_history_horizon(config.daemon.dbpurgeage)
    .with_recidive(config.recidive.clone())
    .with_reconcile(config.firewall.reconcile_interval)
    .with_sharing(ban::sharing(&config));
    // Ban and unban events for `ctl events` followers (a ban output; the hub makes
    // them events, with their lines).
    let (hub_output, hub_events) = ban::Output::new(HUB_QUEUE);
    manager = manager.with_output(hub_output);
    let followers = crate::notify::followers();
    // The fleet's publisher is rung by every ban and unban (a ban output).
    let fleet_parts = match (&config.fleet, fleet_edge) {
        (Some(cfg), Some(edge)) => {
            let (doorbell, rung) = ban::Output::new(16);
            manager = manager.with_output(doorbell);
            Some((cfg.clone(), edge, rung))
        }
        _ => None,
    };

    let (decision_tx, decision_rx) = mpsc::channel(DECISION_QUEUE);
    let (command_tx, command_rx) = mpsc::channel(64);
    let (reload_tx, mut reload_rx) = mpsc::channel::<oneshot::Sender<Response>>(4);
    let tasks = TaskTracker::new();
    let shared = generation::Shared {
        stats: stats.clone(),
        clock: clock.clone(),
        positions,
        decisions: decision_tx,
        shutdown: shutdown.clone(),
    };
    let jails: Vec<JailConfig> = config.enabled_jails().cloned().collect();
    let mut counting = Jails::new(
        jails.iter().map(|j| Jail::new(Counting::from(j))).collect(),
        config.daemon.max_tracked,
    );
    let names: Vec<String> = jails.iter().map(|j| j.name.clone()).collect();
    windows::restore(
        &shared.positions,
        &mut counting,
        &names,
        clock.now(),
        &shared.decisions,
    );
    // The table is rebuilt while the readers already read: their failures and the
    // jails' decisions wait in the bounded queues until the manager runs.
    let mut current = Generation::start(&jails, &config.daemon, counting, &shared).await;
    let restored = match manager.restore(&Layout::from_config(&config)).await {
        Ok(restored) => restored,
        Err(e) => {
            // Nobody will answer the readers' barriers: let them see a closed queue.
            drop(decision_rx);
            shutdown.cancel();
            current.stop(config.daemon.max_tracked).await;
            return Err(e.into());
        }
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
    tasks.spawn(manager.run(
        decision_rx,
        command_rx,
        shutdown.clone(),
        config.firewall.on_stop,
    ));

    let trust = fleet_parts.map(|(cfg, edge, doorbell)| {
        let (trust_tx, trust_rx) = tokio::sync::watch::channel(fleet::Trust::from_config(&cfg));
        let fleet = fleet::Fleet {
            host: cfg.host.clone(),
            key: edge.key,
            nats: fleet::nats_options(&cfg, stream_max_age(&config)),
            outbox: edge.outbox,
            doorbell,
            decisions: shared.decisions.clone(),
            trust: trust_rx,
            ignore: crate::types::IgnoreList::default().with(crate::util::host_addresses()),
            stats: stats.clone(),
            clock: clock.clone(),
        };
        tracing::info!(host = %cfg.host, servers = ?cfg.servers, share = ?cfg.share, apply = cfg.apply, "fleet: sharing bans over NATS JetStream");
        tasks.spawn(fleet.run(shutdown.clone()));
        trust_tx
    });

    // The notifiers of [[notify]]; a reload sends the new set.
    let (notify_tx, notify_rx) = tokio::sync::watch::channel(crate::notify::notifiers(
        &config.notify,
        &[],
        &stats,
        &shutdown,
    ));
    tasks.spawn(crate::notify::run_hub(
        hub_events,
        evidence.clone(),
        followers.clone(),
        notify_rx,
        stats.clone(),
        shutdown.clone(),
    ));
    let handler = Arc::new(Handler {
        commands: command_tx.clone(),
        stats: stats.clone(),
        jails: RwLock::new(status_rows(&config)),
        group,
        reload: reload_tx,
        logs: logs.clone(),
        fleet: config.fleet.is_some(),
        evidence: evidence.clone(),
        events: followers,
    });
    tasks.spawn(server::serve(control, handler.clone(), shutdown.clone()));
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

    let mut watchdog_usec = 0;
    if sd_notify::watchdog_enabled(false, &mut watchdog_usec) {
        let every = std::time::Duration::from_micros(watchdog_usec) / 2;
        tracing::info!(every_ms = every.as_millis() as u64, "systemd watchdog on");
        tasks.spawn(watchdog(every, command_tx.clone(), shutdown.clone()));
    }

    // The running configuration; replaced only by a reload that is valid throughout.
    let mut config = config;
    loop {
        let reply = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(reply) = reload_rx.recv() => Some(reply),
            Some(()) = hangups.recv() => None,
        };
        notify_systemd(&[sd_notify::NotifyState::Reloading]);
        let reloaded = reload::reload(&config, current, &shared, &command_tx).await;
        current = reloaded.generation;
        let response = match reloaded.outcome {
            Ok((next, report)) => {
                *handler.jails.write().unwrap_or_else(|p| p.into_inner()) = status_rows(&next);
                logs.configured_level(&next.daemon.log_level);
                if let (Some(tx), Some(f)) = (&trust, &next.fleet) {
                    let _ = tx.send(fleet::Trust::from_config(f));
                }
                if next.notify != config.notify {
                    let running = notify_tx.borrow().clone();
                    let _ = notify_tx.send(crate::notify::notifiers(
                        &next.notify,
                        &running,
                        &stats,
                        &shutdown,
                    ));
                }
                config = next;
                tracing::info!(
                    added = ?report.added,
                    removed = ?report.removed,
                    reset = ?report.reset,
                    lifted = report.lifted,
                    rebuilt = report.rebuilt,
                    "configuration reloaded"
                );
                Response::Reloaded(report)
            }
            Err(e) => {
                tracing::error!("reload refused, the running configuration stays: {e}");
                Response::Error {
                    usage: e.is_config(),
                    message: format!("reload refused, the running configuration stays: {e}"),
                }
            }
        };
        let summary = format!("{} jails", config.enabled_jails().count());
        notify_systemd(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&summary),
        ]);
        if let Some(reply) = reply {
            let _ = reply.send(response);
        }
    }
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping");
    let counted = current.stop(config.daemon.max_tracked).await;
    let names: Vec<String> = config.enabled_jails().map(|j| j.name.clone()).collect();
    windows::save(&shared.positions, &counted, &names);
    tasks.close();
    tasks.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// The fleet stream's `max_age`: the longest bantime of the shared jails, at least a
/// day; unlimited (zero) when one of them may ban for good or escalates.
fn stream_max_age(config: &Config) -> std::time::Duration {
    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
    let Some(fleet) = &config.fleet else {
        return DAY;
    };
    let mut longest = DAY;
    for jail in config
        .active_jails()
        .into_iter()
        .filter(|j| fleet.shares(&j.name))
    {
        match (jail.bantime, &jail.increment) {
            (crate::types::BanTime::Finite(d), None) => longest = longest.max(d),
            _ => return std::time::Duration::ZERO,
        }
    }
    longest
}

/// ignoreself: the host's own addresses join the ignore list of those jails.
fn with_own_addresses(mut config: Config) -> Config {
    let own = crate::util::host_addresses();
    for jail in config.jails.iter_mut().filter(|j| j.ignoreself) {
        jail.ignore = jail.ignore.with(own.iter().copied());
    }
    config
}

/// The names of the jails `config` runs.
fn jail_names(config: &Config) -> Vec<String> {
    config.active_jails().into_iter().map(|j| j.name).collect()
}

/// (jail, filter) rows of `ctl status`.
fn status_rows(config: &Config) -> Vec<(String, String)> {
    config
        .active_jails()
        .into_iter()
        .map(|j| (j.name, j.filter))
        .collect()
}

/// Pings systemd's watchdog every `every` while the ban manager (the heart of the
/// daemon) answers within that time; a stuck manager stops the pings, and systemd
/// restarts the service.
async fn watchdog(
    every: std::time::Duration,
    manager: mpsc::Sender<ban::Command>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let asked = manager
            .send_timeout(ban::Command::Alive { reply }, every)
            .await;
        match (asked, tokio::time::timeout(every, answer).await) {
            (Ok(()), Ok(Ok(()))) => notify_systemd(&[sd_notify::NotifyState::Watchdog]),
            _ if shutdown.is_cancelled() => return,
            _ => tracing::warn!("the ban manager did not answer in time: no watchdog ping"),
        }
    }
}

fn notify_systemd(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT; hands each SIGHUP on as a reload (several
/// before the first is handled make one).
pub fn handle_signals(shutdown: CancellationToken) -> std::io::Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (hangups, received) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); break; }
                _ = int.recv() => { tracing::info!("SIGINT received"); break; }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received: reloading the configuration");
                    let _ = hangups.try_send(());
                }
            }
        }
        shutdown.cancel();
    });
    Ok(received)
}
