//! The daemon in-process: `gaoler::daemon::run` driven by the test with the memory
//! firewall, a shared memory store and paused tokio time, its log lines written into
//! a named pipe (the pipe source) and its control socket asked over a real Unix
//! socket. The binary-spawning tests prove the real edges; these prove the wiring.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gaoler::firewall::MemoryFirewall;
use gaoler::ipc::{Request, RequestFrame, Response, ResponseFrame, PROTOCOL_VERSION};
use gaoler::logging::LogControl;
use gaoler::store::{MemoryPositions, SharedStore};
use gaoler::types::{Target, TokioClock};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::shipped_filters;

const JAIL: &str = "filter = \"sshd\"\npipe = \"auth.pipe\"\nmaxretry = 3\nbantime = \"1d\"\nignoreip = [\"192.0.2.0/24\"]\n";

/// A daemon running in this test's runtime, and what the test can look into.
struct InProcess {
    dir: tempfile::TempDir,
    kernel: MemoryFirewall,
    store: SharedStore,
    shutdown: CancellationToken,
    hangups: mpsc::Sender<()>,
    task: JoinHandle<Result<(), gaoler::daemon::DaemonError>>,
}

/// A config directory: gaoler.toml (no reconciler, so the paused clock's jumps stay
/// short) and jail `sshd` reading the named pipe `auth.pipe`.
fn config_dir() -> tempfile::TempDir {
    config_dir_with("")
}

/// `config_dir` with `daemon_extra` in [daemon].
fn config_dir_with(daemon_extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "gaoler.toml",
        &format!(
            "[daemon]\nstate_dir = \"state\"\nsocket = \"gaoler.sock\"\nfilter_path = [\"{}\"]\n{daemon_extra}\n[firewall]\nbackend = \"log\"\nreconcile_interval = 0\n",
            shipped_filters().display()
        ),
    );
    write(dir.path(), "jails/sshd.toml", JAIL);
    dir
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

impl InProcess {
    /// Starts the daemon on `dir` with `store` and waits until it answers.
    async fn start(dir: tempfile::TempDir, store: SharedStore) -> InProcess {
        let config = gaoler::config::load(dir.path()).expect("valid config");
        let kernel = MemoryFirewall::default();
        let control =
            gaoler::ipc::server::bind(&config.daemon.socket, None).expect("bind the socket");
        let edges = gaoler::daemon::Edges {
            firewall: kernel.clone(),
            store: Box::new(store.clone()),
            evidence: Arc::new(store.clone()),
            positions: Arc::new(MemoryPositions::default()),
            clock: Arc::new(TokioClock::starting_at(chrono::Utc::now())),
            control,
            group: None,
            metrics: None,
            logs: Arc::new(LogControl::detached()),
            fleet: None,
        };
        let shutdown = CancellationToken::new();
        let (hangups, hangup_rx) = mpsc::channel(1);
        let task = tokio::spawn(gaoler::daemon::run(
            config,
            edges,
            shutdown.clone(),
            hangup_rx,
        ));
        let d = InProcess {
            dir,
            kernel,
            store,
            shutdown,
            hangups,
            task,
        };
        assert!(matches!(d.ask(Request::Ping).await, Response::Pong { .. }));
        d
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("gaoler.sock")
    }

    /// One request over the control socket, as `gaoler ctl` sends it.
    async fn ask(&self, request: Request) -> Response {
        let frame = serde_json::to_vec(&RequestFrame {
            v: PROTOCOL_VERSION,
            request,
        })
        .expect("encode");
        let answer = self.send_raw(&frame).await;
        serde_json::from_str::<ResponseFrame>(&answer)
            .expect("a response frame")
            .response
    }

    /// Sends one raw line and returns the answer line.
    async fn send_raw(&self, line: &[u8]) -> String {
        let mut stream = loop {
            match UnixStream::connect(self.socket()).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        stream.write_all(line).await.expect("send");
        stream.write_all(b"\n").await.expect("send");
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .await
            .expect("answer");
        answer
    }

    /// Writes `lines` into the jail's named pipe, as a logger would.
    fn log(&self, lines: &[String]) {
        let mut pipe = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.path().join("auth.pipe"))
            .expect("open the pipe for writing");
        pipe.write_all(lines.concat().as_bytes()).expect("write");
    }

    /// Waits (in paused time: lets the daemon run) until `ctl banned` shows `ip`.
    async fn until_banned(&self, ip: &str) -> gaoler::ipc::BanView {
        for _ in 0..2000 {
            if let Some(b) = self.banned().await.into_iter().find(|b| b.ip == ip) {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{ip} was not banned");
    }

    async fn banned(&self) -> Vec<gaoler::ipc::BanView> {
        match self
            .ask(Request::Banned {
                jail: None,
                matches: true,
            })
            .await
        {
            Response::Bans { bans } => bans,
            other => panic!("not a list of bans: {other:?}"),
        }
    }

    fn in_kernel(&self, ip: &str) -> bool {
        let target: Target = ip.parse().expect("target");
        let k = self.kernel.kernel.lock().expect("kernel");
        k.elements.keys().any(|(_, t)| *t == target)
    }

    /// Stops the daemon as SIGTERM would, and returns its directory.
    async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        self.task
            .await
            .expect("the daemon task")
            .expect("a clean stop");
        self.dir
    }
}

fn failures(ip: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "Failed password for root from {ip} port {} ssh2\n",
                4000 + i
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn failures_written_into_a_named_pipe_become_a_ban_in_kernel_store_and_ctl() {
    let d = InProcess::start(config_dir(), SharedStore::default()).await;
    d.log(&failures("203.0.113.7", 2));
    d.log(&failures("198.51.100.1", 1));
    d.log(&failures("203.0.113.7", 1));
    let ban = d.until_banned("203.0.113.7").await;
    assert_eq!((ban.jail.as_str(), ban.count), ("sshd", 1));
    let bantime = ban.expires_at.expect("expires") - ban.banned_at;
    assert_eq!(bantime, chrono::Duration::days(1));
    assert!(d.in_kernel("203.0.113.7"));
    assert!(!d.in_kernel("198.51.100.1"), "one failure is not a ban");
    assert_eq!(d.store.get().bans.len(), 1);
    let Response::Stats(stats) = d.ask(Request::Stats).await else {
        panic!("stats")
    };
    assert_eq!((stats.lines_read, stats.failures, stats.bans), (4, 4, 1));
    assert_eq!(stats.tracked, 1, "198.51.100.1 is tracked");
    // An address in ignoreip never is.
    d.log(&failures("192.0.2.5", 3));
    d.log(&failures("203.0.113.8", 3));
    d.until_banned("203.0.113.8").await;
    assert!(!d.in_kernel("192.0.2.5"));
    // Expiry, in paused time: a day later the ban is gone from ctl and the store.
    tokio::time::advance(Duration::from_secs(86_401)).await;
    for _ in 0..100 {
        if d.banned().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(d.banned().await.is_empty(), "expired");
    assert!(d.store.get().bans.is_empty());
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_bans_and_a_refused_reload_changes_nothing() {
    let d = InProcess::start(config_dir(), SharedStore::default()).await;
    d.log(&failures("203.0.113.7", 3));
    d.until_banned("203.0.113.7").await;
    let transactions = d.kernel.kernel.lock().expect("k").transactions;

    // A new maxretry: the jail is kept (its counts reset), its ban stays.
    write(
        d.dir.path(),
        "jails/sshd.toml",
        &JAIL.replace("maxretry = 3", "maxretry = 2"),
    );
    let Response::Reloaded(report) = d.ask(Request::Reload).await else {
        panic!("reloaded")
    };
    assert_eq!(report.reset, vec!["sshd".to_string()]);
    assert!(!report.rebuilt, "the table's layout did not change");
    assert_eq!(d.banned().await.len(), 1);
    assert!(d.in_kernel("203.0.113.7"));
    // The new rule counts: two failures now ban.
    d.log(&failures("203.0.113.9", 2));
    d.until_banned("203.0.113.9").await;

    // A broken jail file: refused with its position, and nothing changes.
    write(
        d.dir.path(),
        "jails/sshd.toml",
        "filter = \"sshd\"\npipe = \"auth.pipe\"\nmaxretry = \"x\"\n",
    );
    let before = d.kernel.kernel.lock().expect("k").transactions;
    match d.ask(Request::Reload).await {
        Response::Error { usage, message } => {
            assert!(usage, "a config error is the user's to fix");
            assert!(message.contains("sshd.toml:3:"), "{message}");
            assert!(message.contains("reload refused"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(d.kernel.kernel.lock().expect("k").transactions, before);
    assert_eq!(d.banned().await.len(), 2);
    // The old rules still run: two failures still ban.
    d.log(&failures("203.0.113.10", 2));
    d.until_banned("203.0.113.10").await;
    assert!(transactions > 0);

    // SIGHUP reloads the same way: the file fixed again, and a second jail.
    write(d.dir.path(), "jails/sshd.toml", JAIL);
    write(
        d.dir.path(),
        "jails/web.toml",
        &JAIL.replace("auth.pipe", "web.pipe"),
    );
    d.hangups.send(()).await.expect("hangup");
    let mut jails = 0;
    for _ in 0..500 {
        if let Response::Status(s) = d.ask(Request::Status { jail: None }).await {
            jails = s.jails.len();
        }
        if jails == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(jails, 2, "the hangup reloaded");
    assert_eq!(d.banned().await.len(), 3, "and kept the bans");
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_leaves_the_store_as_ctl_showed_it_and_a_restart_restores_it() {
    let store = SharedStore::default();
    let d = InProcess::start(config_dir(), store.clone()).await;
    d.log(&failures("203.0.113.7", 3));
    d.until_banned("203.0.113.7").await;
    let manual = d
        .ask(Request::Ban {
            jail: "sshd".into(),
            ip: "2001:db8::/64".into(),
            bantime: Some("permanent".into()),
        })
        .await;
    assert!(matches!(manual, Response::Banned { .. }), "{manual:?}");
    let shown = d.banned().await;
    let socket = d.socket();
    let dir = d.stop().await;
    assert!(!socket.exists(), "the socket file is removed at stop");
    let mut stored: Vec<String> = store
        .get()
        .bans
        .values()
        .map(|b| b.target.to_string())
        .collect();
    let mut listed: Vec<String> = shown.iter().map(|b| b.ip.clone()).collect();
    stored.sort();
    listed.sort();
    assert_eq!(stored, listed);

    // The next start restores both into a fresh kernel, in one transaction.
    let again = InProcess::start(dir, store).await;
    assert_eq!(again.banned().await.len(), 2);
    assert!(again.in_kernel("203.0.113.7") && again.in_kernel("2001:db8::/64"));
    assert_eq!(again.kernel.kernel.lock().expect("k").transactions, 1);
    again.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_control_socket_answers_every_request_and_refuses_garbage() {
    let d = InProcess::start(config_dir(), SharedStore::default()).await;
    assert!(matches!(
        d.ask(Request::Version).await,
        Response::Version {
            protocol: PROTOCOL_VERSION,
            ..
        }
    ));
    let Response::Status(status) = d.ask(Request::Status { jail: None }).await else {
        panic!("status")
    };
    assert_eq!(status.jails.len(), 1);
    assert_eq!(
        (
            status.jails[0].name.as_str(),
            status.jails[0].filter.as_str()
        ),
        ("sshd", "sshd")
    );
    let usage = |r: Response| matches!(r, Response::Error { usage: true, .. });
    assert!(usage(
        d.ask(Request::Status {
            jail: Some("nope".into())
        })
        .await
    ));
    assert!(usage(
        d.ask(Request::Banned {
            jail: Some("nope".into()),
            matches: false,
        })
        .await
    ));

    // Ban by hand: checked, shown, lifted.
    let ban = |ip: &str, jail: &str| Request::Ban {
        jail: jail.into(),
        ip: ip.into(),
        bantime: Some("10m".into()),
    };
    let Response::Banned { ban: view } = d.ask(ban("203.0.113.50", "sshd")).await else {
        panic!("banned")
    };
    assert_eq!(
        view.expires_at.map(|e| e - view.banned_at),
        Some(chrono::Duration::minutes(10))
    );
    assert!(
        usage(d.ask(ban("203.0.113.51", "nope")).await),
        "unknown jail"
    );
    assert!(
        usage(d.ask(ban("192.0.2.1", "sshd")).await),
        "ignored address"
    );
    assert!(usage(d.ask(ban("not-an-address", "sshd")).await));
    let Response::Status(one) = d
        .ask(Request::Status {
            jail: Some("sshd".into()),
        })
        .await
    else {
        panic!("status")
    };
    assert_eq!(one.jails[0].banned, vec!["203.0.113.50".to_string()]);
    assert_eq!(one.jails[0].currently_banned, 1);
    let unban = |ip: Option<&str>, all: bool| Request::Unban {
        ip: ip.map(String::from),
        jail: None,
        all,
    };
    assert!(usage(d.ask(unban(None, false)).await));
    assert!(usage(d.ask(unban(Some("203.0.113.50"), true)).await));
    let Response::Unbanned { bans } = d.ask(unban(Some("203.0.113.50"), false)).await else {
        panic!("unbanned")
    };
    assert_eq!(bans.len(), 1);
    assert!(!d.in_kernel("203.0.113.50"));
    let Response::Unbanned { bans } = d.ask(unban(None, true)).await else {
        panic!("unbanned")
    };
    assert!(bans.is_empty());

    // The daemon's own log: a level is checked; there is no file to reopen here.
    assert!(matches!(
        d.ask(Request::LogLevel { level: "DEBUG".into() }).await,
        Response::LogLevel { level } if level == "debug"
    ));
    assert!(usage(
        d.ask(Request::LogLevel {
            level: "loud".into()
        })
        .await
    ));
    assert!(matches!(
        d.ask(Request::FlushLogs).await,
        Response::LogsFlushed { file: None }
    ));

    // Garbage and a wrong version get an answer, and the daemon stays up.
    for raw in [
        &b"not json"[..],
        br#"{"v":99,"request":{"cmd":"ping"}}"#,
        br#"{"v":1,"request":{"cmd":"explode"}}"#,
    ] {
        let answer = d.send_raw(raw).await;
        let frame: ResponseFrame = serde_json::from_str(&answer).expect("an answer");
        assert!(usage(frame.response), "{answer}");
    }
    assert!(matches!(d.ask(Request::Ping).await, Response::Pong { .. }));
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_spray_past_max_tracked_does_not_save_an_attacker_from_its_ban() {
    // Regression (issue 19): a spray of new addresses past max_tracked evicted an
    // attacker's two earlier failures, so its third was not banned.
    let d = InProcess::start(config_dir_with("max_tracked = 100"), SharedStore::default()).await;
    d.log(&failures("198.51.100.7", 2));
    for chunk in 0..10u32 {
        // In chunks: the pipe holds 64 KiB, and this test's thread runs the daemon too.
        let spray: Vec<String> = (0..100u32)
            .flat_map(|i| {
                failures(
                    &std::net::Ipv4Addr::from(0x0a00_0000 + (chunk * 100 + i) * 256).to_string(),
                    1,
                )
            })
            .collect();
        d.log(&spray);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Response::Stats(stats) = d.ask(Request::Stats).await else {
        panic!("stats")
    };
    assert!(stats.evicted >= 900, "the spray was evicted: {stats:?}");
    d.log(&failures("198.51.100.7", 1));
    d.until_banned("198.51.100.7").await;
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn no_prefix_ban_covers_loopback_an_ignored_admin_or_this_host() {
    // Regressions (issue 19): with ipv6_prefix = 64, failures `from ::1` banned ::/64
    // and blocked [::1]; with ipv4_prefix = 24, failures next to an ignored admin
    // banned the admin's /24; `ctl ban sshd 0.0.0.0/0` was accepted.
    let dir = config_dir();
    write(
        dir.path(),
        "jails/sshd.toml",
        "filter = \"sshd\"\npipe = \"auth.pipe\"\nmaxretry = 3\nbantime = \"1d\"\nipv4_prefix = 24\nipv6_prefix = 64\nignoreip = [\"198.51.100.10\"]\n",
    );
    let d = InProcess::start(dir, SharedStore::default()).await;
    d.log(&failures("::1", 3));
    d.log(&failures("198.51.100.55", 3));
    d.log(&failures("203.0.113.5", 3));
    let wide = d.until_banned("203.0.113.0/24").await;
    assert_eq!(
        wide.jail, "sshd",
        "a prefix clear of protected addresses stays a prefix"
    );
    let narrowed = d.until_banned("198.51.100.55").await;
    assert_eq!(
        narrowed.ip, "198.51.100.55",
        "narrowed to the address that failed"
    );
    let shown: Vec<String> = d.banned().await.into_iter().map(|b| b.ip).collect();
    assert_eq!(shown.len(), 2, "::1 banned nothing: {shown:?}");
    for spec in ["0.0.0.0/0", "::/0", "198.51.100.0/24", "127.0.0.0/8"] {
        match d
            .ask(Request::Ban {
                jail: "sshd".into(),
                ip: spec.into(),
                bantime: None,
            })
            .await
        {
            Response::Error {
                usage: true,
                message,
            } => {
                assert!(
                    message.contains("protected") || message.contains("ignore"),
                    "{spec}: {message}"
                )
            }
            other => panic!("{spec} was not refused: {other:?}"),
        }
    }
    // What reached the kernel covers none of them, nor this host's own addresses.
    let protected: Vec<std::net::IpAddr> = ["127.0.0.1", "::1", "198.51.100.10"]
        .iter()
        .map(|a| a.parse().expect("ip"))
        .chain(gaoler::util::host_addresses())
        .collect();
    let k = d.kernel.kernel.lock().expect("kernel").elements.clone();
    for (_, target) in k.keys() {
        for a in &protected {
            assert!(!target.contains(*a), "{target} covers {a}");
        }
    }
    d.stop().await;
}
