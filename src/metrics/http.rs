//! The small HTTP/1.1 server behind `/metrics`: one task and one request per connection,
//! answered from the counters. Slow clients cannot keep a scraper out: the whole request
//! head must arrive within a deadline (a trickle of bytes does not extend it), the answer
//! must be taken within another, and at the connection cap a newcomer takes the slot of
//! the oldest connection not busy writing an answer (`slots.rs`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::slots::{Admission, Slot, Slots};
use super::{render, CONTENT_TYPE};
use crate::stats::Stats;

/// Longest request head (request line and headers) read; a longer one gets a 400.
const MAX_HEAD: usize = 8 * 1024;
/// At most this much is read and dropped after the answer (see `Limits::linger`).
const LINGER_BYTES: usize = 64 * 1024;
/// Pause after a failed accept (such as EMFILE: no file descriptor left), so that a
/// failure that lasts is not retried in a busy loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What one connection may hold and for how long.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Connections held at once.
    pub connections: usize,
    /// Time from the connection's start to the end of its request head, however the
    /// bytes trickle in.
    pub head: Duration,
    /// Time the client has to take the answer.
    pub write: Duration,
    /// How long input is read and dropped after the answer before closing, so that
    /// unread input does not turn the close into a reset that loses the answer.
    pub linger: Duration,
}

impl Limits {
    pub(super) const DEFAULT: Limits = Limits {
        connections: 64,
        head: Duration::from_secs(5),
        write: Duration::from_secs(5),
        linger: Duration::from_secs(1),
    };
}

/// Answers scrapes until `shutdown`.
pub async fn serve(listener: TcpListener, stats: Arc<Stats>, shutdown: CancellationToken) {
    serve_with(listener, stats, shutdown, Limits::DEFAULT).await;
}

pub(super) async fn serve_with(
    listener: TcpListener,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let tracker = TaskTracker::new();
    let slots = Slots::new(limits.connections);
    let (mut cap_reached, mut accept_failing) = (false, false);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                if !accept_failing {
                    tracing::warn!(
                        error = %crate::util::io_reason(&e),
                        "metrics listener accept failed; retrying every {} ms",
                        ACCEPT_PAUSE.as_millis()
                    );
                }
                accept_failing = true;
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        accept_failing = false;
        let (slot, dropped) = match slots.admit(shutdown.child_token()) {
            Admission::Free(slot) => (Some(slot), false),
            Admission::Took(slot) => (Some(slot), true),
            Admission::Full => (None, true),
        };
        if dropped {
            stats.metrics_dropped_cap.fetch_add(1, Relaxed);
            if !cap_reached {
                cap_reached = true;
                tracing::warn!(
                    cap = limits.connections,
                    "metrics: connection cap reached; a new connection takes the place of \
                     the oldest one not being answered (counted in \
                     gaoler_metrics_connections_dropped_total)"
                );
            }
        }
        // Refused (every slot busy answering): `stream` drops here, closing it.
        if let Some(slot) = slot {
            tracker.spawn(connection(stream, slot, stats.clone(), limits));
            // Let the new connection read what it has already received before the
            // next accept: a scraper's request, sent with its connect, is then read
            // (and its slot kept) before a burst of newcomers can take the slot.
            tokio::task::yield_now().await;
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// Reads one request, answers it and closes.
async fn connection(mut stream: TcpStream, slot: Slot, stats: Arc<Stats>, limits: Limits) {
    let stop = &slot.stop;
    let head = tokio::select! {
        _ = stop.cancelled() => return,
        head = tokio::time::timeout(limits.head, read_head(&mut stream)) => head,
    };
    let reply = match head {
        Err(_) => {
            stats.metrics_dropped_deadline.fetch_add(1, Relaxed);
            return;
        }
        Ok(Head::Closed) => return,
        Ok(Head::TooLarge) => Reply::error(400, "Bad Request", "request head too large\n"),
        Ok(Head::Complete(head)) => answer(&head, &stats),
    };
    if !slot.busy() {
        return; // dropped for a newcomer a moment ago
    }
    let bytes = reply.encode();
    let written = tokio::select! {
        _ = stop.cancelled() => return,
        written = tokio::time::timeout(limits.write, stream.write_all(&bytes)) => written,
    };
    match written {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return,
        Err(_) => {
            stats.metrics_dropped_deadline.fetch_add(1, Relaxed);
            return;
        }
    }
    slot.idle();
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    let drain = async {
        while drained < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::timeout(limits.linger, drain) => {}
    }
}

enum Head {
    /// The request line and headers, up to and including the blank line.
    Complete(Vec<u8>),
    TooLarge,
    /// The client closed (or the connection broke) before the head was complete.
    Closed,
}

async fn read_head(stream: &mut TcpStream) -> Head {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(n) => n,
        };
        let searched_to = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf, searched_to) {
            buf.truncate(end);
            return Head::Complete(buf);
        }
        if buf.len() >= MAX_HEAD {
            return Head::TooLarge;
        }
    }
}

/// The end of the request head in `buf` (after its blank line), looking from `from`;
/// bare `\n` line ends are accepted too.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    let crlf = memchr::memmem::find(tail, b"\r\n\r\n").map(|i| i + 4);
    let lf = memchr::memmem::find(tail, b"\n\n").map(|i| i + 2);
    let end = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some(from + end)
}

/// One response, always followed by closing the connection.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    /// `Allow` header (405 only).
    allow: Option<&'static str>,
    body: String,
    /// HEAD: the headers of the GET response, without its body.
    head_only: bool,
}

impl Reply {
    fn error(status: u16, reason: &'static str, body: &str) -> Reply {
        Reply {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            allow: None,
            body: body.to_string(),
            head_only: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if let Some(allow) = self.allow {
            let _ = write!(out, "Allow: {allow}\r\n");
        }
        out.push_str("\r\n");
        if !self.head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

/// The response to request `head`: metrics for `GET /metrics`, 404 for other paths, 405
/// for other methods, 400 for anything that is not an HTTP/1.x request line.
fn answer(head: &[u8], stats: &Stats) -> Reply {
    let line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let Some((method, path)) = std::str::from_utf8(line).ok().and_then(parse_request_line) else {
        return Reply::error(400, "Bad Request", "malformed request\n");
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        let mut r = Reply::error(405, "Method Not Allowed", "only GET and HEAD\n");
        r.allow = Some("GET, HEAD");
        return r;
    }
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let mut response = if path == "/metrics" {
        Reply {
            status: 200,
            reason: "OK",
            content_type: CONTENT_TYPE,
            allow: None,
            body: render(stats),
            head_only: false,
        }
    } else {
        Reply::error(404, "Not Found", "metrics are at /metrics\n")
    };
    response.head_only = head_only;
    response
}

/// `METHOD SP TARGET SP HTTP/1.x`, as (method, target).
fn parse_request_line(line: &str) -> Option<(&str, &str)> {
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = parts.next().is_none()
        && !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && target.starts_with('/')
        && target.bytes().all(|b| b.is_ascii_graphic())
        && matches!(version, "HTTP/1.0" | "HTTP/1.1");
    ok.then_some((method, target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::bind;
    use crate::metrics::tests::known_stats;
    use std::net::SocketAddr;
    use std::time::Instant;

    fn answer_to(request: &str) -> Reply {
        answer(request.as_bytes(), &Stats::new(["sshd"]))
    }

    #[test]
    fn get_metrics_is_answered_other_paths_are_404_other_methods_405() {
        let ok = answer_to("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((ok.status, ok.content_type), (200, CONTENT_TYPE));
        assert!(ok.body.contains("gaoler_bans_total"));
        assert_eq!(answer_to("GET /metrics?x=1 HTTP/1.0\n\n").status, 200);
        let head = answer_to("HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.head_only && head.status == 200);
        let encoded = String::from_utf8(head.encode()).expect("utf-8");
        assert!(encoded.ends_with("Connection: close\r\n\r\n"), "{encoded}");
        assert!(encoded.contains(&format!("Content-Length: {}\r\n", head.body.len())));

        assert_eq!(answer_to("GET / HTTP/1.1\r\n\r\n").status, 404);
        assert_eq!(answer_to("GET /metricsx HTTP/1.1\r\n\r\n").status, 404);
        let post = answer_to("POST /metrics HTTP/1.1\r\n\r\n");
        assert_eq!((post.status, post.allow), (405, Some("GET, HEAD")));
        assert!(String::from_utf8(post.encode())
            .expect("utf-8")
            .contains("\r\nAllow: GET, HEAD\r\n"));
    }

    #[test]
    fn anything_but_an_http_1_request_line_is_400() {
        for bad in [
            "",
            "\r\n\r\n",
            "GET\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET /metrics HTTP/2.0\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "get /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1 extra\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(answer_to(bad).status, 400, "{bad:?}");
        }
        let binary = answer(b"\x00\xff\xfe GET /metrics\n\n", &Stats::default());
        assert_eq!(binary.status, 400);
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line_with_either_line_end() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
        // A search resumed a few bytes back still finds a terminator split across reads.
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n", 13), Some(18));
        assert_eq!(head_end(b"ab", 5), None);
    }

    async fn request(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(bytes).await.expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn the_server_answers_scrapes_refuses_oversized_heads_and_stops_on_shutdown() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(known_stats());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, stats, shutdown.clone()));

        let ok = request(addr, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("\r\nContent-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(
            ok.contains("\ngaoler_bans_total{jail=\"sshd\"} 2\n"),
            "{ok}"
        );

        let split = {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r")
                .await
                .expect("w");
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(b"\n\r\n").await.expect("w");
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        };
        assert!(split.starts_with("HTTP/1.1 200 OK\r\n"), "{split}");

        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 20_000));
        let big = request(addr, &huge).await;
        assert!(big.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{big}");

        let missing = request(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops on shutdown")
            .expect("no panic");
    }

    /// A server on a loopback port with `limits`, its counters, and its shutdown token.
    async fn start(limits: Limits) -> (SocketAddr, Arc<Stats>, CancellationToken) {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(Stats::new(["sshd"]));
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_with(
            listener,
            stats.clone(),
            shutdown.clone(),
            limits,
        ));
        (addr, stats, shutdown)
    }

    /// Whether the server has closed `s` (read end of file or an error) within `wait`;
    /// panics if it sent anything.
    async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Err(_) => false,
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(n)) => panic!(
                "unexpected answer: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
        }
    }

    #[tokio::test]
    async fn a_request_head_trickled_past_the_head_deadline_is_closed_unanswered() {
        let limits = Limits {
            head: Duration::from_millis(300),
            ..Limits::DEFAULT
        };
        let (addr, stats, shutdown) = start(limits).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        // A byte every 20 ms: each read is quick, but the head never ends.
        let trickle = b"GET /metrics HTTP/1.1\r\nX-Slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'));
        for &byte in trickle {
            if s.write_all(&[byte]).await.is_err()
                || closed_within(&mut s, Duration::from_millis(20)).await
            {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "never closed");
        }
        let took = started.elapsed();
        assert!(
            took >= limits.head && took < limits.head * 4,
            "closed after {took:?}"
        );
        assert_eq!(stats.metrics_dropped_deadline.load(Relaxed), 1);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn at_the_cap_a_scrape_takes_the_place_of_the_oldest_silent_connection() {
        let limits = Limits {
            connections: 3,
            ..Limits::DEFAULT
        };
        let (addr, stats, shutdown) = start(limits).await;
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(TcpStream::connect(addr).await.expect("connect"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ok = request(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(closed_within(&mut silent[0], Duration::from_secs(2)).await);
        for s in &mut silent[1..] {
            assert!(!closed_within(s, Duration::from_millis(50)).await);
        }
        assert_eq!(stats.metrics_dropped_cap.load(Relaxed), 1);
        // Full again, with the second now the oldest.
        silent.push(TcpStream::connect(addr).await.expect("connect"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ok = request(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(closed_within(&mut silent[1], Duration::from_secs(2)).await);
        for s in &mut silent[2..] {
            assert!(!closed_within(s, Duration::from_millis(50)).await);
        }
        assert_eq!(stats.metrics_dropped_cap.load(Relaxed), 2);
        shutdown.cancel();
    }
}
