//! gaoler's own log: tracing with a level that can change while running (`ctl
//! log-level`, a reload), text or JSON lines (`log_format`), to stderr (journald under
//! systemd) or to `log_file`, which `ctl flush-logs` reopens after logrotate moved it.
//! Lines are written by a logging thread in batches, so a burst of bans does not wait
//! on the disk; never lossy (a full queue makes the caller wait).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{DaemonConfig, LogFormat};

/// Why the log could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    Level(String),
    #[error("cannot change the log level: {0}")]
    Reload(String),
    #[error("cannot open log_file {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("cannot set up logging: {0}")]
    Init(String),
}

/// Changes the running log: its level, and the file it writes to.
pub struct LogControl {
    /// `None` when this process's log is not gaoler's to change (a daemon run
    /// in-process by tests): levels are still checked, nothing else happens.
    filter: Option<reload::Handle<EnvFilter, Registry>>,
    file: Option<Arc<LogFile>>,
    /// Set when GAOLER_LOG chose the filter: a reload then leaves the level alone.
    from_env: bool,
}

impl LogControl {
    /// A control that changes nothing: for a daemon run inside another program.
    pub fn detached() -> LogControl {
        LogControl {
            filter: None,
            file: None,
            from_env: false,
        }
    }

    /// Logs gaoler's events at `level` and above from now on.
    pub fn set_level(&self, level: &str) -> Result<(), LogError> {
        let level = crate::units::parse_level(level).map_err(LogError::Level)?;
        match &self.filter {
            Some(filter) => filter
                .reload(EnvFilter::new(format!("gaoler={level}")))
                .map_err(|e| LogError::Reload(e.to_string())),
            None => Ok(()),
        }
    }

    /// A reload's `log_level`, unless GAOLER_LOG chose the filter.
    pub fn configured_level(&self, level: &str) {
        if !self.from_env {
            if let Err(e) = self.set_level(level) {
                tracing::warn!("{e}");
            }
        }
    }

    /// Reopens `log_file` (after logrotate moved it); `None` when logging to stderr.
    pub fn reopen(&self) -> Result<Option<PathBuf>, LogError> {
        match &self.file {
            Some(f) => f.reopen().map(|()| Some(f.path.clone())),
            None => Ok(None),
        }
    }
}

/// A log file that can be reopened under the same name.
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    fn open(path: &Path) -> Result<LogFile, LogError> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(open_log(path)?),
        })
    }

    fn reopen(&self) -> Result<(), LogError> {
        let fresh = open_log(&self.path)?;
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = file.flush();
        *file = fresh;
        Ok(())
    }
}

fn open_log(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| LogError::Open {
            path: path.to_path_buf(),
            reason: crate::util::io_reason(&e),
        })
}

/// Where lines go: stderr, or the (reopenable) log file.
enum Sink {
    Stderr,
    File(Arc<LogFile>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stderr => std::io::stderr().write(buf),
            Sink::File(f) => f.file.lock().unwrap_or_else(|p| p.into_inner()).write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stderr => std::io::stderr().flush(),
            Sink::File(f) => f.file.lock().unwrap_or_else(|p| p.into_inner()).flush(),
        }
    }
}

/// Installs the daemon's logging. Keep the guard until exit: dropping it writes out
/// what is still queued.
pub fn init(daemon: &DaemonConfig) -> Result<(LogControl, WorkerGuard), LogError> {
    let file = daemon
        .log_file
        .as_deref()
        .map(LogFile::open)
        .transpose()?
        .map(Arc::new);
    let sink = match &file {
        Some(f) => Sink::File(f.clone()),
        None => Sink::Stderr,
    };
    let ansi = file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("gaoler-log")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, sink));
    let (filter, from_env) = match EnvFilter::try_from_env("GAOLER_LOG") {
        Ok(f) => (f, true),
        Err(_) => (
            EnvFilter::new(format!("gaoler={}", daemon.log_level)),
            false,
        ),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let lines = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(writer);
    let format = match daemon.log_format {
        LogFormat::Text => lines.with_ansi(ansi).boxed(),
        LogFormat::Json => lines.json().with_ansi(false).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init()
        .map_err(|e| LogError::Init(e.to_string()))?;
    Ok((
        LogControl {
            filter: Some(handle),
            file,
            from_env,
        },
        guard,
    ))
}
