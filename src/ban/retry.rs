//! What waits for a retry, and when the retry comes. Bans the store refused (disk
//! full, read-only) wait unsaved (in the kernel, not yet in `ctl banned`), and so do
//! the readers' barriers behind them; saved
//! bans and unbans the kernel refused wait pending. One timer serves both, with a
//! delay that doubles after each failed retry (at most a minute) and starts again at
//! a second after a success. Pure: every call that reads the time takes `now`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::source::Barrier;
use crate::types::{Ban, Target};

/// Saved bans waiting for the kernel, by (jail, target).
pub type PendingBans = HashMap<(String, Target), Ban>;

/// The first retry's delay, and the longest.
const FIRST: Duration = Duration::from_secs(1);
const LONGEST: Duration = Duration::from_secs(60);

/// Changes waiting for the store or the kernel to take them.
#[derive(Debug)]
pub struct RetryQueue {
    /// Saved bans the kernel refused; re-sent with backoff.
    pub pending: PendingBans,
    /// (set, target) whose unban the kernel refused; their elements are recomputed.
    pub unbans: Vec<(String, Target)>,
    /// Decided bans the store refused, by (jail, target): in the kernel already
    /// (a full disk must not open the door), saved by the retry.
    pub unsaved: PendingBans,
    /// Readers' barriers waiting for `unsaved` to be saved.
    held: Vec<Barrier>,
    at: Option<Instant>,
    delay: Duration,
}

impl Default for RetryQueue {
    fn default() -> Self {
        RetryQueue {
            pending: PendingBans::new(),
            unbans: Vec::new(),
            unsaved: PendingBans::new(),
            held: Vec::new(),
            at: None,
            delay: FIRST,
        }
    }
}

impl RetryQueue {
    /// When the next retry is due, if one is.
    pub fn next(&self) -> Option<Instant> {
        self.at
    }

    /// A retry at the current delay, unless one is due sooner already.
    pub fn schedule(&mut self, now: Instant) {
        if self.at.is_none() {
            self.at = Some(now + self.delay);
        }
    }

    /// After a retry failed: the next one waits twice as long (at most a minute).
    pub fn back_off(&mut self, now: Instant) {
        self.delay = (self.delay * 2).min(LONGEST);
        self.at = Some(now + self.delay);
    }

    /// True (once) when a retry is due at `now`.
    pub fn due(&mut self, now: Instant) -> bool {
        if self.at.is_none_or(|at| at > now) {
            return false;
        }
        self.at = None;
        true
    }

    /// A retry went through: the next failure starts at the first delay again.
    pub fn succeeded(&mut self) {
        self.delay = FIRST;
    }

    /// The kernel took a change: what waits for it goes at once.
    pub fn kernel_works(&mut self, now: Instant) {
        if !self.pending.is_empty() || !self.unbans.is_empty() {
            self.at = Some(now);
            self.delay = FIRST;
        }
    }

    /// The kernel took what waited for it, but for what `landed` says it did not.
    /// Returns the pending bans now in force; the rest keep waiting.
    pub fn took(
        &mut self,
        landed: impl Fn(&Ban) -> bool,
        unban_landed: impl Fn(&(String, Target)) -> bool,
    ) -> Vec<Ban> {
        self.unbans.retain(|k| !unban_landed(k));
        let mut in_force = Vec::with_capacity(self.pending.len());
        self.pending.retain(|_, b| {
            if landed(b) {
                in_force.push(b.clone());
                false
            } else {
                true
            }
        });
        in_force
    }

    /// The whole table was installed with every ban (but those `landed` says were
    /// refused): no unban waits for the kernel. Returns the pending bans now in force.
    pub fn installed(&mut self, landed: impl Fn(&Ban) -> bool) -> Vec<Ban> {
        let in_force = self.took(landed, |_| true);
        self.at = None;
        self.delay = FIRST;
        in_force
    }

    /// Keeps `bans` until the store takes them.
    pub fn keep_unsaved(&mut self, bans: impl IntoIterator<Item = Ban>) {
        self.unsaved
            .extend(bans.into_iter().map(|b| ((b.jail.clone(), b.target), b)));
    }

    /// Holds `barriers` until no ban waits for the store, then answers them.
    pub fn hold(&mut self, barriers: impl IntoIterator<Item = Barrier>) {
        self.held.extend(barriers);
        self.release();
    }

    /// Answers the held barriers once no decided ban waits to be saved.
    pub fn release(&mut self) {
        if self.unsaved.is_empty() {
            for b in self.held.drain(..) {
                let _ = b.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn ban(ip: &str) -> Ban {
        crate::types::test_ban("sshd", ip)
    }

    #[test]
    fn the_delay_doubles_up_to_a_minute_and_starts_again_after_a_success() {
        let start = Instant::now();
        let mut q = RetryQueue::default();
        assert!(!q.due(start));
        q.schedule(start);
        q.schedule(start + Duration::from_secs(5));
        assert_eq!(q.next(), Some(start + FIRST), "the earlier one stays");
        assert!(!q.due(start));
        assert!(q.due(start + FIRST));
        assert!(!q.due(start + FIRST), "once");
        let mut waits = Vec::new();
        for _ in 0..8 {
            q.back_off(start);
            waits.push((q.next().expect("scheduled") - start).as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        q.succeeded();
        q.due(start + LONGEST);
        q.schedule(start);
        assert_eq!(q.next(), Some(start + FIRST));
    }

    #[test]
    fn barriers_wait_while_a_ban_is_unsaved() {
        let mut q = RetryQueue::default();
        q.keep_unsaved([ban("203.0.113.5")]);
        let (tx, mut rx) = oneshot::channel();
        q.hold([tx]);
        assert!(rx.try_recv().is_err(), "held");
        assert_eq!(q.unsaved.len(), 1);
        q.unsaved.clear();
        q.release();
        assert!(rx.try_recv().is_ok(), "answered once saved");
    }

    #[test]
    fn a_working_kernel_brings_the_retry_forward_and_an_install_empties_the_queue() {
        let now = Instant::now();
        let mut q = RetryQueue::default();
        q.kernel_works(now);
        assert_eq!(q.next(), None, "nothing waits");
        let b = ban("203.0.113.5");
        q.pending.insert(("sshd".into(), b.target), b.clone());
        q.back_off(now);
        q.kernel_works(now);
        assert_eq!(q.next(), Some(now));
        q.unbans.push(("sshd".into(), b.target));
        assert_eq!(q.installed(|_| true), vec![b]);
        assert!(q.unbans.is_empty() && q.pending.is_empty() && q.next().is_none());
    }
}
