//! The ctl side of the socket: send one request, read one response (or, for `ctl
//! events`, every response until the daemon closes). Blocking and small: `ctl` needs
//! no runtime.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Request, RequestFrame, Response, ResponseFrame, MAX_RESPONSE, PROTOCOL_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the gaoler daemon at {path}: {reason} (is `gaoler run` running with this --config?)")]
    Connect { path: PathBuf, reason: String },
    /// The socket's mode (or the daemon) refused this user.
    #[error("{0}")]
    Denied(String),
    #[error("lost the connection to the daemon at {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("the daemon sent an answer this ctl does not understand ({0}): are daemon and ctl the same version?")]
    Decode(String),
}

/// Sends `request` to the daemon at `socket` and returns its answer. `group` is the
/// configured `socket_group`, named when the socket refuses this user.
pub fn request(
    socket: &Path,
    group: Option<&str>,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let mut answer = None;
    exchange(socket, group, request, Some(timeout), &mut |r| {
        answer = Some(r);
        false
    })?;
    answer.ok_or_else(|| ClientError::Io {
        path: socket.to_path_buf(),
        reason: "the daemon closed the connection without answering".into(),
    })
}

/// Sends `request` and hands each response to `each` until it returns false or the
/// daemon closes the connection (no read timeout: events come when they come).
pub fn follow(
    socket: &Path,
    group: Option<&str>,
    request: &Request,
    each: &mut dyn FnMut(Response) -> bool,
) -> Result<(), ClientError> {
    exchange(socket, group, request, None, each)
}

fn exchange(
    socket: &Path,
    group: Option<&str>,
    request: &Request,
    timeout: Option<Duration>,
    each: &mut dyn FnMut(Response) -> bool,
) -> Result<(), ClientError> {
    let io = |e: std::io::Error| ClientError::Io {
        path: socket.to_path_buf(),
        reason: crate::util::io_reason(&e),
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            ClientError::Denied(super::access::denied_message(group))
        }
        _ => ClientError::Connect {
            path: socket.to_path_buf(),
            reason: crate::util::io_reason(&e),
        },
    })?;
    stream.set_read_timeout(timeout).map_err(io)?;
    stream
        .set_write_timeout(Some(timeout.unwrap_or(Duration::from_secs(30))))
        .map_err(io)?;
    let frame = RequestFrame {
        v: PROTOCOL_VERSION,
        request: request.clone(),
    };
    let mut bytes = serde_json::to_vec(&frame).map_err(|e| ClientError::Decode(e.to_string()))?;
    bytes.push(b'\n');
    // A daemon that refuses this user answers and closes at once, so a failed write
    // may still have an answer waiting: read it before reporting the write.
    let wrote = stream.write_all(&bytes);
    let mut reader = BufReader::new(stream);
    let mut answered = false;
    loop {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_RESPONSE as u64)
            .read_until(b'\n', &mut line);
        if line.is_empty() {
            if answered {
                return Ok(());
            }
            wrote.map_err(io)?;
            read.map_err(io)?;
            return Err(ClientError::Io {
                path: socket.to_path_buf(),
                reason: "the daemon closed the connection without answering".into(),
            });
        }
        answered = true;
        let frame: ResponseFrame =
            serde_json::from_slice(&line).map_err(|e| ClientError::Decode(e.to_string()))?;
        if !each(frame.response) {
            return Ok(());
        }
    }
}
