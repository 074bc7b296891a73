//! `[[notify]]` with the real daemon: a webhook receiver on loopback (a small HTTP
//! server in the test) and exec notifiers get one event per ban and unban, with the
//! ban's lines; a notifier that hangs is killed at its timeout and delays no ban; a
//! slow webhook under a storm drops (and counts) what its queue cannot hold.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::*;

const JAIL: &str = "filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = 2\n";

/// One request the receiver got: its path, headers (lower-case names) and body
/// (`body`: as JSON, `null` when it is not).
struct Hook {
    path: String,
    headers: Vec<(String, String)>,
    raw: String,
    body: serde_json::Value,
}

/// An HTTP server on 127.0.0.1 answering 200 after `delay`, each request's headers
/// and JSON body sent through the channel.
fn receiver(delay: Duration) -> (String, mpsc::Receiver<Hook>) {
    receiver_failing(delay, 0)
}

/// `receiver`, answering 503 to its first `failures` requests.
fn receiver_failing(delay: Duration, failures: usize) -> (String, mpsc::Receiver<Hook>) {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(failures));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/hook/secret-path",
        listener.local_addr().expect("addr")
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let tx = tx.clone();
            let failing = failing.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut headers = Vec::new();
                let mut line = String::new();
                reader.read_line(&mut line).expect("request line");
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.trim().split_once(':') {
                        headers.push((k.trim().to_lowercase(), v.trim().to_string()));
                    }
                }
                let length: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).expect("body");
                std::thread::sleep(delay);
                let fail = failing
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| n.checked_sub(1),
                    )
                    .is_ok();
                let status = if fail {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = conn.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
                let raw = String::from_utf8_lossy(&body).into_owned();
                let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let _ = tx.send(Hook {
                    path,
                    headers,
                    raw,
                    body,
                });
            });
        }
    });
    (url, rx)
}

fn two_failures(cfg: &ConfigDir, ip: &str) -> Vec<String> {
    let lines = [sshd_line(ip), sshd_line(ip)];
    cfg.append("auth.log", lines.concat().as_bytes());
    lines.iter().map(|l| l.trim_end().to_string()).collect()
}

fn stats(cfg: &ConfigDir, what: &str) -> u64 {
    ctl_json(cfg.path(), &["stats"])[what].as_u64().unwrap_or(0)
}

#[test]
fn a_webhook_gets_one_event_per_ban_and_unban_with_the_lines() {
    let (url, hooks) = receiver(Duration::ZERO);
    let cfg = ConfigDir::new(
        &format!(
            "backend = \"log\"\n\n[[notify]]\non = [\"ban\", \"unban\"]\nwebhook = \"{url}\"\nheaders = {{ \"X-Token\" = \"t0ken\" }}\n"
        ),
        JAIL,
    );
    let _d = Daemon::start(cfg.path(), None);
    let lines = two_failures(&cfg, "203.0.113.60");
    let hook = hooks
        .recv_timeout(Duration::from_secs(10))
        .expect("the ban's event");
    assert_eq!(hook.body["event"], "ban");
    assert_eq!(hook.body["ip"], "203.0.113.60");
    assert_eq!(hook.body["jail"], "sshd");
    assert_eq!(hook.body["count"], 1);
    assert!(hook.body["origin"].is_null());
    assert_eq!(hook.body["matches"], serde_json::json!(lines));
    assert!(hook.headers.contains(&("x-token".into(), "t0ken".into())));
    assert!(hook
        .headers
        .contains(&("content-type".into(), "application/json".into())));
    ctl_json(cfg.path(), &["unban", "203.0.113.60"]);
    let hook = hooks
        .recv_timeout(Duration::from_secs(10))
        .expect("the unban's event");
    assert_eq!(hook.body["event"], "unban");
    assert_eq!(hook.body["reason"], "lifted");
    assert_eq!(hook.body["matches"], serde_json::json!(lines));
    // One each, no more.
    assert!(hooks.recv_timeout(Duration::from_millis(500)).is_err());
    assert_eq!(stats(&cfg, "notify_sent"), 2);
}

#[test]
fn an_exec_notifier_gets_its_argv_and_the_json_and_a_failing_one_is_counted() {
    let cfg = ConfigDir::new(
        "backend = \"log\"\n\n[[notify]]\nexec = [\"./record.sh\", \"{ip}\", \"{jail}\", \"{count}\", \"{bantime}\", \"{origin}\"]\n\n[[notify]]\nexec = [\"false\"]\n",
        JAIL,
    );
    let out = cfg.path().join("out");
    cfg.write(
        "record.sh",
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{0}.args.tmp'\ncat > '{0}.json.tmp'\nmv '{0}.json.tmp' '{0}.json'\nmv '{0}.args.tmp' '{0}.args'\n",
            out.display()
        ),
    );
    std::fs::set_permissions(
        cfg.path().join("record.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let _d = Daemon::start(cfg.path(), None);
    let lines = two_failures(&cfg, "203.0.113.61");
    let args = out.with_extension("args");
    wait_for(Duration::from_secs(10), "the notifier ran", || {
        args.exists()
    });
    let argv = std::fs::read_to_string(&args).expect("args");
    assert_eq!(argv, "203.0.113.61\nsshd\n1\n3600\nlocal\n");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.with_extension("json")).expect("json"))
            .expect("stdin is the event");
    assert_eq!(json["event"], "ban");
    assert_eq!(json["matches"], serde_json::json!(lines));
    wait_for(Duration::from_secs(10), "both counted", || {
        stats(&cfg, "notify_sent") == 1 && stats(&cfg, "notify_failed") == 1
    });
}

#[test]
fn a_hanging_notifier_is_killed_at_its_timeout_and_delays_no_ban() {
    // A number no other test's sleep has: its process is found by it.
    let marker = format!("1000.{}", std::process::id());
    let cfg = ConfigDir::new(
        &format!(
            "backend = \"log\"\n\n[[notify]]\nexec = [\"sleep\", \"{marker}\"]\ntimeout = \"1s\"\nconcurrency = 1\n"
        ),
        JAIL,
    );
    let _d = Daemon::start(cfg.path(), None);
    let sleeping = || {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &format!("sleep {marker}")])
            .output()
            .expect("pgrep");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let t0 = Instant::now();
    for i in 0..5 {
        two_failures(&cfg, &format!("203.0.113.{}", 70 + i));
    }
    wait_for(Duration::from_secs(5), "five bans", || {
        ctl_json(cfg.path(), &["banned"]).as_array().map(Vec::len) == Some(5)
    });
    let banned_in = t0.elapsed();
    assert!(
        banned_in < Duration::from_secs(3),
        "the bans waited for the notifier: {banned_in:?}"
    );
    assert_eq!(sleeping(), 1, "one runs at a time");
    // Each is killed at 1 s, then the next runs.
    wait_for(Duration::from_secs(20), "five timeouts", || {
        stats(&cfg, "notify_timed_out") == 5
    });
    wait_for(Duration::from_secs(5), "no sleep left", || sleeping() == 0);
}

#[test]
fn a_storm_with_a_slow_webhook_keeps_memory_bounded_and_counts_drops() {
    const OFFENDERS: u32 = 10_000;
    let (url, hooks) = receiver(Duration::from_millis(200));
    let cfg = ConfigDir::new(
        &format!(
            "backend = \"log\"\n\n[[notify]]\nwebhook = \"{url}\"\nqueue = 100\nconcurrency = 2\nretries = 0\n"
        ),
        BAN_AT_FIRST,
    );
    let d = Daemon::start(cfg.path(), None);
    let t0 = Instant::now();
    ban_storm(&cfg, OFFENDERS, 20);
    let stormed = t0.elapsed();
    let rss = rss_kb(d.pid());
    eprintln!("10,000 bans in {stormed:?} with a slow webhook; RSS {rss} KiB");
    // The queue holds 100: nearly all are dropped, and counted.
    // Every event is accounted for once the hub has handed them all out.
    wait_for(Duration::from_secs(30), "every event counted", || {
        let done: u64 = [
            "notify_sent",
            "notify_failed",
            "notify_timed_out",
            "notify_dropped",
        ]
        .iter()
        .map(|k| stats(&cfg, k))
        .sum();
        done + 100 >= u64::from(OFFENDERS)
    });
    let dropped = stats(&cfg, "notify_dropped");
    assert!(dropped >= u64::from(OFFENDERS) - 200, "dropped {dropped}");
    assert!(rss < 200 * 1024, "RSS {rss} KiB");
    assert!(
        hooks.recv_timeout(Duration::from_secs(5)).is_ok(),
        "some were sent"
    );
}

#[test]
fn check_names_a_missing_program_and_a_bad_url_where_they_are_written() {
    let cfg = ConfigDir::new(
        "backend = \"log\"\n\n[[notify]]\nexec = [\"/nonexistent/notify\"]\n\n[[notify]]\nwebhook = \"ftp://example.org\"\n\n[[notify]]\non = [\"bann\"]\nexec = [\"true\"]\n",
        &format!("{JAIL}\n[[notify]]\njails = [\"other\"]\nexec = [\"true\"]\n"),
    );
    let out = gaoler(cfg.path(), &["check"]);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr) + &text(&out.stdout);
    for expected in [
        "gaoler.toml:11:8: [[notify]] exec: `/nonexistent/notify` is not an executable file",
        "gaoler.toml:14:11: [[notify]] webhook: `ftp://example.org` is not an http:// or https:// URL",
        "gaoler.toml:17:6: [[notify]] on: `bann` is not an event",
        "sshd.toml:6:9: [[notify]] jails: a jail's own [[notify]] is for that jail",
    ] {
        assert!(said.contains(expected), "{expected} in:\n{said}");
    }
}

fn recipe(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("notify")
        .join(name)
        .display()
        .to_string()
}

/// The recipes of docs/notify.md, each against a fake receiver: mail through a
/// sendmail that keeps what it is given, an AbuseIPDB report to a local endpoint, an
/// ntfy message and a Slack-style webhook.
#[test]
fn the_recipes_reach_their_receivers() {
    let (url, hooks) = receiver(Duration::ZERO);
    let dir = tempfile::tempdir().expect("dir");
    let mailbox = dir.path().join("mailbox");
    let sendmail = dir.path().join("sendmail");
    std::fs::write(
        &sendmail,
        format!(
            "#!/bin/sh
[ \"$1\" = -t ] || exit 3
cat > '{}'
",
            mailbox.display()
        ),
    )
    .expect("sendmail");
    std::fs::set_permissions(
        &sendmail,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let env = dir.path().join("abuseipdb.env");
    std::fs::write(
        &env,
        format!("ABUSEIPDB_KEY=k3y\nABUSEIPDB_URL={url}/abuseipdb\n"),
    )
    .expect("env");
    let cfg = ConfigDir::new(
        &format!(
            r#"backend = "log"

[[notify]]
exec = ["{mail}", "root@example.org", "{{ip}}", "{{jail}}", "{{count}}", "{{bantime}}", "{{matches}}", "{sendmail}"]

[[notify]]
exec = ["{abuseipdb}", "{{ip}}", "{{jail}}", "{{matches}}", "{env}"]

[[notify]]
webhook = "{url}/ntfy"
headers = {{ Title = "gaoler", Tags = "no_entry" }}
body = "{{ip}} banned in {{jail}} (ban {{count}})"

[[notify]]
webhook = "{url}/slack"
body = '{{"text": "gaoler banned {{ip}} in {{jail}}:\n{{matches}}"}}'
"#,
            mail = recipe("mail"),
            abuseipdb = recipe("abuseipdb"),
            sendmail = sendmail.display(),
            env = env.display(),
        ),
        JAIL,
    );
    let _d = Daemon::start(cfg.path(), None);
    let lines = two_failures(&cfg, "203.0.113.80");
    let mut got: Vec<Hook> = (0..3)
        .map(|_| {
            hooks
                .recv_timeout(Duration::from_secs(15))
                .expect("a request")
        })
        .collect();
    got.sort_by(|a, b| a.path.cmp(&b.path));
    let [abuse, ntfy, slack] = [&got[0], &got[1], &got[2]];
    assert!(abuse.path.ends_with("/abuseipdb"), "{}", abuse.path);
    assert!(abuse.headers.contains(&("key".into(), "k3y".into())));
    assert!(abuse.raw.contains("ip=203.0.113.80"), "{}", abuse.raw);
    assert!(abuse.raw.contains("categories=18%2C22"), "{}", abuse.raw);
    assert!(
        abuse.raw.contains("Failed%20password") || abuse.raw.contains("Failed+password"),
        "{}",
        abuse.raw
    );
    assert!(ntfy.path.ends_with("/ntfy"));
    assert_eq!(ntfy.raw, "203.0.113.80 banned in sshd (ban 1)");
    assert!(ntfy.headers.contains(&("title".into(), "gaoler".into())));
    assert!(slack.path.ends_with("/slack"));
    assert_eq!(
        slack.body["text"],
        format!("gaoler banned 203.0.113.80 in sshd:\n{}", lines.join("\n"))
    );
    wait_for(Duration::from_secs(15), "the mail", || mailbox.exists());
    std::thread::sleep(Duration::from_millis(200));
    let mail = std::fs::read_to_string(&mailbox).expect("mail");
    assert!(mail.contains("To: root@example.org"), "{mail}");
    assert!(
        mail.contains("Subject: [gaoler] 203.0.113.80 banned in sshd"),
        "{mail}"
    );
    for line in &lines {
        assert!(mail.contains(line.as_str()), "{mail}");
    }
}

/// A reload applies [[notify]] changes: a webhook added by a reload gets the next ban.
#[test]
fn a_reload_adds_a_notifier() {
    let (url, hooks) = receiver(Duration::ZERO);
    let cfg = ConfigDir::new("backend = \"log\"", JAIL);
    let _d = Daemon::start(cfg.path(), None);
    two_failures(&cfg, "203.0.113.90");
    wait_for(Duration::from_secs(10), "the first ban", || {
        stats(&cfg, "bans") == 1
    });
    let main = std::fs::read_to_string(cfg.path().join("gaoler.toml")).expect("main");
    cfg.write(
        "gaoler.toml",
        &format!("{main}\n[[notify]]\nwebhook = \"{url}\"\n"),
    );
    let out = gaoler(cfg.path(), &["ctl", "reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        hooks.recv_timeout(Duration::from_millis(300)).is_err(),
        "nothing before"
    );
    two_failures(&cfg, "203.0.113.91");
    let hook = hooks
        .recv_timeout(Duration::from_secs(10))
        .expect("the event");
    assert_eq!(hook.body["ip"], "203.0.113.91");
}

/// A webhook answering 503 is tried again after a backoff, and counted sent once it
/// takes the event; one that never does is counted failed after its retries.
#[test]
fn a_webhook_is_retried_with_backoff_until_it_takes_the_event() {
    let (url, hooks) = receiver_failing(Duration::ZERO, 2);
    let (down, _never) = receiver_failing(Duration::ZERO, usize::MAX);
    let cfg = ConfigDir::new(
        &format!(
            "backend = \"log\"\n\n[[notify]]\nwebhook = \"{url}\"\nretries = 3\n\n[[notify]]\nwebhook = \"{down}\"\nretries = 1\n"
        ),
        JAIL,
    );
    let _d = Daemon::start(cfg.path(), None);
    let t0 = Instant::now();
    two_failures(&cfg, "203.0.113.95");
    // Two refusals (503), then the event: 1 s and 2 s of backoff between them.
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let hook = hooks
            .recv_timeout(Duration::from_secs(10))
            .expect("an attempt");
        attempts.push(t0.elapsed());
        assert_eq!(hook.body["ip"], "203.0.113.95");
    }
    assert!(
        attempts[2] - attempts[0] >= Duration::from_millis(2_900),
        "backoff 1 s then 2 s: {attempts:?}"
    );
    wait_for(Duration::from_secs(10), "sent once, failed once", || {
        stats(&cfg, "notify_sent") == 1 && stats(&cfg, "notify_failed") == 1
    });
}
