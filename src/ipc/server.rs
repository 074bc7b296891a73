//! The control socket: bound safely (a live daemon on it is refused, a stale file is
//! replaced, mode 0600, or 0660 with `socket_group`), each peer's credentials checked,
//! and each connection's requests answered by the `Handler` (`handler.rs`). Ban state
//! is never touched here: requests go to the ban manager. No client can stall the
//! daemon or grow its memory: connections are capped below the open-files limit, a
//! client that does not read its answer is dropped, and the bans are written as they
//! are serialized from one list shared by every client.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::access::{allowed, denied_message, Peer, SocketGroup};
use super::answer::{frame_bytes, send_bans, send_events, Answer, Out};
use super::handler::usage;
pub use super::handler::Handler;
use super::{decode_request, Response, MAX_FRAME};

/// How long a connection may sit idle before it is closed.
const IDLE: Duration = Duration::from_secs(60);
/// The most connections served at once, whatever the open-files limit.
const MAX_CONNECTIONS: usize = 256;
/// The pause after a failed accept (EMFILE): the connection stays queued, so retrying
/// at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How many connections are served at once under a limit of `fd_limit` open files: a
/// quarter of them at most, so that nft's pipes, the store, the followed logs and the
/// metrics keep the rest.
pub fn connection_cap(fd_limit: u64) -> usize {
    usize::try_from(fd_limit / 4)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_CONNECTIONS)
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another gaoler daemon is already answering on {0}: stop it first, or give this one another socket")]
    InUse(PathBuf),
    #[error("cannot create the control socket {path}: {reason}")]
    Bind { path: PathBuf, reason: String },
}

/// Fails when a daemon already answers on `path`; called first at start, so that a
/// second daemon touches neither the table nor the state.
pub fn refuse_if_live(path: &Path) -> Result<(), SocketError> {
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(SocketError::InUse(path.to_path_buf()));
    }
    Ok(())
}

/// Binds the control socket at `path`, replacing a stale socket file: mode 0600, or
/// 0660 and owned by `group`.
pub fn bind(path: &Path, group: Option<&SocketGroup>) -> Result<UnixListener, SocketError> {
    let err = |reason: String| SocketError::Bind {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(crate::util::io_reason(&e)))?;
    }
    refuse_if_live(path)?;
    if path.exists() {
        tracing::info!(socket = %path.display(), "removing a stale control socket");
        std::fs::remove_file(path).map_err(|e| err(crate::util::io_reason(&e)))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err(crate::util::io_reason(&e)))?;
    let mode = match group {
        Some(g) => {
            std::os::unix::fs::chown(path, None, Some(g.gid)).map_err(|e| {
                err(format!(
                    "giving it to group {}: {}",
                    g.name,
                    crate::util::io_reason(&e)
                ))
            })?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| err(crate::util::io_reason(&e)))?;
    Ok(listener)
}

/// Accepts connections until `shutdown`, serving at most `connection_cap` of the
/// open-files limit at once; a connection over the cap is told the daemon is busy and
/// closed. Each connection has its own task, and its reads and writes their deadlines,
/// so nothing here waits on a client.
pub async fn serve(listener: UnixListener, handler: Arc<Handler>, shutdown: CancellationToken) {
    let cap = connection_cap(crate::util::fd_limit());
    tracing::debug!(
        cap,
        "control socket: at most {cap} connections served at once"
    );
    accept_loop(listener, handler, shutdown, cap).await;
}

async fn accept_loop(
    listener: UnixListener,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
    cap: usize,
) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(cap));
    // Both come in bursts: each is logged when it starts, and with its count when it ends.
    let (mut refused, mut failed) = (Burst::default(), Burst::default());
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                if failed.hit() {
                    tracing::warn!(
                        error = %crate::util::io_reason(&e),
                        "control socket: accept failed; retrying every {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    );
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if let Some(n) = failed.end() {
            tracing::info!(failed = n, "control socket: accepting again");
        }
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                if let Some(n) = refused.end() {
                    tracing::info!(
                        refused = n,
                        "control socket: serving again after refusing {n} connections over the cap"
                    );
                }
                let (handler, shutdown) = (handler.clone(), shutdown.clone());
                tracker.spawn(async move {
                    connection(stream, handler, shutdown).await;
                    drop(slot);
                });
            }
            Err(_) => {
                if refused.hit() {
                    tracing::warn!(
                        cap,
                        "control socket: {cap} connections are open, the most served at once; refusing new ones until some close"
                    );
                }
                refuse(stream, cap);
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// A run of the same trouble, counted so that it is logged twice, not once per event.
#[derive(Default)]
struct Burst(u64);

impl Burst {
    /// Counts one more; true for the first of a run.
    fn hit(&mut self) -> bool {
        self.0 += 1;
        self.0 == 1
    }

    /// Ends the run: how many there were, if any.
    fn end(&mut self) -> Option<u64> {
        (self.0 > 0).then(|| std::mem::take(&mut self.0))
    }
}

/// Tells a connection over the cap that the daemon is busy, and closes it. A fresh
/// socket takes a short line at once, so the (non-blocking) write never waits.
fn refuse(stream: UnixStream, cap: usize) {
    use std::io::Write;
    let busy = Response::Error {
        usage: false,
        message: format!(
            "the daemon is busy: {cap} ctl connections are open, the most it serves at once; try again in a moment"
        ),
    };
    if let (Ok(stream), Some(bytes)) = (stream.into_std(), frame_bytes(busy)) {
        let _ = (&stream).write(&bytes);
    }
}

async fn connection(stream: UnixStream, handler: Arc<Handler>, shutdown: CancellationToken) {
    let peer = stream.peer_cred().ok().map(|c| Peer {
        uid: c.uid(),
        gid: c.gid(),
        pid: c.pid(),
    });
    let (read, write) = stream.into_split();
    let mut out = Out {
        half: write,
        shutdown: shutdown.clone(),
    };
    if !peer.is_some_and(|p| allowed(&p, handler.group.as_ref())) {
        tracing::warn!(
            uid = peer.map(|p| p.uid),
            pid = peer.and_then(|p| p.pid),
            "refused a control connection from a user that is neither root nor in socket_group"
        );
        let denied = Response::Error {
            usage: false,
            message: denied_message(handler.group.as_ref().map(|g| g.name.as_str())),
        };
        if let Some(bytes) = frame_bytes(denied) {
            out.send(&bytes).await;
        }
        return;
    }
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut reader).take(MAX_FRAME as u64 + 1);
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(IDLE, limited.read_until(b'\n', &mut line)) => r,
        };
        let (answer, close) = match read {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(_)) if line.len() > MAX_FRAME => (
                Answer::Frame(usage(format!(
                    "request larger than {} KiB refused",
                    MAX_FRAME / 1024
                ))),
                true,
            ),
            Ok(Ok(_)) => match decode_request(&line) {
                Ok(request) => (handler.handle(request).await, false),
                Err(response) => (Answer::Frame(response), false),
            },
        };
        let sent = match answer {
            Answer::Frame(response) => match frame_bytes(response) {
                Some(bytes) => out.send(&bytes).await,
                None => false,
            },
            Answer::Bans {
                all,
                jail,
                evidence,
            } => send_bans(&mut out, &all, jail.as_deref(), evidence.as_deref()).await,
            Answer::Events { events, jail } => {
                send_events(&mut out, events, jail.as_deref()).await;
                return;
            }
        };
        if !sent || close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ban::Command;
    use crate::ipc::answer::{CHUNK, WRITE_TIMEOUT};
    use crate::ipc::{BanView, Request, ResponseFrame, PROTOCOL_VERSION};
    use crate::logging::LogControl;
    use crate::stats::Stats;
    use crate::types::Ban;
    use std::sync::RwLock;
    use tokio::io::AsyncWriteExt;
    use tokio::sync::mpsc;

    use crate::types::{test_ban, test_time};

    /// `n` bans, every third in jail `web`, the rest in `sshd`; some expire.
    fn bans(n: u32) -> Vec<Ban> {
        (0..n)
            .map(|i| {
                let jail = if i % 3 == 0 { "web" } else { "sshd" };
                let ip = std::net::Ipv4Addr::from(0x0A00_0000 + i).to_string();
                let mut ban = test_ban(jail, &ip);
                if i % 2 == 0 {
                    ban.expires_at = Some(test_time() + chrono::Duration::hours(1));
                }
                ban
            })
            .collect()
    }

    /// A handler whose ban manager answers `List` with `bans`.
    fn handler_with(bans: Vec<Ban>) -> Arc<Handler> {
        let (commands, mut rx) = mpsc::channel(8);
        let all = Arc::new(bans);
        tokio::spawn(async move {
            while let Some(command) = rx.recv().await {
                if let Command::List { reply } = command {
                    let _ = reply.send(all.clone());
                }
            }
        });
        Arc::new(Handler {
            commands,
            stats: Arc::new(Stats::new(["sshd", "web"])),
            jails: RwLock::new(vec![
                ("sshd".into(), "sshd".into()),
                ("web".into(), "nginx".into()),
            ]),
            group: None,
            reload: mpsc::channel(1).0,
            logs: Arc::new(LogControl::detached()),
            fleet: false,
            evidence: Arc::new(crate::store::SharedStore::default()),
            events: crate::notify::followers(),
        })
    }

    /// Sends `request` and reads one answer line; `None` when the daemon closed first.
    async fn ask(stream: &mut UnixStream, request: Request) -> Option<Response> {
        let mut bytes = serde_json::to_vec(&super::super::RequestFrame {
            v: PROTOCOL_VERSION,
            request,
        })
        .expect("json");
        bytes.push(b'\n');
        let _ = stream.write_all(&bytes).await;
        let mut line = Vec::new();
        BufReader::new(stream)
            .read_until(b'\n', &mut line)
            .await
            .ok()?;
        let frame: ResponseFrame = serde_json::from_slice(&line).ok()?;
        Some(frame.response)
    }

    #[test]
    fn the_cap_is_a_quarter_of_the_fd_limit_and_at_most_256() {
        assert_eq!(connection_cap(256), 64);
        assert_eq!(connection_cap(1024), 256);
        assert_eq!(connection_cap(524_288), 256);
        assert_eq!(connection_cap(u64::MAX), 256);
        assert_eq!(connection_cap(3), 1);
    }

    #[test]
    fn bursts_are_counted_from_their_first_event_to_their_end() {
        let mut burst = Burst::default();
        assert_eq!(burst.end(), None);
        assert!(burst.hit());
        assert!(!burst.hit());
        assert!(!burst.hit());
        assert_eq!(burst.end(), Some(3));
        assert!(burst.hit(), "a new burst");
    }

    #[tokio::test]
    async fn the_bans_are_streamed_byte_for_byte_as_serde_writes_the_whole_frame() {
        let all = bans(2_000);
        for jail in [None, Some("web"), Some("none")] {
            let mut out = Out {
                half: Vec::new(),
                shutdown: CancellationToken::new(),
            };
            assert!(send_bans(&mut out, &all, jail, None).await);
            let views = all
                .iter()
                .filter(|b| jail.is_none_or(|j| b.jail == j))
                .map(BanView::from)
                .collect();
            let whole = frame_bytes(Response::Bans { bans: views }).expect("json");
            assert!(out.half == whole, "jail {jail:?}");
        }
        assert!(frame_bytes(Response::Bans { bans: Vec::new() }).is_some_and(|b| b.len() < CHUNK));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_is_dropped_and_others_are_still_served() {
        // About 3 MB of answer: far more than the socket's buffer takes.
        let handler = handler_with(bans(20_000));
        let shutdown = CancellationToken::new();
        let (mut lazy, server) = UnixStream::pair().expect("socketpair");
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(connection(server, handler.clone(), shutdown.clone()));
        let request = serde_json::to_vec(&super::super::RequestFrame {
            v: PROTOCOL_VERSION,
            request: Request::Banned {
                jail: None,
                matches: false,
            },
        })
        .expect("json");
        lazy.write_all(&request).await.expect("send");
        lazy.write_all(b"\n").await.expect("send");

        // Meanwhile another client is answered.
        let (mut other, server) = UnixStream::pair().expect("socketpair");
        tokio::spawn(connection(server, handler.clone(), shutdown.clone()));
        let answer = ask(&mut other, Request::Ping).await;
        assert!(matches!(answer, Some(Response::Pong { .. })), "{answer:?}");

        tokio::time::timeout(WRITE_TIMEOUT * 3, task)
            .await
            .expect("the lazy client is dropped")
            .expect("task");
        assert!(started.elapsed() >= WRITE_TIMEOUT, "not before its timeout");
        let mut got = Vec::new();
        lazy.read_to_end(&mut got).await.expect("read");
        assert!(
            !got.is_empty() && got.len() < 1024 * 1024 && !got.ends_with(b"\n"),
            "a piece of the answer, then the end: {} bytes",
            got.len()
        );
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_told_the_daemon_is_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        let listener = bind(&path, None).expect("bind");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(accept_loop(
            listener,
            handler_with(bans(10)),
            shutdown.clone(),
            2,
        ));
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = UnixStream::connect(&path).await.expect("connect");
            assert!(matches!(
                ask(&mut s, Request::Ping).await,
                Some(Response::Pong { .. })
            ));
            held.push(s);
        }
        let mut third = UnixStream::connect(&path).await.expect("connect");
        match ask(&mut third, Request::Ping).await {
            Some(Response::Error {
                usage: false,
                message,
            }) => {
                assert!(message.contains("busy: 2 ctl connections"), "{message}")
            }
            other => panic!("{other:?}"),
        }

        // One leaves: its slot is free again once the daemon saw it go.
        drop(held.pop());
        let mut served = false;
        for _ in 0..100 {
            let mut s = UnixStream::connect(&path).await.expect("connect");
            if let Some(Response::Bans { bans }) = ask(
                &mut s,
                Request::Banned {
                    jail: None,
                    matches: false,
                },
            )
            .await
            {
                assert_eq!(bans.len(), 10);
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(served, "a connection is served again");
        shutdown.cancel();
        drop(held);
        server.await.expect("the server stops");
    }
}
