//! The ctl side of the socket: send one request, read one response. Blocking and
//! small: `ctl` needs no runtime.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Request, RequestFrame, Response, ResponseFrame, MAX_RESPONSE, PROTOCOL_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the gaoler daemon at {path}: {reason} (is `gaoler run` running with this --config?)")]
    Connect { path: PathBuf, reason: String },
    #[error("lost the connection to the daemon at {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("the daemon sent an answer this ctl does not understand ({0}): are daemon and ctl the same version?")]
    Decode(String),
}

/// Sends `request` to the daemon at `socket` and returns its answer.
pub fn request(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let io = |e: std::io::Error| ClientError::Io {
        path: socket.to_path_buf(),
        reason: crate::util::io_reason(&e),
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| ClientError::Connect {
        path: socket.to_path_buf(),
        reason: crate::util::io_reason(&e),
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let frame = RequestFrame {
        v: PROTOCOL_VERSION,
        request: request.clone(),
    };
    let mut bytes = serde_json::to_vec(&frame).map_err(|e| ClientError::Decode(e.to_string()))?;
    bytes.push(b'\n');
    stream.write_all(&bytes).map_err(io)?;
    let mut line = Vec::new();
    BufReader::new(stream)
        .take(MAX_RESPONSE as u64)
        .read_until(b'\n', &mut line)
        .map_err(io)?;
    if line.is_empty() {
        return Err(ClientError::Io {
            path: socket.to_path_buf(),
            reason: "the daemon closed the connection without answering".into(),
        });
    }
    let frame: ResponseFrame =
        serde_json::from_slice(&line).map_err(|e| ClientError::Decode(e.to_string()))?;
    Ok(frame.response)
}
