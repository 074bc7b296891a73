//! Who may use the control socket: root, the daemon's own user, or a member of
//! `socket_group`. The socket file's mode (0600, or 0660 with the group) keeps others
//! out; the peer's credentials (SO_PEERCRED) are checked as well, so a socket whose
//! mode was loosened by hand still refuses them.

use std::ffi::CString;

/// A group allowed to use ctl, resolved once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketGroup {
    pub name: String,
    pub gid: u32,
}

/// Why a group cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[daemon] socket_group = \"{0}\": no such group on this system (create it, or leave socket_group empty for root only)")]
pub struct NoSuchGroup(pub String);

impl SocketGroup {
    /// Looks the group up in the system's group database.
    pub fn resolve(name: &str) -> Result<SocketGroup, NoSuchGroup> {
        let missing = || NoSuchGroup(name.to_string());
        let c_name = CString::new(name).map_err(|_| missing())?;
        // SAFETY: a zeroed `group` is a valid out-parameter (plain integers and null
        // pointers).
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found: *mut libc::group = std::ptr::null_mut();
        loop {
            // SAFETY: every pointer is valid for the call; `buf` outlives its use.
            let rc = unsafe {
                libc::getgrnam_r(
                    c_name.as_ptr(),
                    &mut group,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut found,
                )
            };
            // Large groups (LDAP, sssd) need a larger buffer, up to 1 MiB.
            if rc == libc::ERANGE && buf.len() < 1024 * 1024 {
                buf.resize(buf.len() * 2, 0);
                continue;
            }
            if rc != 0 || found.is_null() {
                return Err(missing());
            }
            break;
        }
        Ok(SocketGroup {
            name: name.to_string(),
            gid: group.gr_gid,
        })
    }
}

/// The refusal a denied peer gets, and `ctl` prints when the socket's mode stops it.
pub fn denied_message(group: Option<&str>) -> String {
    match group {
        Some(g) => format!("permission denied: ctl needs root or group {g}"),
        None => "permission denied: ctl needs root (or a [daemon] socket_group)".to_string(),
    }
}

/// A connecting process as the kernel reports it.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// True when `peer` may use the socket.
pub fn allowed(peer: &Peer, group: Option<&SocketGroup>) -> bool {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if peer.uid == 0 || peer.uid == me {
        return true;
    }
    let Some(group) = group else {
        return false;
    };
    peer.gid == group.gid
        || peer
            .pid
            .and_then(supplementary_groups)
            .is_some_and(|groups| groups.contains(&group.gid))
}

/// The supplementary groups of process `pid` (the `Groups:` line of its status).
fn supplementary_groups(pid: i32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Groups:"))?;
    Some(
        line["Groups:".len()..]
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_daemons_own_user_are_allowed_others_only_by_group() {
        let root = Peer {
            uid: 0,
            gid: 0,
            pid: None,
        };
        assert!(allowed(&root, None));
        let me = Peer {
            uid: unsafe { libc::geteuid() },
            gid: 12345,
            pid: None,
        };
        assert!(allowed(&me, None));
        let stranger = Peer {
            uid: 4242,
            gid: 4242,
            pid: None,
        };
        if me.uid != 4242 {
            assert!(!allowed(&stranger, None));
            let group = SocketGroup {
                name: "ops".into(),
                gid: 4242,
            };
            assert!(allowed(&stranger, Some(&group)));
            let other = SocketGroup {
                name: "ops".into(),
                gid: 777,
            };
            assert!(!allowed(&stranger, Some(&other)));
        }
    }

    #[test]
    fn supplementary_groups_are_read_from_proc() {
        let mine = supplementary_groups(std::process::id() as i32).expect("own status");
        // SAFETY: getgroups(0, null) only returns the count.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        assert_eq!(mine.len(), n as usize);
    }

    #[test]
    fn groups_resolve_by_name_and_unknown_ones_are_named_in_the_error() {
        assert_eq!(SocketGroup::resolve("root").expect("root group").gid, 0);
        let err = SocketGroup::resolve("no-such-group-gaoler").expect_err("missing");
        assert!(err.to_string().contains("no-such-group-gaoler"));
        assert!(denied_message(Some("ops")).ends_with("root or group ops"));
    }
}
