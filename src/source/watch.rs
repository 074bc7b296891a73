//! One inotify watcher for all followed files: watches each file's directory (so
//! rotation and creation are seen) and wakes the followers of files in it. When
//! inotify is unavailable, followers still poll on their own timer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

type Wakers = Arc<Mutex<HashMap<PathBuf, Vec<Arc<Notify>>>>>;

/// Wakes file followers when their directory changes.
pub struct DirWatcher {
    watcher: Option<RecommendedWatcher>,
    wakers: Wakers,
}

impl Default for DirWatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl DirWatcher {
    pub fn new() -> Self {
        let wakers: Wakers = Arc::default();
        let shared = wakers.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let map = shared.lock().unwrap_or_else(|p| p.into_inner());
            for path in &event.paths {
                let dir = path.parent().unwrap_or(path);
                for w in map.get(dir).into_iter().flatten() {
                    w.notify_one();
                }
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "inotify is unavailable; log files are polled every poll_interval");
                None
            }
        };
        DirWatcher { watcher, wakers }
    }

    /// A waker that fires when anything in `file`'s directory changes.
    pub fn watch(&mut self, file: &Path) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        self.wake_on(&dir, notify.clone());
        notify
    }

    /// Fires `notify` whenever anything in `dir` changes.
    pub fn wake_on(&mut self, dir: &Path, notify: Arc<Notify>) {
        let dir = dir.to_path_buf();
        let mut map = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        let first = !map.contains_key(&dir);
        map.entry(dir.clone()).or_default().push(notify.clone());
        drop(map);
        if first {
            if let Some(w) = self.watcher.as_mut() {
                if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; polling it");
                }
            }
        }
    }
}
