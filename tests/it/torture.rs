//! Crash and fault torture with the real daemon: `kill -9` at random moments during a
//! storm of offenders (in a namespace, real nftables), an nft that fails every few
//! calls, SIGSTOP/SIGCONT during a storm, and a log file the daemon cannot read. The
//! daemon keeps running, says what is wrong, and catches up without losing a decision.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::support::*;

/// A small deterministic generator (xorshift), seeded from the clock and printed, so a
/// failing run can be repeated with GAOLER_TORTURE_SEED.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("GAOLER_TORTURE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("torture seed: {seed} (GAOLER_TORTURE_SEED={seed} repeats this run)");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const N: u32 = 10_000;

#[test]
fn kill_9_at_random_moments_of_a_storm_loses_no_ban_and_doubles_none() {
    let lab = Lab::new();
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"gtort\"\nreconcile_interval = 0",
        BAN_AT_FIRST,
    );
    // A second jail whose addresses fail once each with maxretry 2: a line counted
    // twice would ban one of them.
    cfg.write(
        "jails/twice.toml",
        "filter = \"sshd\"\nlogpath = \"other.log\"\nmaxretry = 2\nbantime = \"1h\"\n",
    );
    cfg.write("other.log", "");
    let mut rng = Rng::new();
    let mut d = Daemon::start(cfg.path(), Some(&lab.server));
    let started = chrono::Utc::now();

    let auth = cfg.path().join("auth.log");
    let other = cfg.path().join("other.log");
    let lines: Vec<String> = (0..N).map(|i| sshd_line(&offender(i))).collect();
    let singles: Vec<String> = (0..2_000).map(|i| sshd_line(&offender(N + i))).collect();
    let writer = std::thread::spawn(move || storm(&auth, lines, 40, Duration::from_millis(8)));
    let writer2 = std::thread::spawn(move || storm(&other, singles, 8, Duration::from_millis(8)));

    // Four kills at random moments while the storm lasts (about 2 s), each followed by
    // an immediate restart.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        d.kill9();
        d = Daemon::start(cfg.path(), Some(&lab.server));
    }
    writer.join().expect("storm");
    writer2.join().expect("storm");

    let until = Instant::now() + Duration::from_secs(60);
    while ctl_count(cfg.path(), "banned") != N as usize {
        assert!(
            Instant::now() < until,
            "{} bans after the storm, not {N}",
            ctl_count(cfg.path(), "banned")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The store (what ctl shows) and the kernel hold exactly the N offenders, once each.
    let bans = ctl_json(cfg.path(), &["banned"]);
    let bans = bans.as_array().expect("array");
    let mut ips: Vec<&str> = bans.iter().map(|b| b["ip"].as_str().expect("ip")).collect();
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips.len(), N as usize, "distinct bans");
    assert!(
        bans.iter().all(|b| b["jail"] == "sshd"),
        "nobody banned in `twice`"
    );
    assert!(bans.iter().all(|b| b["count"] == 1), "no ban made twice");
    let kernel = lab.elements("gtort", "sshd-v4");
    assert_eq!(kernel.len(), N as usize, "elements in the kernel");
    assert!(lab.elements("gtort", "twice-v4").is_empty());
    // None extended: every ban ends an hour after it began, and the kernel's time left
    // never exceeds the stored end.
    let now = chrono::Utc::now();
    for b in bans {
        let at: chrono::DateTime<chrono::Utc> =
            b["banned_at"].as_str().expect("at").parse().expect("time");
        let end: chrono::DateTime<chrono::Utc> = b["expires_at"]
            .as_str()
            .expect("end")
            .parse()
            .expect("time");
        assert_eq!(end - at, chrono::Duration::hours(1), "{b}");
        assert!(at >= started - chrono::Duration::seconds(1), "{b}");
    }
    let latest_end = bans
        .iter()
        .filter_map(|b| {
            b["expires_at"]
                .as_str()?
                .parse::<chrono::DateTime<chrono::Utc>>()
                .ok()
        })
        .max()
        .expect("ends");
    let most_left = (latest_end - now).num_seconds() + 2;
    for (ip, _, expires) in &kernel {
        let left = expires.expect("a timeout") as i64;
        assert!(
            left <= most_left,
            "{ip}: {left}s left, more than any stored ban"
        );
    }
    d.stop();
}

/// A `nft` that fails every `every`-th call with a message on stderr, and otherwise
/// runs the real one; first on PATH for the daemon.
fn failing_nft(dir: &Path, every: u32) -> String {
    let real = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nft installed");
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let script = format!(
        "#!/bin/sh\nn=$(cat '{count}' 2>/dev/null || echo 0)\nn=$((n + 1))\necho $n > '{count}'\nif [ $((n % {every})) -eq 0 ]; then echo 'injected failure number '$n >&2; exit 1; fi\nexec {real} \"$@\"\n",
        count = dir.join("nft-calls").display()
    );
    let path = bin.join("nft");
    std::fs::write(&path, script).expect("wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "PATH={}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn an_nft_failing_every_third_call_delays_bans_but_loses_none() {
    let lab = Lab::new();
    let cfg = ConfigDir::new(
        "backend = \"nftables\"\ntable = \"gflaky\"\nreconcile_interval = 0",
        BAN_AT_FIRST,
    );
    let path = failing_nft(cfg.path(), 3);
    let d = Daemon::start_in(
        cfg.path(),
        &["ip", "netns", "exec", &lab.server, "env", &path],
    );
    let lines: Vec<String> = (0..300).map(|i| sshd_line(&offender(i))).collect();
    storm(
        &cfg.path().join("auth.log"),
        lines,
        10,
        Duration::from_millis(20),
    );
    wait_for(Duration::from_secs(60), "all 300 bans in force", || {
        ctl_count(cfg.path(), "banned") == 300
    });
    assert_eq!(lab.elements("gflaky", "sshd-v4").len(), 300);
    let log = d.output();
    assert!(
        log.contains("injected failure number"),
        "nft's own error text is logged:\n{log}"
    );
    assert!(log.contains("retr"), "the failure is retried:\n{log}");
}

#[test]
fn sigstop_during_a_storm_then_sigcont_catches_up() {
    let cfg = ConfigDir::new("backend = \"log\"", BAN_AT_FIRST);
    let mut d = Daemon::start(cfg.path(), None);
    let lines: Vec<String> = (0..2_000).map(|i| sshd_line(&offender(i))).collect();
    let auth = cfg.path().join("auth.log");
    let writer = std::thread::spawn(move || storm(&auth, lines, 20, Duration::from_millis(10)));
    std::thread::sleep(Duration::from_millis(300));
    d.signal("-STOP");
    std::thread::sleep(Duration::from_secs(1));
    d.signal("-CONT");
    writer.join().expect("storm");
    wait_for(Duration::from_secs(30), "all 2000 bans", || {
        ctl_count(cfg.path(), "banned") == 2_000
    });
}

#[test]
fn an_unreadable_log_is_reported_and_read_once_it_can_be() {
    // As root every file is readable: the daemon runs as nobody here (log backend).
    use std::os::unix::fs::PermissionsExt;
    let cfg = ConfigDir::new("backend = \"log\"", BAN_AT_FIRST);
    let dir = cfg.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let copy = dir.join("gaoler-copy");
    std::fs::copy(bin(), &copy).expect("copy binary");
    std::fs::create_dir_all(dir.join("state")).expect("state");
    let chown = |p: &Path| {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).expect("chown");
    };
    chown(&dir.join("state"));
    chown(&dir.join("jails"));
    let auth = dir.join("auth.log");
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    cfg.append("auth.log", sshd_line("203.0.113.77").as_bytes());
    let d = Daemon::start_in(
        dir,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ],
    );
    wait_for(Duration::from_secs(5), "the fault in the log", || {
        d.output().contains("permission denied")
    });
    assert!(
        gaoler(dir, &["ctl", "ping"]).status.success(),
        "still running"
    );
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    wait_for(
        Duration::from_secs(10),
        "the line read once readable",
        || ctl_count(dir, "banned") == 1,
    );
    let _ = copy;
}
