//! Test helpers: temporary config directories, a guard around a running daemon, `ctl`
//! calls, and `Lab`, two network namespaces joined by a veth pair; for the fleet,
//! `Nats` (one nats-server), `NatsCluster` (three) and `Net` (namespaces on a bridge).
//! Every namespace a test creates is deleted when its guard drops, also when the test
//! fails, and every nats-server it starts is killed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gaoler")
}

/// The repository's shipped filters.
pub fn shipped_filters() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("filters")
}

/// A temporary `--config` directory with state, socket and logs inside it.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    /// gaoler.toml with `firewall` settings (e.g. `backend = "log"`), and one jail `sshd`.
    pub fn new(firewall: &str, jail: &str) -> ConfigDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = ConfigDir { dir };
        c.write(
            "gaoler.toml",
            &format!(
                "[daemon]\nstate_dir = \"state\"\nsocket = \"gaoler.sock\"\nfilter_path = [\"{}\"]\nlog_level = \"debug\"\n\n[firewall]\n{firewall}\n",
                shipped_filters().display()
            ),
        );
        c.write("jails/sshd.toml", jail);
        c.write("auth.log", "");
        c
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    /// Appends raw bytes to a log file in the directory.
    pub fn append(&self, rel: &str, bytes: &[u8]) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join(rel))
            .expect("open log");
        f.write_all(bytes).expect("append");
    }

    /// Appends an sshd failure for `ip`, framed as syslog with the current time.
    pub fn sshd_failure(&self, ip: &str) {
        self.append("auth.log", sshd_line(ip).as_bytes());
    }
}

/// An sshd failure line for `ip`, framed as syslog with the current time.
pub fn sshd_line(ip: &str) -> String {
    let stamp = chrono::Local::now().format("%b %e %H:%M:%S");
    format!("{stamp} testhost sshd[4242]: Failed password for root from {ip} port 50000 ssh2\n")
}

/// `ctl stats --json`'s `failures`: failures counted since the daemon started.
pub fn failures(config: &Path) -> u64 {
    ctl_json(config, &["stats"])["failures"]
        .as_u64()
        .expect("failures")
}

/// Runs `gaoler ARGS --config DIR` to completion.
pub fn gaoler(config: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run gaoler")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `gaoler ctl ARGS --json`, parsed.
pub fn ctl_json(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["ctl"];
    full.extend_from_slice(args);
    full.push("--json");
    let out = gaoler(config, &full);
    assert!(
        out.status.success(),
        "ctl {args:?} failed: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ctl prints JSON")
}

/// The addresses `ctl banned --json` lists.
pub fn banned_ips(config: &Path) -> Vec<String> {
    ctl_json(config, &["banned"])
        .as_array()
        .expect("array")
        .iter()
        .map(|b| b["ip"].as_str().expect("ip").to_string())
        .collect()
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `gaoler run`; killed with SIGKILL if still running when dropped.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon (inside `netns` when given) and waits until it answers.
    pub fn start(config: &Path, netns: Option<&str>) -> Daemon {
        match netns {
            Some(ns) => Daemon::start_in(config, &["ip", "netns", "exec", ns]),
            None => Daemon::start_in(config, &[]),
        }
    }

    /// Starts the daemon under `wrapper` (a command that execs the rest of its
    /// arguments, such as `ip netns exec NS` or `nsenter -m -t PID`).
    pub fn start_in(config: &Path, wrapper: &[&str]) -> Daemon {
        let log = config.join(format!(
            "daemon-{}.log",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(File::create(&log).expect("log"))
            .stderr(File::create(log.with_extension("err")).expect("log"))
            .spawn()
            .expect("spawn daemon");
        let mut d = Daemon {
            child: Some(child),
            log,
        };
        let start = Instant::now();
        loop {
            if gaoler(config, &["ctl", "ping"]).status.success() {
                return d;
            }
            if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("daemon exited with {status} at start:\n{}", d.output());
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "daemon did not answer:\n{}",
                d.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's process id (wrappers such as `ip netns exec` and `prlimit` exec it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The daemon's stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default()
    }

    pub fn signal(&mut self, sig: &str) {
        if let Some(child) = self.child.as_mut() {
            // `ip netns exec` execs the daemon, so the pid is the daemon's.
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
        }
    }

    /// SIGHUP: reload the configuration.
    pub fn hup(&mut self) {
        self.signal("-HUP");
    }

    /// SIGKILL and wait.
    pub fn kill9(&mut self) {
        self.signal("-KILL");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        self.signal("-TERM");
        if let Some(mut c) = self.child.take() {
            let status = c.wait().expect("wait");
            assert!(
                status.success(),
                "daemon exited with {status}:\n{}",
                self.output()
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "--- daemon log ---\n{}--- end of daemon log ---",
                self.output()
            );
        }
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Fails loudly (rather than skipping) when the test cannot do its job.
pub fn require_root_and_nft() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "end-to-end tests need root (network namespaces and nftables); run them as root"
    );
    let nft = Command::new("nft").arg("--version").output();
    assert!(
        nft.is_ok_and(|o| o.status.success()),
        "end-to-end tests need nft: apt-get install -y nftables"
    );
}

/// Runs `f` on a thread that has entered network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).expect("netns handle");
        // SAFETY: setns on this thread only, with a valid namespace fd.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns failed: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
}

/// Two namespaces: `server` (runs gaoler and a TCP listener) and `attacker`, joined
/// by a veth pair, with IPv4 and IPv6 documentation addresses.
pub struct Lab {
    pub server: String,
    pub attacker: String,
    stop: Arc<AtomicBool>,
}

pub const SERVER_V4: &str = "198.51.100.1";
pub const ATTACKER_V4: &str = "198.51.100.2";
/// The IPv6 addresses are on one /48 link, the attacker in another /64 than the
/// server: no /64 ban of the attacker may cover the server's own address.
pub const SERVER_V6: &str = "2001:db8:5::1";
pub const ATTACKER_V6: &str = "2001:db8:5:1::2";
/// A second attacker address in the same /64 as `ATTACKER_V6`.
pub const ATTACKER_V6_B: &str = "2001:db8:5:1::3";

impl Lab {
    pub fn new() -> Lab {
        require_root_and_nft();
        sweep_leftovers();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("gt-{}-{n}", std::process::id());
        let lab = Lab {
            server: format!("{base}-s"),
            attacker: format!("{base}-a"),
            stop: Arc::new(AtomicBool::new(false)),
        };
        ip(&["netns", "add", &lab.server]);
        ip(&["netns", "add", &lab.attacker]);
        // Created inside the namespaces: the host's interfaces are never touched.
        ip(&[
            "-n",
            &lab.server,
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth1",
            "netns",
            &lab.attacker,
        ]);
        for (ns, dev, v4, v6) in [
            (&lab.server, "veth0", SERVER_V4, SERVER_V6),
            (&lab.attacker, "veth1", ATTACKER_V4, ATTACKER_V6),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/48"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n",
            &lab.attacker,
            "addr",
            "add",
            &format!("{ATTACKER_V6_B}/48"),
            "dev",
            "veth1",
            "nodad",
        ]);
        lab
    }

    /// A TCP listener on `port` in the server namespace (both address families),
    /// accepting and closing connections until the lab drops.
    pub fn listen(&self, port: u16) {
        let stop = self.stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = self.server.clone();
        std::thread::spawn(move || {
            in_netns(&ns, move || {
                let listeners: Vec<TcpListener> = [SERVER_V4, SERVER_V6]
                    .iter()
                    .map(|a| {
                        let addr = SocketAddr::new(a.parse().expect("ip"), port);
                        let l = TcpListener::bind(addr).expect("bind listener");
                        l.set_nonblocking(true).expect("nonblocking");
                        l
                    })
                    .collect();
                tx.send(()).expect("ready");
                while !stop.load(Ordering::Relaxed) {
                    for l in &listeners {
                        while let Ok((s, _)) = l.accept() {
                            drop(s);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("listener ready");
    }

    /// Whether the attacker (from its primary address of the server's family) gets a
    /// TCP connection to `server:port` within `timeout`.
    pub fn attacker_connects(&self, server: &str, port: u16, timeout: Duration) -> bool {
        let from = if server.contains(':') {
            ATTACKER_V6
        } else {
            ATTACKER_V4
        };
        self.attacker_connects_from(from, server, port, timeout)
    }

    /// How a TCP connect from the attacker ends: `Ok`, or the error kind (a dropped SYN
    /// times out, a rejected one is refused at once).
    pub fn attacker_connect_result(
        &self,
        server: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<(), std::io::ErrorKind> {
        let from = if server.contains(':') {
            ATTACKER_V6
        } else {
            ATTACKER_V4
        };
        let local = SocketAddr::new(from.parse().expect("ip"), 0);
        let remote = SocketAddr::new(server.parse().expect("ip"), port);
        in_netns(&self.attacker, move || {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(remote),
                socket2::Type::STREAM,
                None,
            )
            .map_err(|e| e.kind())?;
            sock.bind(&local.into()).map_err(|e| e.kind())?;
            sock.connect_timeout(&remote.into(), timeout)
                .map_err(|e| e.kind())
        })
    }

    /// Whether the attacker, using source address `from`, gets a TCP connection.
    pub fn attacker_connects_from(
        &self,
        from: &str,
        server: &str,
        port: u16,
        timeout: Duration,
    ) -> bool {
        let local = SocketAddr::new(from.parse().expect("ip"), 0);
        let remote = SocketAddr::new(server.parse().expect("ip"), port);
        in_netns(&self.attacker, move || {
            let domain = socket2::Domain::for_address(remote);
            let Ok(sock) = socket2::Socket::new(domain, socket2::Type::STREAM, None) else {
                return false;
            };
            sock.bind(&local.into()).is_ok()
                && sock.connect_timeout(&remote.into(), timeout).is_ok()
        })
    }

    /// `nft -j ARGS` in the server namespace, parsed.
    pub fn nft_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.server, "nft", "-j"])
            .args(args)
            .output()
            .expect("nft");
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("nft json"))
    }

    /// `nft ARGS` in the server namespace; panics on failure.
    pub fn nft(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.server, "nft"])
            .args(args)
            .output()
            .expect("nft");
        assert!(out.status.success(), "nft {args:?}: {}", text(&out.stderr));
    }

    /// The elements of `set` in table inet `table`: (address, timeout, expires).
    pub fn elements(&self, table: &str, set: &str) -> Vec<(String, Option<u64>, Option<u64>)> {
        let Some(doc) = self.nft_json(&["list", "set", "inet", table, set]) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for obj in doc["nftables"].as_array().into_iter().flatten() {
            for e in obj["set"]["elem"].as_array().into_iter().flatten() {
                match e {
                    serde_json::Value::String(s) => out.push((s.clone(), None, None)),
                    other => {
                        let el = &other["elem"];
                        let val = match &el["val"] {
                            serde_json::Value::String(v) => v.clone(),
                            v => format!(
                                "{}/{}",
                                v["prefix"]["addr"].as_str().unwrap_or_default(),
                                v["prefix"]["len"]
                            ),
                        };
                        out.push((val, el["timeout"].as_u64(), el["expires"].as_u64()));
                    }
                }
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for ns in [&self.server, &self.attacker] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

/// Deletes namespaces left by test processes that died without cleaning up.
fn sweep_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in text(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("gt-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            delete_netns(name);
        }
    }
}

/// The n-th offender: 10.x.y.z, distinct for n < 16M.
pub fn offender(n: u32) -> String {
    std::net::Ipv4Addr::from(0x0A00_0000 + n).to_string()
}

/// Appends `lines` to `file` in chunks of `chunk`, pausing `pause` between them.
pub fn storm(file: &Path, lines: Vec<String>, chunk: usize, pause: Duration) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .expect("open log");
    for part in lines.chunks(chunk) {
        f.write_all(part.concat().as_bytes()).expect("append");
        std::thread::sleep(pause);
    }
}

/// Writes `count` distinct offenders (`10.NET.x.y`, one sshd failure each) to the
/// config's auth.log in chunks of 1,000, and waits until the daemon counts that many
/// bans (for a jail banning at the first failure).
pub fn ban_storm(cfg: &ConfigDir, count: u32, net: u8) {
    let lines: Vec<String> = (0..count)
        .map(|i| sshd_line(&format!("10.{net}.{}.{}", i / 250, 1 + i % 250)))
        .collect();
    storm(
        &cfg.path().join("auth.log"),
        lines,
        1_000,
        Duration::from_millis(5),
    );
    wait_for(Duration::from_secs(60), "every ban", || {
        ctl_json(cfg.path(), &["stats"])["bans"].as_u64() == Some(u64::from(count))
    });
}

/// How many entries `ctl WHAT --json` lists; `usize::MAX` when ctl fails.
pub fn ctl_count(cfg: &Path, what: &str) -> usize {
    let out = gaoler(cfg, &["ctl", what, "--json"]);
    if !out.status.success() {
        return usize::MAX;
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(usize::MAX)
}

/// Jail `sshd` on auth.log banning at the first failure, for an hour.
pub const BAN_AT_FIRST: &str =
    "filter = \"sshd\"\nlogpath = \"auth.log\"\nmaxretry = 1\nbantime = \"1h\"\n";

/// The resident memory of process `pid` in KiB (`VmRSS`), 0 when it is gone.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// How many files process `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

// ---------------------------------------------------------------------------------
// NATS: Debian's nats-server (2.9), alone or as a 3-node JetStream cluster, on
// loopback or inside private network namespaces joined by a bridge (`Net`).

/// Fails loudly when nats-server is missing; `scripts/test` installs Debian's package.
pub fn ensure_nats_server() {
    let out = Command::new("nats-server").arg("--version").output();
    assert!(
        out.is_ok_and(|o| o.status.success()),
        "the fleet tests need nats-server: run scripts/test (it installs it), or \
         apt-get install -y nats-server with a /usr/sbin/policy-rc.d that exits 101"
    );
}

/// A loopback address of its own for each call in this test process (127.X.Y.1..3 are
/// the cluster's nodes), so tests running at once never share address and port.
pub fn loopback_base() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!(
        "127.{}.{}",
        10 + (pid % 200),
        (pid / 200 + n as u32 * 7) % 250
    )
}

/// A TCP port nobody listens on at `addr` right now (in the caller's namespace).
pub fn free_port(addr: &str) -> u16 {
    let l = TcpListener::bind((addr, 0)).expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Whether something accepts TCP connections on `addr:port` (inside `netns` if given).
fn accepts(netns: Option<&str>, addr: &str, port: u16) -> bool {
    let sock = SocketAddr::new(addr.parse().expect("ip"), port);
    let try_it =
        move || std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_ok();
    match netns {
        Some(ns) => in_netns(ns, try_it),
        None => try_it(),
    }
}

/// Spawns `cmd` so that it gets SIGKILL when this test process dies, even killed
/// (PR_SET_PDEATHSIG). The signal follows the thread that forked, so one thread that
/// lives as long as the process does all the forking.
fn spawn_for_life(mut cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    // SAFETY: prctl in the forked child before exec is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        std::sync::Mutex::new(tx)
    });
    let (tx, rx) = std::sync::mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((cmd, tx))
        .expect("spawner thread");
    rx.recv().expect("spawner answer")
}

/// A running nats-server with JetStream, killed (SIGKILL) when dropped. Its store and
/// log live in a temporary directory that survives `kill` and `restart`.
pub struct Nats {
    /// The namespace it runs in (`None`: the host's, on a loopback address).
    pub netns: Option<String>,
    pub addr: String,
    pub port: u16,
    /// `server_name`, in a cluster.
    pub name: String,
    dir: tempfile::TempDir,
    /// A configuration file (cluster nodes); without one, `-js -sd -a -p`.
    config: Option<PathBuf>,
    /// The monitoring port (cluster nodes), on `addr`.
    monitor_port: Option<u16>,
    /// More command-line arguments (without a configuration file).
    extra: Vec<String>,
    child: Option<Child>,
    /// Where this run's log starts in `nats.log`.
    log_from: usize,
}

impl Nats {
    /// One server on a loopback address of its own in the host's namespace.
    pub fn start() -> Nats {
        Nats::start_with(&[])
    }

    /// The same with more arguments for nats-server: `["--user", "u", "--pass", "p"]`,
    /// `["--auth", "TOKEN"]`, or `["-js=false"]` for a server without JetStream.
    pub fn start_with(extra: &[&str]) -> Nats {
        let addr = format!("{}.1", loopback_base());
        let port = free_port(&addr);
        Nats::start_at_with(None, &addr, port, extra)
    }

    /// One server in `netns` (or on the host when `None`), listening on `addr:port`.
    pub fn start_at(netns: Option<&str>, addr: &str, port: u16) -> Nats {
        Nats::start_at_with(netns, addr, port, &[])
    }

    pub fn start_at_with(netns: Option<&str>, addr: &str, port: u16, extra: &[&str]) -> Nats {
        ensure_nats_server();
        let mut n = Nats {
            netns: netns.map(str::to_string),
            addr: addr.to_string(),
            port,
            name: String::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            config: None,
            monitor_port: None,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            child: None,
            log_from: 0,
        };
        n.spawn();
        n.wait_ready(Duration::from_secs(10));
        n
    }

    /// `nats://addr:port`.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.addr, self.port)
    }

    /// The JetStream store directory (`-sd`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// The server's log (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// This run's log.
    fn run_log(&self) -> String {
        self.log()
            .get(self.log_from..)
            .unwrap_or_default()
            .to_string()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "nats-server already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("nats log");
        self.log_from = log.metadata().map_or(0, |m| m.len() as usize);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nats-server"]);
                c
            }
            None => Command::new("nats-server"),
        };
        match &self.config {
            Some(config) => {
                cmd.arg("-c").arg(config);
            }
            None => {
                cmd.arg("-js").arg("-sd").arg(self.store_dir()).args([
                    "-a",
                    &self.addr,
                    "-p",
                    &self.port.to_string(),
                ]);
                cmd.args(&self.extra);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(spawn_for_life(cmd).expect("spawn nats-server"));
    }

    /// Waits until this run logged "Server is ready" and accepts connections.
    fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("nats-server exited with {status}:\n{}", self.run_log());
            }
            if self.run_log().contains("Server is ready")
                && accepts(self.netns.as_deref(), &self.addr, self.port)
            {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "nats-server at {} not ready after {limit:?}:\n{}",
                self.url(),
                self.run_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's `GET /jsz` (JetStream state, `meta_cluster` in a cluster), from
    /// its monitoring port; `None` without one or when it does not answer.
    pub fn jsz(&self) -> Option<serde_json::Value> {
        use std::io::Read;
        let port = self.monitor_port?;
        let sock = SocketAddr::new(self.addr.parse().ok()?, port);
        let get = move || -> Option<Vec<u8>> {
            let mut s =
                std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(500)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /jsz HTTP/1.0\r\nHost: nats\r\n\r\n")
                .ok()?;
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).ok()?;
            Some(answer)
        };
        let answer = match &self.netns {
            Some(ns) => in_netns(ns, get),
            None => get(),
        }?;
        let at = memchr::memmem::find(&answer, b"\r\n\r\n")?;
        serde_json::from_slice(&answer[at + 4..]).ok()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL (a crashed node), and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs nats-server, so the pid is the server's.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same address, port and store (killing it first if it
    /// runs), and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready(Duration::from_secs(10));
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- nats-server {} {} log ---\n{}--- end of nats-server log ---",
                self.name,
                self.url(),
                self.log()
            );
        }
    }
}

/// Three nats-servers forming a JetStream cluster (`server_name` n1..n3, cluster
/// `gaoler-test`, each routing to the other two).
pub struct NatsCluster {
    pub nodes: Vec<Nats>,
}

impl NatsCluster {
    /// Three nodes on loopback addresses of their own (127.X.Y.1..3), host namespace.
    pub fn loopback() -> NatsCluster {
        let base = loopback_base();
        let places: Vec<(Option<String>, String)> =
            (1..=3).map(|i| (None, format!("{base}.{i}"))).collect();
        NatsCluster::start(&places)
    }

    /// Three nodes, node i in `net`'s namespace `nodes[i]`, on its address there.
    pub fn in_net(net: &Net, nodes: [usize; 3]) -> NatsCluster {
        let places: Vec<(Option<String>, String)> = nodes
            .iter()
            .map(|&i| (Some(net.ns(i).to_string()), net.addr(i).to_string()))
            .collect();
        NatsCluster::start(&places)
    }

    /// Nodes at `places` (namespace, address): client port 4222 and route port 6222
    /// inside namespaces, free ports on loopback.
    fn start(places: &[(Option<String>, String)]) -> NatsCluster {
        ensure_nats_server();
        let ports: Vec<(u16, u16, u16)> = places
            .iter()
            .map(|(ns, addr)| match ns {
                Some(_) => (4222, 6222, 8222),
                None => (free_port(addr), free_port(addr), free_port(addr)),
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, (ns, addr)) in places.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let dir = tempfile::tempdir().expect("tempdir");
            let routes: Vec<String> = places
                .iter()
                .zip(&ports)
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, ((_, a), (_, rp, _)))| format!("\"nats-route://{a}:{rp}\""))
                .collect();
            let (port, route_port, monitor_port) = ports[i];
            let config = dir.path().join("nats.conf");
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: \"{addr}:{port}\"\nhttp: \"{addr}:{monitor_port}\"\n\
                     jetstream {{ store_dir: \"{store}\" }}\n\
                     cluster {{\n  name: \"gaoler-test\"\n  listen: \"{addr}:{route_port}\"\n  \
                     routes: [ {routes} ]\n}}\n",
                    store = dir.path().join("store").display(),
                    routes = routes.join(", "),
                ),
            )
            .expect("write nats.conf");
            let mut n = Nats {
                netns: ns.clone(),
                addr: addr.clone(),
                port,
                name,
                dir,
                config: Some(config),
                monitor_port: Some(monitor_port),
                extra: Vec::new(),
                child: None,
                log_from: 0,
            };
            n.spawn();
            nodes.push(n);
        }
        let mut cluster = NatsCluster { nodes };
        for n in &mut cluster.nodes {
            n.wait_ready(Duration::from_secs(10));
        }
        cluster.wait_meta_leader(Duration::from_secs(15));
        cluster
    }

    /// Every node's URL, for a client's server list.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Nats::url).collect()
    }

    /// Waits until every running node knows the JetStream metadata leader (its
    /// monitoring `/jsz`; the log does not always say so).
    pub fn wait_meta_leader(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            let mut all = true;
            for n in &mut self.nodes {
                if n.is_running() {
                    all &= n.jsz().is_some_and(|j| {
                        j["meta_cluster"]["leader"]
                            .as_str()
                            .is_some_and(|l| !l.is_empty())
                    });
                }
            }
            if all {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "no JetStream metadata leader known to every node after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Private network namespaces joined by a bridge in a hub namespace of their own:
/// node i is namespace `ns(i)` with `addr(i)` (192.0.2.i+1/24) on its `eth0`. Nothing
/// of the host's network is touched. On drop every process still inside one of these
/// namespaces is killed and the namespaces are deleted, also when the test fails.
pub struct Net {
    hub: String,
    nodes: Vec<(String, String)>,
}

impl Net {
    pub fn new(count: usize) -> Net {
        require_root();
        sweep_leftovers();
        assert!((1..=200).contains(&count), "1 to 200 nodes");
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("gt-{}-{n}", std::process::id());
        let mut net = Net {
            hub: format!("{base}-hub"),
            nodes: Vec::new(),
        };
        ip(&["netns", "add", &net.hub]);
        ip(&["-n", &net.hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &net.hub, "link", "set", "br0", "up"]);
        for i in 0..count {
            let ns = format!("{base}-{i}");
            let addr = format!("192.0.2.{}", i + 1);
            ip(&["netns", "add", &ns]);
            // Pushed into `net` at once, so a failure below still deletes it.
            net.nodes.push((ns.clone(), addr.clone()));
            let port = format!("p{i}");
            ip(&[
                "-n", &net.hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &net.hub, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &net.hub, "link", "set", &port, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    pub fn ns(&self, i: usize) -> &str {
        &self.nodes[i].0
    }

    pub fn addr(&self, i: usize) -> &str {
        &self.nodes[i].1
    }

    /// Cuts node i off the others (its port on the bridge goes down).
    pub fn cut(&self, i: usize) {
        ip(&["-n", &self.hub, "link", "set", &format!("p{i}"), "down"]);
    }

    /// Joins node i to the others again.
    pub fn heal(&self, i: usize) {
        ip(&["-n", &self.hub, "link", "set", &format!("p{i}"), "up"]);
    }

    /// Runs `f` (a future) to completion on a current-thread tokio runtime whose thread
    /// is inside node i's namespace: every socket it opens is that node's.
    pub fn block_on<T, F>(&self, i: usize, f: impl FnOnce() -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T>,
    {
        in_netns(self.ns(i), move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f())
        })
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let all = std::iter::once(&self.hub).chain(self.nodes.iter().map(|(ns, _)| ns));
        for ns in all {
            delete_netns(ns);
        }
    }
}

/// Kills what still runs in namespace `ns` (only processes a test started there), then
/// deletes it.
fn delete_netns(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in text(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "delete", ns]).status();
}

/// Network namespaces need root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test creates network namespaces: run it as root"
    );
}
