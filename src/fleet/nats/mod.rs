//! The NATS edge, and the only code that knows NATS: connect (`connect.rs`: auth,
//! TLS), make sure the JetStream stream is there, publish with dedup (`Nats-Msg-Id`),
//! read through a durable pull consumer (`consumer.rs`). Written against nats-server 2.9 (Debian 12) and newer.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream, ErrorCode};
use async_nats::Client;

mod connect;
mod consumer;
pub use connect::{connect, NatsOptions};
pub use consumer::{acknowledge, Consumer, Delivery};

/// How long a publish waits for the stream's acknowledgement.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// The stream's window in which a repeated `Nats-Msg-Id` is recognised and dropped.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a delivered message may stay unacknowledged before it is delivered again.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// The most messages delivered and not yet acknowledged, per consumer.
const MAX_ACK_PENDING: i64 = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("NATS settings: {0}")]
    Options(String),
    #[error("cannot connect to NATS ({servers}): {reason}")]
    Connect { servers: String, reason: String },
    #[error("JetStream stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("publishing to {subject} (stream {stream}) failed: {reason}")]
    Publish {
        stream: String,
        subject: String,
        reason: String,
    },
    #[error("JetStream consumer {durable} on stream {stream}: {reason}")]
    Consume {
        stream: String,
        durable: String,
        reason: String,
    },
}

/// What the stream said to a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The message's sequence in the stream (the first one's, for a duplicate).
    pub sequence: u64,
    /// The stream already held a message with this id (within its duplicate window).
    pub duplicate: bool,
}

/// A connection to NATS with its JetStream context; async-nats reconnects by itself
/// (to any server it knows) after the first success. Clones share one connection.
#[derive(Clone)]
pub struct Link {
    pub(super) client: Client,
    pub(super) js: jetstream::Context,
    pub(super) stream: String,
    pub(super) subject: String,
    pub(super) max_age: Duration,
    pub(super) replicas: usize,
}

/// The host's name as NATS takes it in a durable consumer's name: anything but
/// `[A-Za-z0-9_-]` becomes `_`.
pub fn durable_name(host: &str) -> String {
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "_".to_string()
    } else {
        name
    }
}

/// Why a JetStream API call failed, with what an operator can do about the common cases.
fn api_reason(e: &(dyn std::error::Error + 'static), code: Option<ErrorCode>) -> String {
    use jetstream::context::{RequestError, RequestErrorKind};
    // The request's own failure, somewhere down the chain of sources.
    let mut request = None;
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = at {
        if let Some(r) = err.downcast_ref::<RequestError>() {
            request = Some(r.kind());
        }
        at = err.source();
    }
    match request {
        // async-nats says "requested JetStream resource does not exist": nobody
        // answers JetStream's API on this server.
        Some(RequestErrorKind::NoResponders) => {
            return "no JetStream on the server (no responders): is JetStream enabled \
                    there (nats-server -js, or a jetstream {} block)?"
                .to_string();
        }
        Some(RequestErrorKind::TimedOut) => {
            return format!(
                "{e} (no answer from JetStream: a cluster may be electing a leader, or \
                 have lost its quorum)"
            );
        }
        _ => {}
    }
    let hint = match code {
        Some(ErrorCode::JETSTREAM_NOT_ENABLED) => {
            " (enable JetStream on the server: nats-server -js, or a jetstream {} block)"
        }
        Some(ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT) => {
            " (enable JetStream for the fleet's NATS account)"
        }
        Some(ErrorCode::INSUFFICIENT_RESOURCES | ErrorCode::CLUSTER_NO_PEERS) => {
            " (the cluster has too few JetStream servers up for the stream's replicas)"
        }
        Some(ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED) => {
            " (replicas above 1 need a JetStream cluster)"
        }
        _ if e.to_string().contains("timed out") => {
            " (no answer from JetStream: a cluster may be electing a leader, or have lost \
             its quorum)"
        }
        _ => "",
    };
    format!("{e}{hint}")
}

impl Link {
    /// The server connected to (the last one while reconnecting), as its INFO names it:
    /// `nats://host:port`, with its `server_name` when it has one.
    pub fn server(&self) -> String {
        let info = self.client.server_info();
        if info.port == 0 {
            return String::new();
        }
        let host = if info.host.contains(':') {
            format!("[{}]", info.host)
        } else {
            info.host
        };
        if info.server_name.is_empty() || info.server_name == info.server_id {
            format!("nats://{host}:{}", info.port)
        } else {
            format!("nats://{host}:{} ({})", info.port, info.server_name)
        }
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn stream_error(&self, reason: String) -> NatsError {
        NatsError::Stream {
            stream: self.stream.clone(),
            reason,
        }
    }

    /// Creates the stream when it is missing (file storage, the subject, `max_age`, a
    /// duplicate window for `Nats-Msg-Id`); when it exists, raises its `max_age` to the
    /// configured one and adds the subject if it lacks it. Never lowers `max_age`, never
    /// changes storage or replicas of an existing stream.
    pub async fn ensure_stream(&self) -> Result<(), NatsError> {
        // Two hosts may create the stream at once: the loser finds it on the second turn.
        for _ in 0..2 {
            match self.js.get_stream(&self.stream).await {
                Ok(s) => return self.adjust_stream(s.cached_info().config.clone()).await,
                Err(e) => {
                    let code = match e.kind() {
                        jetstream::context::GetStreamErrorKind::JetStream(j) => {
                            Some(j.error_code())
                        }
                        _ => None,
                    };
                    if code != Some(ErrorCode::STREAM_NOT_FOUND) {
                        return Err(self.stream_error(api_reason(&e, code)));
                    }
                }
            }
            match self.js.create_stream(self.stream_config()).await {
                Ok(_) => {
                    tracing::info!(
                        stream = %self.stream,
                        subject = %self.subject,
                        "fleet: created the JetStream stream"
                    );
                    return Ok(());
                }
                Err(e) => {
                    let code = match e.kind() {
                        jetstream::context::CreateStreamErrorKind::JetStream(j) => {
                            Some(j.error_code())
                        }
                        _ => None,
                    };
                    if code != Some(ErrorCode::STREAM_NAME_EXIST) {
                        return Err(self.stream_error(api_reason(&e, code)));
                    }
                }
            }
        }
        Err(self.stream_error("created and removed by others meanwhile; try again".to_string()))
    }

    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.subject.clone()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            max_age: self.max_age,
            duplicate_window: duplicate_window(self.max_age),
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    async fn adjust_stream(&self, mut config: stream::Config) -> Result<(), NatsError> {
        let mut changed = Vec::new();
        if !config.subjects.iter().any(|s| s == &self.subject) {
            config.subjects.push(self.subject.clone());
            changed.push(format!("subject {}", self.subject));
        }
        // Zero is "no limit", more than any other age.
        let longer = |a: Duration, b: Duration| !b.is_zero() && (a.is_zero() || a > b);
        if longer(self.max_age, config.max_age) {
            config.max_age = self.max_age;
            changed.push(format!("max_age {:?}", self.max_age));
        }
        if changed.is_empty() {
            return Ok(());
        }
        self.js.update_stream(&config).await.map_err(|e| {
            let code = match e.kind() {
                jetstream::context::CreateStreamErrorKind::JetStream(j) => Some(j.error_code()),
                _ => None,
            };
            self.stream_error(format!(
                "updating it ({}): {}",
                changed.join(", "),
                api_reason(&e, code)
            ))
        })?;
        tracing::info!(stream = %self.stream, changes = %changed.join(", "), "fleet: updated the JetStream stream");
        Ok(())
    }

    /// Publishes `payload` on the subject with `Nats-Msg-Id: msg_id` and waits for the
    /// stream's acknowledgement; a duplicate (the id was stored already) is a success.
    /// Fails at once when the connection is known to be down, so nothing waits in the
    /// client's buffer to go out later: the caller keeps it and publishes again. One
    /// that timed out (a partition not noticed yet) may still reach the stream later;
    /// publishing it again with the same id within the stream's duplicate window (two
    /// minutes) stores it once.
    pub async fn publish(&self, msg_id: &str, payload: Vec<u8>) -> Result<Published, NatsError> {
        let fail = |reason: String| NatsError::Publish {
            stream: self.stream.clone(),
            subject: self.subject.clone(),
            reason,
        };
        if !self.is_connected() {
            return Err(fail("not connected to NATS (reconnecting)".to_string()));
        }
        let message = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(msg_id);
        let send = async {
            let ack = self
                .js
                .send_publish(self.subject.clone(), message)
                .await
                .map_err(|e| fail(publish_reason(&e)))?;
            ack.await.map_err(|e| fail(publish_reason(&e)))
        };
        let ack = tokio::time::timeout(PUBLISH_TIMEOUT, send)
            .await
            .map_err(|_| fail(no_ack()))??;
        Ok(Published {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Publishes `messages` in order (as `publish` does each) and waits for their
    /// acknowledgements together: one round trip for the lot instead of one each.
    /// The results are in the same order; a message whose send failed fails with
    /// every one after it (none of those was sent).
    pub async fn publish_many(
        &self,
        messages: Vec<(String, Vec<u8>)>,
    ) -> Vec<Result<Published, NatsError>> {
        self.send_many(messages).await.acknowledged().await
    }

    /// The first half of [`Link::publish_many`]: sends `messages` in order and returns
    /// without waiting for the stream, so the caller can prepare the next batch while
    /// the server stores this one.
    pub async fn send_many(&self, messages: Vec<(String, Vec<u8>)>) -> Sent {
        let total = messages.len();
        let mut sent = Sent {
            acks: Vec::with_capacity(total),
            total,
            refused: None,
            stream: self.stream.clone(),
            subject: self.subject.clone(),
        };
        if !self.is_connected() {
            sent.refused = Some("not connected to NATS (reconnecting)".to_string());
            return sent;
        }
        for (msg_id, payload) in messages {
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .message_id(&msg_id);
            match self.js.send_publish(self.subject.clone(), message).await {
                Ok(ack) => sent.acks.push(ack),
                Err(e) => {
                    sent.refused = Some(publish_reason(&e));
                    break;
                }
            }
        }
        sent
    }

    /// The durable pull consumer `durable_name(durable)` on the stream: delivers every
    /// message from the first, each acknowledged explicitly. Created when missing,
    /// resumed (after its last acknowledged message) when present.
    pub async fn consumer(&self, durable: &str) -> Result<Consumer, NatsError> {
        let name = durable_name(durable);
        let fail = |reason: String| NatsError::Consume {
            stream: self.stream.clone(),
            durable: name.clone(),
            reason,
        };
        let stream = self.js.get_stream(&self.stream).await.map_err(|e| {
            let code = match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(j) => Some(j.error_code()),
                _ => None,
            };
            fail(api_reason(&e, code))
        })?;
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some("gaoler fleet: bans from other hosts".to_string()),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: MAX_ACK_PENDING,
            ..Default::default()
        };
        let inner = stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| {
                let (code, hint) = match e.kind() {
                    stream::ConsumerErrorKind::JetStream(j) => (Some(j.error_code()), ""),
                    stream::ConsumerErrorKind::InvalidConsumerType => (
                        None,
                        " (a push consumer of that name exists: delete it, gaoler needs a pull consumer)",
                    ),
                    _ => (None, ""),
                };
                fail(format!("{}{hint}", api_reason(&e, code)))
            })?;
        Ok(Consumer {
            inner,
            messages: None,
            client: self.client.clone(),
            stream: self.stream.clone(),
            durable: name,
        })
    }
}

/// The stream's duplicate window: two minutes, but never longer than `max_age`.
/// A batch sent by [`Link::send_many`], its acknowledgements still to come.
pub struct Sent {
    acks: Vec<jetstream::context::PublishAckFuture>,
    total: usize,
    /// Why the send stopped early, if it did.
    refused: Option<String>,
    stream: String,
    subject: String,
}

impl Sent {
    /// Waits for the acknowledgements: a result per message, in order; those not sent
    /// fail with the reason the send stopped.
    pub async fn acknowledged(self) -> Vec<Result<Published, NatsError>> {
        let Sent {
            acks,
            total,
            refused,
            stream,
            subject,
        } = self;
        let fail = |reason: String| NatsError::Publish {
            stream: stream.clone(),
            subject: subject.clone(),
            reason,
        };
        // A big batch on a busy machine gets a little longer (a second per thousand).
        let limit = PUBLISH_TIMEOUT + Duration::from_millis(total as u64);
        let waited = tokio::time::timeout(
            limit,
            futures_util::future::join_all(acks.into_iter().map(|a| async move { a.await })),
        )
        .await;
        let mut out: Vec<Result<Published, NatsError>> = match waited {
            Ok(results) => results
                .into_iter()
                .map(|r| {
                    r.map(|ack| Published {
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                    })
                    .map_err(|e| fail(publish_reason(&e)))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        while out.len() < total {
            let reason = refused.clone().unwrap_or_else(no_ack);
            out.push(Err(fail(reason)));
        }
        out
    }
}

fn duplicate_window(max_age: Duration) -> Duration {
    if max_age.is_zero() {
        DUPLICATE_WINDOW
    } else {
        DUPLICATE_WINDOW.min(max_age)
    }
}

fn no_ack() -> String {
    format!(
        "no acknowledgement from the stream within {PUBLISH_TIMEOUT:?} (is NATS reachable, \
         and the stream's leader up?)"
    )
}

fn publish_reason(e: &jetstream::context::PublishError) -> String {
    use jetstream::context::PublishErrorKind as K;
    match e.kind() {
        K::StreamNotFound => format!("{e} (no stream takes this subject: was it deleted?)"),
        K::TimedOut => no_ack(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_names_keep_only_what_nats_allows() {
        assert_eq!(durable_name("web-1"), "web-1");
        assert_eq!(durable_name("web_1.example.org"), "web_1_example_org");
        assert_eq!(durable_name("a b*c>d"), "a_b_c_d");
        assert_eq!(durable_name("hôte"), "h_te");
        assert_eq!(durable_name(""), "_");
    }

    #[test]
    fn the_duplicate_window_fits_in_max_age() {
        assert_eq!(duplicate_window(Duration::ZERO), DUPLICATE_WINDOW);
        assert_eq!(
            duplicate_window(Duration::from_secs(3600)),
            DUPLICATE_WINDOW
        );
        assert_eq!(
            duplicate_window(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }

    #[tokio::test]
    async fn settings_are_checked_before_connecting() {
        let no_servers = NatsOptions {
            servers: vec![],
            ..Default::default()
        };
        let err = connect(&no_servers, "t").await.err().expect("refused");
        assert!(err.to_string().contains("no NATS server"), "{err}");
        let half_login = NatsOptions {
            user: Some("u".into()),
            ..Default::default()
        };
        let err = connect(&half_login, "t").await.err().expect("refused");
        assert!(err.to_string().contains("needs a password"), "{err}");
        let missing_ca = NatsOptions {
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err = connect(&missing_ca, "t").await.err().expect("refused");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
