//! How an answer leaves the control socket: one frame serialized whole, or the ban
//! list written as it is serialized (byte for byte what serde writes for the whole
//! frame), in pieces a client must take within a deadline. A connection holds a piece
//! of its answer, never a copy of it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{BanView, Response, ResponseFrame, PROTOCOL_VERSION};
use crate::store::StoreReader;
use crate::types::Ban;

/// How long a client may take to read one `CHUNK` of its answer before it is dropped.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers are written in pieces of this size; the bans as they are serialized.
pub(super) const CHUNK: usize = 32 * 1024;

/// What a request is answered with.
pub enum Answer {
    /// One frame, serialized whole.
    Frame(Response),
    /// A `Response::Bans` frame with the bans of `jail` (every ban when `None`) out of
    /// the manager's shared list, serialized piece by piece as the client reads it.
    Bans {
        all: Arc<Vec<Ban>>,
        jail: Option<String>,
        /// Each ban's evidence, read from the store as it is written (`None`: not
        /// asked for, `matches` is left empty).
        evidence: Option<Arc<dyn StoreReader>>,
    },
    /// `Following`, then each event (of `jail`, or all) as it comes, until the
    /// client goes, the daemon stops, or the client falls behind the broadcast.
    Events {
        events: tokio::sync::broadcast::Receiver<Arc<crate::notify::Event>>,
        jail: Option<String>,
    },
}

/// A frame as it is sent: one line of JSON.
pub(super) fn frame_bytes(response: Response) -> Option<Vec<u8>> {
    let frame = ResponseFrame {
        v: PROTOCOL_VERSION,
        response,
    };
    let mut bytes = serde_json::to_vec(&frame).ok()?;
    bytes.push(b'\n');
    Some(bytes)
}

/// The sending half of a connection: each `CHUNK` must be taken within
/// `WRITE_TIMEOUT`, and nothing more is sent once the daemon stops.
pub(super) struct Out<W> {
    pub(super) half: W,
    pub(super) shutdown: CancellationToken,
}

impl<W: AsyncWrite + Unpin> Out<W> {
    /// Sends `bytes`; false when the client is gone or too slow, or the daemon stops.
    pub(super) async fn send(&mut self, bytes: &[u8]) -> bool {
        for piece in bytes.chunks(CHUNK) {
            let written = tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                w = tokio::time::timeout(WRITE_TIMEOUT, self.half.write_all(piece)) => w,
            };
            match written {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return false,
                Err(_) => {
                    tracing::debug!(
                        "control socket: a client did not read its answer for {} s; dropped",
                        WRITE_TIMEOUT.as_secs()
                    );
                    return false;
                }
            }
        }
        true
    }
}

/// Sends the `Response::Bans` frame of those of `bans` in `jail` (all when `None`),
/// byte for byte what serde writes for the whole frame, serialized one `CHUNK` at a
/// time: a connection holds a piece of its answer, never a copy of it.
pub(super) async fn send_bans<W: AsyncWrite + Unpin>(
    out: &mut Out<W>,
    bans: &[Ban],
    jail: Option<&str>,
    evidence: Option<&dyn StoreReader>,
) -> bool {
    let Some((head, tail)) = bans_frame_ends() else {
        return false;
    };
    let mut buf = Vec::with_capacity(CHUNK + 1024);
    buf.extend_from_slice(&head);
    let wanted = bans.iter().filter(|b| jail.is_none_or(|j| b.jail == j));
    for (i, ban) in wanted.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        let mut view = BanView::from(ban);
        if let Some(reader) = evidence {
            view.matches = reader
                .evidence(&ban.jail, &ban.target)
                .unwrap_or_else(|e| {
                    tracing::debug!(error = %e, jail = %ban.jail, target = %ban.target, "evidence unreadable");
                    Vec::new()
                });
        }
        if serde_json::to_writer(&mut buf, &view).is_err() {
            return false;
        }
        if buf.len() >= CHUNK {
            if !out.send(&buf).await {
                return false;
            }
            buf.clear();
        }
    }
    buf.extend_from_slice(&tail);
    out.send(&buf).await
}

/// Streams events to a `ctl events` client. One that falls more than
/// `notify::FOLLOWER_LAG` events behind is told so and dropped: the daemon never
/// waits for it.
pub(super) async fn send_events<W: AsyncWrite + Unpin>(
    out: &mut Out<W>,
    mut events: tokio::sync::broadcast::Receiver<Arc<crate::notify::Event>>,
    jail: Option<&str>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let Some(bytes) = frame_bytes(Response::Following) else {
        return;
    };
    if !out.send(&bytes).await {
        return;
    }
    loop {
        let event = tokio::select! {
            _ = out.shutdown.cancelled() => return,
            e = events.recv() => e,
        };
        let frame = match event {
            Ok(e) if jail.is_some_and(|j| e.jail != j) => continue,
            Ok(e) => Response::Event(Box::new((*e).clone())),
            Err(RecvError::Lagged(n)) => {
                tracing::debug!(
                    missed = n,
                    "control socket: a ctl events reader fell behind; dropped"
                );
                let told = Response::Error {
                    usage: false,
                    message: format!("this reader fell behind by {n} events and was dropped (the daemon never waits for a reader)"),
                };
                if let Some(bytes) = frame_bytes(told) {
                    out.send(&bytes).await;
                }
                return;
            }
            Err(RecvError::Closed) => return,
        };
        match frame_bytes(frame) {
            Some(bytes) if out.send(&bytes).await => {}
            _ => return,
        }
    }
}

/// A `Bans` frame's bytes before and after its list, as serde writes them (the
/// frame's newline included).
fn bans_frame_ends() -> Option<(Vec<u8>, Vec<u8>)> {
    let mut head = frame_bytes(Response::Bans { bans: Vec::new() })?;
    let at = head.windows(2).position(|w| w == b"[]")? + 1;
    let tail = head.split_off(at);
    Some((head, tail))
}
