//! The `ctl` subcommands: send a request, print the response as an aligned table or
//! as JSON, and choose the exit code (0 ok, 1 runtime failure, 2 usage error).

use std::path::Path;
use std::time::Duration;

use chrono::Utc;

use crate::ipc::client::request;
use crate::ipc::{BanView, Request, Response};
use crate::types::Timestamp;
use crate::units::format_duration;

/// Sends `req` to the daemon at `socket`, prints the answer, returns the exit code.
/// `group` is the configured `socket_group`, named if the socket refuses this user.
pub fn run(socket: &Path, group: Option<&str>, req: &Request, json: bool) -> i32 {
    let response = match request(socket, group, req, Duration::from_secs(30)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gaoler ctl: {e}");
            return 1;
        }
    };
    if let Response::Error { usage, message } = &response {
        eprintln!("gaoler ctl: {}", crate::util::terminal_safe(message));
        return if *usage { 2 } else { 1 };
    }
    // Text for a terminal: what a log line put in it (a user name, a host name) is
    // escaped. JSON escapes control characters itself.
    let out = if json {
        render_json(&response)
    } else {
        crate::util::terminal_safe(&render_text(&response, Utc::now())).into_owned()
    };
    print!("{out}");
    0
}

/// `ctl reload` in words: one line, then one per kind of change.
fn reloaded_text(r: &crate::ipc::ReloadReport) -> String {
    let jails = r.added.len() + r.kept.len() + r.reset.len();
    let mut out = format!("reloaded: {jails} jails running\n");
    let mut line = |what: &str, names: &[String]| {
        if !names.is_empty() {
            out.push_str(&format!("  {what}: {}\n", names.join(", ")));
        }
    };
    line("added", &r.added);
    line("removed", &r.removed);
    line("failure counts reset (counting rules changed)", &r.reset);
    if r.lifted > 0 {
        out.push_str(&format!("  {} bans of removed jails lifted\n", r.lifted));
    }
    if r.rebuilt {
        out.push_str("  nftables table rebuilt with every ban in place\n");
    }
    out
}

fn render_json(response: &Response) -> String {
    let value = match response {
        Response::Pong { version } => serde_json::json!({ "pong": true, "version": version }),
        Response::Version { version, protocol } => {
            serde_json::json!({ "version": version, "protocol": protocol })
        }
        Response::Status(report) => serde_json::json!(report),
        Response::Bans { bans } | Response::Unbanned { bans } => serde_json::json!(bans),
        Response::Banned { ban } => serde_json::json!(ban),
        Response::Stats(stats) => serde_json::json!(stats),
        Response::Fleet(fleet) => serde_json::json!(fleet),
        Response::Show(report) => serde_json::json!(report),
        Response::Following => serde_json::json!({ "following": true }),
        Response::Event(event) => serde_json::json!(event),
        Response::Reloaded(report) => serde_json::json!(report),
        Response::LogLevel { level } => serde_json::json!({ "log_level": level }),
        Response::LogsFlushed { file } => serde_json::json!({ "reopened": file }),
        Response::Error { message, .. } => serde_json::json!({ "error": message }),
    };
    format!(
        "{}\n",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    )
}

/// Human output; `now` makes relative times testable.
pub fn render_text(response: &Response, now: Timestamp) -> String {
    match response {
        Response::Pong { version } => format!("pong: gaoler {version} is running\n"),
        Response::Version { version, protocol } => {
            format!("gaoler {version} (ctl protocol {protocol})\n")
        }
        Response::Status(report) => {
            let rows = report
                .jails
                .iter()
                .map(|j| {
                    vec![
                        j.name.clone(),
                        j.filter.clone(),
                        j.currently_banned.to_string(),
                        j.total_banned.to_string(),
                        j.currently_failed.to_string(),
                        j.total_failed.to_string(),
                    ]
                })
                .collect();
            let mut out = table(
                &[
                    "JAIL",
                    "FILTER",
                    "BANNED",
                    "TOTAL BANNED",
                    "FAILING",
                    "TOTAL FAILED",
                ],
                rows,
            );
            for j in report.jails.iter().filter(|j| !j.banned.is_empty()) {
                out.push_str(&format!(
                    "\nbanned in {}: {}\n",
                    j.name,
                    j.banned.join(", ")
                ));
            }
            out
        }
        Response::Bans { bans } if bans.is_empty() => "no bans\n".into(),
        Response::Bans { bans } => bans_table(bans, now),
        Response::Banned { ban } => format!(
            "banned {} in {} ({}, ban #{})\n",
            ban.ip,
            ban.jail,
            expiry(ban.expires_at, now),
            ban.count
        ),
        Response::Unbanned { bans } if bans.is_empty() => {
            "nothing to unban: no matching ban\n".into()
        }
        Response::Unbanned { bans } => {
            let mut out = String::new();
            for b in bans {
                out.push_str(&format!("unbanned {} in {}\n", b.ip, b.jail));
            }
            out
        }
        Response::Reloaded(r) => reloaded_text(r),
        Response::LogLevel { level } => format!("log level is now {level}\n"),
        Response::LogsFlushed { file: Some(f) } => format!("reopened {f}\n"),
        Response::LogsFlushed { file: None } => {
            "the daemon logs to stderr (no log_file): nothing to reopen\n".into()
        }
        Response::Stats(s) => {
            let mut out = table(
                &[
                    "LINES READ",
                    "FAILURES",
                    "BANS",
                    "TRACKED",
                    "EVICTED",
                    "REPAIRS",
                    "LINES CUT",
                    "SESSIONS EVICTED",
                    "OVER REGEX LIMIT",
                ],
                vec![vec![
                    s.lines_read.to_string(),
                    s.failures.to_string(),
                    s.bans.to_string(),
                    s.tracked.to_string(),
                    s.evicted.to_string(),
                    s.repairs.to_string(),
                    s.lines_cut.to_string(),
                    s.sessions_evicted.to_string(),
                    s.lines_over_limit.to_string(),
                ]],
            );
            let notified = [
                s.notify_sent,
                s.notify_failed,
                s.notify_timed_out,
                s.notify_dropped,
            ];
            if notified.iter().any(|n| *n > 0) {
                out.push_str(&format!(
                    "notifications: {} sent, {} failed, {} timed out, {} dropped\n",
                    s.notify_sent, s.notify_failed, s.notify_timed_out, s.notify_dropped
                ));
            }
            out
        }
        Response::Fleet(f) if !f.enabled => {
            "no [fleet] in gaoler.toml: this host shares no bans\n".into()
        }
        Response::Fleet(f) => fleet_text(f),
        Response::Show(r) => show_text(r, now),
        Response::Following => "following bans and unbans (Ctrl-C to stop)\n".into(),
        Response::Event(e) => event_text(e, now),
        Response::Error { message, .. } => format!("error: {message}\n"),
    }
}

/// `ctl events`: follows bans and unbans until interrupted (or the daemon stops),
/// one line each on stdout (one JSON object a line with `json`), escaped for the
/// terminal. 1 when the daemon cannot be reached or dropped this reader.
pub fn follow_events(socket: &Path, group: Option<&str>, req: &Request, json: bool) -> i32 {
    use std::io::Write as _;
    let mut code = 0;
    let mut each = |response: Response| -> bool {
        match response {
            Response::Following => {
                eprintln!("gaoler ctl events: following bans and unbans (Ctrl-C to stop)");
                true
            }
            Response::Event(e) => {
                let line = if json {
                    serde_json::to_string(&e).unwrap_or_default() + "\n"
                } else {
                    crate::util::terminal_safe(&event_text(&e, Utc::now())).into_owned()
                };
                let mut stdout = std::io::stdout().lock();
                // A closed stdout (`| head`) ends the follow.
                stdout.write_all(line.as_bytes()).is_ok() && stdout.flush().is_ok()
            }
            Response::Error { usage, message } => {
                eprintln!("gaoler ctl: {}", crate::util::terminal_safe(&message));
                code = if usage { 2 } else { 1 };
                false
            }
            other => {
                eprintln!("gaoler ctl: unexpected answer: {}", render_json(&other));
                code = 1;
                false
            }
        }
    };
    match crate::ipc::client::follow(socket, group, req, &mut each) {
        Ok(()) => code,
        Err(e) => {
            eprintln!("gaoler ctl: {e}");
            1
        }
    }
}

/// One event in a line: when, what, where, and its lines' count.
fn event_text(e: &crate::notify::Event, now: Timestamp) -> String {
    let what = match (e.event, e.reason.as_deref()) {
        (crate::notify::EventKind::Ban, _) => format!(
            "ban   {} in {} (ban {}, expires {})",
            e.ip,
            e.jail,
            e.count,
            expiry(e.expires_at, now)
        ),
        (crate::notify::EventKind::Unban, reason) => format!(
            "unban {} in {} ({})",
            e.ip,
            e.jail,
            reason.unwrap_or("lifted")
        ),
    };
    let origin = e
        .origin
        .as_deref()
        .map(|o| format!(", from {o}"))
        .unwrap_or_default();
    let lines = match e.matches.len() {
        0 => String::new(),
        1 => ", 1 line".to_string(),
        n => format!(", {n} lines"),
    };
    format!(
        "{} {what}{origin}{lines}\n",
        now.format("%Y-%m-%d %H:%M:%S")
    )
}

/// `ctl show`: each current ban and the lines that made it, then the past bans.
fn show_text(r: &crate::ipc::ShowReport, now: Timestamp) -> String {
    let mut out = String::new();
    if r.bans.is_empty() {
        out.push_str(&format!("{}: not banned\n", r.ip));
    }
    for b in &r.bans {
        let origin = b
            .origin
            .as_deref()
            .map(|o| format!(", from {o}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{} banned in {} since {} UTC, expires {} (ban {}{origin})\n",
            b.ip,
            b.jail,
            b.banned_at.format("%Y-%m-%d %H:%M:%S"),
            expiry(b.expires_at, now),
            b.count
        ));
        if b.matches.is_empty() {
            out.push_str(
                "  no log lines (banned by hand, from the fleet, or before evidence was kept)\n",
            );
        }
        for line in &b.matches {
            out.push_str(&format!("  | {line}\n"));
        }
    }
    if !r.past.is_empty() {
        out.push_str("past bans:\n");
        let rows = r
            .past
            .iter()
            .map(|p| {
                vec![
                    p.ip.clone(),
                    p.jail.clone(),
                    p.count.to_string(),
                    p.last_banned_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&["IP", "JAIL", "BANS", "LAST BANNED (UTC)"], rows));
    }
    out
}

/// `ctl fleet`: the connection, then the counters, then rejections by reason.
fn fleet_text(f: &crate::ipc::FleetReport) -> String {
    let server = if f.server.is_empty() { "-" } else { &f.server };
    let mut out = if f.connected {
        format!("connected to {server}\n")
    } else {
        format!("not connected ({server})\n")
    };
    out.push_str(&table(
        &[
            "PUBLISHED",
            "OUTBOX",
            "RECEIVED",
            "APPLIED",
            "REJECTED",
            "LAG",
        ],
        vec![vec![
            f.published.to_string(),
            f.outbox.to_string(),
            f.received.to_string(),
            f.applied.to_string(),
            f.rejected.to_string(),
            f.lag.to_string(),
        ]],
    ));
    let reasons: Vec<String> = f
        .rejected_by
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    if !reasons.is_empty() {
        out.push_str(&format!("rejected: {}\n", reasons.join(", ")));
    }
    out
}

/// The bans; with an ORIGIN column when the fleet decided any of them.
fn bans_table(bans: &[BanView], now: Timestamp) -> String {
    let fleet = bans.iter().any(|b| b.origin.is_some());
    let rows = bans
        .iter()
        .map(|b| {
            let mut row = vec![
                b.ip.clone(),
                b.jail.clone(),
                b.banned_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                expiry(b.expires_at, now),
                b.count.to_string(),
            ];
            if fleet {
                row.push(b.origin.clone().unwrap_or_else(|| "-".into()));
            }
            row
        })
        .collect();
    let mut head = vec!["IP", "JAIL", "BANNED AT (UTC)", "EXPIRES", "COUNT"];
    if fleet {
        head.push("ORIGIN");
    }
    table(&head, rows)
}

/// "in 42m", "never", "now".
fn expiry(at: Option<Timestamp>, now: Timestamp) -> String {
    match at {
        None => "never".into(),
        Some(t) => match (t - now).to_std() {
            Ok(d) if d.as_secs() > 0 => {
                format!("in {}", format_duration(Duration::from_secs(d.as_secs())))
            }
            _ => "now".into(),
        },
    }
}

/// Left-aligned columns separated by two spaces.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{JailStatus, StatusReport};

    #[test]
    fn tables_are_aligned() {
        let t = table(
            &["A", "LONG"],
            vec![
                vec!["xxxx".into(), "1".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A     LONG\nxxxx  1\ny     22\n");
    }

    #[test]
    fn banned_shows_relative_expiry() {
        let now = Utc::now();
        let bans = vec![
            BanView {
                ip: "192.0.2.1".into(),
                jail: "sshd".into(),
                banned_at: now,
                expires_at: Some(now + chrono::Duration::seconds(42 * 60)),
                count: 2,
                origin: None,
                matches: Vec::new(),
            },
            BanView {
                ip: "2001:db8::/64".into(),
                jail: "sshd".into(),
                banned_at: now,
                expires_at: None,
                count: 1,
                origin: None,
                matches: Vec::new(),
            },
        ];
        let text = render_text(&Response::Bans { bans }, now);
        assert!(text.contains("in 42m"), "{text}");
        assert!(text.contains("never"));
        assert!(text.starts_with("IP "));
    }

    #[test]
    fn status_json_has_the_stable_fields() {
        let report = StatusReport {
            jails: vec![JailStatus {
                name: "sshd".into(),
                filter: "sshd".into(),
                currently_banned: 1,
                total_banned: 2,
                currently_failed: 3,
                total_failed: 4,
                banned: vec![],
            }],
        };
        let v: serde_json::Value =
            serde_json::from_str(&render_json(&Response::Status(report))).expect("json");
        let j = &v["jails"][0];
        for key in [
            "name",
            "filter",
            "currently_banned",
            "total_banned",
            "currently_failed",
            "total_failed",
        ] {
            assert!(!j[key].is_null(), "{key}");
        }
    }
}
