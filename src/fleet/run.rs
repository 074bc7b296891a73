//! The fleet's two tasks. The publisher drains the store's outbox (this host's own
//! decisions, saved with their bans) into the stream, signed, each under a message
//! id that makes a second publish of it a duplicate; an entry leaves the outbox only
//! once JetStream acknowledged it, so a decision made while NATS is down, or just
//! before a crash, is published when NATS is back. The consumer reads the stream
//! through this host's durable consumer, checks each message (`admit`), hands what
//! passes to the ban manager as `Decided::Received` / `Decided::Lift`, and
//! acknowledges a batch only once the manager saved it. Neither is ever in a ban's
//! path: the ban manager only writes the outbox, in its own commits.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::admit::{Admission, Limits, Rejected};
use super::keys;
use super::nats::{self, Link, NatsOptions};
use super::wire::{self, Decision, Kind};
use crate::ban::{BanEvent, Decided, Lift, Received};
use crate::config::FleetConfig;
use crate::stats::Stats;
use crate::store::Outbox;
use crate::types::{Announcement, AnnouncementKind, Clock, IgnoreList, Origin};

/// Entries published per round.
const PUBLISH_BATCH: usize = 2048;
/// Messages taken from the stream per round.
const CONSUME_BATCH: usize = 2048;
/// How often the outbox's depth and the consumer's lag are measured (each costs a
/// scan or a request).
const GAUGE_EVERY: Duration = Duration::from_secs(1);
/// How long a pull waits for the first message.
const PULL_WAIT: Duration = Duration::from_millis(500);
/// The outbox is looked at this often even when no ban rang.
const OUTBOX_POLL: Duration = Duration::from_secs(1);
/// Waits between connection attempts: doubling up to the last.
const BACKOFF: [u64; 6] = [100, 250, 500, 1000, 2000, 5000];

/// What reload may change while the fleet runs: whom to trust, the limits, and
/// whether other hosts' bans are applied here.
#[derive(Clone, Debug)]
pub struct Trust {
    pub trusted: Vec<ed25519_dalek::VerifyingKey>,
    pub limits: Limits,
    pub apply: bool,
}

impl Trust {
    /// From `[fleet]`; the keys were checked at load, one that does not parse is
    /// left out with a warning.
    pub fn from_config(config: &FleetConfig) -> Trust {
        let trusted = config
            .trusted_keys
            .iter()
            .filter_map(|k| match keys::parse_public(k) {
                Ok(key) => Some(key),
                Err(e) => {
                    tracing::warn!(error = %e, "fleet: a trusted key is left out");
                    None
                }
            })
            .collect();
        Trust {
            trusted,
            limits: Limits {
                max_prefix_v4: config.max_prefix_v4,
                max_prefix_v6: config.max_prefix_v6,
                rate_per_origin: config.rate_per_origin,
            },
            apply: config.apply,
        }
    }
}

/// The NATS settings of `[fleet]`; `max_age` is the longest bantime of the shared
/// jails (at least a day), so a host coming back finds every ban still in force.
pub fn nats_options(config: &FleetConfig, max_age: Duration) -> NatsOptions {
    NatsOptions {
        servers: config.servers.clone(),
        stream: config.stream.clone(),
        subject: config.subject.clone(),
        user: config.user.clone(),
        password: config.password.clone(),
        token: config.token.clone(),
        nkey_seed_file: config.nkey.clone(),
        creds_file: config.credentials.clone(),
        tls_ca: config.tls_ca.clone(),
        tls_cert: config.tls_cert.clone(),
        tls_key: config.tls_key.clone(),
        max_age,
        replicas: config.replicas,
    }
}

/// Everything the fleet's tasks need from the daemon.
pub struct Fleet {
    pub host: String,
    pub key: SigningKey,
    pub nats: NatsOptions,
    pub outbox: Arc<dyn Outbox>,
    /// Rung by the ban manager (a ban output) when bans were made or lifted.
    pub doorbell: mpsc::Receiver<BanEvent>,
    pub decisions: mpsc::Sender<Decided>,
    pub trust: watch::Receiver<Trust>,
    /// Loopback and this host's own addresses: never banned from elsewhere.
    pub ignore: IgnoreList,
    pub stats: Arc<Stats>,
    pub clock: Arc<dyn Clock>,
}

impl Fleet {
    /// Runs the publisher and the consumer until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let Fleet {
            host,
            key,
            nats,
            outbox,
            doorbell,
            decisions,
            trust,
            ignore,
            stats,
            clock,
        } = self;
        let own = key.verifying_key();
        let publisher = Publisher {
            host: host.clone(),
            key,
            nats: nats.clone(),
            outbox,
            doorbell,
            stats: stats.clone(),
            gauged: tokio::time::Instant::now(),
            in_flight: None,
        };
        let consumer = Receiver {
            host,
            nats,
            own,
            decisions,
            trust,
            ignore,
            stats,
            clock,
        };
        tokio::join!(
            publisher.run(shutdown.clone()),
            consumer.run(shutdown.clone())
        );
    }
}

/// This host's decision as it goes out.
pub fn outgoing(a: &Announcement, host: &str) -> Decision {
    Decision {
        kind: match a.kind {
            AnnouncementKind::Ban => Kind::Ban,
            AnnouncementKind::Unban => Kind::Unban,
        },
        host: host.to_string(),
        jail: a.ban.jail.clone(),
        target: a.ban.target,
        banned_at: a.ban.banned_at,
        expires_at: a.ban.expires_at,
        count: a.ban.count,
        id: Decision::ban_id(host, &a.ban.jail, &a.ban.target, a.ban.banned_at),
        at: a.at,
    }
}

/// Another host's decision as the ban manager takes it.
pub fn incoming(sealed: wire::Sealed) -> Decided {
    let d = sealed.decision;
    let origin = Origin {
        host: d.host,
        key: keys::public_text(&sealed.key),
        id: d.id,
    };
    match d.kind {
        Kind::Ban => Decided::Received(Received {
            jail: d.jail,
            target: d.target,
            banned_at: d.banned_at,
            expires_at: d.expires_at,
            count: d.count,
            origin,
        }),
        Kind::Unban => Decided::Lift(Lift {
            jail: d.jail,
            target: d.target,
            origin,
        }),
    }
}

/// Connects (and makes sure the stream is there), retrying with backoff until it
/// works or `shutdown`.
async fn link(
    nats: &NatsOptions,
    name: &str,
    stats: &Stats,
    shutdown: &CancellationToken,
    waiting: &(dyn Fn() + Send + Sync),
) -> Option<Link> {
    let mut attempt = 0usize;
    loop {
        let result = async {
            let link = nats::connect(nats, name).await?;
            link.ensure_stream().await?;
            Ok::<Link, nats::NatsError>(link)
        }
        .await;
        match result {
            Ok(link) => return Some(link),
            Err(e) => {
                if attempt == 0 {
                    tracing::warn!(error = %e, "fleet: NATS unreachable; bans are kept in the outbox and published when it is back");
                }
                *stats.fleet.server.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
            }
        }
        waiting();
        let wait = Duration::from_millis(BACKOFF[attempt.min(BACKOFF.len() - 1)]);
        attempt += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

struct Publisher {
    host: String,
    key: SigningKey,
    nats: NatsOptions,
    outbox: Arc<dyn Outbox>,
    doorbell: mpsc::Receiver<BanEvent>,
    stats: Arc<Stats>,
    /// When the outbox's depth was last measured.
    gauged: tokio::time::Instant,
    /// The batch sent last round, until it is settled; dropped at a reconnect (its
    /// entries are still in the outbox).
    in_flight: Option<InFlight>,
}

impl Publisher {
    async fn run(mut self, shutdown: CancellationToken) {
        let name = format!("gaoler {} publisher", self.host);
        // While NATS is out of reach, the outbox's depth still shows.
        let (outbox, stats) = (self.outbox.clone(), self.stats.clone());
        let depth = move || stats.fleet.outbox.store(outbox.depth(), Relaxed);
        'connect: while let Some(link) =
            link(&self.nats, &name, &self.stats, &shutdown, &depth).await
        {
            self.in_flight = None;
            self.stats.fleet.connected.store(true, Relaxed);
            *self
                .stats
                .fleet
                .server
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = link.server();
            tracing::info!(server = %link.server(), "fleet: publishing");
            loop {
                self.stats
                    .fleet
                    .connected
                    .store(link.is_connected(), Relaxed);
                match self.round(&link).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "fleet: publishing stopped; reconnecting");
                        self.stats.fleet.connected.store(false, Relaxed);
                        depth();
                        continue 'connect;
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.doorbell.recv() => {}
                    _ = tokio::time::sleep(OUTBOX_POLL) => {}
                }
            }
        }
    }

    /// Publishes what waits in the outbox (a batch); true when there may be more. The
    /// batch is sent before the one sent last round is settled (its acknowledgements
    /// awaited, its entries forgotten), so the server stores one batch while this host
    /// reads and signs the next; the last batch is settled before it returns false.
    async fn round(&mut self, link: &Link) -> Result<bool, nats::NatsError> {
        let from = self
            .in_flight
            .as_ref()
            .and_then(|f| f.seqs.last())
            .map_or(0, |last| last + 1);
        let waiting = match self.outbox.waiting(from, PUBLISH_BATCH) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "fleet: cannot read the outbox");
                Vec::new()
            }
        };
        let full = waiting.len() == PUBLISH_BATCH;
        let mut seqs = Vec::with_capacity(waiting.len());
        let mut messages = Vec::with_capacity(waiting.len());
        let mut unreadable = Vec::new();
        for (seq, bytes) in waiting {
            let announcement: Announcement = match serde_json::from_slice(&bytes) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(seq, error = %e, "fleet: an outbox entry cannot be read; dropped");
                    unreadable.push(seq);
                    continue;
                }
            };
            let decision = outgoing(&announcement, &self.host);
            seqs.push(seq);
            messages.push((decision.msg_id(), wire::seal(&decision, &self.key)));
        }
        let sent = if messages.is_empty() {
            None
        } else {
            Some(InFlight {
                seqs,
                sent: link.send_many(messages).await,
            })
        };
        let previous = std::mem::replace(&mut self.in_flight, sent);
        let mut settled = self.settle(previous, unreadable).await;
        if !full && settled.is_ok() {
            let last = self.in_flight.take();
            settled = self.settle(last, Vec::new()).await;
        }
        if !full || self.gauged.elapsed() >= GAUGE_EVERY {
            self.gauged = tokio::time::Instant::now();
            self.stats.fleet.outbox.store(self.outbox.depth(), Relaxed);
        }
        settled.map(|()| full)
    }

    /// Waits for a sent batch's acknowledgements and forgets, in one write, what the
    /// stream took and the `unreadable` entries. What failed stays for the next round
    /// after a reconnect (a second publish of what did land is a duplicate the stream
    /// drops).
    async fn settle(
        &mut self,
        batch: Option<InFlight>,
        mut done: Vec<u64>,
    ) -> Result<(), nats::NatsError> {
        let mut failed = None;
        let mut published = 0;
        if let Some(InFlight { seqs, sent }) = batch {
            for (seq, result) in seqs.into_iter().zip(sent.acknowledged().await) {
                match result {
                    Ok(_) => {
                        done.push(seq);
                        published += 1;
                    }
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
        }
        if !done.is_empty() {
            if let Err(e) = self.outbox.published(&done) {
                tracing::warn!(error = %e, "fleet: cannot forget published outbox entries (they will be published again, as duplicates)");
            }
        }
        self.stats.fleet.published.fetch_add(published, Relaxed);
        failed.map_or(Ok(()), Err)
    }
}

/// A batch of outbox entries sent, its acknowledgements still to come.
struct InFlight {
    seqs: Vec<u64>,
    sent: nats::Sent,
}

struct Receiver {
    host: String,
    nats: NatsOptions,
    own: ed25519_dalek::VerifyingKey,
    decisions: mpsc::Sender<Decided>,
    trust: watch::Receiver<Trust>,
    ignore: IgnoreList,
    stats: Arc<Stats>,
    clock: Arc<dyn Clock>,
}

impl Receiver {
    async fn run(mut self, shutdown: CancellationToken) {
        let name = format!("gaoler {} consumer", self.host);
        let first = self.trust.borrow().clone();
        let mut admission = Admission::new(self.own, first.trusted, first.limits);
        'connect: while let Some(link) =
            link(&self.nats, &name, &self.stats, &shutdown, &|| {}).await
        {
            let mut consumer = match link.consumer(&self.host).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "fleet: cannot open this host's consumer; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue 'connect,
                    }
                }
            };
            tracing::info!(consumer = consumer.name(), "fleet: following the stream");
            let mut gauged = tokio::time::Instant::now();
            loop {
                let batch = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    b = consumer.next_batch(CONSUME_BATCH, PULL_WAIT) => b,
                };
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "fleet: the stream cannot be read; reconnecting");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => continue 'connect,
                        }
                    }
                };
                let busy = !batch.is_empty();
                if busy && !self.take(&mut admission, batch, &shutdown).await {
                    return;
                }
                if !busy || gauged.elapsed() >= GAUGE_EVERY {
                    gauged = tokio::time::Instant::now();
                    if let Ok(lag) = consumer.pending().await {
                        self.stats.fleet.lag.store(lag, Relaxed);
                    }
                }
            }
        }
    }

    /// Checks and applies one batch, then acknowledges it once the ban manager saved
    /// what it applied. False when the daemon is stopping.
    async fn take(
        &mut self,
        admission: &mut Admission,
        batch: Vec<nats::Delivery>,
        shutdown: &CancellationToken,
    ) -> bool {
        // A reload's trust applies from the next message on.
        if self.trust.has_changed().unwrap_or(false) {
            let t = self.trust.borrow_and_update().clone();
            admission.set_trust(t.trusted, t.limits);
        }
        let now = self.clock.now();
        let apply = self.trust.borrow().apply;
        // A message over its origin's rate is not acknowledged: it comes again after
        // the ack wait, so the cap slows a flood down and loses nothing.
        let mut later = vec![false; batch.len()];
        let verdicts = admission.check_all(
            batch.iter().map(|d| d.payload.as_slice()),
            now,
            &self.ignore,
        );
        for (i, (delivery, verdict)) in batch.iter().zip(verdicts).enumerate() {
            self.stats.fleet.received.fetch_add(1, Relaxed);
            match verdict {
                Ok(_) if !apply => {}
                Ok(sealed) => {
                    if self.decisions.send(incoming(sealed)).await.is_err() {
                        return false;
                    }
                }
                Err(Rejected::Own) => {}
                Err(r) => {
                    later[i] = r == Rejected::RateLimited;
                    self.stats.fleet.reject(r.label());
                    tracing::debug!(reason = %r, seq = delivery.sequence, "fleet: message rejected");
                }
            }
        }
        // Acknowledged once saved: a crash before that gets the batch again. The wait
        // runs beside the next batch (the stream holds at most its ack-pending limit
        // unacknowledged), so reading and saving overlap.
        let (saved, answer) = oneshot::channel();
        if self.decisions.send(Decided::Saved(saved)).await.is_err() {
            return false;
        }
        let deliveries: Vec<nats::Delivery> = batch
            .into_iter()
            .zip(later)
            .filter(|(_, later)| !later)
            .map(|(delivery, _)| delivery)
            .collect();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = answer => if r.is_err() {
                    // Not saved (the store refused): the manager keeps and retries
                    // those bans; the messages come again after the ack wait.
                    return;
                }
            }
            // The acknowledgements go out together, confirmed by one round trip.
            if let Err(e) = nats::acknowledge(deliveries).await {
                tracing::debug!(error = %e, "fleet: acknowledgements lost (their messages come again)");
            }
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{test_ban, test_time};

    #[test]
    fn an_announcement_goes_out_as_this_hosts_signed_decision_and_comes_back_as_its_origin() {
        let mut ban = test_ban("sshd", "192.0.2.7");
        ban.count = 2;
        let a = Announcement {
            kind: AnnouncementKind::Ban,
            ban: ban.clone(),
            at: ban.banned_at,
        };
        let d = outgoing(&a, "web-1");
        assert_eq!(d.host, "web-1");
        assert_eq!(
            (d.jail.as_str(), d.target, d.count),
            ("sshd", ban.target, 2)
        );
        assert_eq!((d.banned_at, d.expires_at), (ban.banned_at, ban.expires_at));
        let key = SigningKey::from_bytes(&[7; 32]);
        let sealed = wire::open(&wire::seal(&d, &key)).expect("open");
        match incoming(sealed) {
            Decided::Received(r) => {
                assert_eq!(r.origin.host, "web-1");
                assert_eq!(r.origin.key, keys::public_text(&key.verifying_key()));
                assert_eq!(r.origin.id, d.id);
                assert_eq!(
                    (r.target, r.expires_at, r.count),
                    (ban.target, ban.expires_at, 2)
                );
            }
            other => panic!("{other:?}"),
        }
        // The unban names the same ban id, so it lifts exactly that ban elsewhere.
        let u = outgoing(
            &Announcement {
                kind: AnnouncementKind::Unban,
                ban,
                at: test_time(),
            },
            "web-1",
        );
        assert_eq!(u.id, d.id);
        assert_ne!(u.msg_id(), d.msg_id());
        match incoming(wire::open(&wire::seal(&u, &key)).expect("open")) {
            Decided::Lift(l) => assert_eq!(l.origin.id, d.id),
            other => panic!("{other:?}"),
        }
    }
}
