//! The systemd journal as a source. Follows `journalctl -o json` unfiltered and applies
//! each jail's matches here (a match-filtered `journalctl -f` was seen to miss the first
//! entries on systemd 252), resumes after the last cursor handled, and hands out each
//! entry's MESSAGE with its time. No libsystemd: journalctl is the interface.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use super::{decode_position, encode_position, Batch, Fields, Meta, Source};
use crate::types::Timestamp;

/// Longest journal entry (JSON line) accepted; journald itself caps far below this.
const MAX_ENTRY: u64 = 4 * 1024 * 1024;

/// A jail's journal matches: `FIELD=value`. Matches of the same field are alternatives,
/// different fields must all match (journalctl's rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matches {
    fields: Vec<(String, Vec<String>)>,
}

impl Matches {
    /// Parses `["_COMM=sshd", "_COMM=sshd-session"]`.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Matches, String> {
        let mut fields: Vec<(String, Vec<String>)> = Vec::new();
        for m in list {
            let m = m.as_ref();
            let Some((field, value)) = m.split_once('=') else {
                return Err(format!(
                    "journal match `{m}` is not FIELD=value (e.g. _SYSTEMD_UNIT=ssh.service)"
                ));
            };
            let valid = !field.is_empty()
                && field.len() <= 64
                && !field.starts_with(|c: char| c.is_ascii_digit())
                && field
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                return Err(format!("journal field `{field}` in `{m}` is not a journal field name (upper-case letters, digits and _)"));
            }
            match fields.iter_mut().find(|(f, _)| f == field) {
                Some((_, values)) => values.push(value.to_string()),
                None => fields.push((field.to_string(), vec![value.to_string()])),
            }
        }
        if fields.is_empty() {
            return Err("journal needs at least one FIELD=value match".into());
        }
        Ok(Matches { fields })
    }

    /// The fields these matches look at.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(f, _)| f.as_str())
    }

    pub fn accepts(&self, entry: &Entry) -> bool {
        self.accepts_fields(&entry.fields)
    }

    /// True when `fields` (an entry's, as a batch carries them) match.
    pub fn accepts_fields(&self, fields: &Fields) -> bool {
        self.fields.iter().all(|(field, values)| {
            fields
                .get(field)
                .is_some_and(|v| values.iter().any(|want| want == v))
        })
    }
}

/// One journal entry, with only the fields some jail matches on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub cursor: String,
    pub time: Option<Timestamp>,
    pub message: Vec<u8>,
    pub fields: HashMap<String, String>,
}

/// Parses one line of `journalctl -o json`; keeps the fields named in `wanted`.
pub fn parse_entry<'a>(line: &[u8], wanted: impl IntoIterator<Item = &'a str>) -> Option<Entry> {
    let mut obj: serde_json::Map<String, Value> = serde_json::from_slice(line).ok()?;
    let cursor = match obj.remove("__CURSOR")? {
        Value::String(c) => c,
        _ => return None,
    };
    let time = obj
        .get("__REALTIME_TIMESTAMP")
        .and_then(Value::as_str)
        .and_then(|us| us.parse::<i64>().ok())
        .and_then(chrono::DateTime::from_timestamp_micros);
    let message = match obj.remove("MESSAGE") {
        Some(Value::String(s)) => s.into_bytes(),
        // Non-UTF-8 messages come as an array of byte values.
        Some(Value::Array(bytes)) => bytes
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect(),
        _ => Vec::new(),
    };
    let fields = wanted
        .into_iter()
        .filter_map(|f| match obj.get(f) {
            Some(Value::String(v)) => Some((f.to_string(), v.clone())),
            _ => None,
        })
        .collect();
    Some(Entry {
        cursor,
        time,
        message,
        fields,
    })
}

/// Where following the journal starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// After this entry (the saved cursor, or the journal's tail at start).
    After(String),
    /// From the first entry (the journal was empty at start).
    Beginning,
    /// From now (a saved cursor that journalctl no longer knows).
    Now,
}

/// Where to start when nothing was saved: after the journal's current last entry, so
/// that nothing written after gaoler said it is ready can be missed.
pub async fn tail(journalctl: &str) -> std::io::Result<StartAt> {
    let out = Command::new(journalctl)
        .args(["--output=json", "--no-pager", "--lines=1", "--all"])
        .stdin(Stdio::null())
        .output()
        .await?;
    let last = out.stdout.split(|&b| b == b'\n').rfind(|l| !l.is_empty());
    Ok(match last.and_then(|l| parse_entry(l, [])) {
        Some(e) => StartAt::After(e.cursor),
        None => StartAt::Beginning,
    })
}

/// A running `journalctl --follow`.
pub struct Follower {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Follower {
    /// Follows the journal from `start`.
    pub fn spawn(journalctl: &str, start: &StartAt) -> std::io::Result<Follower> {
        let mut cmd = Command::new(journalctl);
        cmd.args(["--output=json", "--no-pager", "--follow", "--all"]);
        match start {
            StartAt::After(c) => cmd.arg(format!("--after-cursor={c}")),
            StartAt::Beginning => cmd.arg("--lines=all"),
            StartAt::Now => cmd.arg("--lines=0"),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("journalctl has no stdout"))?;
        Ok(Follower {
            child,
            out: BufReader::with_capacity(256 * 1024, out),
        })
    }

    /// The next entry line; `None` when journalctl has exited.
    pub async fn next_line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        buf.clear();
        let n = (&mut self.out)
            .take(MAX_ENTRY)
            .read_until(b'\n', buf)
            .await?;
        Ok(n > 0)
    }

    /// True when more output is already buffered (the burst is not over).
    pub fn has_buffered(&self) -> bool {
        !self.out.buffer().is_empty()
    }

    /// Why journalctl ended: its exit status and what it said on stderr.
    pub async fn finish(mut self) -> String {
        let _ = self.child.start_kill();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err).await;
        }
        let status = self
            .child
            .wait()
            .await
            .map(|s| s.to_string())
            .unwrap_or_default();
        format!("{status}: {}", err.trim())
    }
}

/// The journal's position: the cursor of the last entry handed out.
#[derive(Serialize, Deserialize)]
struct JournalPosition {
    cursor: String,
}

/// Entries read in one batch at most (a burst is handed on in parts).
const MAX_ENTRIES: usize = 4096;

/// The systemd journal as a [`Source`]: one `journalctl --follow`, restarted with
/// backoff when it ends; entries carry the fields `wanted` (the jails' matches).
pub struct JournalSource {
    journalctl: String,
    wanted: Vec<String>,
    start: StartAt,
    follower: Option<Follower>,
    /// Set when journalctl is missing: the source has ended.
    gone: bool,
    backoff: Duration,
    got_any: bool,
    buf: Vec<u8>,
}

impl JournalSource {
    /// Follows the journal with `journalctl`, keeping the fields in `wanted`.
    pub fn new(journalctl: &str, wanted: impl IntoIterator<Item = String>) -> Self {
        let mut wanted: Vec<String> = wanted.into_iter().collect();
        wanted.sort();
        wanted.dedup();
        JournalSource {
            journalctl: journalctl.to_string(),
            wanted,
            start: StartAt::Now,
            follower: None,
            gone: false,
            backoff: Duration::from_secs(1),
            got_any: false,
            buf: Vec::new(),
        }
    }

    fn missing() {
        tracing::error!(
            "journal sources need `journalctl` (systemd); jails reading the journal see nothing"
        );
    }

    /// journalctl ended: says why, and waits before the next one.
    async fn restart(&mut self, follower: Follower) {
        let why = follower.finish().await;
        if !self.got_any && matches!(self.start, StartAt::After(_)) && why.contains("cursor") {
            tracing::warn!(reason = %why, "journalctl does not know the saved cursor; following from now");
            self.start = StartAt::Now;
        } else {
            tracing::warn!(reason = %why, "journalctl stopped; restarting it");
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = if self.got_any {
            Duration::from_secs(1)
        } else {
            (self.backoff * 2).min(Duration::from_secs(30))
        };
    }
}

impl Source for JournalSource {
    fn name(&self) -> String {
        "journal".into()
    }

    fn key(&self) -> Option<Vec<u8>> {
        Some(b"journal".to_vec())
    }

    /// After the saved cursor; else at the journal's tail, found now (before the
    /// daemon is ready, so nothing logged after that can be missed).
    async fn open(&mut self, saved: Option<Vec<u8>>, _cap: usize) {
        if let Some(p) = saved
            .as_deref()
            .and_then(decode_position::<JournalPosition>)
        {
            self.start = StartAt::After(p.cursor);
            return;
        }
        self.start = match tail(&self.journalctl).await {
            Ok(start) => start,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::missing();
                self.gone = true;
                StartAt::Now
            }
            Err(e) => {
                tracing::warn!(error = %crate::util::io_reason(&e), "cannot read the journal's tail; following from now");
                StartAt::Now
            }
        };
    }

    async fn read(&mut self, batch: &mut Batch) -> bool {
        while !self.gone {
            let mut follower = match self.follower.take() {
                Some(f) => f,
                None => match Follower::spawn(&self.journalctl, &self.start) {
                    Ok(f) => {
                        tracing::info!(start = ?self.start, "following the journal");
                        self.got_any = false;
                        f
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Self::missing();
                        self.gone = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::util::io_reason(&e), "cannot start journalctl; retrying");
                        tokio::time::sleep(self.backoff).await;
                        continue;
                    }
                },
            };
            loop {
                if !matches!(follower.next_line(&mut self.buf).await, Ok(true)) {
                    break;
                }
                self.got_any = true;
                let wanted = self.wanted.iter().map(String::as_str);
                if let Some(entry) = parse_entry(&self.buf, wanted) {
                    batch.push_entry(
                        &entry.message,
                        Meta {
                            time: entry.time,
                            fields: entry.fields,
                        },
                    );
                    self.start = StartAt::After(entry.cursor);
                }
                // A burst is handed on once read (or in parts), not entry by entry.
                if !follower.has_buffered() || batch.len() >= MAX_ENTRIES {
                    self.follower = Some(follower);
                    return true;
                }
            }
            if !batch.is_empty() {
                // Hand on what was read first; the next read finds journalctl ended.
                self.follower = Some(follower);
                return true;
            }
            self.restart(follower).await;
        }
        false
    }

    fn position(&self) -> Option<Vec<u8>> {
        match &self.start {
            StartAt::After(cursor) => Some(encode_position(JournalPosition {
                cursor: cursor.clone(),
            })),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str, wanted: &[&str]) -> Entry {
        parse_entry(json.as_bytes(), wanted.iter().copied()).expect("entry parses")
    }

    #[test]
    fn entries_parse_with_time_message_and_wanted_fields() {
        let e = entry(
            r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1763712826250000","MESSAGE":"Failed password for root from 192.0.2.7 port 22 ssh2","_COMM":"sshd","_PID":"42","_HOSTNAME":"h"}"#,
            &["_COMM"],
        );
        assert_eq!(e.cursor, "s=1;i=2");
        assert_eq!(
            e.time.map(|t| t.timestamp_millis()),
            Some(1_763_712_826_250)
        );
        assert!(e.message.starts_with(b"Failed password"));
        assert_eq!(e.fields.get("_COMM").map(String::as_str), Some("sshd"));
        assert!(!e.fields.contains_key("_PID"));
    }

    #[test]
    fn binary_messages_come_as_byte_arrays() {
        let e = entry(r#"{"__CURSOR":"c","MESSAGE":[255,104,105]}"#, &[]);
        assert_eq!(e.message, vec![255, b'h', b'i']);
        assert_eq!(e.time, None);
        assert!(parse_entry(b"not json", []).is_none());
        assert!(parse_entry(br#"{"MESSAGE":"no cursor"}"#, []).is_none());
    }

    #[test]
    fn matches_or_within_a_field_and_within_fields() {
        let m = Matches::parse(&[
            "_COMM=sshd",
            "_COMM=sshd-session",
            "_SYSTEMD_UNIT=ssh.service",
        ])
        .expect("matches");
        let with = |comm: &str, unit: &str| Entry {
            cursor: String::new(),
            time: None,
            message: Vec::new(),
            fields: HashMap::from([
                ("_COMM".into(), comm.into()),
                ("_SYSTEMD_UNIT".into(), unit.into()),
            ]),
        };
        assert!(m.accepts(&with("sshd", "ssh.service")));
        assert!(m.accepts(&with("sshd-session", "ssh.service")));
        assert!(!m.accepts(&with("sshd", "cron.service")));
        assert!(!m.accepts(&with("logger", "ssh.service")));
        assert_eq!(
            m.fields().collect::<Vec<_>>(),
            vec!["_COMM", "_SYSTEMD_UNIT"]
        );
    }

    #[test]
    fn malformed_matches_are_rejected() {
        for bad in ["sshd", "=x", "lower=x", "1X=y"] {
            assert!(Matches::parse(&[bad]).is_err(), "{bad}");
        }
        assert!(Matches::parse::<&str>(&[]).is_err());
    }

    #[test]
    fn a_version_1_cursor_record_still_loads() {
        // As gaoler 0.1 saved it under `journal`.
        let v1 = br#"{"v":1,"cursor":"s=abc;i=1"}"#;
        let p = decode_position::<JournalPosition>(v1).expect("loads");
        assert_eq!(p.cursor, "s=abc;i=1");
        let again = encode_position(JournalPosition { cursor: p.cursor });
        assert_eq!(again, v1.to_vec(), "written the same way");
    }
}
