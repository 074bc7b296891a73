//! The one owner of ban state, as an actor: decisions from the jails and `ctl`
//! requests arrive as messages and are answered here, and so are expiry, retries,
//! reconciliation and the restore at start. The decisions themselves are made by
//! pure parts: `policy` (a ban's length and checks), `desired` (what the kernel
//! should hold), `reconcile` (the repair diff), `retry` (what waits, and when),
//! `recidive`. The actor's own work is split by what it does: `making.rs` (a new
//! ban's inputs, bans by hand, recidive), `commit.rs` (the write path: store and
//! kernel, then the book), `upkeep.rs` (its timer), `table.rs` (whole-table builds).
//! Ban outputs (`events`) see every ban and every end of one, never waited on.

mod banlog;
mod book;
mod commit;
mod desired;
mod events;
mod isolate;
mod making;
mod messages;
mod policy;
mod recidive;
mod reconcile;
mod retry;
mod table;
mod upkeep;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use book::BanBook;
pub use events::{BanEvent, Ended, Output};
pub use messages::{
    sharing, BanError, Command, Decided, Decision, Lift, Received, Reconfig, Reconfigured,
    Restored, Sharing,
};
pub use policy::{policies, BanPolicy};

use crate::config::{OnStop, RecidiveConfig};
use crate::firewall::{Firewall, FirewallError, Layout};
use crate::stats::Stats;
use crate::store::BanStore;
use crate::types::{Ban, Clock, Target};
use banlog::BanLog;
use commit::IfUnsaved;
use desired::Desired;
use events::Outputs;
use retry::RetryQueue;

/// How long the first decision of a batch waits for others to join it.
const BATCH_WINDOW: Duration = Duration::from_millis(1);
/// Most decisions taken into one store batch and one kernel transaction.
const MAX_BATCH: usize = 10_000;
/// How often old ban history is purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Longest sleep between checks, so a changed wall clock is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Owns current bans, the firewall and the store.
pub struct BanManager<F: Firewall> {
    book: BanBook,
    firewall: F,
    store: Box<dyn BanStore>,
    jails: BTreeMap<String, BanPolicy>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
    /// Bans and unbans waiting for the store or the kernel, and when to retry.
    waiting: RetryQueue,
    /// The log lines behind bans decided and not yet saved: each goes into its ban's
    /// commit (`StoreChange::Evidence`), and back here if that commit fails.
    evidence: HashMap<(String, Target), Vec<String>>,
    /// Ban history older than this no longer counts and is purged.
    history_horizon: Duration,
    recidive: Option<RecidiveConfig>,
    purge_at: Instant,
    /// The table as built at restore; the reconciler compares the kernel with it.
    layout: Option<Layout>,
    reconcile_every: Option<Duration>,
    reconcile_at: Instant,
    ban_log: BanLog,
    outputs: Outputs,
    /// The table may be gone (a change failed for want of it, or nft reported a
    /// deleted table): look at once, and rebuild it with every ban if so.
    table_doubt: Option<Doubt>,
    /// Which of this host's own bans and unbans by hand are announced to the fleet
    /// (through the store's outbox); `None` without a fleet.
    sharing: Option<Sharing>,
}

/// Why the table is in doubt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doubt {
    /// nft reported a table of that name deleted (gaoler's own rebuilds do that too).
    Deleted,
    /// A change failed because the table, a set or the chain is missing.
    Missing,
}

impl<F: Firewall> BanManager<F> {
    pub fn new(
        firewall: F,
        store: Box<dyn BanStore>,
        jails: BTreeMap<String, BanPolicy>,
        clock: Arc<dyn Clock>,
        stats: Arc<Stats>,
    ) -> Self {
        BanManager {
            book: BanBook::default(),
            firewall,
            store,
            jails,
            clock,
            stats,
            waiting: RetryQueue::default(),
            evidence: HashMap::new(),
            history_horizon: Duration::from_secs(30 * 86_400),
            purge_at: Instant::now(),
            recidive: None,
            layout: None,
            reconcile_every: None,
            reconcile_at: Instant::now(),
            ban_log: BanLog::new(),
            outputs: Outputs::default(),
            table_doubt: None,
            sharing: None,
        }
    }

    /// Compares the kernel with the bans every `every` and repairs it (zero: never).
    pub fn with_reconcile(mut self, every: Duration) -> Self {
        self.reconcile_every = messages::reconcile_every(every);
        self.reconcile_at = Instant::now() + every;
        self
    }

    /// Enables native recidive (its jail must be among the policies).
    pub fn with_recidive(mut self, recidive: Option<RecidiveConfig>) -> Self {
        self.recidive = recidive;
        self
    }

    /// Sets how long ban history counts for escalation (`dbpurgeage`).
    pub fn with_history_horizon(mut self, horizon: Duration) -> Self {
        self.history_horizon = horizon;
        self
    }

    /// Announces this host's bans of the shared jails (and its unbans by hand) to
    /// the fleet, through the store's outbox.
    pub fn with_sharing(mut self, sharing: Option<Sharing>) -> Self {
        self.sharing = sharing;
        self
    }

    /// Adds an output: it sees every ban and every end of one (see `events`).
    pub fn with_output(mut self, output: Output) -> Self {
        self.outputs.add(output);
        self
    }

    pub fn book(&self) -> &BanBook {
        &self.book
    }

    /// The bans as the kernel should see them.
    fn desired(&self) -> Desired<'_> {
        Desired {
            jails: &self.jails,
            book: &self.book,
            pending: &self.waiting.pending,
            unsaved: &self.waiting.unsaved,
        }
    }

    /// Serves decisions and commands until `shutdown`; then applies `on_stop`.
    pub async fn run(
        mut self,
        mut decisions: mpsc::Receiver<Decided>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
        on_stop: OnStop,
    ) {
        let mut removals = self.firewall.watch();
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(()) = next_removal(&mut removals) => self.doubt(Doubt::Deleted),
                Some(cmd) = commands.recv() => self.handle(cmd).await,
                Some(first) = decisions.recv() => {
                    // Decisions arriving close together share one store flush and one
                    // kernel transaction; a lone ban waits at most BATCH_WINDOW.
                    let mut batch = vec![first];
                    let until = Instant::now() + BATCH_WINDOW;
                    while batch.len() < MAX_BATCH {
                        match decisions.try_recv() {
                            Ok(d) => batch.push(d),
                            Err(mpsc::error::TryRecvError::Empty) => {
                                match tokio::time::timeout_at(until, decisions.recv()).await {
                                    Ok(Some(d)) => batch.push(d),
                                    _ => break,
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    let (mut bans, mut received, mut barriers) =
                        (Vec::with_capacity(batch.len()), Vec::new(), Vec::new());
                    for d in batch {
                        match d {
                            Decided::Ban(d) => bans.push(d),
                            Decided::Received(r) => received.push(r),
                            // An unban from the fleet comes after what was sent before it.
                            Decided::Lift(lift) => {
                                self.decide(std::mem::take(&mut bans)).await;
                                self.apply_received(std::mem::take(&mut received)).await;
                                self.lift_received(lift).await;
                            }
                            Decided::Saved(b) => barriers.push(b),
                        }
                    }
                    // Read positions (and the fleet's acknowledgements) are saved only
                    // behind saved decisions.
                    self.decide(bans).await;
                    self.apply_received(received).await;
                    self.waiting.hold(barriers);
                }
                _ = tokio::time::sleep_until(wake) => {
                    self.expire();
                    self.settle_doubt().await;
                    self.retry().await;
                    self.purge_history();
                    if let Some(every) = self.reconcile_every {
                        if self.reconcile_at <= Instant::now() {
                            self.reconcile().await;
                            self.reconcile_at = Instant::now() + every;
                        }
                    }
                }
            }
        }
        if on_stop == OnStop::Flush {
            match transaction(&self.stats, self.firewall.remove()).await {
                Ok(()) => tracing::info!("on_stop = flush: removed the firewall table"),
                Err(e) => {
                    tracing::error!(error = %e, "on_stop = flush: could not remove the firewall table")
                }
            }
        }
    }

    pub async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Ban {
                jail,
                target,
                bantime,
                reply,
            } => {
                let _ = reply.send(self.manual_ban(&jail, target, bantime).await);
            }
            Command::Unban {
                target,
                jail,
                reply,
            } => {
                let _ = reply.send(self.unban(target.as_ref(), jail.as_deref()).await);
            }
            Command::List { reply } => {
                let _ = reply.send(self.book.listing());
            }
            Command::Alive { reply } => {
                let _ = reply.send(());
            }
            Command::Reconfigure { config, reply } => {
                let _ = reply.send(self.reconfigure(*config).await);
            }
        }
    }

    /// Bans from jail decisions; already banned targets are left as they are. True
    /// when every ban made is saved (in force, or saved and waiting for the kernel);
    /// bans the store refused wait in the retry queue.
    pub async fn decide(&mut self, batch: Vec<Decision>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let mut seen: HashSet<(&str, Target)> = HashSet::with_capacity(batch.len());
        let mut bans = Vec::with_capacity(batch.len());
        for d in &batch {
            if self.desired().holds(&d.jail, &d.target) || !seen.insert((d.jail.as_str(), d.target))
            {
                tracing::debug!(jail = %d.jail, target = %d.target, "already banned");
                continue;
            }
            match self.new_ban(&d.jail, d.target, None, d.addr, now) {
                Ok(ban) => {
                    if !d.matches.is_empty() {
                        self.evidence
                            .insert((ban.jail.clone(), ban.target), d.matches.clone());
                    }
                    bans.push(ban)
                }
                Err(e) => {
                    tracing::warn!(jail = %d.jail, target = %d.target, error = %e, "not banned")
                }
            }
        }
        let count = bans.len();
        // Kept for recidive, which reads them after the commit, and for the retry if
        // the store refuses them.
        let made = bans.clone();
        let decided = started.elapsed();
        let result = self.commit_bans(bans, now, IfUnsaved::Keep).await;
        tracing::debug!(
            bans = count,
            decide_us = decided.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "batch of decisions handled"
        );
        match result {
            Ok(()) => {
                self.recidive(&made, now).await;
                true
            }
            // Saved; the kernel gets them when it takes changes again.
            Err(BanError::Firewall(_)) => true,
            Err(e @ BanError::Store(_)) => {
                tracing::error!(error = %e, bans = made.len(), "the store refused the bans; they are in the kernel, kept in memory and saved by the retry");
                self.waiting.keep_unsaved(made);
                self.waiting.schedule(Instant::now());
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "bans could not be applied");
                false
            }
        }
    }

    /// Counts and announces a ban in force that ended, with `matches` (its evidence,
    /// read before its removal: [`BanManager::evidence_of`]).
    fn ended(&self, ban: &Ban, why: Ended, matches: Vec<String>) {
        if let Some(c) = self.stats.jail(&ban.jail) {
            c.total_unbanned.fetch_add(1, Relaxed);
        }
        self.outputs.emit(|| BanEvent::Ended {
            ban: ban.clone(),
            why,
            matches,
        });
    }

    /// The evidence of `ban` for its end's event: read from the store only when there
    /// is an output to tell.
    fn evidence_of(&self, ban: &Ban) -> Vec<String> {
        if self.outputs.is_empty() {
            return Vec::new();
        }
        self.store
            .evidence(&ban.jail, &ban.target)
            .unwrap_or_default()
    }

    fn refresh_count(&self, jail: &str) {
        if let Some(c) = self.stats.jail(jail) {
            c.currently_banned
                .store(self.book.count_in(jail) as u64, Relaxed);
        }
    }

    fn refresh_counts(&self) {
        for jail in self.stats.jail_names() {
            self.refresh_count(&jail);
        }
    }
}

/// The next table removal the firewall reports; pending forever without a watch.
async fn next_removal(removals: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match removals {
        Some(rx) => match rx.recv().await {
            Some(()) => Some(()),
            None => {
                *removals = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Runs one firewall transaction and records it in `stats`: counted, timed, and
/// counted as an error when the backend refused it. The end is seen when the future is
/// polled: a batch of bans shares its task with the store's (blocking) flush, so its
/// time is the longer of the two.
async fn transaction<T>(
    stats: &Stats,
    tx: impl Future<Output = Result<T, FirewallError>>,
) -> Result<T, FirewallError> {
    let started = std::time::Instant::now();
    let result = tx.await;
    stats.transactions.record(started.elapsed(), result.is_ok());
    result
}

#[cfg(test)]
mod tests;
