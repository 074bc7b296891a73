//! `[fleet]` in gaoler.toml: checked where it is written (servers, the host's name,
//! its key file and mode, trusted keys, shared jails, limits); the NATS client does
//! the rest when the daemon connects.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use toml::Spanned;

use super::diag::Diagnostic;
use super::load::Loader;
use super::raw::RawFleet;
use super::{FleetConfig, JailConfig};

/// What `host` defaults to: the kernel's host name.
pub fn default_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Whether a name can stand in a NATS subject or stream name and a consumer's name.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl Loader {
    /// `[fleet]`, when present.
    pub(super) fn fleet(
        &mut self,
        raw: RawFleet,
        file: &Path,
        text: &str,
        jails: &[JailConfig],
    ) -> Option<FleetConfig> {
        let before = self.errors.len();
        // Relative paths are relative to the config directory.
        let base = file.parent().unwrap_or(Path::new("."));
        let err = |span: std::ops::Range<usize>, msg: String| {
            Diagnostic::at(file, text, span, format!("[fleet] {msg}"))
        };
        let mut errors = Vec::new();
        let servers = match &raw.servers {
            Some(s) if !s.get_ref().is_empty() => {
                for url in s.get_ref() {
                    let ok = ["nats://", "tls://"]
                        .iter()
                        .any(|p| url.starts_with(p) && url.len() > p.len());
                    if !ok {
                        errors.push(err(
                            s.span(),
                            format!("servers: `{url}` is not a NATS URL (nats://HOST:PORT or tls://HOST:PORT)"),
                        ));
                    }
                }
                s.get_ref().clone()
            }
            Some(s) => {
                errors.push(err(
                    s.span(),
                    "servers is empty: name at least one NATS server".into(),
                ));
                Vec::new()
            }
            None => {
                errors.push(Diagnostic::file(
                    file,
                    "[fleet] needs `servers`, the NATS servers with JetStream (e.g. [\"nats://10.0.0.5:4222\"])",
                ));
                Vec::new()
            }
        };
        let host = match &raw.host {
            Some(h) if is_token(h.get_ref()) => h.get_ref().clone(),
            Some(h) => {
                errors.push(err(
                    h.span(),
                    format!(
                        "host `{}` must be 1 to 64 letters, digits, `-` or `_`",
                        h.get_ref()
                    ),
                ));
                String::new()
            }
            None => default_host().replace('.', "_"),
        };
        let key = match &raw.key {
            Some(k) => {
                let path = base.join(k.get_ref());
                if let Some(problem) = secret_file_problem(&path) {
                    errors.push(err(
                        k.span(),
                        format!(
                            "key {problem} (`gaoler fleet keygen {}` makes one)",
                            path.display()
                        ),
                    ));
                } else if let Err(e) = crate::fleet::keys::load_signing_key(&path) {
                    errors.push(err(k.span(), format!("key: {e}")));
                }
                path
            }
            None => {
                errors.push(Diagnostic::file(
                    file,
                    "[fleet] needs `key`, this host's signing key file (`gaoler fleet keygen /etc/gaoler/fleet.key` makes one)",
                ));
                PathBuf::new()
            }
        };
        let mut trusted_keys = Vec::new();
        for k in raw.trusted_keys.iter().flatten() {
            let text = k.get_ref().trim();
            match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) if bytes.len() == 32 => trusted_keys.push(text.to_string()),
                _ => errors.push(err(
                    k.span(),
                    format!("trusted_keys: `{text}` is not a public key (the base64 line `gaoler fleet keygen` prints)"),
                )),
            }
        }
        let share = raw.share.as_ref().map(|list| {
            list.iter()
                .filter_map(|j| {
                    if jails.iter().any(|c| c.name == *j.get_ref()) {
                        Some(j.get_ref().clone())
                    } else {
                        errors.push(err(j.span(), format!("share: no jail `{}`", j.get_ref())));
                        None
                    }
                })
                .collect()
        });
        let name = |v: &Option<Spanned<String>>,
                    default: &str,
                    what: &str,
                    dots: bool,
                    errors: &mut Vec<Diagnostic>| match v {
            None => default.to_string(),
            Some(s) => {
                let ok = if dots {
                    s.get_ref().split('.').all(is_token)
                } else {
                    is_token(s.get_ref())
                };
                if !ok {
                    errors.push(Diagnostic::at(
                        file,
                        text,
                        s.span(),
                        format!(
                            "[fleet] {what} `{}` may hold only letters, digits, `-` and `_`{}",
                            s.get_ref(),
                            if dots { ", in `.`-separated parts" } else { "" }
                        ),
                    ));
                }
                s.get_ref().clone()
            }
        };
        let stream = name(&raw.stream, "GAOLER", "stream", false, &mut errors);
        let subject = name(&raw.subject, "gaoler.bans", "subject", true, &mut errors);
        let path = |v: &Option<Spanned<String>>,
                    what: &str,
                    secret: bool,
                    errors: &mut Vec<Diagnostic>| {
            v.as_ref().map(|p| {
                let path = base.join(p.get_ref());
                let problem = if secret {
                    secret_file_problem(&path)
                } else {
                    std::fs::metadata(&path)
                        .err()
                        .map(|e| format!("`{}`: {}", path.display(), crate::util::io_reason(&e)))
                };
                if let Some(problem) = problem {
                    errors.push(Diagnostic::at(
                        file,
                        text,
                        p.span(),
                        format!("[fleet] {what} {problem}"),
                    ));
                }
                path
            })
        };
        let credentials = path(&raw.credentials, "credentials", true, &mut errors);
        let nkey = path(&raw.nkey, "nkey", true, &mut errors);
        let tls = raw.tls.unwrap_or_default();
        let tls_ca = path(&tls.ca, "tls.ca", false, &mut errors);
        let tls_cert = path(&tls.cert, "tls.cert", false, &mut errors);
        let tls_key = path(&tls.key, "tls.key", true, &mut errors);
        if tls_cert.is_some() != tls_key.is_some() {
            errors.push(Diagnostic::file(
                file,
                "[fleet] tls: a client certificate needs both `cert` and `key`",
            ));
        }
        if raw.password.is_some() && raw.user.is_none() {
            errors.push(Diagnostic::file(file, "[fleet] `password` needs `user`"));
        }
        self.errors.extend(errors);
        let mut int = |v: &Option<Spanned<i64>>, range, what: &str, default: i64| {
            v.as_ref()
                .and_then(|r| self.int_in(r, range, &format!("[fleet] {what}"), file, text))
                .unwrap_or(default)
        };
        let replicas = int(&raw.replicas, 1..=5, "replicas", 1) as usize;
        let max_prefix_v4 = int(&raw.max_prefix_v4, 1..=32, "max_prefix_v4", 24) as u8;
        let max_prefix_v6 = int(&raw.max_prefix_v6, 1..=128, "max_prefix_v6", 48) as u8;
        let rate_per_origin = int(
            &raw.rate_per_origin,
            1..=1_000_000,
            "rate_per_origin",
            60_000,
        ) as u32;
        (self.errors.len() == before).then(|| FleetConfig {
            servers,
            host,
            key,
            trusted_keys,
            share,
            apply: raw.apply.unwrap_or(true),
            stream,
            subject,
            replicas,
            credentials,
            nkey,
            user: raw.user,
            password: raw.password,
            token: raw.token,
            tls_ca,
            tls_cert,
            tls_key,
            max_prefix_v4,
            max_prefix_v6,
            rate_per_origin,
        })
    }
}

/// Why a secret file cannot be used: missing, not a file, or readable by others.
fn secret_file_problem(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Err(e) => Some(format!(
            "`{}`: {}",
            path.display(),
            crate::util::io_reason(&e)
        )),
        Ok(m) if !m.is_file() => Some(format!("`{}` is not a file", path.display())),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => Some(format!(
            "`{}` must be mode 0600 (readable by its owner only), is {:04o}",
            path.display(),
            m.permissions().mode() & 0o7777
        )),
        Ok(_) => None,
    }
}
