//! Which sources a generation follows: one per file, for literal paths and for files
//! matching a glob (re-scanned when their directory changes and periodically, so
//! files created later are picked up), however many jails read it; one per named
//! pipe; and one for the journal. Each runs `source::follow` with its subscribers.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio_util::task::TaskTracker;

use super::pipeline::{ReaderContext, Subscriber};
use crate::config::{is_glob, FileWatch, JailConfig};
use crate::filter::Framer;
use crate::source::{DirWatcher, FileSource, Unsaved};

/// How often glob patterns are expanded again.
pub const GLOB_RESCAN: Duration = Duration::from_secs(10);

/// A logpath of a jail: one file or a glob.
struct Pattern {
    literal: PathBuf,
    glob: Option<glob::Pattern>,
    subscriber: Subscriber,
}

/// The file readers started so far, and what is needed to start more.
pub struct FileSources {
    patterns: Vec<Pattern>,
    /// The patterns naming each literal path, and those that are globs (indices into
    /// `patterns`): a file's subscribers are found without comparing its path with
    /// every jail's (10,000 jails with a log each made that 10^8 comparisons).
    literal: HashMap<PathBuf, Vec<usize>>,
    globs: Vec<usize>,
    running: HashSet<PathBuf>,
    watcher: Option<DirWatcher>,
    /// Fired by changes in the directories globs look into.
    glob_dirs_changed: Arc<Notify>,
    cx: ReaderContext,
    tasks: TaskTracker,
}

impl FileSources {
    pub fn new(
        jails: &[JailConfig],
        watch: FileWatch,
        cx: ReaderContext,
        tasks: TaskTracker,
    ) -> Self {
        let mut patterns = Vec::new();
        for (index, jail) in jails.iter().enumerate() {
            for path in &jail.logpath {
                let text = path.to_string_lossy();
                patterns.push(Pattern {
                    literal: path.clone(),
                    glob: is_glob(&text)
                        .then(|| glob::Pattern::new(&text).ok())
                        .flatten(),
                    subscriber: line_subscriber(index, jail),
                });
            }
        }
        let mut watcher = (watch == FileWatch::Auto).then(DirWatcher::new);
        let glob_dirs_changed = Arc::new(Notify::new());
        if let Some(w) = watcher.as_mut() {
            for p in patterns.iter().filter(|p| p.glob.is_some()) {
                // The part of the pattern before its first wildcard component.
                let dir: PathBuf = p
                    .literal
                    .parent()
                    .into_iter()
                    .flat_map(|d| d.ancestors())
                    .find(|d| !is_glob(&d.to_string_lossy()))
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("/"));
                w.wake_on(&dir, glob_dirs_changed.clone());
            }
        }
        let (mut literal, mut globs) = (HashMap::<PathBuf, Vec<usize>>::new(), Vec::new());
        for (i, p) in patterns.iter().enumerate() {
            match p.glob {
                Some(_) => globs.push(i),
                None => literal.entry(p.literal.clone()).or_default().push(i),
            }
        }
        FileSources {
            patterns,
            literal,
            globs,
            running: HashSet::new(),
            watcher,
            glob_dirs_changed,
            cx,
            tasks,
        }
    }

    pub fn has_globs(&self) -> bool {
        self.patterns.iter().any(|p| p.glob.is_some())
    }

    /// Starts a reader for every file not followed yet. At start (`initial`), files
    /// without a saved position are read from their end; files found later, from
    /// their start. Returns a signal per reader started, answered once it is open.
    pub fn start_new(&mut self, initial: bool) -> Vec<oneshot::Receiver<()>> {
        let mut opened = Vec::new();
        let mut paths: Vec<PathBuf> = Vec::new();
        for p in &self.patterns {
            match &p.glob {
                None => paths.push(p.literal.clone()),
                Some(_) => match glob::glob(&p.literal.to_string_lossy()) {
                    Ok(found) => paths.extend(found.filter_map(Result::ok).filter(|f| f.is_file())),
                    Err(e) => {
                        tracing::warn!(pattern = %p.literal.display(), error = %e, "cannot expand glob")
                    }
                },
            }
        }
        paths.sort();
        paths.dedup();
        for path in paths {
            if self.running.contains(&path) {
                continue;
            }
            let subscribers = self.subscribers(&path);
            let wake = self.watcher.as_mut().map(|w| w.watch(&path));
            let unsaved = if initial {
                Unsaved::End
            } else {
                Unsaved::Start
            };
            if !initial {
                tracing::info!(file = %path.display(), "a new file matches a logpath glob");
            }
            let (open, is_open) = oneshot::channel();
            let source = FileSource::new(path.clone(), unsaved, wake, self.cx.poll);
            self.cx.spawn(&self.tasks, source, subscribers, Some(open));
            opened.push(is_open);
            self.running.insert(path);
        }
        opened
    }

    /// Every jail whose logpath names or matches `path`, in jail order.
    fn subscribers(&self, path: &Path) -> Vec<Subscriber> {
        let mut found: Vec<usize> = self.literal.get(path).cloned().unwrap_or_default();
        found.extend(self.globs.iter().copied().filter(|&i| {
            self.patterns[i]
                .glob
                .as_ref()
                .is_some_and(|g| g.matches_path(path))
        }));
        found.sort_unstable();
        found
            .into_iter()
            .map(|i| self.patterns[i].subscriber.clone())
            .collect()
    }
}

/// Re-expands the globs when their directories change, and every `GLOB_RESCAN`
/// anyway, until shutdown.
pub async fn rescan_globs(sources: Arc<Mutex<FileSources>>, cx: ReaderContext) {
    let changed = sources
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .glob_dirs_changed
        .clone();
    loop {
        tokio::select! {
            _ = cx.follow.stop.cancelled() => return,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(GLOB_RESCAN) => {}
        }
        sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .start_new(false);
    }
}

/// How `jail` reads the plain lines of a file or pipe.
pub fn line_subscriber(index: usize, jail: &JailConfig) -> Subscriber {
    Subscriber {
        jail: index,
        filter: jail.filter.clone(),
        framer: Framer {
            tz: jail.logtimezone,
            pattern: jail.filter.datepattern().cloned(),
        },
        proxies: jail.trusted_proxies.clone(),
        matches: None,
    }
}

/// Each named pipe the jails read, with the jails reading it.
pub fn pipe_subscribers(jails: &[JailConfig]) -> Vec<(PathBuf, Vec<Subscriber>)> {
    let mut pipes: Vec<(PathBuf, Vec<Subscriber>)> = Vec::new();
    for (index, jail) in jails.iter().enumerate() {
        for path in &jail.pipe {
            let sub = line_subscriber(index, jail);
            match pipes.iter_mut().find(|(p, _)| p == path) {
                Some((_, subs)) => subs.push(sub),
                None => pipes.push((path.clone(), vec![sub])),
            }
        }
    }
    pipes
}

/// The journal reader's subscribers: the jails with journal matches.
pub fn journal_subscribers(jails: &[JailConfig]) -> Vec<Subscriber> {
    jails
        .iter()
        .enumerate()
        .filter_map(|(index, j)| {
            j.journal.clone().map(|matches| Subscriber {
                matches: Some(matches),
                ..line_subscriber(index, j)
            })
        })
        .collect()
}
