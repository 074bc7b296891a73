//! The INFO line of each ban in force. A burst's lines are formatted on a thread of
//! their own, in order, so a storm of bans does not wait on formatting.

use crate::types::Ban;

/// Batches up to this many bans are logged in place; larger ones off the ban path.
const LOG_INLINE: usize = 32;

/// Formats bursts of ban lines on its own thread, in the order they come.
pub struct BanLog(Option<std::sync::mpsc::Sender<Vec<Ban>>>);

impl BanLog {
    pub fn new() -> BanLog {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Ban>>();
        let started = std::thread::Builder::new()
            .name("gaoler-banlog".into())
            .spawn(move || rx.iter().for_each(|bans| bans.iter().for_each(log_ban)));
        BanLog(started.ok().map(|_| tx))
    }

    /// Logs `bans`: in place when few, else on the logger's thread.
    pub fn log(&self, bans: &[Ban]) {
        if bans.len() > LOG_INLINE {
            self.announce(bans.to_vec());
        } else {
            bans.iter().for_each(log_ban);
        }
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
