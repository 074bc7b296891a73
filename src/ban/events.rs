//! Ban outputs: what follows the bans besides the kernel and the store (notifiers,
//! the fleet's publisher, live `ctl` followers). Each output is a bounded queue the
//! ban manager never waits on: when it is full the event is dropped and counted, so
//! a slow output never delays a ban.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::types::Ban;

/// Why a ban ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Its time was up.
    Expired,
    /// Lifted: by `ctl unban`, or because its jail was removed by a reload.
    Lifted,
}

/// What happened to the bans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanEvent {
    /// Bans now in force (in the store and the kernel), in the order they were made.
    Banned(Arc<[Ban]>),
    /// A ban in force ended; `matches` are its evidence, read before the store let
    /// them go (only when the manager has outputs).
    Ended {
        ban: Ban,
        why: Ended,
        matches: Vec<String>,
    },
}

/// One output: the sending end of its queue and its count of dropped events.
#[derive(Debug)]
pub struct Output {
    events: mpsc::Sender<BanEvent>,
    dropped: Arc<AtomicU64>,
}

impl Output {
    /// An output whose queue holds `capacity` events; the receiver is the output's.
    pub fn new(capacity: usize) -> (Output, mpsc::Receiver<BanEvent>) {
        let (events, rx) = mpsc::channel(capacity.max(1));
        let output = Output {
            events,
            dropped: Arc::default(),
        };
        (output, rx)
    }

    /// Events dropped because the queue was full (or its receiver gone).
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

/// Every output of a ban manager.
#[derive(Debug, Default)]
pub struct Outputs(Vec<Output>);

impl Outputs {
    pub fn add(&mut self, output: Output) {
        self.0.push(output);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Offers `event` to every output, never waiting.
    pub fn emit(&self, event: impl FnOnce() -> BanEvent) {
        if self.0.is_empty() {
            return;
        }
        let event = event();
        for out in &self.0 {
            if out.events.try_send(event.clone()).is_err() {
                out.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(ip: &str) -> Ban {
        crate::types::test_ban("sshd", ip)
    }

    #[test]
    fn every_output_gets_each_event_and_a_full_one_drops_and_counts() {
        let (fast, mut fast_rx) = Output::new(8);
        let (slow, mut slow_rx) = Output::new(1);
        let dropped = slow.dropped();
        let mut outputs = Outputs::default();
        outputs.add(fast);
        outputs.add(slow);
        outputs.emit(|| BanEvent::Banned(vec![ban("203.0.113.5")].into()));
        outputs.emit(|| BanEvent::Ended {
            ban: ban("203.0.113.5"),
            why: Ended::Lifted,
            matches: Vec::new(),
        });
        assert!(matches!(fast_rx.try_recv(), Ok(BanEvent::Banned(b)) if b.len() == 1));
        assert!(matches!(
            fast_rx.try_recv(),
            Ok(BanEvent::Ended {
                why: Ended::Lifted,
                ..
            })
        ));
        assert!(matches!(slow_rx.try_recv(), Ok(BanEvent::Banned(_))));
        assert!(slow_rx.try_recv().is_err());
        assert_eq!(dropped.load(Relaxed), 1);
    }

    #[test]
    fn without_outputs_no_event_is_built() {
        Outputs::default().emit(|| unreachable!("not built"));
    }
}
