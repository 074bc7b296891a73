//! `[[notify]]` in gaoler.toml (for every jail, or those listed) and in a jail's file
//! (for that jail): checked where it is written: when it runs, exactly one of `exec`
//! (an executable that exists) and `webhook` (an http or https URL), and its limits.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::diag::Diagnostic;
use super::load::Loader;
use super::raw::RawNotify;
use super::{NotifyAction, NotifyConfig};

/// How long a notifier may run (an exec, or one webhook attempt) by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Webhook attempts after the first, by default.
pub const DEFAULT_RETRIES: u32 = 3;
/// Events a notifier runs at once, by default.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Events a notifier holds waiting, by default; past it the oldest is dropped.
pub const DEFAULT_QUEUE: usize = 1000;

/// `name` found as an executable: a path as given (relative to the config
/// directory), or a bare name on `PATH`.
pub fn find_executable(name: &str, dir: &Path) -> Option<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = dir.join(name);
        return executable(&p).then_some(p);
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

impl Loader {
    /// The `[[notify]]` tables of `file`; `jail` names the jail whose file it is.
    pub(super) fn notifiers(
        &mut self,
        raw: Vec<Spanned<RawNotify>>,
        file: &Path,
        text: &str,
        jail: Option<&str>,
    ) -> Vec<NotifyConfig> {
        raw.into_iter()
            .filter_map(|n| self.notifier(n, file, text, jail))
            .collect()
    }

    fn notifier(
        &mut self,
        raw: Spanned<RawNotify>,
        file: &Path,
        text: &str,
        jail: Option<&str>,
    ) -> Option<NotifyConfig> {
        let before = self.errors.len();
        let whole = raw.span();
        let (line, _) = super::diag::line_col(text, whole.start);
        let raw = raw.into_inner();
        let err = |span: std::ops::Range<usize>, msg: String| {
            Diagnostic::at(file, text, span, format!("[[notify]] {msg}"))
        };
        let mut errors = Vec::new();
        let (mut on_ban, mut on_unban) = (true, false);
        if let Some(on) = &raw.on {
            (on_ban, on_unban) = (false, false);
            for what in on.get_ref() {
                match what.as_str() {
                    "ban" => on_ban = true,
                    "unban" => on_unban = true,
                    other => errors.push(err(
                        on.span(),
                        format!("on: `{other}` is not an event: use \"ban\" and/or \"unban\""),
                    )),
                }
            }
            if on.get_ref().is_empty() {
                errors.push(err(
                    on.span(),
                    "on is empty: name \"ban\" and/or \"unban\"".into(),
                ));
            }
        }
        let jails = match (&raw.jails, jail) {
            (Some(j), Some(_)) => {
                errors.push(err(
                    j.span(),
                    "jails: a jail's own [[notify]] is for that jail; list jails in gaoler.toml's [[notify]]".into(),
                ));
                None
            }
            (Some(j), None) => Some(j.get_ref().clone()),
            (None, Some(name)) => Some(vec![name.to_string()]),
            (None, None) => None,
        };
        let action = match (&raw.exec, &raw.webhook) {
            (Some(argv), None) => match argv.get_ref().first() {
                None => {
                    errors.push(err(
                        argv.span(),
                        "exec is empty: give the program and its arguments".into(),
                    ));
                    None
                }
                Some(program) => match find_executable(program, &self.dir) {
                    Some(path) => {
                        let mut argv = argv.get_ref().clone();
                        argv[0] = path.to_string_lossy().into_owned();
                        Some(NotifyAction::Exec(argv))
                    }
                    None => {
                        errors.push(err(
                            argv.span(),
                            format!("exec: `{program}` is not an executable file (a path, or a program on PATH)"),
                        ));
                        None
                    }
                },
            },
            (None, Some(url)) => match check_url(url.get_ref()) {
                Ok(()) => Some(NotifyAction::Webhook {
                    url: url.get_ref().clone(),
                    headers: raw
                        .headers
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                    body: raw.body.clone(),
                }),
                Err(why) => {
                    errors.push(err(
                        url.span(),
                        format!("webhook: `{}` {why}", url.get_ref()),
                    ));
                    None
                }
            },
            (Some(_), Some(w)) => {
                errors.push(err(
                    w.span(),
                    "has both exec and webhook: one notifier does one".into(),
                ));
                None
            }
            (None, None) => {
                errors.push(err(whole.clone(), "needs `exec = [\"/path/to/program\", \"{ip}\"]` or `webhook = \"https://...\"`".into()));
                None
            }
        };
        if (raw.headers.is_some() || raw.body.is_some()) && raw.exec.is_some() {
            errors.push(err(
                whole.clone(),
                "headers and body are for a webhook".into(),
            ));
        }
        self.errors.extend(errors);
        let timeout = raw
            .timeout
            .as_ref()
            .map_or(DEFAULT_TIMEOUT, |t| t.get_ref().0);
        if timeout.is_zero() {
            if let Some(t) = &raw.timeout {
                self.errors
                    .push(err(t.span(), "timeout must be more than 0".into()));
            }
        }
        let retries = raw
            .retries
            .as_ref()
            .and_then(|v| self.int_in(v, 0..=20, "[[notify]] retries", file, text))
            .map_or(DEFAULT_RETRIES, |v| v as u32);
        let concurrency = raw
            .concurrency
            .as_ref()
            .and_then(|v| self.int_in(v, 1..=256, "[[notify]] concurrency", file, text))
            .map_or(DEFAULT_CONCURRENCY, |v| v as usize);
        let queue = raw
            .queue
            .as_ref()
            .and_then(|v| self.int_in(v, 1..=1_000_000, "[[notify]] queue", file, text))
            .map_or(DEFAULT_QUEUE, |v| v as usize);
        if self.errors.len() > before {
            return None;
        }
        Some(NotifyConfig {
            name: format!(
                "{}:{line}",
                file.file_name().map_or_else(
                    || file.display().to_string(),
                    |n| n.to_string_lossy().into_owned()
                )
            ),
            on_ban,
            on_unban,
            jails,
            action: action?,
            timeout,
            retries,
            concurrency,
            queue,
        })
    }
}

/// Why `url` is no webhook address, if it is not.
fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("is not an http:// or https:// URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err("has no host");
    }
    if url.chars().any(char::is_control) || url.contains(' ') {
        return Err("has spaces or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_checked() {
        assert!(check_url("https://hooks.slack.com/services/T/B/X").is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("https://").is_err());
        assert!(check_url("https://a b/").is_err());
    }

    #[test]
    fn executables_are_found_by_path_or_on_path() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(find_executable("sh", dir.path()).is_some());
        assert!(find_executable("/bin/sh", dir.path()).is_some());
        assert!(find_executable("no-such-program-here", dir.path()).is_none());
        std::fs::write(dir.path().join("script"), "#!/bin/sh\n").expect("write");
        assert!(
            find_executable("./script", dir.path()).is_none(),
            "not executable"
        );
        std::fs::set_permissions(
            dir.path().join("script"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        assert!(find_executable("./script", dir.path()).is_some());
    }
}
