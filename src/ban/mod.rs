//! The one owner of ban state. Decisions from the jails and `ctl` requests arrive as
//! messages; each ban is written to the store first, then to the kernel, and only then
//! shown by `ctl banned`. Expiry, retries of failed kernel changes, and the restore at
//! start happen here too.

mod book;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use book::BanBook;

use crate::config::{Config, OnStop, RecidiveConfig, RECIDIVE};
use crate::firewall::{Change, Element, Firewall, FirewallError, Layout};
use crate::stats::Stats;
use crate::store::{BanStore, History, StoreChange, StoreError};
use crate::types::{Ban, BanTime, Clock, IgnoreList, Increment, Target, Timestamp};

/// How long the first decision of a batch waits for others to join it.
const BATCH_WINDOW: Duration = Duration::from_millis(1);
/// Batches up to this many bans are logged in place; larger ones off the ban path.
const LOG_INLINE: usize = 32;
/// Most decisions taken into one store batch and one kernel transaction.
const MAX_BATCH: usize = 10_000;
/// Seconds a kernel timeout may differ from the ban's time left before it is corrected.
const TIMEOUT_SLACK_SECS: u64 = 3;
/// How often old ban history is purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Longest sleep between checks, so a changed wall clock is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// A jail's verdict that `target` is to be banned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub jail: String,
    pub target: Target,
    pub failures: u32,
}

/// What the jail task sends the ban manager, in order.
#[derive(Debug)]
pub enum Decided {
    Ban(Decision),
    /// Answered once the decisions sent before it are saved; a reader then saves its
    /// read position. Unanswered (dropped) when they could not be saved.
    Saved(oneshot::Sender<()>),
}

/// A request from `ctl`, answered on `reply`.
#[derive(Debug)]
pub enum Command {
    Ban {
        jail: String,
        target: Target,
        bantime: Option<BanTime>,
        reply: oneshot::Sender<Result<Ban, BanError>>,
    },
    Unban {
        target: Option<Target>,
        jail: Option<String>,
        reply: oneshot::Sender<Result<Vec<Ban>, BanError>>,
    },
    List {
        jail: Option<String>,
        reply: oneshot::Sender<Vec<Ban>>,
    },
    /// Answered as soon as the manager gets to it: the systemd watchdog's sign of life.
    Alive { reply: oneshot::Sender<()> },
    /// A reload: new jail policies and table.
    Reconfigure {
        config: Box<Reconfig>,
        reply: oneshot::Sender<Result<Reconfigured, BanError>>,
    },
}

/// What the ban manager takes from a reloaded configuration.
#[derive(Clone, Debug)]
pub struct Reconfig {
    pub jails: BTreeMap<String, BanPolicy>,
    pub layout: Layout,
    pub recidive: Option<RecidiveConfig>,
    pub history_horizon: Duration,
    pub reconcile_every: Option<Duration>,
}

impl Reconfig {
    pub fn from_config(config: &Config) -> Reconfig {
        Reconfig {
            jails: policies(config),
            layout: Layout::from_config(config),
            recidive: config.recidive.clone(),
            history_horizon: config.daemon.dbpurgeage,
            reconcile_every: reconcile_every(config.firewall.reconcile_interval),
        }
    }
}

/// `reconcile_interval` as the manager keeps it: zero is off.
fn reconcile_every(interval: Duration) -> Option<Duration> {
    (!interval.is_zero()).then_some(interval)
}

/// What a reload did to the bans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Bans lifted because their jail is gone.
    pub lifted: usize,
    /// The table was rebuilt (jails, ports, actions or sets changed).
    pub rebuilt: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BanError {
    #[error("no enabled jail named `{0}` (see `gaoler ctl status`)")]
    UnknownJail(String),
    #[error("{target} is in the ignore list of jail `{jail}` (ignoreip or loopback): not banned")]
    Ignored { target: Target, jail: String },
    #[error("{target} overlaps {existing}, already banned in jail `{jail}`: lift that ban first")]
    Overlaps {
        target: Target,
        existing: Target,
        jail: String,
    },
    #[error("the state database refused the change: {0}")]
    Store(#[from] StoreError),
    #[error("cannot read the saved bans: {0}")]
    Load(StoreError),
    #[error("cannot build the firewall table: {0}")]
    Install(FirewallError),
    #[error("the change is saved, but the kernel refused it; it is being retried: {0}")]
    Firewall(#[from] FirewallError),
}

impl BanError {
    /// True when the request itself was wrong (exit 2) rather than the system (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            BanError::UnknownJail(_) | BanError::Ignored { .. } | BanError::Overlaps { .. }
        )
    }
}

/// What a jail's bans need from the config.
#[derive(Clone, Debug)]
pub struct BanPolicy {
    /// The set group its bans go to: the jail's name, or a `set` shared with others.
    pub set: String,
    pub bantime: BanTime,
    pub ignore: IgnoreList,
    pub increment: Option<Increment>,
}

/// Policies of the jails `config` runs (`recidive` included when it is on).
pub fn policies(config: &Config) -> BTreeMap<String, BanPolicy> {
    config
        .active_jails()
        .into_iter()
        .map(|j| {
            (
                j.name,
                BanPolicy {
                    set: j.set,
                    bantime: j.bantime,
                    ignore: j.ignore,
                    increment: j.increment,
                },
            )
        })
        .collect()
}

/// What the restore at start did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub loaded: usize,
    pub expired: usize,
    pub orphaned: usize,
    /// Time spent reading the store, and building the table in the kernel.
    pub store_ms: u64,
    pub kernel_ms: u64,
}

/// Owns current bans, the firewall and the store.
pub struct BanManager<F: Firewall> {
    book: BanBook,
    firewall: F,
    store: Box<dyn BanStore>,
    jails: BTreeMap<String, BanPolicy>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
    /// Bans saved in the store whose kernel change failed; re-sent with backoff.
    pending: HashMap<(String, Target), Ban>,
    /// Unbans whose kernel change failed.
    /// (set, target) whose unban the kernel refused; their elements are recomputed.
    pending_unbans: Vec<(String, Target)>,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    /// Ban history older than this no longer counts and is purged.
    history_horizon: Duration,
    recidive: Option<RecidiveConfig>,
    purge_at: Instant,
    /// The table as built at restore; the reconciler compares the kernel with it.
    layout: Option<Layout>,
    reconcile_every: Option<Duration>,
    reconcile_at: Instant,
    ban_log: BanLog,
    /// Bans decided while the store refused writes (disk full, read-only); saved,
    /// then sent to the kernel, by the retry.
    unsaved: Vec<Ban>,
    /// Readers' barriers waiting for `unsaved` to be saved.
    held: Vec<oneshot::Sender<()>>,
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
            pending: HashMap::new(),
            pending_unbans: Vec::new(),
            retry_at: None,
            retry_delay: Duration::from_secs(1),
            history_horizon: Duration::from_secs(30 * 86_400),
            purge_at: Instant::now(),
            recidive: None,
            layout: None,
            reconcile_every: None,
            reconcile_at: Instant::now(),
            ban_log: BanLog::new(),
            unsaved: Vec::new(),
            held: Vec::new(),
        }
    }

    /// Compares the kernel with the bans every `every` and repairs it (zero: never).
    pub fn with_reconcile(mut self, every: Duration) -> Self {
        self.reconcile_every = reconcile_every(every);
        self.reconcile_at = Instant::now() + every;
        self
    }

    /// Makes the kernel match the bans: rebuilds the table when any of it is missing;
    /// otherwise re-adds missing elements, removes unknown ones and corrects timeouts
    /// that disagree. Each repair is logged at WARN and counted.
    pub async fn reconcile(&mut self) {
        let Some(layout) = self.layout.clone() else {
            return;
        };
        let inventory = match self.firewall.inventory(&layout).await {
            Ok(Some(inv)) => inv,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reconciler cannot read the kernel's table");
                return;
            }
        };
        let now = self.clock.now();
        if !inventory.complete {
            let every = self.all_elements(&self.matching(None, None), now);
            match transaction(&self.stats, self.firewall.install(&layout, &every)).await {
                Ok(()) => {
                    tracing::warn!(bans = every.len(), table = %layout.table, "reconciler: the table, its chain, rules or sets were missing; rebuilt with every ban");
                    self.stats.repairs.fetch_add(1, Relaxed);
                    self.installed();
                }
                Err(e) => tracing::error!(error = %e, "reconciler could not rebuild the table"),
            }
            return;
        }
        let current = self.all_elements(&self.book.select(None, None), now);
        let (mut missing, mut timeouts, mut unknown) = (0u64, 0u64, 0u64);
        let mut changes = Vec::new();
        for el in current {
            match inventory.elements.get(&(el.set.clone(), el.target)) {
                None => {
                    missing += 1;
                    changes.push(Change::Ban(el));
                }
                Some(kernel) => {
                    let disagree = match (el.timeout, kernel) {
                        (None, None) => false,
                        (Some(ours), Some(k)) => k.abs_diff(ours.as_secs()) > TIMEOUT_SLACK_SECS,
                        _ => true,
                    };
                    if disagree {
                        timeouts += 1;
                        changes.push(Change::Renew(el));
                    }
                }
            }
        }
        for (set, target) in inventory.elements.keys() {
            if self.desired(set, target, None, now).is_none() {
                unknown += 1;
                changes.push(Change::Unban {
                    set: set.clone(),
                    target: *target,
                });
            }
        }
        if changes.is_empty() {
            return;
        }
        match transaction(&self.stats, self.firewall.apply(&changes)).await {
            Ok(()) => {
                tracing::warn!(
                    missing,
                    unknown,
                    timeouts,
                    "reconciler repaired the kernel's sets"
                );
                self.stats
                    .repairs
                    .fetch_add(missing + unknown + timeouts, Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "reconciler could not repair the kernel's sets"),
        }
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

    /// Removes history older than the horizon (hourly, from the run loop).
    fn purge_history(&mut self) {
        if self.purge_at > Instant::now() {
            return;
        }
        self.purge_at = Instant::now() + PURGE_EVERY;
        let horizon =
            chrono::Duration::from_std(self.history_horizon).unwrap_or(chrono::Duration::MAX);
        match self.store.purge_history(self.clock.now() - horizon) {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "purged ban history older than dbpurgeage"),
            Err(e) => tracing::warn!(error = %e, "could not purge old ban history"),
        }
    }

    /// The set group `jail`'s bans go to.
    fn set_of(&self, jail: &str) -> String {
        self.jails
            .get(jail)
            .map_or_else(|| jail.to_string(), |p| p.set.clone())
    }

    /// The element `target` should have in `set` now: the longest of the bans (current
    /// or pending) that the jails of `set` hold on it, leaving out `except`'s.
    fn desired(
        &self,
        set: &str,
        target: &Target,
        except: Option<&str>,
        now: Timestamp,
    ) -> Option<Element> {
        let mut best = None;
        for (jail, policy) in &self.jails {
            if policy.set != set || except == Some(jail.as_str()) {
                continue;
            }
            if let Some(ban) = self.book.get(jail, target) {
                best = longer(best, element(ban, set, now));
            }
            // Pending bans are rare: no key is built unless there are some.
            if !self.pending.is_empty() {
                if let Some(ban) = self.pending.get(&(jail.clone(), *target)) {
                    best = longer(best, element(ban, set, now));
                }
            }
        }
        best
    }

    /// What the kernel should hold: for every (set, target), its longest ban.
    fn all_elements(&self, bans: &[Ban], now: Timestamp) -> Vec<Element> {
        elements_for(&self.jails, bans, now)
    }

    /// After a whole table was installed with every current and pending ban: the
    /// pending ones are in force now, and no older unban is left to retry.
    fn installed(&mut self) {
        self.pending_unbans.clear();
        if !self.pending.is_empty() {
            let bans: Vec<Ban> = self.pending.drain().map(|(_, b)| b).collect();
            self.banned(bans);
        }
        self.retry_at = None;
        self.retry_delay = Duration::from_secs(1);
    }
}

/// What the kernel should hold for `bans` under `jails`: per (set, target), the
/// longest ban.
fn elements_for(jails: &BTreeMap<String, BanPolicy>, bans: &[Ban], now: Timestamp) -> Vec<Element> {
    {
        let mut by_key: HashMap<(&str, Target), Element> = HashMap::with_capacity(bans.len());
        for ban in bans {
            let set = jails.get(&ban.jail).map_or(&ban.jail, |p| &p.set);
            let Some(el) = element(ban, set, now) else {
                continue;
            };
            match by_key.entry((set.as_str(), ban.target)) {
                Entry::Occupied(mut held) => {
                    if let Some(longest) = longer(Some(held.get().clone()), Some(el)) {
                        held.insert(longest);
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert(el);
                }
            }
        }
        by_key.into_values().collect()
    }
}

impl<F: Firewall> BanManager<F> {
    /// The kernel change for each (set, target) of `keys` after its bans changed in
    /// the book: renewed to what the book wants, or unbanned.
    fn settle<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k (String, Target)>,
        now: Timestamp,
    ) -> Vec<Change> {
        keys.into_iter()
            .map(|(set, target)| match self.desired(set, target, None, now) {
                Some(el) => Change::Renew(el),
                None => Change::Unban {
                    set: set.clone(),
                    target: *target,
                },
            })
            .collect()
    }

    pub fn book(&self) -> &BanBook {
        &self.book
    }

    /// Builds the kernel table and puts back every unexpired ban of an enabled jail
    /// with its remaining time, in one transaction. Expired bans, and bans of jails no
    /// longer enabled, are removed from the store.
    pub async fn restore(&mut self, layout: &Layout) -> Result<Restored, BanError> {
        let now = self.clock.now();
        let mut report = Restored::default();
        let mut drop = Vec::new();
        let mut live = Vec::new();
        let started = Instant::now();
        let stored = self.store.bans().map_err(BanError::Load)?;
        report.store_ms = started.elapsed().as_millis() as u64;
        for ban in stored {
            if ban.is_expired(now) {
                report.expired += 1;
                drop.push(StoreChange::Remove(ban.clone()));
            } else if !self.jails.contains_key(&ban.jail) {
                tracing::info!(jail = %ban.jail, target = %ban.target, "lifting a ban of a jail that is no longer enabled");
                report.orphaned += 1;
                drop.push(StoreChange::Remove(ban.clone()));
            } else {
                live.push(ban);
            }
        }
        let elements = self.all_elements(&live, now);
        let started = Instant::now();
        report.loaded = live.len();
        // The book fills while nft loads the table: both stand before ready.
        let book = &mut self.book;
        let (installed, ()) = tokio::join!(
            transaction(&self.stats, self.firewall.install(layout, &elements)),
            async {
                for ban in live {
                    book.insert(ban);
                }
            }
        );
        report.kernel_ms = started.elapsed().as_millis() as u64;
        if let Err(e) = installed {
            self.book = BanBook::default();
            return Err(BanError::Install(e));
        }
        self.layout = Some(layout.clone());
        self.store.commit(&drop).map_err(BanError::Load)?;
        self.refresh_counts();
        Ok(report)
    }

    /// Serves decisions and commands until `shutdown`; then applies `on_stop`.
    pub async fn run(
        mut self,
        mut decisions: mpsc::Receiver<Decided>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
        on_stop: OnStop,
    ) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
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
                    let (mut bans, mut barriers) = (Vec::with_capacity(batch.len()), Vec::new());
                    for d in batch {
                        match d {
                            Decided::Ban(d) => bans.push(d),
                            Decided::Saved(b) => barriers.push(b),
                        }
                    }
                    // Read positions are saved only behind saved decisions.
                    self.decide(bans).await;
                    self.held.extend(barriers);
                    self.release_barriers();
                }
                _ = tokio::time::sleep_until(wake) => {
                    self.expire();
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

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + MAX_SLEEP;
        if let Some(end) = self.book.next_expiry() {
            let wait = (end - self.clock.now()).to_std().unwrap_or(Duration::ZERO);
            wake = wake.min(now + wait);
        }
        if let Some(at) = self.retry_at {
            wake = wake.min(at);
        }
        if self.reconcile_every.is_some() {
            wake = wake.min(self.reconcile_at);
        }
        wake
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
            Command::List { jail, reply } => {
                let _ = reply.send(self.book.select(jail.as_deref(), None));
            }
            Command::Alive { reply } => {
                let _ = reply.send(());
            }
            Command::Reconfigure { config, reply } => {
                let _ = reply.send(self.reconfigure(*config).await);
            }
        }
    }

    /// Answers the readers' barriers once no decided ban waits to be saved.
    fn release_barriers(&mut self) {
        if self.unsaved.is_empty() {
            for b in self.held.drain(..) {
                let _ = b.send(());
            }
        }
    }

    /// Bans from jail decisions; already banned targets are left as they are. True
    /// when every ban made is saved (in force, or saved and waiting for the kernel);
    /// bans the store refused wait in `unsaved` for the retry.
    pub async fn decide(&mut self, batch: Vec<Decision>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let mut seen: HashSet<(&str, Target)> = HashSet::with_capacity(batch.len());
        let mut bans = Vec::with_capacity(batch.len());
        for d in &batch {
            if self.book.get(&d.jail, &d.target).is_some()
                || (!self.pending.is_empty()
                    && self.pending.contains_key(&(d.jail.clone(), d.target)))
                || (!self.unsaved.is_empty()
                    && self
                        .unsaved
                        .iter()
                        .any(|b| b.jail == d.jail && b.target == d.target))
                || !seen.insert((d.jail.as_str(), d.target))
            {
                tracing::debug!(jail = %d.jail, target = %d.target, "already banned");
                continue;
            }
            match self.new_ban(&d.jail, d.target, None, now) {
                Ok(ban) => bans.push(ban),
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
        let result = self.commit_bans(bans, now).await;
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
                tracing::error!(error = %e, bans = made.len(), "the store refused the bans; they are kept and retried");
                self.unsaved.extend(made);
                self.schedule_retry();
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "bans could not be applied");
                false
            }
        }
    }

    /// Bans in jail `recidive`, on all ports, the targets of `made` that were banned
    /// `maxretry` times in any jails within its `findtime` (from the store's records).
    async fn recidive(&mut self, made: &[Ban], now: Timestamp) {
        let Some(rule) = self.recidive.clone() else {
            return;
        };
        let since =
            now - chrono::Duration::from_std(rule.findtime).unwrap_or(chrono::Duration::MAX);
        let mut bans = Vec::new();
        for ban in made.iter().filter(|b| b.jail != RECIDIVE) {
            let key = (RECIDIVE.to_string(), ban.target);
            if self.book.get(RECIDIVE, &ban.target).is_some() || self.pending.contains_key(&key) {
                continue;
            }
            let recent = match self.store.recent_bans(&ban.target) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(target = %ban.target, error = %e, "cannot read recent bans for recidive");
                    continue;
                }
            };
            let n = recent
                .iter()
                .filter(|b| b.jail != RECIDIVE && b.at >= since)
                .count();
            if n >= rule.maxretry as usize {
                match self.new_ban(RECIDIVE, ban.target, None, now) {
                    Ok(b) => bans.push(b),
                    Err(e) => {
                        tracing::warn!(target = %ban.target, error = %e, "not banned by recidive")
                    }
                }
            }
        }
        if !bans.is_empty() {
            if let Err(e) = self.commit_bans(bans, now).await {
                tracing::error!(error = %e, "recidive bans could not be applied");
            }
        }
    }

    async fn manual_ban(
        &mut self,
        jail: &str,
        target: Target,
        bantime: Option<BanTime>,
    ) -> Result<Ban, BanError> {
        let now = self.clock.now();
        let ban = self.new_ban(jail, target, bantime, now)?;
        self.commit_bans(vec![ban.clone()], now).await?;
        self.recidive(std::slice::from_ref(&ban), now).await;
        Ok(ban)
    }

    fn new_ban(
        &self,
        jail: &str,
        target: Target,
        bantime: Option<BanTime>,
        now: Timestamp,
    ) -> Result<Ban, BanError> {
        let policy = self
            .jails
            .get(jail)
            .ok_or_else(|| BanError::UnknownJail(jail.to_string()))?;
        // Prefixes of one jail share an interval set: nft refuses overlapping ones.
        if !target.is_single() {
            let overlapping = self
                .book
                .targets_in(jail)
                .chain(
                    self.pending
                        .values()
                        .filter(|b| b.jail == jail)
                        .map(|b| &b.target),
                )
                .copied()
                .find(|t| {
                    !t.is_single()
                        && *t != target
                        && (t.net().contains(&target.net()) || target.net().contains(&t.net()))
                });
            if let Some(existing) = overlapping {
                return Err(BanError::Overlaps {
                    target,
                    existing,
                    jail: jail.to_string(),
                });
            }
        }
        if policy.ignore.covers(&target) {
            return Err(BanError::Ignored {
                target,
                jail: jail.to_string(),
            });
        }
        // History older than the horizon is forgotten: the count starts again.
        let horizon =
            chrono::Duration::from_std(self.history_horizon).unwrap_or(chrono::Duration::MAX);
        // A current (or pending) ban is the latest history; else what the store kept.
        let current = self.book.get(jail, &target).or_else(|| {
            (!self.pending.is_empty())
                .then(|| self.pending.get(&(jail.to_string(), target)))
                .flatten()
        });
        let history = match current {
            Some(ban) => Some(History::of(ban)),
            // A ban now matters more than its escalation: an unreadable store (a
            // fault being reported) counts this ban as the first.
            None => self.store.history(jail, &target).unwrap_or_else(|e| {
                // Not a warning each: the commit that follows reports the fault once.
                tracing::debug!(%jail, %target, error = %e, "cannot read the ban history; counting this ban as the first");
                None
            }),
        };
        let count = history
            .filter(|h| now - h.last_banned_at <= horizon)
            .map_or(0, |h| h.count)
            + 1;
        // An explicit bantime (ctl ban --bantime) is taken as given.
        let bantime = match (bantime, &policy.increment, policy.bantime) {
            (Some(explicit), _, _) => explicit,
            (None, Some(inc), BanTime::Finite(base)) => {
                BanTime::Finite(inc.bantime(base, count, fastrand::f64()))
            }
            (None, _, configured) => configured,
        };
        Ok(Ban {
            target,
            jail: jail.to_string(),
            banned_at: now,
            expires_at: bantime.expiry_from(now),
            count,
        })
    }

    /// Store and kernel, then the book: a ban `ctl` shows is in both. The store's
    /// flush runs while nft works (one waits for the disk, the other for the kernel);
    /// when the store refuses, the kernel change is taken back.
    async fn commit_bans(&mut self, bans: Vec<Ban>, now: Timestamp) -> Result<(), BanError> {
        if bans.is_empty() {
            return Ok(());
        }
        let mut changes: Vec<StoreChange> = bans.iter().cloned().map(StoreChange::Put).collect();
        // Recent bans are kept only when recidive needs them: one write a ban otherwise.
        if self.recidive.is_some() {
            changes.extend(bans.iter().cloned().map(StoreChange::NoteRecent));
        }
        let kernel = self.ban_changes(&bans, now);
        let store = &mut self.store;
        let joined = std::time::Instant::now();
        let (applied, stored) = tokio::join!(
            transaction(&self.stats, self.firewall.apply(&kernel)),
            async { store.commit(&changes) }
        );
        tracing::debug!(
            bans = bans.len(),
            store_and_kernel_us = joined.elapsed().as_micros() as u64,
            "bans stored and sent"
        );
        if let Err(e) = stored {
            if applied.is_ok() {
                self.take_back(&bans, now).await;
            }
            return Err(e.into());
        }
        match applied {
            Ok(()) => {
                if !self.pending.is_empty() {
                    for ban in &bans {
                        self.pending.remove(&(ban.jail.clone(), ban.target));
                    }
                }
                self.banned(bans);
                // The kernel takes changes again: what waits for a retry goes now.
                if !self.pending.is_empty() || !self.pending_unbans.is_empty() {
                    self.retry_at = Some(Instant::now());
                    self.retry_delay = Duration::from_secs(1);
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, bans = bans.len(), "kernel did not take the bans; they are saved and will be retried");
                for ban in bans {
                    self.pending.insert((ban.jail.clone(), ban.target), ban);
                }
                self.schedule_retry();
                Err(e.into())
            }
        }
    }

    /// Puts the elements of `bans` back as the book and pending bans say, after the
    /// store refused them; what fails here the reconciler repairs.
    async fn take_back(&mut self, bans: &[Ban], now: Timestamp) {
        let keys = self.set_keys(bans);
        let undo = self.settle(&keys, now);
        if let Err(e) = transaction(&self.stats, self.firewall.apply(&undo)).await {
            tracing::warn!(error = %e, "could not take back kernel elements the store refused; the reconciler will");
        }
    }

    /// The kernel changes that put `bans` in force. Per (set, target): the longest of
    /// the new ban and the bans other jails of the set hold; an element that is there
    /// already is replaced, a new one added.
    fn ban_changes(&self, bans: &[Ban], now: Timestamp) -> Vec<Change> {
        let mut wanted: HashMap<(&str, Target), (Element, bool)> =
            HashMap::with_capacity(bans.len());
        for b in bans {
            let set = self.jails.get(&b.jail).map_or(b.jail.as_str(), |p| &p.set);
            let key = (set, b.target);
            let others = self.desired(set, &b.target, Some(&b.jail), now);
            let mine_there = self.book.get(&b.jail, &b.target).is_some()
                || (!self.pending.is_empty()
                    && self.pending.contains_key(&(b.jail.clone(), b.target)));
            let mut renew = others.is_some() || mine_there;
            let mut want = longer(others, element(b, set, now));
            if let Some((prev, prev_renew)) = wanted.remove(&key) {
                renew |= prev_renew;
                want = longer(want, Some(prev));
            }
            if let Some(el) = want {
                wanted.insert(key, (el, renew));
            }
        }
        wanted
            .into_values()
            .map(|(el, renew)| {
                if renew {
                    Change::Renew(el)
                } else {
                    Change::Ban(el)
                }
            })
            .collect()
    }

    /// Bans now in force in store and kernel: logged, counted, and in the book.
    fn banned(&mut self, bans: Vec<Ban>) {
        // A burst's lines are formatted by the ban logger's thread, off the ban path
        // and in order.
        if bans.len() > LOG_INLINE {
            self.ban_log.announce(bans.clone());
        } else {
            bans.iter().for_each(log_ban);
        }
        self.stats.bans.fetch_add(bans.len() as u64, Relaxed);
        // Per jail: how many (a batch rarely spans more than a few jails).
        let mut per_jail: Vec<(String, u64)> = Vec::new();
        for ban in bans {
            match per_jail.iter_mut().find(|(j, _)| *j == ban.jail) {
                Some((_, n)) => *n += 1,
                None => per_jail.push((ban.jail.clone(), 1)),
            }
            self.book.insert(ban);
        }
        for (jail, n) in per_jail {
            if let Some(c) = self.stats.jail(&jail) {
                c.total_banned.fetch_add(n, Relaxed);
            }
            self.refresh_count(&jail);
        }
    }

    async fn unban(
        &mut self,
        target: Option<&Target>,
        jail: Option<&str>,
    ) -> Result<Vec<Ban>, BanError> {
        if let Some(j) = jail {
            if !self.jails.contains_key(j) {
                return Err(BanError::UnknownJail(j.to_string()));
            }
        }
        let lifted = self.matching(jail, target);
        if lifted.is_empty() {
            return Ok(lifted);
        }
        // A shared set keeps the element while another of its jails still bans the target.
        let keys = self.set_keys(&lifted);
        self.forget(&lifted)?;
        let now = self.clock.now();
        let kernel = self.settle(&keys, now);
        if let Err(e) = transaction(&self.stats, self.firewall.apply(&kernel)).await {
            tracing::error!(error = %e, "kernel did not take the unbans; retrying");
            self.pending_unbans.extend(keys);
            self.schedule_retry();
            return Err(e.into());
        }
        Ok(lifted)
    }

    /// The (set, target) pairs `bans` occupy in the kernel, each once.
    fn set_keys(&self, bans: &[Ban]) -> Vec<(String, Target)> {
        let mut keys: Vec<(String, Target)> = bans
            .iter()
            .map(|b| (self.set_of(&b.jail), b.target))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Current and pending bans matching the optional jail and target.
    fn matching(&self, jail: Option<&str>, target: Option<&Target>) -> Vec<Ban> {
        let mut found = self.book.select(jail, target);
        found.extend(
            self.pending
                .values()
                .filter(|b| {
                    jail.is_none_or(|j| b.jail == j) && target.is_none_or(|t| b.target == *t)
                })
                .cloned(),
        );
        found
    }

    /// Lifted bans leave the store, then the book; the kernel is the caller's.
    fn forget(&mut self, lifted: &[Ban]) -> Result<(), BanError> {
        let removes: Vec<StoreChange> = lifted.iter().cloned().map(StoreChange::Remove).collect();
        self.store.commit(&removes)?;
        for ban in lifted {
            self.pending.remove(&(ban.jail.clone(), ban.target));
            // Pending bans were never counted as bans, so neither as unbans.
            if self.book.remove(&ban.jail, &ban.target).is_some() {
                self.ended(&ban.jail);
            }
            tracing::info!(jail = %ban.jail, target = %ban.target, "unban");
        }
        self.refresh_counts();
        Ok(())
    }

    /// Takes a reloaded configuration: bans of jails that are gone are lifted, the new
    /// policies apply to the next bans, and a changed table is rebuilt with every
    /// remaining ban in one transaction (as at start, never a moment without them).
    pub async fn reconfigure(&mut self, new: Reconfig) -> Result<Reconfigured, BanError> {
        let gone: Vec<String> = self
            .jails
            .keys()
            .filter(|j| !new.jails.contains_key(*j))
            .cloned()
            .collect();
        let lifted: Vec<Ban> = gone
            .iter()
            .flat_map(|j| self.matching(Some(j), None))
            .collect();
        let mut report = Reconfigured {
            lifted: lifted.len(),
            rebuilt: false,
        };
        // The table first: if the kernel refuses it, nothing has changed.
        if self.layout.as_ref() != Some(&new.layout) {
            let now = self.clock.now();
            let kept: Vec<Ban> = self
                .matching(None, None)
                .into_iter()
                .filter(|b| !gone.contains(&b.jail))
                .collect();
            let elements = elements_for(&new.jails, &kept, now);
            transaction(&self.stats, self.firewall.install(&new.layout, &elements))
                .await
                .map_err(BanError::Install)?;
            self.layout = Some(new.layout.clone());
            report.rebuilt = true;
        }
        self.jails = new.jails;
        self.recidive = new.recidive;
        self.history_horizon = new.history_horizon;
        if self.reconcile_every != new.reconcile_every {
            self.reconcile_every = new.reconcile_every;
            self.reconcile_at = Instant::now() + new.reconcile_every.unwrap_or(MAX_SLEEP);
        }
        if report.rebuilt {
            self.installed();
        }
        // Already out of the kernel; a store that refuses keeps them until the next
        // start, which drops bans of jails no longer enabled.
        if let Err(e) = self.forget(&lifted) {
            tracing::error!(error = %e, "could not remove the bans of removed jails from the store");
        }
        Ok(report)
    }

    /// Forgets bans whose time is up; the kernel drops its elements by itself.
    pub fn expire(&mut self) {
        let now = self.clock.now();
        let gone = self.book.take_expired(now);
        let pending_gone: Vec<Ban> = self
            .pending
            .values()
            .filter(|b| b.is_expired(now))
            .cloned()
            .collect();
        for b in &pending_gone {
            self.pending.remove(&(b.jail.clone(), b.target));
        }
        if gone.is_empty() && pending_gone.is_empty() {
            return;
        }
        let removes: Vec<StoreChange> = gone
            .iter()
            .chain(&pending_gone)
            .cloned()
            .map(StoreChange::Remove)
            .collect();
        for ban in &gone {
            tracing::info!(jail = %ban.jail, target = %ban.target, "ban expired");
            self.ended(&ban.jail);
        }
        if let Err(e) = self.store.commit(&removes) {
            // They are expired either way; the next start drops them from the store.
            tracing::warn!(error = %e, "could not remove expired bans from the store");
        }
        self.refresh_counts();
    }

    /// A retry at the current delay, unless one is due sooner already.
    fn schedule_retry(&mut self) {
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.retry_delay);
        }
    }

    /// After a retry failed: the next one waits twice as long (at most a minute).
    fn back_off(&mut self) {
        self.retry_delay = (self.retry_delay * 2).min(Duration::from_secs(60));
        self.retry_at = Some(Instant::now() + self.retry_delay);
    }

    /// Re-sends kernel changes that failed before.
    async fn retry(&mut self) {
        if self.retry_at.is_none_or(|at| at > Instant::now()) {
            return;
        }
        self.retry_at = None;
        let now = self.clock.now();
        if !self.unsaved.is_empty() {
            let bans: Vec<Ban> = std::mem::take(&mut self.unsaved)
                .into_iter()
                .filter(|b| !b.is_expired(now))
                .collect();
            let count = bans.len();
            match self.commit_bans(bans.clone(), now).await {
                Err(BanError::Store(e)) => {
                    tracing::error!(error = %e, bans = count, "the store still refuses the bans; retrying later");
                    self.unsaved.extend(bans);
                    self.back_off();
                    return;
                }
                // Saved; in force, or waiting for the kernel like any pending ban.
                _ => {
                    tracing::info!(bans = count, "the store took the bans it had refused");
                    self.release_barriers();
                }
            }
        }
        let mut changes = self.settle(&self.pending_unbans, now);
        // The failed transaction may have been a renewal: replace, to be safe.
        let pending: Vec<Ban> = self.pending.values().cloned().collect();
        changes.extend(
            self.all_elements(&pending, now)
                .into_iter()
                .map(Change::Renew),
        );
        if changes.is_empty() {
            return;
        }
        match transaction(&self.stats, self.firewall.apply(&changes)).await {
            Ok(()) => {
                tracing::info!(changes = changes.len(), "kernel took the retried changes");
                self.pending_unbans.clear();
                let bans: Vec<Ban> = self.pending.drain().map(|(_, b)| b).collect();
                self.banned(bans);
                self.retry_delay = Duration::from_secs(1);
            }
            Err(e) => {
                tracing::error!(error = %e, changes = changes.len(), "kernel still refuses; retrying later");
                self.back_off();
            }
        }
    }

    /// Counts a ban of `jail` that ended (expired or lifted).
    fn ended(&self, jail: &str) {
        if let Some(c) = self.stats.jail(jail) {
            c.total_unbanned.fetch_add(1, Relaxed);
        }
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

/// Formats bursts of ban lines on its own thread, in the order they come.
struct BanLog(Option<std::sync::mpsc::Sender<Vec<Ban>>>);

impl BanLog {
    fn new() -> BanLog {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Ban>>();
        let started = std::thread::Builder::new()
            .name("gaoler-banlog".into())
            .spawn(move || rx.iter().for_each(|bans| bans.iter().for_each(log_ban)));
        BanLog(started.ok().map(|_| tx))
    }

    fn announce(&self, bans: Vec<Ban>) {
        match &self.0 {
            Some(tx) => {
                if let Err(unsent) = tx.send(bans) {
                    unsent.0.iter().for_each(log_ban);
                }
            }
            None => bans.iter().for_each(log_ban),
        }
    }
}

/// The INFO line of a ban in force.
fn log_ban(ban: &Ban) {
    tracing::info!(
        jail = %ban.jail,
        target = %ban.target,
        count = ban.count,
        bantime = %ban.expires_at.map_or("permanent".to_string(), |e| crate::units::format_duration((e - ban.banned_at).to_std().unwrap_or_default())),
        "ban"
    );
}

/// The element for `ban` in `set` at `now`, or `None` when it has expired.
fn element(ban: &Ban, set: &str, now: Timestamp) -> Option<Element> {
    ban.remaining(now).map(|timeout| Element {
        set: set.to_string(),
        target: ban.target,
        timeout,
    })
}

/// The one of `a` and `b` that lasts longer (permanent lasts longest).
fn longer(a: Option<Element>, b: Option<Element>) -> Option<Element> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let a_wins = match (a.timeout, b.timeout) {
                (None, _) => true,
                (_, None) => false,
                (Some(x), Some(y)) => x >= y,
            };
            Some(if a_wins { a } else { b })
        }
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;
