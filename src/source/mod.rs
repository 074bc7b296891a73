//! Log sources: where lines come from. `file` follows a log file across rotation and
//! truncation, handing out complete lines only; `watch` wakes followers on inotify
//! events. Sources know nothing about filters or jails.

pub mod file;
pub mod watch;

pub use file::{FileTail, Lines};
pub use watch::DirWatcher;
