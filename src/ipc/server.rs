//! The control socket: bound safely (a live daemon on it is refused, a stale file is
//! replaced, mode 0600, or 0660 with `socket_group`), each peer's credentials checked,
//! and each connection's requests answered by one handler per request kind. Ban state
//! is never touched here: requests go to the ban manager.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::access::{allowed, denied_message, Peer, SocketGroup};
use super::{
    decode_request, BanView, JailStatus, Request, Response, ResponseFrame, StatsReport,
    StatusReport, MAX_FRAME, PROTOCOL_VERSION,
};
use crate::ban::Command;
use crate::logging::LogControl;
use crate::stats::Stats;
use crate::types::Target;
use crate::units::parse_bantime;

/// How long a connection may sit idle before it is closed.
const IDLE: Duration = Duration::from_secs(60);

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

/// Answers requests; cheap to share between connections.
pub struct Handler {
    pub commands: mpsc::Sender<Command>,
    pub stats: Arc<Stats>,
    /// (jail, filter) of the enabled jails, in order; replaced by a reload.
    pub jails: RwLock<Vec<(String, String)>>,
    /// Besides root and the daemon's user, who may send requests.
    pub group: Option<SocketGroup>,
    /// Reloads go to the daemon's supervisor, which answers when done.
    pub reload: mpsc::Sender<oneshot::Sender<Response>>,
    /// The daemon's own log: level and file.
    pub logs: Arc<LogControl>,
}

/// Accepts connections until `shutdown`.
pub async fn serve(listener: UnixListener, handler: Arc<Handler>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tracker.spawn(connection(stream, handler.clone(), shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %crate::util::io_reason(&e), "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection(stream: UnixStream, handler: Arc<Handler>, shutdown: CancellationToken) {
    let peer = stream.peer_cred().ok().map(|c| Peer {
        uid: c.uid(),
        gid: c.gid(),
        pid: c.pid(),
    });
    if !peer.is_some_and(|p| allowed(&p, handler.group.as_ref())) {
        tracing::warn!(
            uid = peer.map(|p| p.uid),
            pid = peer.and_then(|p| p.pid),
            "refused a control connection from a user that is neither root nor in socket_group"
        );
        let frame = ResponseFrame {
            v: PROTOCOL_VERSION,
            response: Response::Error {
                usage: false,
                message: denied_message(handler.group.as_ref().map(|g| g.name.as_str())),
            },
        };
        let mut stream = stream;
        if let Ok(mut bytes) = serde_json::to_vec(&frame) {
            bytes.push(b'\n');
            let _ = stream.write_all(&bytes).await;
        }
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut reader).take(MAX_FRAME as u64 + 1);
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(IDLE, limited.read_until(b'\n', &mut line)) => r,
        };
        let (response, close) = match read {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(_)) if line.len() > MAX_FRAME => (
                Response::Error {
                    usage: true,
                    message: format!("request larger than {} KiB refused", MAX_FRAME / 1024),
                },
                true,
            ),
            Ok(Ok(_)) => match decode_request(&line) {
                Ok(request) => (handler.handle(request).await, false),
                Err(response) => (response, false),
            },
        };
        let frame = ResponseFrame {
            v: PROTOCOL_VERSION,
            response,
        };
        let Ok(mut bytes) = serde_json::to_vec(&frame) else {
            return;
        };
        bytes.push(b'\n');
        if write.write_all(&bytes).await.is_err() || close {
            return;
        }
    }
}

fn usage(message: impl Into<String>) -> Response {
    Response::Error {
        usage: true,
        message: message.into(),
    }
}

fn gone() -> Response {
    Response::Error {
        usage: false,
        message: "the daemon is shutting down".into(),
    }
}

impl Handler {
    pub async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Ping => Response::Pong {
                version: env!("CARGO_PKG_VERSION").into(),
            },
            Request::Version => Response::Version {
                version: env!("CARGO_PKG_VERSION").into(),
                protocol: PROTOCOL_VERSION,
            },
            Request::Status { jail } => self.status(jail).await,
            Request::Banned { jail } => {
                if let Some(j) = &jail {
                    if !self.knows(j) {
                        return usage(format!("no enabled jail named `{j}`"));
                    }
                }
                match self.list(jail).await {
                    Some(bans) => Response::Bans { bans },
                    None => gone(),
                }
            }
            Request::Ban { jail, ip, bantime } => self.ban(jail, ip, bantime).await,
            Request::Unban { ip, jail, all } => self.unban(ip, jail, all).await,
            Request::Stats => Response::Stats(StatsReport {
                lines_read: self.stats.lines_read.load(Relaxed),
                failures: self.stats.failures.load(Relaxed),
                bans: self.stats.bans.load(Relaxed),
                tracked: self.stats.tracked(),
                evicted: self.stats.evicted.load(Relaxed),
                repairs: self.stats.repairs.load(Relaxed),
                lines_cut: self.stats.lines_cut.load(Relaxed),
            }),
            Request::LogLevel { level } => match self.logs.set_level(&level) {
                Ok(()) => {
                    tracing::info!(level = %level.to_ascii_lowercase(), "log level changed by ctl");
                    Response::LogLevel {
                        level: level.to_ascii_lowercase(),
                    }
                }
                Err(e) => usage(e.to_string()),
            },
            Request::FlushLogs => match self.logs.reopen() {
                Ok(file) => Response::LogsFlushed {
                    file: file.map(|f| f.display().to_string()),
                },
                Err(e) => Response::Error {
                    usage: false,
                    message: e.to_string(),
                },
            },
            Request::Reload => {
                let (reply, answer) = oneshot::channel();
                if self.reload.send(reply).await.is_err() {
                    return gone();
                }
                answer.await.unwrap_or_else(|_| gone())
            }
        }
    }

    /// The (jail, filter) rows of the running configuration.
    fn rows(&self) -> Vec<(String, String)> {
        self.jails.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn knows(&self, jail: &str) -> bool {
        self.rows().iter().any(|(j, _)| j == jail)
    }

    async fn list(&self, jail: Option<String>) -> Option<Vec<BanView>> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::List { jail, reply })
            .await
            .ok()?;
        rx.await
            .ok()
            .map(|bans| bans.iter().map(BanView::from).collect())
    }

    async fn status(&self, jail: Option<String>) -> Response {
        if let Some(j) = &jail {
            if !self.knows(j) {
                return usage(format!("no enabled jail named `{j}`"));
            }
        }
        let banned = match &jail {
            Some(_) => match self.list(jail.clone()).await {
                Some(bans) => bans.into_iter().map(|b| b.ip).collect(),
                None => return gone(),
            },
            None => Vec::new(),
        };
        let jails = self
            .rows()
            .into_iter()
            .filter(|(name, _)| jail.as_ref().is_none_or(|j| j == name))
            .map(|(name, filter)| {
                let c = self.stats.jail(&name);
                let get = |f: fn(&crate::stats::JailCounters) -> u64| c.as_deref().map_or(0, f);
                JailStatus {
                    name,
                    filter,
                    currently_banned: get(|c| c.currently_banned.load(Relaxed)),
                    total_banned: get(|c| c.total_banned.load(Relaxed)),
                    currently_failed: get(|c| c.currently_failed.load(Relaxed)),
                    total_failed: get(|c| c.total_failed.load(Relaxed)),
                    banned: banned.clone(),
                }
            })
            .collect();
        Response::Status(StatusReport { jails })
    }

    async fn ban(&self, jail: String, ip: String, bantime: Option<String>) -> Response {
        let target: Target = match ip.parse() {
            Ok(t) => t,
            Err(e) => return usage(e.to_string()),
        };
        let bantime = match bantime.as_deref().map(parse_bantime) {
            None => None,
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => return usage(format!("--bantime: {e}")),
        };
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Ban {
            jail,
            target,
            bantime,
            reply,
        };
        if self.commands.send(cmd).await.is_err() {
            return gone();
        }
        match rx.await {
            Ok(Ok(ban)) => Response::Banned {
                ban: BanView::from(&ban),
            },
            Ok(Err(e)) => Response::Error {
                usage: e.is_usage(),
                message: e.to_string(),
            },
            Err(_) => gone(),
        }
    }

    async fn unban(&self, ip: Option<String>, jail: Option<String>, all: bool) -> Response {
        let target = match (ip, all) {
            (Some(_), true) => return usage("give an address or --all, not both"),
            (None, false) => return usage("give the address to unban, or --all"),
            (None, true) => None,
            (Some(ip), false) => match ip.parse::<Target>() {
                Ok(t) => Some(t),
                Err(e) => return usage(e.to_string()),
            },
        };
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Unban {
                target,
                jail,
                reply,
            })
            .await
            .is_err()
        {
            return gone();
        }
        match rx.await {
            Ok(Ok(bans)) => Response::Unbanned {
                bans: bans.iter().map(BanView::from).collect(),
            },
            Ok(Err(e)) => Response::Error {
                usage: e.is_usage(),
                message: e.to_string(),
            },
            Err(_) => gone(),
        }
    }
}
