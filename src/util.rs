//! Small helpers every stage uses: turning OS errors into words a user can act on.

use std::io;

/// A short human reason for an I/O error, never a bare `os error N`.
pub fn io_reason(e: &io::Error) -> String {
    use io::ErrorKind::*;
    let text = match e.kind() {
        NotFound => "no such file or directory",
        PermissionDenied => "permission denied (gaoler runs as root; check ownership and mode)",
        AlreadyExists => "already exists",
        AddrInUse => "address already in use",
        ConnectionRefused => "connection refused",
        ReadOnlyFilesystem => "the file system is read-only",
        StorageFull => "no space left on the device",
        IsADirectory => "is a directory",
        NotADirectory => "a path component is not a directory",
        InvalidData => "invalid data",
        _ => "",
    };
    if text.is_empty() {
        // Strip the " (os error N)" tail std adds.
        let s = e.to_string();
        match s.find(" (os error") {
            Some(i) => s[..i].to_string(),
            None => s,
        }
    } else {
        text.to_string()
    }
}
