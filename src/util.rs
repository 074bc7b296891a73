//! Small helpers every stage uses: turning OS errors into words a user can act on, and
//! the host's own addresses (for `ignoreself`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    #[test]
    fn the_host_has_at_least_its_loopback_address() {
        let addrs = super::host_addresses();
        assert!(addrs.iter().any(|a| a.is_loopback()), "{addrs:?}");
    }
}
