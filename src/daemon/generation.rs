//! One configuration's readers and jail task: a generation. A reload stops the old
//! one (its readers first, at a point where every line they read has been handed on
//! and its position saved; then the jail task, once it has counted all of it) and
//! starts a new one that takes over the failure windows of jails counting by the same
//! rules. Readers of the new generation resume at the saved positions, so a reload
//! neither loses nor repeats a line.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::pipeline::{self, ReaderContext};
use super::sources::{self, FileSources};
use crate::ban::Decided;
use crate::config::{DaemonConfig, JailConfig};
use crate::jail::Jails;
use crate::source::{Follow, JournalSource, PipeSource, Positions};
use crate::stats::Stats;
use crate::types::Clock;

/// The journal reader's command.
const JOURNALCTL: &str = "journalctl";
/// Capacity of the channel from readers to the jail task.
const FAILURE_QUEUE: usize = 4096;
/// Longest wait for the sources to open before the generation runs anyway.
const OPEN_WAIT: Duration = Duration::from_secs(10);

/// What every generation shares with the rest of the daemon.
#[derive(Clone)]
pub struct Shared {
    pub stats: Arc<Stats>,
    pub clock: Arc<dyn Clock>,
    pub positions: Arc<dyn Positions>,
    pub decisions: mpsc::Sender<Decided>,
    pub shutdown: CancellationToken,
}

/// The running readers and jail task of one configuration.
pub struct Generation {
    /// Stops the readers (a child of the daemon's shutdown).
    stop: CancellationToken,
    readers: TaskTracker,
    counting: JoinHandle<Jails>,
}

impl Generation {
    /// Starts the readers of `jails` and a jail task counting with `counting`. At the
    /// daemon's start (`initial`), files without a saved position are read from their
    /// end; at a reload too, since their past was written before they were configured.
    pub async fn start(
        jails: &[JailConfig],
        daemon: &DaemonConfig,
        counting: Jails,
        shared: &Shared,
    ) -> Generation {
        let stop = shared.shutdown.child_token();
        let readers = TaskTracker::new();
        let (failure_tx, failure_rx) = mpsc::channel(FAILURE_QUEUE);
        let counting = tokio::spawn(pipeline::count_failures(
            jails.iter().map(|j| j.name.clone()).collect(),
            counting,
            failure_rx,
            shared.decisions.clone(),
            shared.clock.clone(),
            shared.stats.clone(),
        ));

        // One reader per file (literal or glob match), however many jails read it,
        // one per named pipe, and one for the journal.
        let cx = ReaderContext {
            follow: Follow {
                positions: shared.positions.clone(),
                stop: stop.clone(),
                cap: daemon.max_line_length,
            },
            failures: failure_tx,
            stats: shared.stats.clone(),
            clock: shared.clock.clone(),
            poll: daemon.poll_interval,
        };
        let mut files = FileSources::new(jails, daemon.file_watch, cx.clone(), readers.clone());
        let mut opened = files.start_new(true);
        if files.has_globs() {
            readers.spawn(sources::rescan_globs(
                Arc::new(Mutex::new(files)),
                cx.clone(),
            ));
        } else {
            // Keep the inotify watcher alive for as long as the readers run.
            let stop = stop.clone();
            readers.spawn(async move {
                let _files = files;
                stop.cancelled().await;
            });
        }
        for (path, subscribers) in sources::pipe_subscribers(jails) {
            let (open, is_open) = tokio::sync::oneshot::channel();
            cx.spawn(&readers, PipeSource::new(path), subscribers, Some(open));
            opened.push(is_open);
        }
        let journal = sources::journal_subscribers(jails);
        if !journal.is_empty() {
            let mut wanted = journal
                .iter()
                .flat_map(|s| s.matches.iter().flat_map(|m| m.fields().map(String::from)))
                .collect::<Vec<_>>();
            // A session filter ties an entry to its process by these.
            if journal.iter().any(|s| s.filter.session().is_some()) {
                wanted.extend(super::pipeline::PROCESS_FIELDS.map(String::from));
            }
            let (open, is_open) = tokio::sync::oneshot::channel();
            cx.spawn(
                &readers,
                JournalSource::new(JOURNALCTL, wanted),
                journal,
                Some(open),
            );
            opened.push(is_open);
        }
        // Ready only once every source is open: a line written after READY is read.
        let all_open = async {
            for o in opened {
                let _ = o.await;
            }
        };
        if tokio::time::timeout(OPEN_WAIT, all_open).await.is_err() {
            tracing::warn!("some log sources did not open within {OPEN_WAIT:?}; starting without waiting for them");
        }
        readers.close();
        Generation {
            stop,
            readers,
            counting,
        }
    }

    /// Stops the readers, lets the jail task count what they handed on, and returns
    /// its failure windows.
    pub async fn stop(self, max_tracked: usize) -> Jails {
        self.stop.cancel();
        self.readers.wait().await;
        match self.counting.await {
            Ok(jails) => jails,
            Err(e) => {
                tracing::error!(error = %e, "the jail task failed; failure counts start anew");
                Jails::new(Vec::new(), max_tracked)
            }
        }
    }
}
