//! `[metrics] listen`: the counters of `stats.rs` in Prometheus' text format at
//! `GET /metrics`, from a small hand-written HTTP/1.1 server (one task per connection,
//! one request per connection). It only loads counters: nothing here changes state.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::stats::Stats;

/// Content type of the exposition format served at `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Longest request head (request line and headers) read; a longer one gets a 400.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, and how much, is read and dropped after the response before closing, so
/// that unread input does not turn the close into a reset that loses the response.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot serve metrics on {addr} (`[metrics] listen` in gaoler.toml): {reason}")]
    Bind { addr: SocketAddr, reason: String },
}

/// Binds the metrics listener to exactly `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| MetricsError::Bind {
            addr,
            reason: crate::util::io_reason(&e),
        })
}

/// Answers scrapes until `shutdown`.
pub async fn serve(listener: TcpListener, stats: Arc<Stats>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let (stats, shutdown) = (stats.clone(), shutdown.clone());
                        tracker.spawn(async move {
                            connection(stream, &stats, &shutdown).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "metrics: too many connections; closing a new one");
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %crate::util::io_reason(&e), "metrics listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// Reads one request, answers it and closes.
async fn connection(mut stream: TcpStream, stats: &Stats, shutdown: &CancellationToken) {
    let head = tokio::select! {
        _ = shutdown.cancelled() => return,
        head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)) => head,
    };
    let response = match head {
        Err(_) => return, // the client took too long
        Ok(Head::Closed) => return,
        Ok(Head::TooLarge) => Reply::error(400, "Bad Request", "request head too large\n"),
        Ok(Head::Complete(head)) => answer(&head, stats),
    };
    let bytes = response.encode();
    tokio::select! {
        _ = shutdown.cancelled() => return,
        written = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)) => {
            if !matches!(written, Ok(Ok(()))) {
                return;
            }
        }
    }
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while drained < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
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

/// The exposition text of `stats`, metric by metric, with HELP and TYPE lines.
pub fn render(stats: &Stats) -> String {
    let mut out = String::with_capacity(4096);
    let jails = |f: fn(&crate::stats::JailCounters) -> u64| -> Vec<(String, u64)> {
        stats
            .jail_names()
            .into_iter()
            .filter_map(|name| stats.jail(&name).map(|c| (name, f(&c))))
            .collect()
    };
    scalar(
        &mut out,
        "gaoler_lines_read_total",
        "counter",
        "Log lines and journal entries read, over all sources.",
        stats.lines_read.load(Relaxed),
    );
    labelled(
        &mut out,
        "gaoler_source_lines_read_total",
        "counter",
        "Log lines read per source: a file path, or journal.",
        "source",
        &stats.sources(),
    );
    labelled(
        &mut out,
        "gaoler_failures_total",
        "counter",
        "Failures counted per jail (ignored addresses and stale lines are not counted).",
        "jail",
        &jails(|c| c.total_failed.load(Relaxed)),
    );
    labelled(
        &mut out,
        "gaoler_bans_total",
        "counter",
        "Bans put in force per jail, ctl bans included.",
        "jail",
        &jails(|c| c.total_banned.load(Relaxed)),
    );
    labelled(
        &mut out,
        "gaoler_unbans_total",
        "counter",
        "Bans that ended per jail: expired or lifted by ctl unban.",
        "jail",
        &jails(|c| c.total_unbanned.load(Relaxed)),
    );
    labelled(
        &mut out,
        "gaoler_current_bans",
        "gauge",
        "Bans in force per jail.",
        "jail",
        &jails(|c| c.currently_banned.load(Relaxed)),
    );
    labelled(
        &mut out,
        "gaoler_tracked_addresses",
        "gauge",
        "Addresses with failures but no ban, per jail.",
        "jail",
        &jails(|c| c.currently_failed.load(Relaxed)),
    );
    scalar(
        &mut out,
        "gaoler_evictions_total",
        "counter",
        "Tracked addresses forgotten because max_tracked was reached.",
        stats.evicted.load(Relaxed),
    );
    scalar(
        &mut out,
        "gaoler_reconciler_repairs_total",
        "counter",
        "Kernel repairs made by the reconciler (elements added, removed or retimed; table rebuilds).",
        stats.repairs.load(Relaxed),
    );
    let tx = &stats.transactions;
    scalar(
        &mut out,
        "gaoler_nft_transactions_total",
        "counter",
        "Firewall transactions sent (table builds, batches of changes, table removal); dry runs with backend log.",
        tx.count.load(Relaxed),
    );
    scalar(
        &mut out,
        "gaoler_nft_transaction_errors_total",
        "counter",
        "Firewall transactions the backend refused or could not run.",
        tx.errors.load(Relaxed),
    );
    let name = "gaoler_nft_transaction_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Time each firewall transaction took, failed ones included.",
    );
    // The count is the +Inf bucket, so the two agree even while a transaction is
    // being recorded.
    let buckets = tx.cumulative();
    let sum = tx.nanos.load(Relaxed) as f64 / 1e9;
    let count = buckets.last().map_or(0, |(_, n)| *n);
    for (le, n) in &buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn labelled(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: &[(String, u64)],
) {
    header(out, name, kind, help);
    for (value_of_label, value) in values {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{}\"}} {value}",
            escape_label(value_of_label)
        );
    }
}

/// A label value as the text format wants it: `\`, `"` and line feeds escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn known_stats() -> Stats {
        let s = Stats::new(["sshd", "nginx-auth"]);
        s.lines_read.store(42, Relaxed);
        s.source("/var/log/auth.log").store(40, Relaxed);
        s.source("journal").store(2, Relaxed);
        let sshd = s.jail("sshd").expect("jail");
        sshd.total_failed.store(7, Relaxed);
        sshd.total_banned.store(2, Relaxed);
        sshd.total_unbanned.store(1, Relaxed);
        sshd.currently_banned.store(1, Relaxed);
        sshd.currently_failed.store(3, Relaxed);
        s.evicted.store(5, Relaxed);
        s.repairs.store(4, Relaxed);
        s.transactions.record(Duration::from_micros(500), true);
        s.transactions.record(Duration::from_millis(20), false);
        s.transactions.record(Duration::from_secs(2), true);
        s
    }

    #[test]
    fn the_exposition_has_every_metric_with_help_type_and_exact_values() {
        let text = render(&known_stats());
        let expected = "\
# HELP gaoler_lines_read_total Log lines and journal entries read, over all sources.
# TYPE gaoler_lines_read_total counter
gaoler_lines_read_total 42
# HELP gaoler_source_lines_read_total Log lines read per source: a file path, or journal.
# TYPE gaoler_source_lines_read_total counter
gaoler_source_lines_read_total{source=\"/var/log/auth.log\"} 40
gaoler_source_lines_read_total{source=\"journal\"} 2
# HELP gaoler_failures_total Failures counted per jail (ignored addresses and stale lines are not counted).
# TYPE gaoler_failures_total counter
gaoler_failures_total{jail=\"nginx-auth\"} 0
gaoler_failures_total{jail=\"sshd\"} 7
# HELP gaoler_bans_total Bans put in force per jail, ctl bans included.
# TYPE gaoler_bans_total counter
gaoler_bans_total{jail=\"nginx-auth\"} 0
gaoler_bans_total{jail=\"sshd\"} 2
# HELP gaoler_unbans_total Bans that ended per jail: expired or lifted by ctl unban.
# TYPE gaoler_unbans_total counter
gaoler_unbans_total{jail=\"nginx-auth\"} 0
gaoler_unbans_total{jail=\"sshd\"} 1
# HELP gaoler_current_bans Bans in force per jail.
# TYPE gaoler_current_bans gauge
gaoler_current_bans{jail=\"nginx-auth\"} 0
gaoler_current_bans{jail=\"sshd\"} 1
# HELP gaoler_tracked_addresses Addresses with failures but no ban, per jail.
# TYPE gaoler_tracked_addresses gauge
gaoler_tracked_addresses{jail=\"nginx-auth\"} 0
gaoler_tracked_addresses{jail=\"sshd\"} 3
# HELP gaoler_evictions_total Tracked addresses forgotten because max_tracked was reached.
# TYPE gaoler_evictions_total counter
gaoler_evictions_total 5
# HELP gaoler_reconciler_repairs_total Kernel repairs made by the reconciler (elements added, removed or retimed; table rebuilds).
# TYPE gaoler_reconciler_repairs_total counter
gaoler_reconciler_repairs_total 4
# HELP gaoler_nft_transactions_total Firewall transactions sent (table builds, batches of changes, table removal); dry runs with backend log.
# TYPE gaoler_nft_transactions_total counter
gaoler_nft_transactions_total 3
# HELP gaoler_nft_transaction_errors_total Firewall transactions the backend refused or could not run.
# TYPE gaoler_nft_transaction_errors_total counter
gaoler_nft_transaction_errors_total 1
# HELP gaoler_nft_transaction_seconds Time each firewall transaction took, failed ones included.
# TYPE gaoler_nft_transaction_seconds histogram
gaoler_nft_transaction_seconds_bucket{le=\"0.001\"} 1
gaoler_nft_transaction_seconds_bucket{le=\"0.0025\"} 1
gaoler_nft_transaction_seconds_bucket{le=\"0.005\"} 1
gaoler_nft_transaction_seconds_bucket{le=\"0.01\"} 1
gaoler_nft_transaction_seconds_bucket{le=\"0.025\"} 2
gaoler_nft_transaction_seconds_bucket{le=\"0.05\"} 2
gaoler_nft_transaction_seconds_bucket{le=\"0.1\"} 2
gaoler_nft_transaction_seconds_bucket{le=\"0.25\"} 2
gaoler_nft_transaction_seconds_bucket{le=\"0.5\"} 2
gaoler_nft_transaction_seconds_bucket{le=\"1\"} 2
gaoler_nft_transaction_seconds_bucket{le=\"2.5\"} 3
gaoler_nft_transaction_seconds_bucket{le=\"5\"} 3
gaoler_nft_transaction_seconds_bucket{le=\"10\"} 3
gaoler_nft_transaction_seconds_bucket{le=\"+Inf\"} 3
gaoler_nft_transaction_seconds_sum 2.0205
gaoler_nft_transaction_seconds_count 3
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_fresh_daemon_exposes_zeros_and_no_source_yet() {
        let text = render(&Stats::new(["sshd"]));
        assert!(text.contains("gaoler_bans_total{jail=\"sshd\"} 0\n"));
        assert!(text.contains("gaoler_nft_transaction_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("gaoler_nft_transaction_seconds_sum 0\n"));
        assert!(!text.contains("gaoler_source_lines_read_total{"));
        // Every metric has exactly one HELP and one TYPE line.
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!((helps, types), (12, 12));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("sshd"), "sshd");
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let s = Stats::new(["sshd"]);
        s.source("/var/log/we\"ird\\name\n.log").store(1, Relaxed);
        assert!(render(&s).contains(
            "gaoler_source_lines_read_total{source=\"/var/log/we\\\"ird\\\\name\\n.log\"} 1\n"
        ));
    }

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

    #[tokio::test]
    async fn a_bind_failure_names_the_address_and_the_key() {
        let taken = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = bind(addr).await.expect_err("in use").to_string();
        assert!(
            err.contains(&addr.to_string())
                && err.contains("[metrics] listen")
                && err.contains("address already in use"),
            "{err}"
        );
    }
}
