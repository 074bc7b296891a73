//! Log sources: where lines come from. `file` follows a log file across rotation and
//! truncation, handing out complete lines only, resuming where it left off; `journal`
//! follows the systemd journal; `watch` wakes file followers on inotify events. Sources know nothing about filters or jails.

pub mod file;
pub mod journal;
pub mod watch;

pub use file::{FileTail, Lines, Start};
pub use watch::DirWatcher;
