//! The fleet end to end: real gaoler daemons, each in its own network namespace with
//! its own nftables table, sharing bans through a real nats-server (Debian's 2.9) on
//! the same private bridge (`support::Net`). A ban on one host must reach the others'
//! kernels with its origin, once, whatever goes down meanwhile.

use std::path::Path;
use std::time::Duration;

use crate::support::*;

const TABLE: &str = "gfleet";
/// nats-server's port on node 0 of the bridge.
const PORT: u16 = 4222;

/// One host of the fleet: its config directory, its daemon and its namespace.
struct Host {
    name: String,
    cfg: ConfigDir,
    ns: String,
    daemon: Option<Daemon>,
    public: String,
}

impl Host {
    /// A host with a fresh key and jail sshd banning at the first failure.
    fn new(name: &str, ns: &str, jail_extra: &str) -> Host {
        let cfg = ConfigDir::new(
            &format!("backend = \"nftables\"\ntable = \"{TABLE}\"\non_stop = \"keep\""),
            &format!("{BAN_AT_FIRST}{jail_extra}"),
        );
        let key = cfg.path().join("fleet.key");
        let out = gaoler(cfg.path(), &["fleet", "keygen", &key.to_string_lossy()]);
        assert!(out.status.success(), "keygen: {}", text(&out.stderr));
        Host {
            name: name.to_string(),
            cfg,
            ns: ns.to_string(),
            daemon: None,
            public: text(&out.stdout).trim().to_string(),
        }
    }

    /// `[fleet]` trusting `peers`, on `servers`.
    fn join(&self, servers: &[String], peers: &[&Host], extra: &str) {
        let trusted: Vec<String> = peers.iter().map(|p| format!("\"{}\"", p.public)).collect();
        let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
        let main = std::fs::read_to_string(self.cfg.path().join("gaoler.toml")).expect("main");
        let main = main
            .split("\n[fleet]")
            .next()
            .unwrap_or_default()
            .to_string();
        self.cfg.write(
            "gaoler.toml",
            &format!(
                "{main}\n[fleet]\nservers = [{}]\nhost = \"{}\"\nkey = \"fleet.key\"\ntrusted_keys = [{}]\n{extra}\n",
                servers.join(", "),
                self.name,
                trusted.join(", ")
            ),
        );
    }

    fn start(&mut self) {
        self.daemon = Some(Daemon::start(self.cfg.path(), Some(&self.ns)));
    }

    fn path(&self) -> &Path {
        self.cfg.path()
    }

    /// The addresses `ctl banned` shows, with their origin.
    fn banned(&self) -> Vec<(String, Option<String>)> {
        let v = ctl_json(self.path(), &["banned"]);
        v.as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                (
                    b["ip"].as_str().unwrap_or_default().to_string(),
                    b["origin"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    fn fleet(&self) -> serde_json::Value {
        ctl_json(self.path(), &["fleet"])
    }

    /// The addresses in the host's kernel set of jail sshd.
    fn kernel(&self) -> Vec<String> {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "nft", "-j", "list", "set", "inet",
            ])
            .args([TABLE, "sshd-v4"])
            .output()
            .expect("nft");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut found = Vec::new();
        for obj in doc["nftables"].as_array().into_iter().flatten() {
            for e in obj["set"]["elem"].as_array().into_iter().flatten() {
                match e {
                    serde_json::Value::String(s) => found.push(s.clone()),
                    other => found.push(
                        other["elem"]["val"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ),
                }
            }
        }
        found
    }

    fn output(&self) -> String {
        self.daemon.as_ref().map(Daemon::output).unwrap_or_default()
    }
}

/// Writes one sshd failure line per address into the host's log, in one write.
fn fail(host: &Host, ips: &[String]) {
    let lines: String = ips.iter().map(|ip| sshd_line(ip)).collect();
    host.cfg.append("auth.log", lines.as_bytes());
}

fn ips(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}.{}.{}", i / 250, i % 250 + 1))
        .collect()
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Three hosts A, B, C on nodes 1-3 and one nats-server on node 0.
fn fleet_of_three(net: &Net, b_jail_extra: &str) -> (Nats, Vec<Host>) {
    let nats = Nats::start_at(Some(net.ns(0)), net.addr(0), PORT);
    let mut hosts: Vec<Host> = ["A", "B", "C"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let extra = if *name == "B" { b_jail_extra } else { "" };
            Host::new(name, net.ns(i + 1), extra)
        })
        .collect();
    start_trusting_each_other(&mut hosts, &[nats.url()], "");
    (nats, hosts)
}

/// Each host trusts every other one; then all start.
fn start_trusting_each_other(hosts: &mut [Host], servers: &[String], extra: &str) {
    for i in 0..hosts.len() {
        let peers: Vec<&Host> = hosts
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, h)| h)
            .collect();
        hosts[i].join(servers, &peers, extra);
    }
    for h in hosts {
        h.start();
    }
}

#[test]
fn a_ban_reaches_every_other_kernel_with_its_origin_once_and_forgeries_are_counted() {
    let net = Net::new(4);
    let (nats, hosts) = fleet_of_three(&net, "ignoreip = [\"203.0.113.50\"]\n");
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    wait_for(Duration::from_secs(20), "every host connected", || {
        hosts.iter().all(|h| h.fleet()["connected"] == true)
    });

    fail(a, &["203.0.113.7".to_string()]);
    for h in [b, c] {
        wait_for(Duration::from_secs(10), "the ban on B and C", || {
            h.banned()
                .contains(&("203.0.113.7".to_string(), Some("A".to_string())))
        });
        assert!(
            h.kernel().contains(&"203.0.113.7".to_string()),
            "{}",
            h.output()
        );
    }
    assert_eq!(a.banned(), vec![("203.0.113.7".to_string(), None)]);

    // An address in B's ignoreip is never applied on B; C applies it.
    let out = gaoler(a.path(), &["ctl", "ban", "sshd", "203.0.113.50"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(Duration::from_secs(10), "C applies A's ban by hand", || {
        c.banned().iter().any(|(ip, _)| ip == "203.0.113.50")
    });
    wait_for(Duration::from_secs(5), "B refuses it", || {
        count(&b.fleet()["rejected_by"], "refused_by_jail") == 1
    });
    assert!(!b.banned().iter().any(|(ip, _)| ip == "203.0.113.50"));
    assert!(!b.kernel().contains(&"203.0.113.50".to_string()));

    // Forged, unsigned and garbage messages on the subject: rejected, counted, B up.
    let url = nats.url();
    net.block_on(1, move || async move {
        let opts = gaoler::fleet::nats::NatsOptions {
            servers: vec![url],
            ..Default::default()
        };
        let link = gaoler::fleet::nats::connect(&opts, "forger")
            .await
            .expect("connect");
        link.publish("garbage-1", b"\x00\xffnot json".to_vec())
            .await
            .expect("garbage");
        link.publish("garbage-2", br#"{"v":1,"payload":"{}"}"#.to_vec())
            .await
            .expect("unsigned");
        // A well-formed decision claiming to be A's, signed by a key nobody trusts.
        let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let now = chrono::Utc::now();
        let d = gaoler::fleet::wire::Decision {
            kind: gaoler::fleet::wire::Kind::Ban,
            host: "A".into(),
            jail: "sshd".into(),
            target: "198.51.100.66".parse().expect("target"),
            banned_at: now,
            expires_at: Some(now + chrono::Duration::hours(1)),
            count: 1,
            id: "forged".into(),
            at: now,
        };
        link.publish(&d.msg_id(), gaoler::fleet::wire::seal(&d, &stranger))
            .await
            .expect("forged");
    });
    wait_for(Duration::from_secs(10), "B counts the forgeries", || {
        let r = &b.fleet()["rejected_by"];
        count(r, "malformed") == 2 && count(r, "untrusted") == 1
    });
    assert!(gaoler(b.path(), &["ctl", "ping"]).status.success());
    assert!(!b.banned().iter().any(|(ip, _)| ip == "198.51.100.66"));

    // No echo: each ban applied once per host, published once, by its origin only.
    std::thread::sleep(Duration::from_millis(500));
    let fa = a.fleet();
    assert_eq!(count(&fa, "published"), 2, "{fa}");
    assert_eq!(count(&fa, "applied"), 0, "{fa}");
    for h in [b, c] {
        let f = h.fleet();
        assert_eq!(count(&f, "published"), 0, "{f}");
    }
    assert_eq!(count(&c.fleet(), "applied"), 2);
    assert_eq!(count(&b.fleet(), "applied"), 1);

    // An unban by hand on A lifts A's ban everywhere.
    let out = gaoler(a.path(), &["ctl", "unban", "203.0.113.7"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for h in [b, c] {
        wait_for(Duration::from_secs(10), "the unban on B and C", || {
            !h.banned().iter().any(|(ip, _)| ip == "203.0.113.7")
        });
        assert!(!h.kernel().contains(&"203.0.113.7".to_string()));
    }

    // A reload on B that no longer trusts A: A's next ban is refused there.
    b.join(&[nats.url()], &[c], "");
    let out = gaoler(b.path(), &["ctl", "reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    fail(a, &["203.0.113.8".to_string()]);
    wait_for(Duration::from_secs(10), "C applies it", || {
        c.banned().iter().any(|(ip, _)| ip == "203.0.113.8")
    });
    wait_for(Duration::from_secs(5), "B refuses it as untrusted", || {
        count(&b.fleet()["rejected_by"], "untrusted") == 2
    });
    assert!(!b.banned().iter().any(|(ip, _)| ip == "203.0.113.8"));
    // A change of servers needs a restart: the reload says so, nothing changes.
    b.join(&["nats://192.0.2.200:4222".to_string()], &[c], "");
    let out = gaoler(b.path(), &["ctl", "reload"]);
    assert!(!out.status.success());
    assert!(text(&out.stdout).contains("restart") || text(&out.stderr).contains("restart"));
}

#[test]
fn a_host_down_or_cut_off_catches_up_and_a_ban_before_kill_9_is_still_published() {
    let net = Net::new(4);
    let (_nats, mut hosts) = fleet_of_three(&net, "");
    wait_for(Duration::from_secs(20), "every host connected", || {
        hosts.iter().all(|h| h.fleet()["connected"] == true)
    });

    // B down while A bans 1,000: B catches up at start.
    hosts[1].daemon.take();
    let first = ips("10.20", 1000);
    fail(&hosts[0], &first);
    wait_for(Duration::from_secs(60), "A publishes 1,000", || {
        count(&hosts[0].fleet(), "published") == 1000
    });
    hosts[1].start();
    wait_for(Duration::from_secs(60), "B catches up", || {
        hosts[1].banned().len() == 1000
    });
    assert_eq!(hosts[1].kernel().len(), 1000);

    // A cut from NATS bans 100: all reach B and C once the link is back.
    net.cut(1);
    let second = ips("10.30", 100);
    fail(&hosts[0], &second);
    wait_for(
        Duration::from_secs(20),
        "A keeps them in its outbox",
        || count(&hosts[0].fleet(), "outbox") == 100,
    );
    assert_eq!(hosts[1].banned().len(), 1000, "nothing reached B meanwhile");
    net.heal(1);
    for h in &hosts[1..] {
        wait_for(
            Duration::from_secs(30),
            "100 more after the link is back",
            || h.banned().len() == 1100,
        );
    }

    // kill -9 of A right after a ban made while cut off: published after restart.
    net.cut(1);
    let out = gaoler(hosts[0].path(), &["ctl", "ban", "sshd", "10.40.0.1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    if let Some(mut d) = hosts[0].daemon.take() {
        d.signal("-KILL");
        std::thread::sleep(Duration::from_millis(200));
    }
    net.heal(1);
    hosts[0].start();
    for h in &hosts[1..] {
        wait_for(
            Duration::from_secs(30),
            "the ban made before kill -9",
            || {
                h.banned()
                    .iter()
                    .any(|(ip, o)| ip == "10.40.0.1" && o.as_deref() == Some("A"))
            },
        );
    }
}

#[test]
fn a_three_node_jetstream_cluster_loses_nothing_when_a_node_dies() {
    let net = Net::new(7);
    let mut cluster = NatsCluster::in_net(&net, [0, 1, 2]);
    cluster.wait_meta_leader(Duration::from_secs(20));
    let servers = cluster.urls();
    let mut hosts: Vec<Host> = ["A", "B", "C"]
        .iter()
        .enumerate()
        .map(|(i, name)| Host::new(name, net.ns(i + 3), ""))
        .collect();
    start_trusting_each_other(&mut hosts, &servers, "replicas = 3");
    wait_for(Duration::from_secs(30), "every host connected", || {
        hosts.iter().all(|h| h.fleet()["connected"] == true)
    });
    fail(&hosts[0], &ips("10.50", 50));
    for h in &hosts[1..] {
        wait_for(Duration::from_secs(20), "50 bans", || {
            h.banned().len() == 50
        });
    }
    cluster.nodes[0].kill();
    fail(&hosts[0], &ips("10.60", 50));
    for h in &hosts[1..] {
        wait_for(Duration::from_secs(40), "50 more with a node down", || {
            h.banned().len() == 100
        });
    }
    // A host that joins now reads every ban from the remaining nodes.
    let mut d = Host::new("D", net.ns(6), "");
    d.join(&servers, &[&hosts[0]], "replicas = 3");
    d.start();
    wait_for(Duration::from_secs(40), "a new host reads all 100", || {
        d.banned().len() == 100
    });
}
