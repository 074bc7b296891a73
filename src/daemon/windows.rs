//! The jails' failure windows across a clean restart (`jail::SavedWindows`), kept
//! under one key of the read positions' store: saved at stop, once the readers have
//! stopped and saved their positions; counted again and removed at the next start.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::ban::{Decided, Decision};
use crate::jail::{Jails, SavedWindows};
use crate::source::Positions;
use crate::types::Timestamp;

/// The key the windows are saved under (read positions use `f/...` and `journal`).
const KEY: &[u8] = b"jail-windows";

/// Counts the windows saved at the last stop again; a ban they reach is decided as
/// if read now. The saved windows are removed, so that they are counted once.
pub fn restore(
    positions: &Arc<dyn Positions>,
    jails: &mut Jails,
    names: &[String],
    now: Timestamp,
    decisions: &mpsc::Sender<Decided>,
) {
    let saved = match positions.load(KEY) {
        Ok(Some(bytes)) if !bytes.is_empty() => bytes,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the failure windows saved at the last stop; counting starts anew");
            return;
        }
    };
    let windows: SavedWindows = match serde_json::from_slice(&saved) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "the failure windows saved at the last stop are unreadable; counting starts anew");
            forget(positions);
            return;
        }
    };
    let addresses = windows.len();
    for reached in windows.replay(jails, names, now) {
        let decision = Decision {
            jail: reached.jail,
            target: reached.target,
            failures: reached.failures,
            addr: None,
            // The windows keep times, not lines.
            matches: Vec::new(),
        };
        if decisions.try_send(Decided::Ban(decision)).is_err() {
            tracing::warn!("too many bans reached by the restored failure windows at once; the rest are counted again from new failures");
        }
    }
    tracing::info!(
        addresses,
        tracked = jails.tracked(),
        "failure windows from the last stop counted again"
    );
    forget(positions);
}

/// Saves the windows of `jails` (named `names`) for the next start.
pub fn save(positions: &Arc<dyn Positions>, jails: &Jails, names: &[String]) {
    let windows = SavedWindows::of(jails, names);
    if windows.is_empty() {
        return;
    }
    let saved = serde_json::to_vec(&windows)
        .map_err(|e| e.to_string())
        .and_then(|bytes| positions.save(KEY, &bytes).map_err(|e| e.to_string()));
    match saved {
        Ok(()) => tracing::info!(
            addresses = windows.len(),
            "failure windows saved for the next start"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot save the failure windows; the next start counts anew")
        }
    }
}

fn forget(positions: &Arc<dyn Positions>) {
    if let Err(e) = positions.save(KEY, &[]) {
        tracing::warn!(error = %e, "cannot remove the failure windows saved at the last stop");
    }
}
