//! The hub: takes the ban manager's events (a ban output), makes each ban and unban
//! an [`Event`] (a ban's lines read from the store, where its commit put them), and
//! hands them to the `ctl events` followers. Followers share one bounded broadcast:
//! one that falls behind loses its place and is dropped by its connection; the hub
//! and the ban manager never wait for any.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::Event;
use crate::ban::BanEvent;
use crate::store::StoreReader;

/// Events a follower may fall behind by before it is dropped (a storm's batch of
/// bans comes at once: a reader that keeps up must not lose its place to it).
pub const FOLLOWER_LAG: usize = 16_384;

/// The hub lets the followers' connections run after this many events.
const YIELD_EVERY: usize = 256;

/// Where `ctl events` followers subscribe.
pub type Followers = broadcast::Sender<Arc<Event>>;

/// Runs until the ban manager's output closes or `shutdown`.
pub async fn run_hub(
    mut events: mpsc::Receiver<BanEvent>,
    reader: Arc<dyn StoreReader>,
    followers: Followers,
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
        // Nobody follows: nothing to read or make.
        if followers.receiver_count() == 0 {
            continue;
        }
        match event {
            BanEvent::Banned(bans) => {
                for (i, ban) in bans.iter().enumerate() {
                    let matches = reader.evidence(&ban.jail, &ban.target).unwrap_or_default();
                    let _ = followers.send(Arc::new(Event::banned(ban, matches)));
                    if i % YIELD_EVERY == YIELD_EVERY - 1 {
                        tokio::task::yield_now().await;
                    }
                }
            }
            BanEvent::Ended { ban, why, matches } => {
                let _ = followers.send(Arc::new(Event::ended(&ban, why, matches)));
            }
        }
    }
}

/// A new broadcast for followers.
pub fn followers() -> Followers {
    broadcast::channel(FOLLOWER_LAG).0
}
