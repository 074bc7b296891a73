//! A durable pull consumer and what it delivers: one long-lived pull stream (the
//! server sends each message as soon as it is stored), batches of what has come, and
//! acknowledgements the server confirms.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use async_nats::Client;
use futures_util::StreamExt;

use super::{api_reason, NatsError};

/// How long a batch waits for the next message once one came.
const LINGER: Duration = Duration::from_millis(1);

/// A durable pull consumer.
pub struct Consumer {
    pub(super) inner: jetstream::consumer::Consumer<pull::Config>,
    /// The pull stream, kept between batches: the server sends a message as soon as
    /// it is stored, and a batch hands out what has come.
    pub(super) messages: Option<pull::Stream>,
    pub(super) client: Client,
    pub(super) stream: String,
    pub(super) durable: String,
}

/// One delivered message; `ack` it once it is applied, or it comes again after the
/// ack wait (10 s).
pub struct Delivery {
    pub payload: Vec<u8>,
    /// Its sequence in the stream.
    pub sequence: u64,
    message: jetstream::Message,
    stream: String,
    durable: String,
}

impl Consumer {
    fn fail(&self, reason: String) -> NatsError {
        NatsError::Consume {
            stream: self.stream.clone(),
            durable: self.durable.clone(),
            reason,
        }
    }

    /// The consumer's name on the server.
    pub fn name(&self) -> &str {
        &self.durable
    }

    /// Up to `max` messages: waits at most `wait` for the first, then takes what has
    /// come with it; an empty batch when nothing came. The pull stream stays open
    /// between calls (the server delivers each message as soon as it is stored, so a
    /// ban travels without waiting for a pull to expire); an error closes it, and the
    /// next call opens it again.
    pub async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, NatsError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        if self.client.connection_state() != async_nats::connection::State::Connected {
            self.messages = None;
            return Err(self.fail("not connected to NATS (reconnecting)".to_string()));
        }
        if self.messages.is_none() {
            let stream = self
                .inner
                .stream()
                .max_messages_per_batch(max)
                .heartbeat(Duration::from_secs(2))
                .expires(Duration::from_secs(5))
                .messages()
                .await
                .map_err(|e| self.fail(format!("pull request: {e}")))?;
            self.messages = Some(stream);
        }
        let mut out = Vec::new();
        let first = match self.messages.as_mut() {
            Some(stream) => tokio::time::timeout(wait, stream.next()).await,
            None => return Ok(out),
        };
        match first {
            Err(_) => return Ok(out),
            Ok(Some(Ok(message))) => out.push(self.delivery(message)),
            Ok(Some(Err(e))) => {
                self.messages = None;
                return Err(self.fail(format!("pull: {e}")));
            }
            Ok(None) => {
                self.messages = None;
                return Err(self.fail("the pull stream ended".to_string()));
            }
        }
        // What comes within a millisecond of the one before joins the batch.
        while out.len() < max {
            let next = match self.messages.as_mut() {
                Some(stream) => tokio::time::timeout(LINGER, stream.next()).await,
                None => break,
            };
            match next {
                Ok(Some(Ok(message))) => out.push(self.delivery(message)),
                Ok(Some(Err(_)) | None) => {
                    self.messages = None;
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(out)
    }

    fn delivery(&self, message: jetstream::Message) -> Delivery {
        let sequence = message.info().map_or(0, |i| i.stream_sequence);
        Delivery {
            payload: message.payload.to_vec(),
            sequence,
            message,
            stream: self.stream.clone(),
            durable: self.durable.clone(),
        }
    }

    /// Messages in the stream this consumer has not acknowledged yet (its lag): those
    /// not delivered, and those delivered (prefetched by the pull stream) and not
    /// acknowledged.
    pub async fn pending(&self) -> Result<u64, NatsError> {
        let info = self.inner.get_info().await.map_err(|e| {
            let code = match e.kind() {
                jetstream::context::ConsumerInfoErrorKind::JetStream(j) => Some(j.error_code()),
                _ => None,
            };
            self.fail(format!("consumer info: {}", api_reason(&e, code)))
        })?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }
}

impl Delivery {
    /// Acknowledges the message and waits for the server to confirm, so a confirmed
    /// message is never delivered to this consumer again.
    pub async fn ack(self) -> Result<(), NatsError> {
        acknowledge(vec![self]).await
    }

    fn failed(&self, e: impl std::fmt::Display) -> NatsError {
        NatsError::Consume {
            stream: self.stream.clone(),
            durable: self.durable.clone(),
            reason: format!("acknowledging message {}: {e}", self.sequence),
        }
    }
}

/// Acknowledges deliveries of one consumer, in order, and waits for the server to
/// confirm them all with one round trip: each but the last is sent without asking
/// for an answer, and the last asks. The server handles a connection's messages in
/// order, so its answer to the last means it has taken every one before it.
pub async fn acknowledge(deliveries: Vec<Delivery>) -> Result<(), NatsError> {
    let Some((last, rest)) = deliveries.split_last() else {
        return Ok(());
    };
    for d in rest {
        d.message.ack().await.map_err(|e| d.failed(e))?;
    }
    last.message.double_ack().await.map_err(|e| last.failed(e))
}
