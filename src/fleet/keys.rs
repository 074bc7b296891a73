//! Fleet key files and public key text. A secret key file holds one line: the base64
//! (standard alphabet) of the 32-byte ed25519 seed. It is created with mode 0600 and
//! refused at load when group or others may read it. A public key is written as the
//! base64 of its 32 bytes, as in `[fleet] trusted_keys`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::util::io_reason;

/// Where key generation takes its randomness.
const RANDOM: &str = "/dev/urandom";

/// A key file is one short line; more than this is not a key file.
const MAX_FILE: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: already exists; not overwriting a key (remove it first to replace it)", .0.display())]
    Exists(PathBuf),
    #[error("{}: cannot create: {reason}", path.display())]
    Create { path: PathBuf, reason: String },
    #[error("{}: cannot write: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    #[error("cannot read randomness from {RANDOM}: {0}")]
    Random(String),
    #[error("{}: no such key file (create one with `gaoler fleet keygen {}`)", .0.display(), .0.display())]
    Missing(PathBuf),
    #[error("{}: cannot read: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}: must be mode 0600, is {mode:04o} (chmod 600 {})", path.display(), path.display())]
    Mode { path: PathBuf, mode: u32 },
    #[error("{}: not a fleet key file: {reason}", path.display())]
    Content { path: PathBuf, reason: String },
    #[error("bad public key `{text}`: {reason}")]
    Public { text: String, reason: String },
}

/// Writes a new secret key to `path` (which must not exist) with mode 0600, and
/// returns its public key as text. Nothing is left behind on failure.
pub fn keygen(path: &Path) -> Result<String, KeyError> {
    let mut seed = [0u8; 32];
    File::open(RANDOM)
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| KeyError::Random(io_reason(&e)))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    // create_new: atomically refuses an existing file (or a symlink to one); the mode
    // applies from the first instant, before any byte is written.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_path_buf()),
            _ => KeyError::Create {
                path: path.to_path_buf(),
                reason: io_reason(&e),
            },
        })?;
    let line = format!("{}\n", STANDARD.encode(key.to_bytes()));
    if let Err(e) = file
        .write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
    {
        drop(file);
        // The file is ours (create_new): a half-written key must not stay to be used.
        let _ = std::fs::remove_file(path);
        return Err(KeyError::Write {
            path: path.to_path_buf(),
            reason: io_reason(&e),
        });
    }
    Ok(public_text(&key.verifying_key()))
}

/// Reads the secret key at `path`, refusing a file that group or others may access.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let read_error = |e: io::Error| KeyError::Read {
        path: path.to_path_buf(),
        reason: io_reason(&e),
    };
    // Non-blocking: a FIFO at the path must not hang the start (it is refused below);
    // on a regular file the flag changes nothing.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => KeyError::Missing(path.to_path_buf()),
            _ => read_error(e),
        })?;
    // The mode of the file opened, not of whatever the path names a moment later.
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(KeyError::Content {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => KeyError::Content {
                path: path.to_path_buf(),
                reason: "not text".into(),
            },
            _ => read_error(e),
        })?;
    let content = |reason: String| KeyError::Content {
        path: path.to_path_buf(),
        reason,
    };
    if text.len() as u64 > MAX_FILE {
        return Err(content(format!("longer than {MAX_FILE} bytes")));
    }
    let seed = STANDARD
        .decode(text.trim())
        .map_err(|e| content(format!("not base64 ({e})")))?;
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| content(format!("{} bytes, a 32-byte seed expected", seed.len())))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A public key from its text (base64 of 32 bytes, surrounding blanks ignored).
pub fn parse_public(s: &str) -> Result<VerifyingKey, KeyError> {
    let text = s.trim();
    let public = |reason: String| KeyError::Public {
        text: text.chars().take(64).flat_map(char::escape_debug).collect(),
        reason,
    };
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| public(format!("not base64 ({e})")))?;
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| public(format!("{} bytes, 32 expected", bytes.len())))?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| public("not an ed25519 key".into()))?;
    if key.is_weak() {
        return Err(public("a weak (small-order) key".into()));
    }
    Ok(key)
}

/// A public key as text: base64 (standard alphabet) of its 32 bytes.
pub fn public_text(k: &VerifyingKey) -> String {
    STANDARD.encode(k.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn keygen_writes_a_0600_key_that_loads_to_the_printed_public_key() {
        let d = dir();
        let path = d.path().join("fleet.key");
        let public = keygen(&path).expect("keygen");
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.ends_with('\n') && text.lines().count() == 1,
            "{text:?}"
        );
        assert_eq!(STANDARD.decode(text.trim()).expect("base64").len(), 32);
        let key = load_signing_key(&path).expect("load");
        assert_eq!(public_text(&key.verifying_key()), public);
        assert_eq!(parse_public(&public).expect("public"), key.verifying_key());
    }

    #[test]
    fn two_keys_differ() {
        let d = dir();
        let a = keygen(&d.path().join("a")).expect("a");
        let b = keygen(&d.path().join("b")).expect("b");
        assert_ne!(a, b);
    }

    #[test]
    fn keygen_refuses_an_existing_file_and_leaves_it_alone() {
        let d = dir();
        let path = d.path().join("fleet.key");
        std::fs::write(&path, "precious\n").expect("write");
        let err = keygen(&path).expect_err("refused");
        assert!(matches!(err, KeyError::Exists(_)), "{err}");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(err.to_string().contains("fleet.key"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "precious\n");
    }

    #[test]
    fn keygen_in_a_missing_directory_says_where() {
        let d = dir();
        let path = d.path().join("nope/fleet.key");
        let err = keygen(&path).expect_err("refused");
        assert!(matches!(err, KeyError::Create { .. }), "{err}");
        assert!(err.to_string().contains("nope/fleet.key"), "{err}");
    }

    #[test]
    fn a_key_readable_by_others_is_refused_with_its_mode() {
        let d = dir();
        let path = d.path().join("fleet.key");
        keygen(&path).expect("keygen");
        for (mode, shown) in [(0o644, "is 0644"), (0o640, "is 0640"), (0o604, "is 0604")] {
            std::fs::set_permissions(&path, Permissions::from_mode(mode)).expect("chmod");
            let err = load_signing_key(&path).expect_err("refused");
            assert!(matches!(err, KeyError::Mode { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains("must be mode 0600"), "{text}");
            assert!(text.contains(shown), "{text}");
            assert!(text.contains("fleet.key"), "{text}");
        }
        // Stricter than 0600 is fine.
        std::fs::set_permissions(&path, Permissions::from_mode(0o400)).expect("chmod");
        load_signing_key(&path).expect("0400 loads");
    }

    #[test]
    fn a_missing_key_file_names_the_path_and_keygen() {
        let d = dir();
        let path = d.path().join("absent.key");
        let err = load_signing_key(&path).expect_err("refused");
        assert!(matches!(err, KeyError::Missing(_)), "{err}");
        assert!(err.to_string().contains("absent.key"), "{err}");
        assert!(err.to_string().contains("gaoler fleet keygen"), "{err}");
    }

    #[test]
    fn garbage_content_is_refused_with_the_path() {
        let d = dir();
        let path = d.path().join("fleet.key");
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"not base64 at all!\n".to_vec(),
            format!("{}\n", STANDARD.encode([1u8; 16])).into_bytes(),
            format!("{}\n", STANDARD.encode([1u8; 64])).into_bytes(),
            b"\xff\xfe\x00garbage".to_vec(),
            vec![b'A'; 4096],
        ];
        cases.push(b"AAAA\nAAAA\n".to_vec());
        for content in cases {
            let _ = std::fs::remove_file(&path);
            std::fs::write(&path, &content).expect("write");
            std::fs::set_permissions(&path, Permissions::from_mode(0o600)).expect("chmod");
            let err = load_signing_key(&path).expect_err("refused");
            assert!(
                matches!(err, KeyError::Content { .. }),
                "{content:?}: {err}"
            );
            assert!(err.to_string().contains("fleet.key"), "{err}");
        }
    }

    #[test]
    fn a_fifo_is_refused_without_hanging() {
        let d = dir();
        let path = d.path().join("fifo.key");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = load_signing_key(&path).expect_err("refused");
        assert!(matches!(err, KeyError::Content { .. }), "{err}");
    }

    #[test]
    fn a_directory_is_not_a_key_file() {
        let d = dir();
        std::fs::set_permissions(d.path(), Permissions::from_mode(0o700)).expect("chmod");
        let err = load_signing_key(d.path()).expect_err("refused");
        assert!(matches!(err, KeyError::Content { .. }), "{err}");
    }

    #[test]
    fn public_keys_round_trip_and_bad_ones_are_refused() {
        let key = SigningKey::from_bytes(&[3u8; 32]).verifying_key();
        let text = public_text(&key);
        assert_eq!(text.len(), 44);
        assert_eq!(parse_public(&text).expect("parse"), key);
        assert_eq!(parse_public(&format!("  {text}\n")).expect("parse"), key);
        for bad in ["", "not base64!", &STANDARD.encode([1u8; 31])] {
            let err = parse_public(bad).expect_err("refused");
            assert!(matches!(err, KeyError::Public { .. }), "{err}");
        }
        // The identity point: a valid encoding, but a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let err = parse_public(&STANDARD.encode(identity)).expect_err("weak");
        assert!(err.to_string().contains("weak"), "{err}");
    }
}
