//! The hub: takes the ban manager's events (a ban output), makes each ban and unban
//! an [`Event`] (a ban's lines read from the store, where its commit put them), and
//! hands them to the `[[notify]]` notifiers (each queues what it wants) and to the
//! `ctl events` followers. Followers share one bounded broadcast: one that falls
//! behind loses its place and is dropped by its connection; the hub and the ban
//! manager never wait for any.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Event, Notifier};
use crate::ban::BanEvent;
use crate::config::NotifyConfig;
use crate::stats::Stats;
use crate::store::StoreReader;

/// Events a follower may fall behind by before it is dropped (a storm's batch of
/// bans comes at once: a reader that keeps up must not lose its place to it).
pub const FOLLOWER_LAG: usize = 16_384;

/// The hub lets the followers' connections run after this many events.
const YIELD_EVERY: usize = 256;

/// Where `ctl events` followers subscribe.
pub type Followers = broadcast::Sender<Arc<Event>>;

/// The running notifiers; a reload replaces the set (see [`notifiers`]).
pub type Notifiers = Arc<Vec<Arc<Notifier>>>;

/// The notifiers of `configs`: those of `running` whose settings did not change go
/// on (with their queues), the others start; a notifier left out stops when the hub
/// lets the old set go (what it was running ends, what waited is dropped).
pub fn notifiers(
    configs: &[NotifyConfig],
    running: &[Arc<Notifier>],
    stats: &Arc<Stats>,
    shutdown: &CancellationToken,
) -> Notifiers {
    Arc::new(
        configs
            .iter()
            .map(|c| {
                running
                    .iter()
                    .find(|n| n.config == *c)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Notifier::start(
                            c.clone(),
                            stats.clone(),
                            shutdown.child_token(),
                        ))
                    })
            })
            .collect(),
    )
}

/// Runs until the ban manager's output closes or `shutdown`.
pub async fn run_hub(
    mut events: mpsc::Receiver<BanEvent>,
    reader: Arc<dyn StoreReader>,
    followers: Followers,
    notifiers: watch::Receiver<Notifiers>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        let notifiers = notifiers.borrow().clone();
        // Nobody follows or notifies: nothing to read or make.
        if followers.receiver_count() == 0 && notifiers.is_empty() {
            continue;
        }
        let hand = |event: Event| {
            let event = Arc::new(event);
            for n in notifiers.iter() {
                n.offer(&event, &stats);
            }
            let _ = followers.send(event);
        };
        match event {
            BanEvent::Banned(bans) => {
                for (i, ban) in bans.iter().enumerate() {
                    let matches = reader.evidence(&ban.jail, &ban.target).unwrap_or_default();
                    hand(Event::banned(ban, matches));
                    if i % YIELD_EVERY == YIELD_EVERY - 1 {
                        tokio::task::yield_now().await;
                    }
                }
            }
            BanEvent::Ended { ban, why, matches } => hand(Event::ended(&ban, why, matches)),
        }
    }
}

/// A new broadcast for followers.
pub fn followers() -> Followers {
    broadcast::channel(FOLLOWER_LAG).0
}
