//! The metrics server's connection cap, and whom it drops for a newcomer. At the cap, a
//! new connection takes the slot of the oldest one that is not busy writing its answer
//! (one still sending its request head, or lingering after its answer), so clients that
//! hold connections open cannot keep a scraper out. Bookkeeping only; `http.rs` does
//! the I/O.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// At most `cap` connections at once.
pub(super) struct Slots {
    cap: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// Number of the next connection admitted.
    next: u64,
    /// The connections held, by number, so oldest first.
    by_age: BTreeMap<u64, Entry>,
}

struct Entry {
    /// Writing its answer: not dropped for a newcomer.
    busy: bool,
    stop: CancellationToken,
}

/// How a new connection was taken in.
pub(super) enum Admission {
    /// Into a free slot.
    Free(Slot),
    /// Into the slot of the oldest connection not busy, which was told to stop.
    Took(Slot),
    /// Not at all: every slot is busy writing an answer (each for a bounded time).
    Full,
}

/// A connection's hold on a slot, released when this drops.
pub(super) struct Slot {
    id: u64,
    slots: Arc<Slots>,
    /// Cancelled when the connection must stop: dropped for a newcomer, or by the
    /// token it was admitted with.
    pub(super) stop: CancellationToken,
}

impl Slots {
    pub(super) fn new(cap: usize) -> Arc<Slots> {
        Arc::new(Slots {
            cap,
            held: Mutex::default(),
        })
    }

    /// Takes in a new connection, not busy, that stops when `stop` is cancelled.
    pub(super) fn admit(self: &Arc<Self>, stop: CancellationToken) -> Admission {
        let mut held = self.lock();
        let took = held.by_age.len() >= self.cap;
        if took {
            let oldest_idle = held.by_age.iter().find(|(_, e)| !e.busy).map(|(id, _)| *id);
            match oldest_idle.and_then(|id| held.by_age.remove(&id)) {
                Some(dropped) => dropped.stop.cancel(),
                None => return Admission::Full,
            }
        }
        let id = held.next;
        held.next += 1;
        let entry = Entry {
            busy: false,
            stop: stop.clone(),
        };
        held.by_age.insert(id, entry);
        drop(held);
        let slot = Slot {
            id,
            slots: self.clone(),
            stop,
        };
        if took {
            Admission::Took(slot)
        } else {
            Admission::Free(slot)
        }
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Slot {
    /// Marks the connection busy writing its answer, so it keeps its slot until `idle`.
    /// False if it has already been dropped for a newcomer.
    pub(super) fn busy(&self) -> bool {
        self.set_busy(true)
    }

    /// Marks the connection done with its answer: a newcomer may take its slot again.
    pub(super) fn idle(&self) {
        self.set_busy(false);
    }

    fn set_busy(&self, busy: bool) -> bool {
        match self.slots.lock().by_age.get_mut(&self.id) {
            Some(entry) => {
                entry.busy = busy;
                true
            }
            None => false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().by_age.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(slots: &Arc<Slots>) -> Admission {
        slots.admit(CancellationToken::new())
    }

    fn slot(admission: Admission) -> Slot {
        match admission {
            Admission::Free(s) | Admission::Took(s) => s,
            Admission::Full => panic!("refused"),
        }
    }

    fn held(slots: &Slots) -> usize {
        slots.lock().by_age.len()
    }

    #[test]
    fn below_the_cap_every_connection_gets_a_free_slot_and_gives_it_back() {
        let slots = Slots::new(2);
        let a = admit(&slots);
        let b = admit(&slots);
        assert!(matches!((&a, &b), (Admission::Free(_), Admission::Free(_))));
        assert_eq!(held(&slots), 2);
        drop(a);
        assert_eq!(held(&slots), 1);
        assert!(matches!(admit(&slots), Admission::Free(_)));
    }

    #[test]
    fn at_the_cap_a_newcomer_takes_the_slot_of_the_oldest_connection_not_busy() {
        let slots = Slots::new(3);
        let first = slot(admit(&slots));
        let second = slot(admit(&slots));
        let third = slot(admit(&slots));
        assert!(first.busy(), "writing its answer");

        let fourth = admit(&slots);
        assert!(matches!(fourth, Admission::Took(_)));
        assert!(!first.stop.is_cancelled(), "busy connections are kept");
        assert!(second.stop.is_cancelled(), "the oldest idle one is dropped");
        assert!(!third.stop.is_cancelled());
        assert_eq!(held(&slots), 3);
        // Dropped, it cannot turn busy, and its end frees nothing of the others'.
        assert!(!second.busy());
        drop(second);
        assert_eq!(held(&slots), 3);

        // Done with its answer, the first is the oldest idle again.
        first.idle();
        assert!(matches!(admit(&slots), Admission::Took(_)));
        assert!(first.stop.is_cancelled() && !third.stop.is_cancelled());
        drop(fourth);
    }

    #[test]
    fn when_every_slot_is_busy_answering_a_newcomer_is_refused() {
        let slots = Slots::new(2);
        let held_slots: Vec<Slot> = (0..2).map(|_| slot(admit(&slots))).collect();
        assert!(held_slots.iter().all(Slot::busy));
        assert!(matches!(admit(&slots), Admission::Full));
        assert!(held_slots.iter().all(|s| !s.stop.is_cancelled()));
        drop(held_slots);
        assert!(matches!(admit(&slots), Admission::Free(_)));
    }

    #[test]
    fn a_connection_stops_with_the_token_it_was_admitted_with() {
        let slots = Slots::new(1);
        let shutdown = CancellationToken::new();
        let s = slot(slots.admit(shutdown.child_token()));
        shutdown.cancel();
        assert!(s.stop.is_cancelled());
    }
}
