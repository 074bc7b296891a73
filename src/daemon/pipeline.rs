//! The stages between the sources and the ban manager: each source's records go to
//! an `Examiner` (the source's [`Sink`]), which runs every subscribed jail's filter
//! and sends the failures on; the jail task counts them and sends ban decisions on.
//! Channels are bounded: a flood waits, never grows.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::ban::{Decided, Decision};
use crate::filter::{Filter, Framer, Mark, Sessions, TrustedProxies, Verdict};
use crate::jail::{Failure, Jails, Outcome};
use crate::source::journal::Matches;
use crate::source::{self, Barrier, Batch, Follow, Sink, Source};
use crate::stats::Stats;
use crate::types::Clock;

/// The journal fields that name an entry's process, for session filters.
pub const PROCESS_FIELDS: [&str; 2] = ["SYSLOG_IDENTIFIER", "_PID"];

/// How often quiet addresses are forgotten.
const EXPIRE_EVERY: Duration = Duration::from_secs(30);

/// What every reader of a generation shares.
#[derive(Clone)]
pub struct ReaderContext {
    /// Positions, the generation's stop, the line cap.
    pub follow: Follow,
    pub failures: mpsc::Sender<Reported>,
    pub stats: Arc<Stats>,
    pub clock: Arc<dyn Clock>,
    /// How often a file is checked without an inotify event.
    pub poll: Duration,
}

impl ReaderContext {
    /// Follows `source` in `tasks`, its records going to `subscribers`' filters;
    /// `opened` is answered once the source is open.
    pub fn spawn<S: Source>(
        &self,
        tasks: &TaskTracker,
        source: S,
        subscribers: Vec<Subscriber>,
        opened: Option<oneshot::Sender<()>>,
    ) {
        let sink = Examiner::new(
            &source.name(),
            subscribers,
            self.failures.clone(),
            self.stats.clone(),
            self.clock.clone(),
        );
        tasks.spawn(source::follow(source, sink, self.follow.clone(), opened));
    }
}

/// A jail reading a source, with its filter and how it reads the source's records.
#[derive(Clone)]
pub struct Subscriber {
    pub jail: usize,
    pub filter: Arc<Filter>,
    /// How a plain line's timestamp and syslog header are split off.
    pub framer: Framer,
    pub proxies: TrustedProxies,
    /// For structured records (the journal): the entries this jail reads.
    pub matches: Option<Matches>,
}

/// What the examiners send the jail task, in the order they read it.
pub enum Reported {
    Failure(Failure),
    /// Answered once every decision from what was sent before is saved; only then
    /// is the source's position saved (so a crash re-reads, never skips).
    Saved(Barrier),
}

/// Runs the subscribed jails' filters over one source's records (its [`Sink`]).
pub struct Examiner {
    subscribers: Vec<Subscriber>,
    failures: mpsc::Sender<Reported>,
    stats: Arc<Stats>,
    /// The source's own lines-read counter.
    read_here: Arc<AtomicU64>,
    clock: Arc<dyn Clock>,
    /// Most jails detect timestamps in local time: such a line is split only once.
    any_auto: bool,
    source: String,
    /// A cut line was logged already for this source.
    told_cut: bool,
    /// Each subscriber's open sessions, when its filter has sessions.
    sessions: Vec<Option<Sessions>>,
    /// Sessions evicted so far, as last added to the stats.
    evicted: u64,
    /// A line over a regex's backtracking limit was logged already for this source.
    told_limit: bool,
}

impl Examiner {
    pub fn new(
        source: &str,
        subscribers: Vec<Subscriber>,
        failures: mpsc::Sender<Reported>,
        stats: Arc<Stats>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let auto = Framer::default();
        Examiner {
            any_auto: subscribers.iter().any(|s| s.framer == auto),
            read_here: stats.source(source),
            source: source.to_string(),
            told_cut: false,
            sessions: subscribers
                .iter()
                .map(|s| s.filter.session().map(|spec| spec.sessions()))
                .collect(),
            evicted: 0,
            told_limit: false,
            subscribers,
            failures,
            stats,
            clock,
        }
    }
}

impl Examiner {
    /// Counts lines cut at `max_line_length`; says so once per source.
    fn cut_lines(&mut self, n: usize) {
        self.stats.lines_cut.fetch_add(n as u64, Relaxed);
        if !self.told_cut {
            self.told_cut = true;
            tracing::warn!(source = %self.source, "a line longer than max_line_length was read: such lines are counted (lines_cut) and never matched, since a forged address may stand where the server's was cut off; raise max_line_length if this service writes such lines");
        }
    }
}

impl Examiner {
    /// Adds the sessions evicted since the last call to the stats; says so once.
    fn count_evictions(&mut self) {
        let total: u64 = self.sessions.iter().flatten().map(Sessions::evicted).sum();
        if total > self.evicted {
            self.stats
                .sessions_evicted
                .fetch_add(total - self.evicted, Relaxed);
            if self.evicted == 0 {
                tracing::warn!(source = %self.source, evicted = total, "more sessions are open than a filter's max_sessions allows; forgetting the oldest (counted in sessions_evicted)");
            }
            self.evicted = total;
        }
    }
}

/// Gives a subscriber's sessions one matched line; what it settles.
fn settle(
    filter: &Filter,
    sessions: Option<&mut Option<Sessions>>,
    mark: &Mark,
    line: &[u8],
    process: Option<&[u8]>,
    time: crate::types::Timestamp,
) -> Option<crate::filter::Settled> {
    let spec = filter.session()?;
    let sessions = sessions?.as_mut()?;
    sessions.observe(spec.key(line, process), mark, time)
}

/// `SYSLOG_IDENTIFIER[_PID]` of a journal entry, as a syslog header names a process.
fn process_of(fields: &crate::source::Fields) -> Option<Vec<u8>> {
    let pid = fields.get(PROCESS_FIELDS[1])?;
    let ident = fields.get(PROCESS_FIELDS[0]).map_or("", String::as_str);
    Some(format!("{ident}[{pid}]").into_bytes())
}

impl Sink for Examiner {
    async fn take(&mut self, batch: &Batch) -> bool {
        self.stats.lines_read.fetch_add(batch.len() as u64, Relaxed);
        self.read_here.fetch_add(batch.len() as u64, Relaxed);
        let now = self.clock.now();
        let auto = Framer::default();
        let cut = batch.cut();
        if cut > 0 {
            self.cut_lines(cut);
        }
        for record in batch.records() {
            // A cut line's end, where the server writes the client's address after
            // the client's own text, is gone: what is left may carry a forged one.
            if record.cut {
                continue;
            }
            let shared =
                (record.meta.is_none() && self.any_auto).then(|| auto.split(record.text, now));
            for (n, sub) in self.subscribers.iter().enumerate() {
                let own;
                let (message, time, process) = match (record.meta, &shared) {
                    (Some(meta), _) => {
                        if sub
                            .matches
                            .as_ref()
                            .is_some_and(|m| !m.accepts_fields(&meta.fields))
                        {
                            continue;
                        }
                        (record.text, meta.time, None)
                    }
                    (None, Some(f)) if sub.framer == auto => (f.message, f.time, f.process),
                    (None, _) => {
                        own = sub.framer.split(record.text, now);
                        (own.message, own.time, own.process)
                    }
                };
                // The journal names the process in fields: only session filters ask.
                let journal_process;
                let process = match record.meta {
                    Some(meta) if sub.filter.session().is_some() => {
                        journal_process = process_of(&meta.fields);
                        journal_process.as_deref()
                    }
                    _ => process,
                };
                let at = time.unwrap_or(now);
                let verdict = match (sub.filter.session(), self.sessions.get(n)) {
                    (Some(spec), Some(Some(open))) => {
                        let mut is_open = || open.is_open(spec.key(record.text, process), at);
                        sub.filter
                            .examine_for_session(message, &sub.proxies, &mut is_open)
                    }
                    _ => sub.filter.examine_behind(message, &sub.proxies, false),
                };
                let (host, count) = match verdict {
                    Verdict::Failure(found) => (found.host, 1),
                    Verdict::Mark(mark) => {
                        let open = self.sessions.get_mut(n);
                        match settle(&sub.filter, open, &mark, record.text, process, at) {
                            Some(settled) => (settled.host, settled.count),
                            None => continue,
                        }
                    }
                    Verdict::Ignored(found) => {
                        tracing::debug!(filter = sub.filter.name(), host = %found.host, "ignoreregex matched");
                        continue;
                    }
                    Verdict::NoClient(found) => {
                        tracing::debug!(filter = sub.filter.name(), peer = %found.host, "failure names no client in X-Forwarded-For (trusted proxy or trusted_proxies_only); not counted");
                        continue;
                    }
                    Verdict::Miss => continue,
                    Verdict::Limited => {
                        self.stats.lines_over_limit.fetch_add(1, Relaxed);
                        if !std::mem::replace(&mut self.told_limit, true) {
                            tracing::warn!(source = %self.source, filter = sub.filter.name(), "a line made a look-around regex give up at its backtracking limit: such lines are skipped and counted (lines_over_limit)");
                        }
                        continue;
                    }
                };
                // The line is the ban's evidence (each failure a session settles at
                // once shows the line that settled it).
                let line = crate::jail::evidence_line(record.text);
                for _ in 0..count {
                    let failure = Failure {
                        jail: sub.jail,
                        host,
                        time,
                        line: Some(line.clone()),
                    };
                    if self
                        .failures
                        .send(Reported::Failure(failure))
                        .await
                        .is_err()
                    {
                        return false;
                    }
                }
            }
        }
        self.count_evictions();
        true
    }

    async fn barrier(&mut self, barrier: Barrier) -> bool {
        self.failures.send(Reported::Saved(barrier)).await.is_ok()
    }
}

/// Counts failures per jail and sends a decision when a jail's threshold is reached;
/// keeps the tracked addresses under `max_tracked` (a WARN at most once a minute while
/// it has to forget some). Ends when every reader is gone (or the ban manager), and
/// hands back the failure windows.
pub async fn count_failures(
    names: Vec<String>,
    mut jails: Jails,
    mut failures: mpsc::Receiver<Reported>,
    decisions: mpsc::Sender<Decided>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
) -> Jails {
    // Looked up once: a reload starts a new jail task with the counters then.
    let counters: Vec<_> = names.iter().map(|n| stats.jail(n)).collect();
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    let mut warned_at: Option<tokio::time::Instant> = None;
    let mut evicted_at_warning = 0;
    loop {
        tokio::select! {
            found = failures.recv() => {
                let f = match found {
                    None => return jails,
                    Some(Reported::Failure(f)) => f,
                    // In order behind the decisions from the same lines.
                    Some(Reported::Saved(barrier)) => {
                        if decisions.send(Decided::Saved(barrier)).await.is_err() {
                            return jails;
                        }
                        continue;
                    }
                };
                let Some(name) = names.get(f.jail) else { continue };
                let outcome = jails.record_line(f.jail, f.host, f.time, clock.now(), f.line.as_deref());
                let counters = counters.get(f.jail).and_then(Option::as_ref);
                match outcome {
                    Outcome::Ignored => tracing::debug!(jail = %name, host = %f.host, "ignored address"),
                    Outcome::Stale => tracing::debug!(jail = %name, host = %f.host, "failure older than findtime"),
                    Outcome::Counted { target, failures } => {
                        tracing::debug!(jail = %name, %target, failures, "failure");
                        stats.failures.fetch_add(1, Relaxed);
                        if let Some(c) = counters { c.total_failed.fetch_add(1, Relaxed); }
                    }
                    Outcome::Ban { target, failures, matches } => {
                        stats.failures.fetch_add(1, Relaxed);
                        if let Some(c) = counters { c.total_failed.fetch_add(1, Relaxed); }
                        let d = Decision { jail: name.clone(), target, failures, addr: Some(f.host), matches };
                        if decisions.send(Decided::Ban(d)).await.is_err() {
                            return jails;
                        }
                    }
                }
                if let (Some(c), Some(j)) = (counters, jails.jail(f.jail)) {
                    c.currently_failed.store(j.tracked() as u64, Relaxed);
                }
                let evicted = jails.evicted();
                if evicted > evicted_at_warning && warned_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(
                        evicted = evicted - evicted_at_warning,
                        tracked = jails.tracked(),
                        "more addresses are failing than max_tracked allows; forgetting the least recently failing ones"
                    );
                    warned_at = Some(tokio::time::Instant::now());
                    evicted_at_warning = evicted;
                }
                stats.evicted.store(evicted, Relaxed);
            }
            _ = tick.tick() => {
                jails.expire(clock.now());
                for (i, c) in counters.iter().enumerate() {
                    if let (Some(c), Some(j)) = (c, jails.jail(i)) {
                        c.currently_failed.store(j.tracked() as u64, Relaxed);
                    }
                }
            }
        }
    }
}
