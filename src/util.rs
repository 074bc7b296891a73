//! Small helpers every stage uses: turning OS errors into words a user can act on,
//! reading a configuration file safely, the host's own addresses (for
//! `ignoreself`), the open-files limit, and text made safe for a terminal.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// The largest configuration file read: gaoler.toml, a jail, a filter, an
/// `ignoreip = ["file:..."]` list.
pub const MAX_CONFIG_FILE: u64 = 16 * 1024 * 1024;

/// Reads a configuration file: a regular file only, never more than
/// [`MAX_CONFIG_FILE`] bytes. A pipe, a socket or a device (`/dev/zero`) is refused at
/// once: opened without blocking, it is neither waited on nor read without end.
/// `text` as it may be written to a terminal: every control character but the line
/// break (C0, DEL, C1, so ESC and CSI too) and every bidirectional-text control is
/// written as an escape (`\u{1b}`), so text from a log line (a user name, a host
/// name) cannot move the cursor, recolour or rewrite what the operator sees.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

pub fn read_config_file(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    if !meta.is_file() {
        return Err(io::Error::other(
            "is not a regular file (a pipe, a socket or a device): only regular files are read",
        ));
    }
    let too_large = || io::Error::other(format!("is larger than {} MiB", MAX_CONFIG_FILE >> 20));
    if meta.len() > MAX_CONFIG_FILE {
        return Err(too_large());
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_FILE {
        return Err(too_large());
    }
    Ok(text)
}

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

/// The soft limit on open files (RLIMIT_NOFILE); 1024, the usual default, when it
/// cannot be read.
pub fn fd_limit() -> u64 {
    nofile().map_or(1024, |l| l.rlim_cur)
}

/// Raises the soft limit on open files to the hard one (systemd starts a service at
/// 1024 soft), so that ctl, the metrics, nft's pipes and the followed logs have room.
/// Returns the soft limit before and after.
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    let mut limit = nofile()?;
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit for the duration of the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

fn nofile() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `limit`, valid for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// Every address configured on this host's interfaces (in its network namespace).
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list into `list`, released by freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return out;
    }
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_safe_escapes_what_could_drive_a_terminal_and_keeps_line_breaks() {
        assert!(matches!(
            terminal_safe("plain text\nline two"),
            std::borrow::Cow::Borrowed("plain text\nline two")
        ));
        assert_eq!(
            terminal_safe("a\x1b[31mred\x07\x7f\u{9b}2J\tb\rc"),
            "a\\u{1b}[31mred\\u{7}\\u{7f}\\u{9b}2J\\tb\\rc"
        );
        assert_eq!(
            terminal_safe("user\u{202e}gpj.exe\u{2066}"),
            "user\\u{202e}gpj.exe\\u{2066}"
        );
        assert_eq!(terminal_safe("naïve Zürich 東京"), "naïve Zürich 東京");
    }

    #[test]
    fn the_soft_fd_limit_is_raised_to_the_hard_one() {
        let (before, now) = raise_fd_limit().expect("raise");
        assert!(now >= before);
        assert_eq!(fd_limit(), now);
        assert_eq!(now, nofile().expect("getrlimit").rlim_max);
    }

    #[test]
    fn the_host_has_at_least_its_loopback_address() {
        let addrs = host_addresses();
        assert!(addrs.iter().any(|a| a.is_loopback()), "{addrs:?}");
    }

    #[test]
    fn config_files_are_regular_files_of_bounded_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = dir.path().join("ok.toml");
        std::fs::write(&ok, "a = 1\n").expect("write");
        assert_eq!(read_config_file(&ok).expect("read"), "a = 1\n");
        // A device that never ends, a pipe nobody writes to, a directory: refused at once.
        let zero = read_config_file(Path::new("/dev/zero")).expect_err("device");
        assert!(io_reason(&zero).contains("not a regular file"), "{zero}");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(
            io_reason(&read_config_file(&fifo).expect_err("fifo")).contains("not a regular file")
        );
        assert_eq!(
            io_reason(&read_config_file(dir.path()).expect_err("dir")),
            "is a directory"
        );
        let big = dir.path().join("big");
        let f = std::fs::File::create(&big).expect("create");
        f.set_len(MAX_CONFIG_FILE + 1).expect("sparse file");
        assert!(io_reason(&read_config_file(&big).expect_err("big")).contains("larger than 16 MiB"));
    }
}
