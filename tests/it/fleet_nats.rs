//! The fleet's NATS edge (`gaoler::fleet::nats`) against the real nats-server 2.9
//! (Debian 12's): the stream, dedup by message id, the durable pull consumer, a server
//! going away and coming back, and a 3-node JetStream cluster losing its stream leader
//! (killed, on loopback) or cut off from it (in network namespaces, `support::Net`, the
//! client in a namespace of its own).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use gaoler::fleet::nats::{connect, Link, NatsError, NatsOptions};

use crate::support::{free_port, loopback_base, Nats, NatsCluster, Net};

fn options(servers: Vec<String>) -> NatsOptions {
    NatsOptions {
        servers,
        max_age: Duration::from_secs(3600),
        ..Default::default()
    }
}

/// The stream as the server describes it, asked over a connection of its own.
async fn stream_info(url: &str, stream: &str) -> jetstream::stream::Info {
    let client = async_nats::connect(url).await.expect("inspect: connect");
    let js = jetstream::new(client);
    js.get_stream(stream)
        .await
        .expect("inspect: stream")
        .cached_info()
        .clone()
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
async fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes until the stream takes it (a cluster electing a leader refuses for a
/// while); returns how long that took.
async fn publish_within(link: &Link, limit: Duration, id: &str, payload: &[u8]) -> Duration {
    let start = Instant::now();
    loop {
        match link.publish(id, payload.to_vec()).await {
            Ok(_) => return start.elapsed(),
            Err(e) => {
                assert!(
                    start.elapsed() < limit,
                    "publish {id} failing for {limit:?}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Publishes `ban N` with message id `mN` for each N of `range`.
async fn publish_numbered(link: &Link, range: std::ops::RangeInclusive<u32>) {
    for i in range {
        link.publish(&format!("m{i}"), format!("ban {i}").into_bytes())
            .await
            .expect("publish");
    }
}

/// Reads (and acknowledges) up to `max` messages, batch after batch, until a batch
/// comes back empty.
async fn payloads(c: &mut gaoler::fleet::nats::Consumer, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < max {
        let batch = c
            .next_batch(max - out.len(), Duration::from_millis(500))
            .await
            .expect("next_batch");
        if batch.is_empty() {
            break;
        }
        for d in batch {
            out.push(String::from_utf8(d.payload.clone()).expect("utf-8"));
            d.ack().await.expect("ack");
        }
    }
    out
}

/// Reads (and acknowledges) until `n` messages came, through empty batches and errors
/// (a cluster electing the consumer's leader), for at most `limit`.
async fn read_within(
    c: &mut gaoler::fleet::nats::Consumer,
    n: usize,
    limit: Duration,
) -> Vec<String> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            start.elapsed() < limit,
            "only {out:?} after {limit:?}, waiting for {n}"
        );
        match c
            .next_batch(n - out.len(), Duration::from_millis(500))
            .await
        {
            Ok(batch) => {
                for d in batch {
                    out.push(String::from_utf8(d.payload.clone()).expect("utf-8"));
                    d.ack().await.expect("ack");
                }
            }
            Err(e) => {
                eprintln!("consumer: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eprintln!("consumer: {n} messages after {:?}", start.elapsed());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_made_once_and_a_repeated_message_id_is_stored_once() {
    let nats = Nats::start();
    let link = connect(&options(vec![nats.url()]), "web-1")
        .await
        .expect("connect");
    assert!(link.is_connected());
    assert!(
        link.server()
            .contains(&format!("{}:{}", nats.addr, nats.port)),
        "server() = {}",
        link.server()
    );
    link.ensure_stream().await.expect("create the stream");
    link.ensure_stream().await.expect("again: nothing to do");

    let info = stream_info(&nats.url(), "GAOLER").await;
    assert_eq!(info.config.subjects, ["gaoler.bans"]);
    assert_eq!(info.config.storage, jetstream::stream::StorageType::File);
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    assert_eq!(info.config.num_replicas, 1);

    let first = link
        .publish("ban-1", b"one".to_vec())
        .await
        .expect("publish");
    assert!(!first.duplicate);
    let again = link.publish("ban-1", b"one".to_vec()).await.expect("dup");
    assert!(again.duplicate, "same id: a duplicate, and a success");
    assert_eq!(again.sequence, first.sequence);
    let second = link
        .publish("ban-2", b"two".to_vec())
        .await
        .expect("publish");
    assert_eq!(second.sequence, first.sequence + 1);
    assert_eq!(stream_info(&nats.url(), "GAOLER").await.state.messages, 2);

    // Another host wanting a longer max_age raises it; a shorter one leaves it.
    let longer = NatsOptions {
        max_age: Duration::from_secs(7200),
        ..options(vec![nats.url()])
    };
    let other = connect(&longer, "web-2").await.expect("connect");
    other.ensure_stream().await.expect("raise max_age");
    let info = stream_info(&nats.url(), "GAOLER").await;
    assert_eq!(info.config.max_age, Duration::from_secs(7200));
    assert_eq!(info.state.messages, 2, "an update keeps the messages");
    link.ensure_stream().await.expect("shorter: nothing to do");
    let info = stream_info(&nats.url(), "GAOLER").await;
    assert_eq!(info.config.max_age, Duration::from_secs(7200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_consumer_resumes_after_its_last_acknowledged_message() {
    let nats = Nats::start();
    let opts = options(vec![nats.url()]);
    let publisher = connect(&opts, "web-2").await.expect("connect");
    publisher.ensure_stream().await.expect("stream");
    publish_numbered(&publisher, 1..=3).await;

    {
        let reader = connect(&opts, "web-1").await.expect("connect");
        let mut consumer = reader
            .consumer("web-1.example.org")
            .await
            .expect("consumer");
        assert_eq!(consumer.name(), "web-1_example_org");
        assert_eq!(consumer.pending().await.expect("pending"), 3);
        assert_eq!(
            payloads(&mut consumer, 10).await,
            ["ban 1", "ban 2", "ban 3"]
        );
        assert_eq!(consumer.pending().await.expect("pending"), 0);
        // Nothing more: an empty batch after about the wait.
        let start = Instant::now();
        let none = consumer
            .next_batch(10, Duration::from_millis(300))
            .await
            .expect("empty batch");
        assert!(none.is_empty());
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    } // the reader's connection closes

    publish_numbered(&publisher, 4..=5).await;
    let reader = connect(&opts, "web-1").await.expect("reconnect");
    let mut consumer = reader.consumer("web-1.example.org").await.expect("resume");
    // The first reader's last pull may have taken one of them into its closed
    // connection: that one comes again after the ack wait, maybe after the other, and
    // while the server moves it back the lag may count it twice for a moment.
    let lag = consumer.pending().await.expect("pending");
    assert!((2..=3).contains(&lag), "the lag: {lag}");
    let mut got = read_within(&mut consumer, 2, Duration::from_secs(20)).await;
    got.sort();
    assert_eq!(got, ["ban 4", "ban 5"]);
    assert!(
        payloads(&mut consumer, 10).await.is_empty(),
        "only new ones"
    );
    assert_eq!(consumer.pending().await.expect("pending"), 0);

    // Another host's consumer starts from the first message.
    let mut other = reader.consumer("web-3").await.expect("consumer");
    assert_eq!(other.pending().await.expect("pending"), 5);
    assert_eq!(payloads(&mut other, 2).await, ["ban 1", "ban 2"]);
    assert_eq!(other.pending().await.expect("pending"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_while_the_server_is_down_fails_clearly_and_works_after_restart() {
    let mut nats = Nats::start();
    let opts = options(vec![nats.url()]);
    let link = connect(&opts, "web-1").await.expect("connect");
    link.ensure_stream().await.expect("stream");
    link.publish("before", b"before".to_vec())
        .await
        .expect("publish");
    let mut consumer = link.consumer("web-1").await.expect("consumer");

    nats.kill();
    until(
        Duration::from_secs(5),
        "the client sees the server gone",
        || !link.is_connected(),
    )
    .await;
    let start = Instant::now();
    let err = link
        .publish("during", b"during".to_vec())
        .await
        .expect_err("no server");
    assert!(matches!(err, NatsError::Publish { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("gaoler.bans") && text.contains("not connected"),
        "{text}"
    );
    assert!(start.elapsed() < Duration::from_secs(1), "fails at once");
    let err = consumer
        .next_batch(10, Duration::from_millis(200))
        .await
        .err()
        .expect("no server");
    assert!(err.to_string().contains("not connected"), "{err}");

    nats.restart();
    until(Duration::from_secs(10), "the client reconnects", || {
        link.is_connected()
    })
    .await;
    link.publish("after", b"after".to_vec())
        .await
        .expect("publish after restart");
    let info = stream_info(&nats.url(), "GAOLER").await;
    assert_eq!(info.state.messages, 2, "the stream survived on disk");
    assert_eq!(payloads(&mut consumer, 10).await, ["before", "after"]);

    // No server at all: the first connect fails with what to check.
    nats.kill();
    let err = connect(&opts, "web-1").await.err().expect("no server");
    let text = err.to_string();
    assert!(
        matches!(err, NatsError::Connect { .. })
            && text.contains(&nats.url())
            && text.contains("nats-server running"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_and_a_server_without_jetstream_say_what_to_fix() {
    let nats = Nats::start_with(&["--user", "gaoler", "--pass", "s3cret"]);
    let wrong = NatsOptions {
        user: Some("gaoler".into()),
        password: Some("wrong".into()),
        ..options(vec![nats.url()])
    };
    let err = connect(&wrong, "web-1").await.err().expect("refused");
    let text = err.to_string();
    assert!(
        matches!(err, NatsError::Connect { .. }) && text.contains("user, password"),
        "{text}"
    );
    let none = options(vec![nats.url()]);
    assert!(connect(&none, "web-1").await.is_err(), "no login at all");
    let right = NatsOptions {
        password: Some("s3cret".into()),
        ..wrong
    };
    let link = connect(&right, "web-1").await.expect("right password");
    link.ensure_stream().await.expect("stream");
    link.publish("m1", b"ban".to_vec()).await.expect("publish");

    let token = Nats::start_with(&["--auth", "t0ken"]);
    let opts = NatsOptions {
        token: Some("t0ken".into()),
        ..options(vec![token.url()])
    };
    connect(&opts, "web-1").await.expect("token");

    let plain = Nats::start_with(&["-js=false"]);
    let link = connect(&options(vec![plain.url()]), "web-1")
        .await
        .expect("connect");
    let err = link.ensure_stream().await.expect_err("no JetStream");
    let text = err.to_string();
    assert!(
        matches!(err, NatsError::Stream { .. }) && text.contains("JetStream enabled"),
        "{text}"
    );
}

#[test]
fn a_publish_lost_in_a_partition_is_stored_once_when_repeated_after_it_heals() {
    let net = Net::new(2);
    let nats = Nats::start_at(Some(net.ns(0)), net.addr(0), 4222);
    let url = nats.url();
    let net = Arc::new(net);
    let cutter = net.clone();
    net.block_on(1, move || async move {
        let link = connect(&options(vec![url.clone()]), "web-1")
            .await
            .expect("connect");
        link.ensure_stream().await.expect("stream");
        link.publish("m1", b"ban 1".to_vec())
            .await
            .expect("publish");

        cutter.cut(1);
        let err = link
            .publish("m2", b"ban 2".to_vec())
            .await
            .expect_err("cut off");
        let text = err.to_string();
        assert!(text.contains("no acknowledgement"), "{text}");
        cutter.heal(1);
        // The lost publish may still arrive (TCP retransmits it); repeating it with the
        // same id stores it once either way.
        publish_within(&link, Duration::from_secs(20), "m2", b"ban 2").await;
        let info = stream_info(&url, "GAOLER").await;
        assert_eq!(info.state.messages, 2, "m2 stored once");
    });
    drop(nats);
}

/// The cluster's client runs in namespace 3, the nodes in 0..=2.
const CLIENT: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_stream_keeps_its_messages_and_takes_publishes_when_a_node_dies() {
    let mut cluster = NatsCluster::loopback();
    let urls = cluster.urls();
    let opts = NatsOptions {
        replicas: 3,
        ..options(urls.clone())
    };
    let link = connect(&opts, "web-1").await.expect("connect");
    link.ensure_stream().await.expect("stream with 3 replicas");
    for i in 1..=5 {
        link.publish(&format!("m{i}"), format!("ban {i}").into_bytes())
            .await
            .expect("publish");
    }
    let mut consumer = link.consumer("web-1").await.expect("consumer");
    assert_eq!(payloads(&mut consumer, 2).await, ["ban 1", "ban 2"]);

    let info = stream_info(&urls[0], "GAOLER").await;
    assert_eq!(info.config.num_replicas, 3);
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("a stream leader");
    let dead = cluster
        .nodes
        .iter_mut()
        .find(|n| n.name == leader)
        .expect("the leader is a node");
    dead.kill();
    let dead_url = dead.url();
    let took = publish_within(&link, Duration::from_secs(20), "m6", b"ban 6").await;
    eprintln!("stream leader {leader} killed: publishing again after {took:?}");

    let alive = urls.iter().find(|u| **u != dead_url).expect("a live node");
    let info = stream_info(alive, "GAOLER").await;
    assert_eq!(info.state.messages, 6, "no message lost with the node");
    // The consumer's own leader may have died too: it delivers again once the two
    // others have elected one.
    assert_eq!(
        read_within(&mut consumer, 4, Duration::from_secs(20)).await,
        ["ban 3", "ban 4", "ban 5", "ban 6"],
        "the consumer goes on where it was"
    );
}

#[test]
fn a_cluster_cut_from_its_stream_leader_elects_another_and_takes_publishes() {
    let net = Net::new(4);
    let cluster = NatsCluster::in_net(&net, [0, 1, 2]);
    let urls = cluster.urls();
    let net = Arc::new(net);
    let cutter = net.clone();
    net.block_on(CLIENT, move || async move {
        // The client talks to n1 only, and the stream's leader is elsewhere: cutting the
        // leader off leaves the client with a quorum (n1 and the third node).
        let opts = NatsOptions {
            replicas: 3,
            ..options(vec![urls[0].clone()])
        };
        let link = connect(&opts, "web-1").await.expect("connect");
        assert!(link.server().contains("(n1)"), "{}", link.server());
        link.ensure_stream().await.expect("stream");
        link.publish("m1", b"ban 1".to_vec())
            .await
            .expect("publish");
        let mut consumer = link.consumer("web-1").await.expect("consumer");
        assert_eq!(payloads(&mut consumer, 10).await, ["ban 1"]);
        let leader = leader_other_than(&urls[0], "n1").await;
        let i = leader
            .trim_start_matches('n')
            .parse::<usize>()
            .expect("n1..n3")
            - 1;
        cutter.cut(i);
        let took = publish_within(&link, Duration::from_secs(25), "m2", b"ban 2").await;
        eprintln!("stream leader {leader} cut off: publishing again after {took:?}");
        // The consumer's own leader may have been cut off too: it delivers again once
        // the two others have elected one.
        assert_eq!(
            read_within(&mut consumer, 1, Duration::from_secs(20)).await,
            ["ban 2"]
        );
        cutter.heal(i);
    });
    drop(cluster);
}

/// The stream's leader once it is not `not` (asking it to step down while it is).
async fn leader_other_than(url: &str, not: &str) -> String {
    let client = async_nats::connect(url).await.expect("inspect: connect");
    let js = jetstream::new(client);
    let start = Instant::now();
    loop {
        let info = js
            .get_stream("GAOLER")
            .await
            .expect("inspect: stream")
            .cached_info()
            .clone();
        if let Some(leader) = info.cluster.and_then(|c| c.leader) {
            if leader != not {
                return leader;
            }
            let _: serde_json::Value = js
                .request("STREAM.LEADER.STEPDOWN.GAOLER", &serde_json::json!({}))
                .await
                .expect("step down");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "leader stays {not}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A CA, a server certificate for `ip` and a client certificate, made with openssl in
/// `dir`: (ca, server cert, server key, client cert, client key).
fn certificates(dir: &std::path::Path, ip: &str) -> [std::path::PathBuf; 5] {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=gaoler test CA",
    ]);
    for (name, ext) in [
        (
            "server",
            format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth"),
        ),
        ("client", "extendedKeyUsage=clientAuth".to_string()),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext");
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
    [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ]
    .map(|f| dir.join(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_connects_and_a_wrong_ca_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("dir");
    let addr = format!("{}.1", loopback_base());
    let port = free_port(&addr);
    let [ca, cert, key, client_cert, client_key] = certificates(dir.path(), &addr);
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let (cert, key, ca_s) = (s(&cert), s(&key), s(&ca));
    let nats = Nats::start_at_with(
        None,
        &addr,
        port,
        &[
            "--tls",
            "--tlscert",
            &cert,
            "--tlskey",
            &key,
            "--tlsverify",
            "--tlscacert",
            &ca_s,
        ],
    );
    let url = nats.url().replace("nats://", "tls://");
    let opts = NatsOptions {
        tls_ca: Some(ca.clone()),
        tls_cert: Some(client_cert.clone()),
        tls_key: Some(client_key.clone()),
        ..options(vec![url.clone()])
    };
    let link = connect(&opts, "web-1")
        .await
        .expect("TLS with a client certificate");
    link.ensure_stream().await.expect("stream");
    link.publish("t1", b"ban".to_vec())
        .await
        .expect("publish over TLS");
    // Without the client certificate the server refuses; with another CA the client does.
    let no_cert = NatsOptions {
        tls_ca: Some(ca),
        ..options(vec![url.clone()])
    };
    assert!(
        connect(&no_cert, "web-1").await.is_err(),
        "no client certificate"
    );
    let other = tempfile::tempdir().expect("dir");
    let [other_ca, ..] = certificates(other.path(), &addr);
    let wrong = NatsOptions {
        tls_ca: Some(other_ca),
        tls_cert: Some(client_cert),
        tls_key: Some(client_key),
        ..options(vec![url])
    };
    let err = connect(&wrong, "web-1")
        .await
        .err()
        .expect("untrusted server");
    assert!(err.to_string().contains("TLS"), "{err}");
}

/// A NATS key pair of `kind`, fixed by `n` (tests only).
fn nkey(kind: nkeys::KeyPairType, n: u8) -> nkeys::KeyPair {
    nkeys::KeyPair::new_from_raw(kind, [n; 32]).expect("nkey")
}

/// A NATS JWT (`alg: ed25519-nkey`) for `subject`, issued and signed by `issuer`,
/// with `nats` as its NATS claims: what `nsc` writes, made by hand.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{name}-{subject}"),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{claims}");
    let sig = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// A creds file as `nsc` writes it: the user's JWT and its seed.
fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_and_creds_file_logins_work_and_a_stranger_is_refused() {
    use nkeys::KeyPairType::{Account, Operator, User};
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };

    // nkey: the server knows the user's public key; the client signs its nonce.
    let user = nkey(User, 1);
    let conf = write(
        "nkey.conf",
        &format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            user.public_key()
        ),
    );
    let nats = Nats::start_with(&["-c", &conf.to_string_lossy()]);
    let seed = write("user.nk", &user.seed().expect("seed"));
    let opts = NatsOptions {
        nkey_seed_file: Some(seed),
        ..options(vec![nats.url()])
    };
    let link = connect(&opts, "web-1").await.expect("nkey login");
    link.ensure_stream().await.expect("stream");
    link.publish("n1", b"ban".to_vec()).await.expect("publish");
    let stranger = write("stranger.nk", &nkey(User, 2).seed().expect("seed"));
    let refused = NatsOptions {
        nkey_seed_file: Some(stranger),
        ..options(vec![nats.url()])
    };
    let err = connect(&refused, "web-1").await.err().expect("refused");
    assert!(matches!(err, NatsError::Connect { .. }), "{err}");
    let missing = NatsOptions {
        nkey_seed_file: Some(dir.path().join("none.nk")),
        ..options(vec![nats.url()])
    };
    let err = connect(&missing, "web-1").await.err().expect("no file");
    assert!(err.to_string().contains("none.nk"), "{err}");

    // A creds file: an operator, its account (JetStream allowed) and a user of it,
    // the server resolving the account from memory.
    let operator = nkey(Operator, 3);
    let account = nkey(Account, 4);
    let member = nkey(User, 5);
    let system = nkey(Account, 7);
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "gaoler-test",
        serde_json::json!({
            "system_account": system.public_key(),
            "type": "operator",
            "version": 2
        }),
    );
    let system_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "fleet",
        serde_json::json!({
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1,
                "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
            },
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2
        }),
    );
    let user_claims = serde_json::json!({
        "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        "type": "user", "version": 2
    });
    let member_jwt = nats_jwt(
        &account,
        &member.public_key(),
        "gaoler",
        user_claims.clone(),
    );
    let conf = write(
        "operator.conf",
        &format!(
            "operator: {operator_jwt}\nsystem_account: {0}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {0}: {system_jwt}\n  {1}: {account_jwt}\n}}\n",
            system.public_key(),
            account.public_key()
        ),
    );
    let nats = Nats::start_with(&["-c", &conf.to_string_lossy()]);
    assert!(
        connect(&options(vec![nats.url()]), "web-1").await.is_err(),
        "no credentials at all"
    );
    let file = write(
        "fleet.creds",
        &creds(&member_jwt, &member.seed().expect("seed")),
    );
    let opts = NatsOptions {
        creds_file: Some(file),
        ..options(vec![nats.url()])
    };
    let link = connect(&opts, "web-1").await.expect("creds login");
    link.ensure_stream().await.expect("stream in the account");
    link.publish("c1", b"ban".to_vec()).await.expect("publish");
    let mut consumer = link.consumer("web-1").await.expect("consumer");
    assert_eq!(payloads(&mut consumer, 10).await, ["ban"]);
    // A user signed by an account the operator never issued is refused.
    let rogue = nkey(Account, 6);
    let rogue_jwt = nats_jwt(&rogue, &member.public_key(), "gaoler", user_claims);
    let file = write(
        "rogue.creds",
        &creds(&rogue_jwt, &member.seed().expect("seed")),
    );
    let refused = NatsOptions {
        creds_file: Some(file),
        ..options(vec![nats.url()])
    };
    let err = connect(&refused, "web-1").await.err().expect("refused");
    assert!(matches!(err, NatsError::Connect { .. }), "{err}");
}
