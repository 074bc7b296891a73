//! The tasks between the logs and the ban manager: a reader per file (and one for the
//! journal) runs each subscribed jail's filter on every complete line or entry, and the jail task counts the
//! failures and sends ban decisions on. Channels are bounded: a flood waits, never grows.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::ban::{Decided, Decision};
use crate::filter::{Filter, Framer, TrustedProxies, Verdict};
use crate::jail::{Failure, Jails, Outcome};
use crate::source::journal::{parse_entry, Follower, Matches, StartAt};
use crate::source::{FileTail, Lines, Start};
use crate::stats::Stats;
use crate::store::{FilePosition, PositionStore};
use crate::types::Clock;

/// How often quiet addresses are forgotten.
const EXPIRE_EVERY: Duration = Duration::from_secs(30);

/// A jail reading a file, with its filter and how its lines' timestamps are read.
#[derive(Clone)]
pub struct Subscriber {
    pub jail: usize,
    pub filter: Arc<Filter>,
    pub framer: Framer,
    pub proxies: TrustedProxies,
}

/// A jail reading the journal, with its filter and matches.
pub struct JournalSubscriber {
    pub jail: usize,
    pub filter: Arc<Filter>,
    pub matches: Matches,
    pub proxies: TrustedProxies,
}

/// What readers send the jail task, in the order they read it.
pub enum Found {
    Failure(Failure),
    /// Answered once every decision from what the reader sent before is saved; only
    /// then may the reader's position be saved (so a crash re-reads, never skips).
    Saved(oneshot::Sender<()>),
}

/// A read position waiting for the decisions before it to be saved.
enum Position {
    File(PathBuf, FilePosition),
    Journal(String),
}

/// Saves each position once its decisions are saved, in order, off the runtime. Ends
/// when the reader drops `queue` and every position before has been handled.
async fn save_positions(
    mut queue: mpsc::UnboundedReceiver<(oneshot::Receiver<()>, Position)>,
    store: Arc<dyn PositionStore>,
) {
    while let Some((saved, position)) = queue.recv().await {
        // Not answered: the decisions were not saved (or the daemon stops); the
        // position stays where it was and those lines are read again next time.
        if saved.await.is_err() {
            continue;
        }
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || match &position {
            Position::File(path, p) => store.save_file(path, p),
            Position::Journal(cursor) => store.save_journal_cursor(cursor),
        })
        .await;
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "cannot save a read position");
        }
    }
}

/// Queues `position` behind a barrier through the jail task and the ban manager;
/// false when the jail task is gone.
async fn checkpoint(
    cx: &ReaderContext,
    saves: &mpsc::UnboundedSender<(oneshot::Receiver<()>, Position)>,
    position: Position,
) -> bool {
    let (tx, rx) = oneshot::channel();
    if cx.failures.send(Found::Saved(tx)).await.is_err() {
        return false;
    }
    let _ = saves.send((rx, position));
    true
}

/// What every reader shares.
#[derive(Clone)]
pub struct ReaderContext {
    pub failures: mpsc::Sender<Found>,
    pub stats: Arc<Stats>,
    pub clock: Arc<dyn Clock>,
    pub shutdown: CancellationToken,
    pub max_line: usize,
    pub positions: Arc<dyn PositionStore>,
    /// How often a file is checked without an inotify event.
    pub poll: Duration,
}

/// Where a reader of a file with no saved position starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsaved {
    /// At the end: a file present when gaoler starts (its past is history).
    End,
    /// At the start: a file that appeared while gaoler runs (all of it is new).
    Start,
}

/// Follows `path`, resuming from its saved position, and sends every failure its
/// jails' filters find; saves the position after each batch it handled.
pub async fn follow_file(
    path: PathBuf,
    subscribers: Vec<Subscriber>,
    wake: Option<Arc<Notify>>,
    unsaved: Unsaved,
    cx: ReaderContext,
) {
    let (saves, queue) = mpsc::unbounded_channel();
    let saver = save_positions(queue, cx.positions.clone());
    let reader = read_file(path, subscribers, wake, unsaved, cx, saves);
    // The reader ends first (dropping its queue); the saver then finishes the queue.
    tokio::join!(reader, saver);
}

async fn read_file(
    path: PathBuf,
    subscribers: Vec<Subscriber>,
    wake: Option<Arc<Notify>>,
    unsaved: Unsaved,
    cx: ReaderContext,
    saves: mpsc::UnboundedSender<(oneshot::Receiver<()>, Position)>,
) {
    let mut tail = FileTail::new(&path, cx.max_line);
    let read_here = cx.stats.source(&path.to_string_lossy());
    let saved = match cx.positions.file(&path) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the saved position; starting as for a file never read");
            None
        }
    };
    let start = match (saved, unsaved) {
        (None, Unsaved::Start) => tail.resume_from_start(),
        (saved, _) => tail.resume(saved),
    };
    match start {
        Ok(Start::AtEnd) => tracing::info!(file = %path.display(), "following from the end"),
        Ok(Start::Resumed { offset }) => {
            tracing::info!(file = %path.display(), offset, "resuming where gaoler left off")
        }
        Ok(Start::Replaced) => {
            tracing::info!(file = %path.display(), "file was replaced while gaoler was down; reading it from the start")
        }
        Ok(Start::Truncated) => {
            tracing::info!(file = %path.display(), "file was truncated while gaoler was down; reading it from the start")
        }
        Ok(Start::New) => {
            tracing::info!(file = %path.display(), "following a new file from its start")
        }
        Ok(Start::Missing) => {
            tracing::warn!(file = %path.display(), "log file does not exist yet; it will be read once it appears")
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %crate::util::io_reason(&e), "cannot open log file; retrying")
        }
    }
    let mut lines = Lines::default();
    let mut last_error: Option<String> = None;
    let mut saved = saved;
    loop {
        loop {
            lines.clear();
            let result = tokio::task::spawn_blocking(move || {
                let r = tail.read(&mut lines);
                (tail, lines, r)
            })
            .await;
            let Ok((t, l, result)) = result else { return };
            tail = t;
            lines = l;
            let more = match result {
                Ok(report) => {
                    last_error = None;
                    if report.rotated {
                        tracing::info!(file = %path.display(), "log file rotated; following the new file");
                    }
                    if report.truncated {
                        tracing::info!(file = %path.display(), "log file truncated; reading from its start");
                    }
                    report.more
                }
                Err(e) => {
                    let reason = crate::util::io_reason(&e);
                    if last_error.as_ref() != Some(&reason) {
                        tracing::warn!(file = %path.display(), error = %reason, "cannot read log file; retrying");
                        last_error = Some(reason);
                    }
                    false
                }
            };
            if !examine(&lines, &subscribers, &cx, &read_here).await {
                return;
            }
            let now = tail.position();
            if now.is_some() && now != saved {
                if let Some(p) = now {
                    if !checkpoint(&cx, &saves, Position::File(path.clone(), p)).await {
                        return;
                    }
                }
                saved = now;
            }
            // Stopping (a reload, the daemon's stop) at a point where everything read
            // was handed on with its position: nothing lost, nothing read twice.
            if !more || cx.shutdown.is_cancelled() {
                break;
            }
        }
        let notified = async {
            match &wake {
                Some(w) => w.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cx.shutdown.cancelled() => return,
            _ = notified => {}
            _ = tokio::time::sleep(cx.poll) => {}
        }
    }
}

/// Follows the journal from `start`, applies each jail's matches, sends the failures
/// found in matching entries' messages, and saves the cursor after each burst.
pub async fn follow_journal(
    subscribers: Vec<JournalSubscriber>,
    journalctl: String,
    start: StartAt,
    cx: ReaderContext,
) {
    let (saves, queue) = mpsc::unbounded_channel();
    let saver = save_positions(queue, cx.positions.clone());
    let reader = read_journal(subscribers, journalctl, start, cx, saves);
    tokio::join!(reader, saver);
}

async fn read_journal(
    subscribers: Vec<JournalSubscriber>,
    journalctl: String,
    start: StartAt,
    cx: ReaderContext,
    saves: mpsc::UnboundedSender<(oneshot::Receiver<()>, Position)>,
) {
    let wanted: Vec<String> = {
        let mut f: Vec<String> = subscribers
            .iter()
            .flat_map(|s| s.matches.fields().map(String::from))
            .collect();
        f.sort();
        f.dedup();
        f
    };
    let read_here = cx.stats.source("journal");
    let mut start = start;
    let mut saved: Option<String> = None;
    let mut buf = Vec::new();
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut follower = match Follower::spawn(&journalctl, &start) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::error!("journal sources need `journalctl` (systemd); jails reading the journal see nothing");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %crate::util::io_reason(&e), "cannot start journalctl; retrying");
                if !pause(&cx, backoff).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(start = ?start, "following the journal");
        let mut got_any = false;
        loop {
            let read = tokio::select! {
                _ = cx.shutdown.cancelled() => {
                    // Every entry up to `start` was handed on: keep its cursor, so the
                    // next reader (a reload) neither repeats nor skips one.
                    if let StartAt::After(cursor) = &start {
                        if saved.as_ref() != Some(cursor) {
                            checkpoint(&cx, &saves, Position::Journal(cursor.clone())).await;
                        }
                    }
                    return;
                }
                r = follower.next_line(&mut buf) => r,
            };
            if !matches!(read, Ok(true)) {
                break;
            }
            got_any = true;
            let Some(entry) = parse_entry(&buf, wanted.iter().map(String::as_str)) else {
                continue;
            };
            cx.stats.lines_read.fetch_add(1, Relaxed);
            read_here.fetch_add(1, Relaxed);
            for sub in subscribers.iter().filter(|s| s.matches.accepts(&entry)) {
                if let Verdict::Failure(found) =
                    sub.filter
                        .examine_behind(&entry.message, &sub.proxies, false)
                {
                    let failure = Failure {
                        jail: sub.jail,
                        host: found.host,
                        time: entry.time,
                    };
                    if cx.failures.send(Found::Failure(failure)).await.is_err() {
                        return;
                    }
                }
            }
            start = StartAt::After(entry.cursor);
            // Save once a burst is handled, not after every entry of it.
            if let StartAt::After(cursor) = &start {
                if !follower.has_buffered() && saved.as_ref() != Some(cursor) {
                    if !checkpoint(&cx, &saves, Position::Journal(cursor.clone())).await {
                        return;
                    }
                    saved = Some(cursor.clone());
                }
            }
        }
        let why = follower.finish().await;
        if cx.shutdown.is_cancelled() {
            return;
        }
        if !got_any && matches!(start, StartAt::After(_)) && why.contains("cursor") {
            tracing::warn!(reason = %why, "journalctl does not know the saved cursor; following from now");
            start = StartAt::Now;
        } else {
            tracing::warn!(reason = %why, "journalctl stopped; restarting it");
        }
        if !pause(&cx, backoff).await {
            return;
        }
        backoff = if got_any {
            Duration::from_secs(1)
        } else {
            (backoff * 2).min(Duration::from_secs(30))
        };
    }
}

/// Sleeps unless shutdown comes first; false on shutdown.
async fn pause(cx: &ReaderContext, d: Duration) -> bool {
    tokio::select! {
        _ = cx.shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Runs the filters over a batch; false when the jail task is gone. `read_here` is the
/// reader's own lines-read counter.
async fn examine(
    lines: &Lines,
    subscribers: &[Subscriber],
    cx: &ReaderContext,
    read_here: &AtomicU64,
) -> bool {
    if lines.is_empty() {
        return true;
    }
    cx.stats.lines_read.fetch_add(lines.len() as u64, Relaxed);
    read_here.fetch_add(lines.len() as u64, Relaxed);
    let now = cx.clock.now();
    let auto = Framer::default();
    // Most jails detect timestamps in local time: split such a line only once.
    let any_auto = subscribers.iter().any(|s| s.framer == auto);
    for line in lines.iter() {
        let shared = any_auto.then(|| auto.split(line, now));
        for sub in subscribers {
            let own;
            let framed = match &shared {
                Some(f) if sub.framer == auto => f,
                _ => {
                    own = sub.framer.split(line, now);
                    &own
                }
            };
            match sub
                .filter
                .examine_behind(framed.message, &sub.proxies, false)
            {
                Verdict::Failure(found) => {
                    let failure = Failure {
                        jail: sub.jail,
                        host: found.host,
                        time: framed.time,
                    };
                    if cx.failures.send(Found::Failure(failure)).await.is_err() {
                        return false;
                    }
                }
                Verdict::Ignored(found) => {
                    tracing::debug!(filter = sub.filter.name(), host = %found.host, "ignoreregex matched")
                }
                Verdict::NoClient(found) => {
                    tracing::debug!(filter = sub.filter.name(), peer = %found.host, "failure names no client in X-Forwarded-For (trusted proxy or trusted_proxies_only); not counted")
                }
                Verdict::Miss => {}
            }
        }
    }
    true
}

/// Counts failures per jail and sends a decision when a jail's threshold is reached;
/// keeps the tracked addresses under `max_tracked` (a WARN at most once a minute while
/// it has to forget some). Ends when every reader is gone (or the ban manager), and
/// hands back the failure windows.
pub async fn count_failures(
    names: Vec<String>,
    mut jails: Jails,
    mut failures: mpsc::Receiver<Found>,
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
                    Some(Found::Failure(f)) => f,
                    // In order behind the decisions from the same lines.
                    Some(Found::Saved(barrier)) => {
                        if decisions.send(Decided::Saved(barrier)).await.is_err() {
                            return jails;
                        }
                        continue;
                    }
                };
                let Some(name) = names.get(f.jail) else { continue };
                let outcome = jails.record(f.jail, f.host, f.time, clock.now());
                let counters = counters.get(f.jail).and_then(Option::as_ref);
                match outcome {
                    Outcome::Ignored => tracing::debug!(jail = %name, host = %f.host, "ignored address"),
                    Outcome::Stale => tracing::debug!(jail = %name, host = %f.host, "failure older than findtime"),
                    Outcome::Counted { target, failures } => {
                        tracing::debug!(jail = %name, %target, failures, "failure");
                        stats.failures.fetch_add(1, Relaxed);
                        if let Some(c) = counters { c.total_failed.fetch_add(1, Relaxed); }
                    }
                    Outcome::Ban { target, failures } => {
                        stats.failures.fetch_add(1, Relaxed);
                        if let Some(c) = counters { c.total_failed.fetch_add(1, Relaxed); }
                        let d = Decision { jail: name.clone(), target, failures };
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
