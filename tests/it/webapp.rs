//! Protecting a Gunicorn + nginx Python web app, end to end: real nginx and gunicorn
//! run in the lab's server namespace (tests/fixtures/webapp/app.py behind nginx), five
//! attackers each misbehave in their own way from their own address, a well-behaved
//! client talks to the server over a second veth pair from a third namespace, and the
//! real daemon follows nginx's and gunicorn's own log files. nginx and gunicorn come
//! from scripts/test (Debian's nginx; gunicorn in the venv target/webapp-venv).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::*;

/// The well-behaved client, in its own namespace, and the server's address on its link.
pub const CLIENT_V4: &str = "203.0.113.2";
pub const SERVER_CLIENT_V4: &str = "203.0.113.1";
/// More attacker addresses on the attacker's veth, beside `ATTACKER_V4`.
pub const MORE_ATTACKERS_V4: [&str; 4] = [
    "198.51.100.3",
    "198.51.100.4",
    "198.51.100.5",
    "198.51.100.6",
];
/// gunicorn's access log format: the combined format plus the request time and the
/// X-Forwarded-For header nginx sets.
pub const GUNICORN_LOG_FORMAT: &str =
    r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s "%({X-Forwarded-For}i)s""#;
/// alice's password, for nginx's basic auth and the app's /login alike.
pub const PASSWORD: &str = "correct-horse";

const NGINX: &str = "/usr/sbin/nginx";
const HTTP_PORT: u16 = 80;
/// How long a TCP connect may take before it counts as dropped.
const DROPPED: Duration = Duration::from_secs(1);
/// How long a TCP connect may take when it should succeed.
const CONNECTS: Duration = Duration::from_secs(3);
/// The ceiling for each ban to show in `ctl banned`.
const BAN_WAIT: Duration = Duration::from_secs(10);

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn gunicorn_bin() -> PathBuf {
    manifest().join("target/webapp-venv/bin/gunicorn")
}

fn app_dir() -> PathBuf {
    manifest().join("tests/fixtures/webapp")
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
}

/// Panics with a pointer to scripts/test unless `path` exists.
fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} not found at {}: run scripts/test as root, which installs it",
        path.display()
    );
}

fn require_tools() {
    require(Path::new(NGINX), "nginx (Debian's nginx package)");
    require(
        &gunicorn_bin(),
        "gunicorn (the venv target/webapp-venv made by scripts/test)",
    );
    for (tool, arg) in [("curl", "--version"), ("openssl", "version")] {
        let found = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} not found: run scripts/test as root, which installs it"
        );
    }
}

/// A network namespace of ours, deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// A server process (and its workers) in its own process group, killed on drop.
struct Server {
    name: &'static str,
    child: Child,
    stderr: PathBuf,
}

impl Server {
    /// Runs `program ARGS` inside `ns` (`ip netns exec` execs it, so the child is the
    /// server itself) as the leader of a new process group.
    fn spawn(name: &'static str, ns: &str, program: &Path, args: &[String], dir: &Path) -> Server {
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("{name}.stdout"))).expect("stdout"))
            .stderr(std::fs::File::create(&stderr).expect("stderr"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Server {
            name,
            child,
            stderr,
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: kill has no memory preconditions; the group is the one this
            // guard's child leads (process_group(0)), so nothing else is signalled.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// How one curl run ended: one HTTP status per transfer (0 for a transfer that got
/// no answer, such as a dropped connection), curl's exit code and its error text.
#[derive(Debug, Clone)]
pub struct Curl {
    pub codes: Vec<u16>,
    pub exit: Option<i32>,
    pub stderr: String,
}

impl Curl {
    /// The first transfer's status (0 when there was none).
    pub fn code(&self) -> u16 {
        self.codes.first().copied().unwrap_or(0)
    }
}

/// `ip netns exec NS curl --interface FROM ... ARGS`: every body goes to /dev/null
/// (an `-o /dev/null` is put before each `http://` argument), each transfer's status
/// is printed; a transfer has 2 s to connect and 5 s in all, and the first failed
/// transfer ends the run (`--fail-early`).
pub fn curl_from(ns: &str, from: &str, args: &[&str]) -> Curl {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "curl", "--interface", from])
        .args(["-s", "-S", "--fail-early", "-w", "%{http_code}\\n"])
        .args(["--connect-timeout", "2", "--max-time", "5"]);
    for a in args {
        if a.starts_with("http://") {
            cmd.args(["-o", "/dev/null"]);
        }
        cmd.arg(a);
    }
    let out = cmd.output().expect("run curl");
    Curl {
        codes: text(&out.stdout)
            .lines()
            .map(|l| l.trim().parse().unwrap_or(0))
            .collect(),
        exit: out.status.code(),
        stderr: text(&out.stderr),
    }
}

/// `n` times the same URL, for one curl run (one kept-alive connection).
pub fn repeat(url: &str, n: usize) -> Vec<&str> {
    vec![url; n]
}

/// nginx (on 198.51.100.1:80, [2001:db8:5::1]:80 and 203.0.113.1:80) in front of
/// gunicorn (127.0.0.1:8000, 2 workers) in the lab's server namespace; the attacker
/// namespace has the extra addresses `MORE_ATTACKERS_V4`; a third namespace holds the
/// good client, joined to the server by its own veth pair. Servers, then namespaces,
/// then the directory go on drop (field order).
pub struct WebLab {
    nginx: Option<Server>,
    gunicorn: Option<Server>,
    client_ns: Netns,
    pub lab: Lab,
    dir: tempfile::TempDir,
}

impl WebLab {
    pub fn new() -> WebLab {
        require_tools();
        let lab = Lab::new();
        // Named like the lab's namespaces so that its sweep also finds a leftover.
        let base = lab
            .server
            .strip_suffix("-s")
            .expect("the lab's server namespace ends in -s");
        let client_ns = Netns(format!("{base}-c"));
        ip(&["netns", "add", &client_ns.0]);
        ip(&[
            "-n",
            &lab.server,
            "link",
            "add",
            "veth2",
            "type",
            "veth",
            "peer",
            "name",
            "veth3",
            "netns",
            &client_ns.0,
        ]);
        for (ns, dev, v4) in [
            (lab.server.as_str(), "veth2", SERVER_CLIENT_V4),
            (client_ns.0.as_str(), "veth3", CLIENT_V4),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        for a in MORE_ATTACKERS_V4 {
            ip(&[
                "-n",
                &lab.attacker,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                "veth1",
            ]);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut web = WebLab {
            nginx: None,
            gunicorn: None,
            client_ns,
            lab,
            dir,
        };
        web.start_gunicorn();
        web.start_nginx();
        web
    }

    pub fn server(&self) -> &str {
        &self.lab.server
    }

    pub fn attacker(&self) -> &str {
        &self.lab.attacker
    }

    pub fn client(&self) -> &str {
        &self.client_ns.0
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn nginx_access_log(&self) -> PathBuf {
        self.dir().join("nginx/access.log")
    }

    pub fn nginx_error_log(&self) -> PathBuf {
        self.dir().join("nginx/error.log")
    }

    pub fn gunicorn_access_log(&self) -> PathBuf {
        self.dir().join("gunicorn/access.log")
    }

    fn start_gunicorn(&mut self) {
        let gdir = self.dir().join("gunicorn");
        std::fs::create_dir_all(&gdir).expect("mkdir gunicorn");
        std::fs::write(self.gunicorn_access_log(), "").expect("create access.log");
        let app = app_dir().display().to_string();
        let args: Vec<String> = [
            "--bind",
            "127.0.0.1:8000",
            "--workers",
            "2",
            "--chdir",
            &app,
            "--pythonpath",
            &app,
            "--access-logfile",
            &self.gunicorn_access_log().display().to_string(),
            "--access-logformat",
            GUNICORN_LOG_FORMAT,
            "--error-logfile",
            &gdir.join("error.log").display().to_string(),
            "app:application",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.gunicorn = Some(Server::spawn(
            "gunicorn",
            &self.lab.server,
            &gunicorn_bin(),
            &args,
            &gdir,
        ));
        self.wait_ready(
            "gunicorn on 127.0.0.1:8000",
            "127.0.0.1",
            "http://127.0.0.1:8000/",
        );
    }

    fn start_nginx(&mut self) {
        let ndir = self.dir().join("nginx");
        std::fs::create_dir_all(ndir.join("tmp")).expect("mkdir nginx");
        let hash = Command::new("openssl")
            .args(["passwd", "-apr1", PASSWORD])
            .output()
            .expect("run openssl passwd");
        assert!(
            hash.status.success(),
            "openssl passwd: {}",
            text(&hash.stderr)
        );
        std::fs::write(
            ndir.join("htpasswd"),
            format!("alice:{}\n", text(&hash.stdout).trim()),
        )
        .expect("write htpasswd");
        for log in [self.nginx_access_log(), self.nginx_error_log()] {
            std::fs::write(log, "").expect("create nginx log");
        }
        let d = ndir.display();
        let conf = format!(
            r#"# nginx for tests/it/webapp.rs: everything lives in {d}.
user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 512;
}}
http {{
    access_log {d}/access.log combined;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type text/plain;
    limit_req_zone $binary_remote_addr zone=perip:1m rate=1r/s;
    server {{
        listen {SERVER_V4}:{HTTP_PORT};
        listen [{SERVER_V6}]:{HTTP_PORT};
        listen {SERVER_CLIENT_V4}:{HTTP_PORT};
        server_name _;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header Host $host;
        location /private/ {{
            auth_basic "private";
            auth_basic_user_file {d}/htpasswd;
            proxy_pass http://127.0.0.1:8000/;
        }}
        location /limited/ {{
            limit_req zone=perip burst=2 nodelay;
            proxy_pass http://127.0.0.1:8000/;
        }}
        location / {{
            proxy_pass http://127.0.0.1:8000;
        }}
    }}
}}
"#
        );
        let conf_path = ndir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let args: Vec<String> = vec![
            "-p".into(),
            format!("{d}/"),
            "-e".into(),
            self.nginx_error_log().display().to_string(),
            "-c".into(),
            conf_path.display().to_string(),
        ];
        self.nginx = Some(Server::spawn(
            "nginx",
            &self.lab.server,
            Path::new(NGINX),
            &args,
            &ndir,
        ));
        let v6 = format!("http://[{SERVER_V6}]/");
        for (what, from, url) in [
            ("nginx on IPv4", SERVER_V4, "http://198.51.100.1/"),
            ("nginx on IPv6", SERVER_V6, v6.as_str()),
            (
                "nginx on the client link",
                SERVER_CLIENT_V4,
                "http://203.0.113.1/",
            ),
        ] {
            self.wait_ready(what, from, url);
        }
    }

    /// Waits until `url` answers 200 to a curl from `from` inside the server namespace;
    /// panics with the servers' output if one of them exits or 15 s pass.
    fn wait_ready(&mut self, what: &str, from: &str, url: &str) {
        let start = Instant::now();
        loop {
            let got = curl_from(&self.lab.server, from, &["--max-time", "1", url]);
            if got.code() == 200 {
                return;
            }
            for server in [self.nginx.as_mut(), self.gunicorn.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Some(status) = server.exited() {
                    panic!(
                        "{} exited with {status} while waiting for {what}:\n{}",
                        server.name,
                        server.output()
                    );
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{what} not ready (status {}, curl exit {:?}: {}); servers:\n{}",
                got.code(),
                got.exit,
                got.stderr.trim(),
                self.server_output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn server_output(&self) -> String {
        let mut out = String::new();
        for server in [self.nginx.as_ref(), self.gunicorn.as_ref()]
            .into_iter()
            .flatten()
        {
            out.push_str(&format!("--- {} ---\n{}", server.name, server.output()));
        }
        let errors = std::fs::read_to_string(self.nginx_error_log()).unwrap_or_default();
        let tail: Vec<&str> = errors.lines().rev().take(30).collect();
        out.push_str("--- nginx error.log (last lines) ---\n");
        for line in tail.into_iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// curl from `from` in the attacker namespace.
    pub fn attacker_curl(&self, from: &str, args: &[&str]) -> Curl {
        curl_from(self.attacker(), from, args)
    }

    /// curl from the good client's namespace.
    pub fn client_curl(&self, args: &[&str]) -> Curl {
        curl_from(self.client(), CLIENT_V4, args)
    }

    /// Whether a TCP connect from attacker address `from` to 198.51.100.1:80 times out.
    pub fn dropped(&self, from: &str) -> bool {
        !self
            .lab
            .attacker_connects_from(from, SERVER_V4, HTTP_PORT, DROPPED)
    }

    /// Whether a TCP connect from attacker address `from` (IPv6) to the server's IPv6
    /// address on port 80 succeeds within the drop timeout.
    pub fn lab_attacker_connects_v6(&self, from: &str) -> bool {
        self.lab
            .attacker_connects_from(from, SERVER_V6, HTTP_PORT, DROPPED)
    }

    /// Whether a TCP connect from attacker address `from` to 198.51.100.1:80 succeeds.
    pub fn connects(&self, from: &str) -> bool {
        self.lab
            .attacker_connects_from(from, SERVER_V4, HTTP_PORT, CONNECTS)
    }

    /// The good client: normal requests at a modest pace (about 80 a minute at most)
    /// on a thread of its own until `GoodClient::finish`.
    pub fn good_client(&self) -> GoodClient {
        let stop = Arc::new(AtomicBool::new(false));
        let ns = self.client().to_string();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let login = format!("password={PASSWORD}");
            let mut seen = Vec::new();
            for i in 0..90 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let (what, args): (&str, Vec<&str>) = match i % 4 {
                    _ if i == 2 => (
                        "POST /login (right password)",
                        vec!["-d", "user=alice", "-d", &login, "http://203.0.113.1/login"],
                    ),
                    1 | 3 => ("GET /api/items", vec!["http://203.0.113.1/api/items"]),
                    _ => ("GET /", vec!["http://203.0.113.1/"]),
                };
                seen.push((what.to_string(), curl_from(&ns, CLIENT_V4, &args)));
                let pause = Instant::now();
                while pause.elapsed() < Duration::from_millis(750) && !flag.load(Ordering::Relaxed)
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            seen
        });
        GoodClient {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for WebLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- web lab ---\n{}--- end of web lab ---",
                self.server_output()
            );
        }
    }
}

/// The good client's thread; stopped (and joined) by `finish` or on drop.
pub struct GoodClient {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<(String, Curl)>>>,
}

impl GoodClient {
    /// Stops the client and returns every request it made with its outcome.
    pub fn finish(mut self) -> Vec<(String, Curl)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().expect("good client thread"))
            .unwrap_or_default()
    }
}

impl Drop for GoodClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls until some line of `path` satisfies `check` (logs are written asynchronously).
fn wait_line(path: &Path, what: &str, check: impl Fn(&str) -> bool) {
    let start = Instant::now();
    while !lines(path).iter().any(|l| check(l)) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no line in {} for {what}; it holds:\n{}",
            path.display(),
            lines(path).join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lab alone, without gaoler: every scenario gets the HTTP answer the gaoler test
/// relies on, and lands in the log file its jail follows.
#[test]
fn webapp_lab_answers_each_scenario_and_logs_it() {
    let web = WebLab::new();
    let [login_brute, prober, flooder, limited] = MORE_ATTACKERS_V4;
    let root = "http://198.51.100.1/";

    // The good client over its own link, and the app's three routes.
    assert_eq!(web.client_curl(&["http://203.0.113.1/"]).code(), 200);
    assert_eq!(
        web.client_curl(&["http://203.0.113.1/api/items"]).code(),
        200
    );
    assert_eq!(web.client_curl(&["http://203.0.113.1/nothing"]).code(), 404);
    let good_login = format!("password={PASSWORD}");
    let ok = web.client_curl(&[
        "-d",
        "user=alice",
        "-d",
        &good_login,
        "http://203.0.113.1/login",
    ]);
    assert_eq!(ok.code(), 200, "{ok:?}");
    // Over IPv6 too.
    let v6 = curl_from(web.attacker(), ATTACKER_V6, &["http://[2001:db8:5::1]/"]);
    assert_eq!(v6.code(), 200, "{v6:?}");

    // (a) basic auth: wrong password and unknown user 401, alice with hers 200.
    let wrong = web.attacker_curl(
        ATTACKER_V4,
        &["-u", "alice:wrong", "http://198.51.100.1/private/"],
    );
    assert_eq!(wrong.code(), 401, "{wrong:?}");
    let nobody = web.attacker_curl(
        ATTACKER_V4,
        &["-u", "mallory:x", "http://198.51.100.1/private/"],
    );
    assert_eq!(nobody.code(), 401, "{nobody:?}");
    let alice = format!("alice:{PASSWORD}");
    let right = web.attacker_curl(ATTACKER_V4, &["-u", &alice, "http://198.51.100.1/private/"]);
    assert_eq!(right.code(), 200, "{right:?}");
    wait_line(&web.nginx_error_log(), "password mismatch", |l| {
        l.contains("password mismatch") && l.contains(&format!("client: {ATTACKER_V4}"))
    });
    wait_line(&web.nginx_error_log(), "user not found", |l| {
        l.contains("\"mallory\" was not found") && l.contains(&format!("client: {ATTACKER_V4}"))
    });

    // (b) the app's login: 401, and gunicorn sees nginx (127.0.0.1) with the client in
    // X-Forwarded-For.
    let bad = web.attacker_curl(
        login_brute,
        &[
            "-d",
            "user=alice",
            "-d",
            "password=nope",
            "http://198.51.100.1/login",
        ],
    );
    assert_eq!(bad.code(), 401, "{bad:?}");
    wait_line(&web.gunicorn_access_log(), "the failed login", |l| {
        l.starts_with("127.0.0.1 ")
            && l.contains("\"POST /login HTTP/1.0\" 401")
            && l.ends_with(&format!("\"{login_brute}\""))
    });

    // (c) the traversal probe: nginx refuses it itself.
    let probe = web.attacker_curl(
        prober,
        &["--path-as-is", "http://198.51.100.1/../../etc/passwd"],
    );
    assert!([400, 404].contains(&probe.code()), "{probe:?}");
    wait_line(&web.nginx_access_log(), "the probe", |l| {
        l.starts_with(&format!("{prober} ")) && l.contains("/../../etc/passwd")
    });

    // (d) a burst of GET / on one connection: all 200, one gunicorn line each.
    let burst = web.attacker_curl(flooder, &repeat(root, 30));
    assert_eq!(burst.codes, vec![200; 30], "{burst:?}");
    let flood_lines = || {
        lines(&web.gunicorn_access_log())
            .iter()
            .filter(|l| l.ends_with(&format!("\"{flooder}\"")))
            .count()
    };
    wait_for(
        Duration::from_secs(5),
        "30 gunicorn lines of the burst",
        || flood_lines() == 30,
    );

    // (e) limit_req: after the burst of 2, 503s, each logged in error.log.
    let limited_run = web.attacker_curl(limited, &repeat("http://198.51.100.1/limited/", 20));
    assert_eq!(limited_run.codes.len(), 20, "{limited_run:?}");
    assert!(
        limited_run.codes.iter().filter(|&&c| c == 503).count() >= 10,
        "{limited_run:?}"
    );
    assert!(limited_run.codes.iter().all(|&c| c == 200 || c == 503));
    wait_line(&web.nginx_error_log(), "limit_req", |l| {
        l.contains("limiting requests") && l.contains(&format!("client: {limited}"))
    });

    // Nothing drops without gaoler.
    assert!(web.connects(flooder));
}

/// The jails of the Gunicorn + nginx guide: (name, jail file).
fn webapp_jails(web: &WebLab) -> Vec<(&'static str, String)> {
    let common = "bantime = \"10m\"\nports = [\"80\", \"443\"]\n";
    // As the shipped jails: gunicorn listens on loopback, so every real line is nginx's.
    let proxies =
        "trusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\ntrusted_proxies_only = true\n";
    let error_log = web.nginx_error_log().display().to_string();
    let access_log = web.nginx_access_log().display().to_string();
    let app_log = web.gunicorn_access_log().display().to_string();
    vec![
        (
            "nginx-http-auth",
            format!("filter = \"nginx-http-auth\"\nlogpath = \"{error_log}\"\nmaxretry = 3\n{common}"),
        ),
        (
            "nginx-limit-req",
            format!("filter = \"nginx-limit-req\"\nlogpath = \"{error_log}\"\nmaxretry = 3\n{common}"),
        ),
        (
            "webapp-auth",
            format!("filter = \"webapp-auth\"\nlogpath = \"{app_log}\"\nmaxretry = 5\nfindtime = \"1m\"\n{proxies}{common}"),
        ),
        (
            "web-exploit-probe",
            format!("filter = \"web-exploit-probe\"\nlogpath = \"{access_log}\"\nmaxretry = 1\n{common}"),
        ),
        (
            "http-flood",
            format!("filter = \"http-flood\"\nlogpath = \"{app_log}\"\nmaxretry = 100\nfindtime = \"1m\"\n{proxies}{common}"),
        ),
    ]
}

/// A config directory with the guide's five jails and nftables table `gweb`.
fn webapp_config(web: &WebLab) -> ConfigDir {
    let cfg = ConfigDir::new("backend = \"nftables\"", "");
    std::fs::remove_file(cfg.path().join("jails/sshd.toml")).expect("drop the sshd jail");
    cfg.write(
        "gaoler.toml",
        &format!(
            "[daemon]\nstate_dir = \"state\"\nsocket = \"gaoler.sock\"\nfilter_path = [\"{}\"]\nlog_level = \"debug\"\n\n[firewall]\nbackend = \"nftables\"\ntable = \"gweb\"\n\n[defaults]\nignoreip = [\"127.0.0.0/8\", \"::1\"]\n",
            shipped_filters().display()
        ),
    );
    for (name, jail) in webapp_jails(web) {
        cfg.write(&format!("jails/{name}.toml"), &jail);
    }
    cfg
}

/// Every (address, jail) pair `ctl banned --json` lists.
fn bans(cfg: &Path) -> Vec<(String, String)> {
    ctl_json(cfg, &["banned"])
        .as_array()
        .expect("ctl banned lists an array")
        .iter()
        .map(|b| {
            (
                b["ip"].as_str().expect("ip").to_string(),
                b["jail"].as_str().expect("jail").to_string(),
            )
        })
        .collect()
}

fn assert_loopback_and_client_free(bans: &[(String, String)]) {
    for never in ["127.0.0.1", "::1", CLIENT_V4] {
        assert!(
            !bans.iter().any(|(ip, _)| ip == never),
            "{never} must never be banned: {bans:?}"
        );
    }
}

/// Waits (up to `BAN_WAIT`) until `ip` is banned in `jail`, then checks that its next
/// TCP connection to 198.51.100.1:80 is dropped.
fn expect_ban(web: &WebLab, cfg: &ConfigDir, ip: &str, jail: &str) {
    let start = Instant::now();
    loop {
        let now = bans(cfg.path());
        assert_loopback_and_client_free(&now);
        if now.iter().any(|(i, j)| i == ip && j == jail) {
            break;
        }
        assert!(
            start.elapsed() < BAN_WAIT,
            "{ip} not banned in {jail} after {BAN_WAIT:?}; banned: {now:?}; stats: {}",
            ctl_json(cfg.path(), &["stats"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        web.dropped(ip),
        "{ip} is banned in {jail} but still connects to {SERVER_V4}:{HTTP_PORT}"
    );
}

/// Six wrong-password POSTs to the app's login from attacker address `from`, with
/// `extra` curl arguments; each is answered 401 (the last may meet the ban).
fn fail_logins(web: &WebLab, from: &str, url: &str, extra: &[&str]) {
    for n in 0..6 {
        let password = format!("password=guess-{n}");
        let mut args = extra.to_vec();
        args.extend(["-d", "user=alice", "-d", &password, url]);
        let got = web.attacker_curl(from, &args);
        assert!(
            got.code() == 401 || (n == 5 && got.code() == 0),
            "{from} login attempt {n}: {got:?}"
        );
    }
}

/// `expect_ban` for an IPv6 attacker address (its connection to the server's IPv6).
fn expect_ban_v6(web: &WebLab, cfg: &ConfigDir, ip: &str, jail: &str) {
    let start = Instant::now();
    while !bans(cfg.path()).iter().any(|(i, j)| i == ip && j == jail) {
        assert!(
            start.elapsed() < BAN_WAIT,
            "{ip} not banned in {jail} after {BAN_WAIT:?}; banned: {:?}",
            bans(cfg.path())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !web.lab_attacker_connects_v6(ip),
        "{ip} is banned in {jail} but still connects to [{SERVER_V6}]:{HTTP_PORT}"
    );
}

/// Standard base64 (with padding), for a Basic-auth header.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn gunicorn_behind_nginx_attackers_are_banned_and_a_good_client_is_not() {
    let web = WebLab::new();
    let cfg = webapp_config(&web);
    for a in std::iter::once(ATTACKER_V4).chain(MORE_ATTACKERS_V4) {
        assert!(web.connects(a), "baseline: {a} connects before any ban");
    }
    let daemon = Daemon::start(cfg.path(), Some(web.server()));
    let client = web.good_client();
    let [login_brute, prober, flooder, limited] = MORE_ATTACKERS_V4;
    let root = "http://198.51.100.1/";

    // (a) Basic auth with a wrong password, 4 times: nginx-http-auth (maxretry 3).
    for n in 0..4 {
        let got = web.attacker_curl(
            ATTACKER_V4,
            &["-u", "alice:wrong-password", "http://198.51.100.1/private/"],
        );
        // The ban may already be in force for the last attempt.
        assert!(
            got.code() == 401 || (n == 3 && got.code() == 0),
            "attempt {n}: {got:?}"
        );
    }
    expect_ban(&web, &cfg, ATTACKER_V4, "nginx-http-auth");

    // (b) The app's own login, wrong 6 times: webapp-auth (maxretry 5). gunicorn sees
    // only nginx (127.0.0.1); the client is in X-Forwarded-For.
    fail_logins(&web, login_brute, "http://198.51.100.1/login", &[]);
    expect_ban(&web, &cfg, login_brute, "webapp-auth");

    // (c) One path traversal probe: web-exploit-probe (maxretry 1).
    let probe = web.attacker_curl(
        prober,
        &["--path-as-is", "http://198.51.100.1/../../etc/passwd"],
    );
    assert!([400, 404].contains(&probe.code()), "{probe:?}");
    expect_ban(&web, &cfg, prober, "web-exploit-probe");

    // (d) 150 quick GET / on kept-alive connections, 25 a run: http-flood (100 a
    // minute). The runs stop at the first request the ban cuts off.
    let mut answered = 0;
    for _ in 0..6 {
        let run = web.attacker_curl(flooder, &repeat(root, 25));
        answered += run.codes.iter().filter(|&&c| c == 200).count();
        assert!(run.codes.iter().all(|&c| c == 200 || c == 0), "{run:?}");
        if run.codes.contains(&0) {
            break;
        }
    }
    assert!(
        answered >= 100,
        "only {answered} of the flood answered before a ban"
    );
    expect_ban(&web, &cfg, flooder, "http-flood");

    // (e) 20 quick requests to /limited/: limit_req answers 503: nginx-limit-req.
    let run = web.attacker_curl(limited, &repeat("http://198.51.100.1/limited/", 20));
    assert!(run.codes.contains(&503), "limit_req never refused: {run:?}");
    assert!(
        run.codes.iter().all(|&c| [200, 503, 0].contains(&c)),
        "{run:?}"
    );
    expect_ban(&web, &cfg, limited, "nginx-limit-req");

    // (f) A forger: a Basic-auth user name with a newline makes gunicorn start a line
    // with the good client's address. Its failed logins count for the forger itself
    // (the X-Forwarded-For at the end of the line is nginx's), never for the client.
    let forged_user = format!("x\n{CLIENT_V4} - a:pw");
    let auth = format!("Authorization: Basic {}", base64(forged_user.as_bytes()));
    fail_logins(
        &web,
        ATTACKER_V6,
        "http://[2001:db8:5::1]/login",
        &["-H", &auth],
    );
    let app_log = std::fs::read_to_string(web.gunicorn_access_log()).expect("gunicorn log");
    assert!(
        app_log
            .lines()
            .any(|l| l.starts_with(&format!("{CLIENT_V4} - a ["))),
        "gunicorn wrote no forged line: {app_log}"
    );
    expect_ban_v6(&web, &cfg, ATTACKER_V6, "webapp-auth");

    // Each attacker is banned in its own jail only.
    let all = bans(cfg.path());
    for (ip, jail) in [
        (ATTACKER_V6, "webapp-auth"),
        (ATTACKER_V4, "nginx-http-auth"),
        (login_brute, "webapp-auth"),
        (prober, "web-exploit-probe"),
        (flooder, "http-flood"),
        (limited, "nginx-limit-req"),
    ] {
        let jails: Vec<&str> = all
            .iter()
            .filter(|(i, _)| i == ip)
            .map(|(_, j)| j.as_str())
            .collect();
        assert_eq!(jails, vec![jail], "the jails {ip} is banned in: {all:?}");
    }

    // The good client: every request answered 200, never banned, still served.
    let seen = client.finish();
    assert!(
        seen.len() >= 5,
        "the good client made only {} requests",
        seen.len()
    );
    for (what, got) in &seen {
        assert_eq!(got.code(), 200, "good client {what}: {got:?}");
    }
    let after = bans(cfg.path());
    assert_loopback_and_client_free(&after);
    let last = web.client_curl(&["http://203.0.113.1/api/items"]);
    assert_eq!(
        last.code(),
        200,
        "the good client after the attacks: {last:?}"
    );

    // Unbanning one attacker lets it connect again.
    let out = gaoler(cfg.path(), &["ctl", "unban", prober]);
    assert!(
        out.status.success(),
        "ctl unban {prober}: {}",
        text(&out.stderr)
    );
    assert!(
        !bans(cfg.path()).iter().any(|(ip, _)| ip == prober),
        "{prober} still listed after unban"
    );
    assert!(web.connects(prober), "{prober} connects again after unban");
    assert_eq!(web.attacker_curl(prober, &[root]).code(), 200);
    assert!(web.dropped(flooder), "the other bans stay in force");
    drop(daemon);
}

#[test]
fn base64_matches_the_standard_encoding() {
    assert_eq!(
        base64(b"x\n203.0.113.2 - a:pw"),
        "eAoyMDMuMC4xMTMuMiAtIGE6cHc="
    );
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"a"), "YQ==");
    assert_eq!(base64(b""), "");
}
