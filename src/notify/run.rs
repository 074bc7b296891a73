//! The notifiers of `[[notify]]`: each one a task with a bounded queue of events
//! (full: the oldest is dropped and counted), running at most `concurrency` events at
//! once. `exec` runs the program (placeholders filled, no shell, the event's JSON on
//! its standard input) in a process group of its own, killed whole at the timeout;
//! `webhook` POSTs the JSON, retried with backoff. Nothing here is in a ban's path:
//! the hub only offers events, never waits.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Event, EventKind};
use crate::config::{NotifyAction, NotifyConfig};
use crate::stats::Stats;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Failed(String),
    TimedOut,
}

/// The first wait before a webhook is tried again; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// `arg` with the event's placeholders filled: `{ip}`, `{jail}`, `{bantime}` (seconds,
/// or `permanent`), `{count}`, `{origin}` (`local` for this host's own), `{event}`,
/// `{matches}` (the ban's lines, one a line). One pass: text a placeholder brings in
/// (a log line is the attacker's) is never read as a placeholder itself.
pub fn fill(arg: &str, e: &Event) -> String {
    fill_with(arg, e, |v| v.to_string())
}

/// `fill` for a JSON body template: each value is escaped as inside a JSON string.
pub fn fill_json(template: &str, e: &Event) -> String {
    fill_with(template, e, |v| {
        let quoted = serde_json::to_string(v).unwrap_or_default();
        quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .unwrap_or("")
            .to_string()
    })
}

fn fill_with(template: &str, e: &Event, escape: impl Fn(&str) -> String) -> String {
    if !template.contains('{') {
        return template.to_string();
    }
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let value = after.find('}').and_then(|close| {
            let name = &after[1..close];
            let value = match name {
                "ip" => e.ip.clone(),
                "jail" => e.jail.clone(),
                "bantime" => e.expires_at.map_or_else(
                    || "permanent".to_string(),
                    |end| (end - e.banned_at).num_seconds().max(0).to_string(),
                ),
                "count" => e.count.to_string(),
                "origin" => e.origin.clone().unwrap_or_else(|| "local".to_string()),
                "event" => e.event.as_str().to_string(),
                "matches" => e.matches.join("\n"),
                _ => return None,
            };
            Some((value, close))
        });
        match value {
            Some((value, close)) => {
                out.push_str(&escape(&value));
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// One notifier: its settings and its queue; the worker task holds the other end.
pub struct Notifier {
    pub config: NotifyConfig,
    queue: Arc<Queue>,
    stop: CancellationToken,
}

struct Queue {
    events: Mutex<VecDeque<Arc<Event>>>,
    ready: Notify,
    capacity: usize,
}

impl Notifier {
    /// Starts the notifier's worker; it stops with `stop` (or the notifier's drop).
    pub fn start(config: NotifyConfig, stats: Arc<Stats>, stop: CancellationToken) -> Notifier {
        let queue = Arc::new(Queue {
            events: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity: config.queue.max(1),
        });
        tokio::spawn(work(config.clone(), queue.clone(), stats, stop.clone()));
        Notifier {
            config,
            queue,
            stop,
        }
    }

    /// Whether this notifier takes `event`.
    pub fn wants(&self, event: &Event) -> bool {
        let kind = match event.event {
            EventKind::Ban => self.config.on_ban,
            EventKind::Unban => self.config.on_unban,
        };
        kind && self
            .config
            .jails
            .as_ref()
            .is_none_or(|jails| jails.contains(&event.jail))
    }

    /// Queues `event` if it is wanted, never waiting: a full queue drops its oldest.
    pub fn offer(&self, event: &Arc<Event>, stats: &Stats) {
        if !self.wants(event) {
            return;
        }
        {
            let mut q = self.queue.events.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= self.queue.capacity {
                q.pop_front();
                stats.notify.dropped.fetch_add(1, Relaxed);
            }
            q.push_back(event.clone());
        }
        self.queue.ready.notify_one();
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn work(config: NotifyConfig, queue: Arc<Queue>, stats: Arc<Stats>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let config = Arc::new(config);
    loop {
        let next = queue
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let Some(event) = next else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = queue.ready.notified() => continue,
            }
        };
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (config, stats, stop) = (config.clone(), stats.clone(), stop.clone());
        tokio::spawn(async move {
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                o = run(&config, &event) => o,
            };
            let counter = match &outcome {
                Outcome::Sent => &stats.notify.sent,
                Outcome::Failed(why) => {
                    tracing::warn!(notifier = %config.name, event = event.event.as_str(), ip = %event.ip, reason = %why, "notification failed");
                    &stats.notify.failed
                }
                Outcome::TimedOut => {
                    tracing::warn!(notifier = %config.name, event = event.event.as_str(), ip = %event.ip, timeout = ?config.timeout, "notification timed out");
                    &stats.notify.timed_out
                }
            };
            counter.fetch_add(1, Relaxed);
            drop(permit);
        });
    }
}

/// Runs `config`'s action for one event.
pub async fn run(config: &NotifyConfig, event: &Event) -> Outcome {
    let json = serde_json::to_vec(event).unwrap_or_default();
    match &config.action {
        NotifyAction::Exec(argv) => exec(argv, event, json, config.timeout).await,
        NotifyAction::Webhook { url, headers, body } => {
            let body = match body {
                Some(template) => fill_json(template, event).into_bytes(),
                None => json,
            };
            webhook(url, headers, body, config.timeout, config.retries).await
        }
    }
}

/// The program, in a process group of its own, the JSON on its standard input; the
/// whole group is killed at the timeout.
async fn exec(argv: &[String], event: &Event, json: Vec<u8>, timeout: Duration) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::Failed("no program".into());
    };
    let mut child = match tokio::process::Command::new(program)
        .args(args.iter().map(|a| fill(a, event)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("cannot run {program}: {e}")),
    };
    let group = child.id();
    let stdin = child.stdin.take();
    let ran = tokio::time::timeout(timeout, async move {
        if let Some(mut stdin) = stdin {
            // A program that does not read its input is not a failure.
            let _ = stdin.write_all(&json).await;
            drop(stdin);
        }
        child.wait_with_output().await
    })
    .await;
    match ran {
        Err(_) => {
            if let Some(pid) = group {
                // SAFETY: kill(2) with a negative pid signals the process group the
                // child leads (process_group(0) made it so); no memory is touched.
                unsafe {
                    libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                }
            }
            Outcome::TimedOut
        }
        Ok(Err(e)) => Outcome::Failed(format!("{program}: {e}")),
        Ok(Ok(out)) if out.status.success() => Outcome::Sent,
        Ok(Ok(out)) => {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = said
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>();
            Outcome::Failed(format!("{program} exited with {}: {said}", out.status))
        }
    }
}

/// POSTs the JSON; an answer other than 2xx, or none, is tried again after a backoff
/// (1 s, doubling) up to `retries` more times; a 4xx other than 408 and 429 is not.
async fn webhook(
    url: &str,
    headers: &[(String, String)],
    json: Vec<u8>,
    timeout: Duration,
    retries: u32,
) -> Outcome {
    let mut backoff = FIRST_BACKOFF;
    let mut last = Outcome::Failed("not tried".into());
    for attempt in 0..=retries {
        if attempt > 0 {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        let (to, headers, body) = (url.to_string(), headers.to_vec(), json.clone());
        let started = std::time::Instant::now();
        let answer = tokio::task::spawn_blocking(move || {
            let agent = ureq::AgentBuilder::new().timeout(timeout).build();
            let mut request = agent.post(&to).set("Content-Type", "application/json");
            for (name, value) in &headers {
                request = request.set(name, value);
            }
            // The status of an error answer, or why there was none.
            request
                .send_bytes(&body)
                .map(|r| r.status())
                .map_err(|e| match e {
                    ureq::Error::Status(code, _) => Ok(code),
                    // Not its Display: that quotes the URL, whose path is often a secret.
                    ureq::Error::Transport(t) => Err(match t.message() {
                        Some(m) => format!("{}: {m}", t.kind()),
                        None => t.kind().to_string(),
                    }),
                })
        })
        .await;
        last = match answer {
            Ok(Ok(_)) => return Outcome::Sent,
            Ok(Err(Ok(code))) => {
                let again = code >= 500 || code == 408 || code == 429;
                let outcome = Outcome::Failed(format!("{} answered {code}", host_of(url)));
                if !again {
                    return outcome;
                }
                outcome
            }
            Ok(Err(Err(_))) if started.elapsed() >= timeout => Outcome::TimedOut,
            Ok(Err(Err(e))) => Outcome::Failed(format!("{}: {e}", host_of(url))),
            Err(e) => Outcome::Failed(format!("the request's thread: {e}")),
        };
    }
    last
}

/// The host part of `url` (logs never show a webhook's path: it often holds its secret).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::test_ban;

    fn event() -> Event {
        let mut ban = test_ban("sshd", "192.0.2.7");
        ban.count = 3;
        ban.expires_at = Some(ban.banned_at + chrono::Duration::hours(1));
        Event::banned(&ban, vec!["line".into()])
    }

    #[test]
    fn placeholders_are_filled_and_other_text_kept() {
        let e = event();
        assert_eq!(fill("{ip}", &e), "192.0.2.7");
        assert_eq!(
            fill(
                "--jail={jail} n={count} t={bantime}s {origin} {event} {other}",
                &e
            ),
            "--jail=sshd n=3 t=3600s local ban {other}"
        );
        let mut permanent = e.clone();
        permanent.expires_at = None;
        assert_eq!(fill("{bantime}", &permanent), "permanent");
    }

    #[test]
    fn text_a_placeholder_brings_in_is_never_filled_again_and_json_is_escaped() {
        let mut e = event();
        e.matches = vec!["user {ip} \"quoted\"".into(), "second".into()];
        assert_eq!(fill("{matches}", &e), "user {ip} \"quoted\"\nsecond");
        assert_eq!(
            fill_json("{\"text\": \"{ip}: {matches}\"}", &e),
            "{\"text\": \"192.0.2.7: user {ip} \\\"quoted\\\"\\nsecond\"}"
        );
        let body: serde_json::Value =
            serde_json::from_str(&fill_json("{\"text\": \"{matches}\"}", &e)).expect("valid JSON");
        assert_eq!(body["text"], "user {ip} \"quoted\"\nsecond");
        assert_eq!(fill("{unknown} {ip", &e), "{unknown} {ip");
    }

    #[test]
    fn a_webhooks_path_never_shows_in_its_name() {
        assert_eq!(
            host_of("https://hooks.slack.com/services/T/B/SECRET"),
            "hooks.slack.com"
        );
        assert_eq!(host_of("http://127.0.0.1:9000?k=v"), "127.0.0.1:9000");
    }
}
