//! The tasks between a log file and the ban manager: a reader per file runs each
//! subscribed jail's filter on every complete line, and the jail task counts the
//! failures and sends ban decisions on. Channels are bounded: a flood waits, never grows.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::ban::Decision;
use crate::filter::{Filter, Framer, Verdict};
use crate::jail::{Failure, Jail, Outcome};
use crate::source::{FileTail, Lines};
use crate::stats::Stats;
use crate::types::Clock;

/// How often a file is checked when no inotify event came.
const POLL: Duration = Duration::from_secs(1);
/// How often quiet addresses are forgotten.
const EXPIRE_EVERY: Duration = Duration::from_secs(30);

/// A jail reading a file, with its filter and how its lines' timestamps are read.
pub struct Subscriber {
    pub jail: usize,
    pub filter: Arc<Filter>,
    pub framer: Framer,
}

/// What every reader shares.
pub struct ReaderContext {
    pub failures: mpsc::Sender<Failure>,
    pub wake: Arc<Notify>,
    pub stats: Arc<Stats>,
    pub clock: Arc<dyn Clock>,
    pub shutdown: CancellationToken,
    pub max_line: usize,
}

/// Follows `path` from its end and sends every failure its jails' filters find.
pub async fn follow_file(path: PathBuf, subscribers: Vec<Subscriber>, cx: ReaderContext) {
    let mut tail = FileTail::new(&path, cx.max_line);
    match tail.open_at_end() {
        Ok(true) => tracing::info!(file = %path.display(), "following"),
        Ok(false) => {
            tracing::warn!(file = %path.display(), "log file does not exist yet; it will be read once it appears")
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %crate::util::io_reason(&e), "cannot open log file; retrying")
        }
    }
    let mut lines = Lines::default();
    let mut last_error: Option<String> = None;
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
            if !examine(&lines, &subscribers, &cx).await {
                return;
            }
            if !more {
                break;
            }
        }
        tokio::select! {
            _ = cx.shutdown.cancelled() => return,
            _ = cx.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Runs the filters over a batch; false when the jail task is gone.
async fn examine(lines: &Lines, subscribers: &[Subscriber], cx: &ReaderContext) -> bool {
    if lines.is_empty() {
        return true;
    }
    cx.stats.lines_read.fetch_add(lines.len() as u64, Relaxed);
    let now = cx.clock.now();
    let auto = Framer::default();
    for line in lines.iter() {
        // Most jails detect timestamps in local time: split such a line only once.
        let shared = subscribers
            .iter()
            .any(|s| s.framer == auto)
            .then(|| auto.split(line, now));
        for sub in subscribers {
            let own;
            let framed = match &shared {
                Some(f) if sub.framer == auto => f,
                _ => {
                    own = sub.framer.split(line, now);
                    &own
                }
            };
            match sub.filter.examine(framed.message) {
                Verdict::Failure(found) => {
                    let failure = Failure {
                        jail: sub.jail,
                        host: found.host,
                        time: framed.time,
                    };
                    if cx.failures.send(failure).await.is_err() {
                        return false;
                    }
                }
                Verdict::Ignored(found) => {
                    tracing::debug!(filter = sub.filter.name(), host = %found.host, "ignoreregex matched")
                }
                Verdict::Miss => {}
            }
        }
    }
    true
}

/// Counts failures per jail and sends a decision when a jail's threshold is reached.
pub async fn count_failures(
    mut jails: Vec<(String, Jail)>,
    mut failures: mpsc::Receiver<Failure>,
    decisions: mpsc::Sender<Decision>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            f = failures.recv() => {
                let Some(f) = f else { return };
                let Some((name, jail)) = jails.get_mut(f.jail) else { continue };
                let outcome = jail.record(f.host, f.time, clock.now());
                let counters = stats.jail(name);
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
                        if decisions.send(d).await.is_err() {
                            return;
                        }
                    }
                }
                if let Some(c) = stats.jail(name) {
                    c.currently_failed.store(jail.tracked() as u64, Relaxed);
                }
            }
            _ = tick.tick() => {
                let now = clock.now();
                for (name, jail) in jails.iter_mut() {
                    jail.expire(now);
                    if let Some(c) = stats.jail(name) {
                        c.currently_failed.store(jail.tracked() as u64, Relaxed);
                    }
                }
            }
        }
    }
}
