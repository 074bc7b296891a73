//! `[metrics] listen`: the counters of `stats.rs` in Prometheus' text format at
//! `GET /metrics`. This file renders the text (pure) and binds the listener; `http.rs`
//! serves it, `slots.rs` caps its connections. It only loads counters: nothing here
//! changes state.

mod http;
mod slots;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use tokio::net::{TcpListener, TcpSocket};

use crate::stats::Stats;

pub use http::serve;

/// Content type of the exposition format served at `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot serve metrics on {addr} (`[metrics] listen` in gaoler.toml): {reason}")]
    Bind { addr: SocketAddr, reason: String },
}

/// Connections the kernel queues for the listener before it drops new ones (their SYNs,
/// so that a scraper caught in a burst would wait a second for the retry): a burst of
/// this many is taken in full, and the connection cap sorts it out (`http.rs`).
const BACKLOG: u32 = 1024;

/// Binds the metrics listener to exactly `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    listen(addr).map_err(|e| MetricsError::Bind {
        addr,
        reason: crate::util::io_reason(&e),
    })
}

/// A listener on `addr` with room for `BACKLOG` connections not yet accepted.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As std does for a listener: a restart may bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
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
    scalar(
        &mut out,
        "gaoler_lines_cut_total",
        "counter",
        "Log lines longer than max_line_length: counted, never matched.",
        stats.lines_cut.load(Relaxed),
    );
    scalar(
        &mut out,
        "gaoler_sessions_evicted_total",
        "counter",
        "Sessions of multi-line filters forgotten before they ended, at max_sessions.",
        stats.sessions_evicted.load(Relaxed),
    );
    scalar(
        &mut out,
        "gaoler_lines_over_regex_limit_total",
        "counter",
        "Log lines a look-around regex gave up on at its backtracking limit: skipped.",
        stats.lines_over_limit.load(Relaxed),
    );
    let n = &stats.notify;
    labelled(
        &mut out,
        "gaoler_notify_events_total",
        "counter",
        "Ban and unban events handled by the [[notify]] notifiers, by result: sent, failed, timed_out (killed or abandoned at the timeout), dropped (a full queue).",
        "result",
        &[
            ("sent".to_string(), n.sent.load(Relaxed)),
            ("failed".to_string(), n.failed.load(Relaxed)),
            ("timed_out".to_string(), n.timed_out.load(Relaxed)),
            ("dropped".to_string(), n.dropped.load(Relaxed)),
        ],
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
    labelled(
        &mut out,
        "gaoler_metrics_connections_dropped_total",
        "counter",
        "Connections to this endpoint closed early: to make room at its connection cap, or past the deadline for a request or an answer.",
        "reason",
        &[
            ("cap".to_string(), stats.metrics_dropped_cap.load(Relaxed)),
            ("deadline".to_string(), stats.metrics_dropped_deadline.load(Relaxed)),
        ],
    );
    fleet(&mut out, &stats.fleet);
    out
}

/// Ban sharing (all zero without `[fleet]`).
fn fleet(out: &mut String, f: &crate::stats::FleetCounters) {
    scalar(
        out,
        "gaoler_fleet_connected",
        "gauge",
        "1 while connected to a NATS server of the fleet.",
        u64::from(f.connected.load(Relaxed)),
    );
    scalar(
        out,
        "gaoler_fleet_published_total",
        "counter",
        "This host's ban decisions JetStream acknowledged.",
        f.published.load(Relaxed),
    );
    scalar(
        out,
        "gaoler_fleet_outbox",
        "gauge",
        "This host's ban decisions waiting to be published.",
        f.outbox.load(Relaxed),
    );
    scalar(
        out,
        "gaoler_fleet_received_total",
        "counter",
        "Messages taken from the fleet's stream, this host's own included.",
        f.received.load(Relaxed),
    );
    scalar(
        out,
        "gaoler_fleet_applied_total",
        "counter",
        "Other hosts' bans put in force here.",
        f.applied.load(Relaxed),
    );
    labelled(
        out,
        "gaoler_fleet_rejected_total",
        "counter",
        "Messages from the fleet not applied, by reason.",
        "reason",
        &f.rejections(),
    );
    scalar(
        out,
        "gaoler_fleet_consumer_lag",
        "gauge",
        "Messages in the fleet's stream this host has not taken yet.",
        f.lag.load(Relaxed),
    );
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
    use std::time::Duration;

    pub(super) fn known_stats() -> Stats {
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
        s.notify.sent.store(9, Relaxed);
        s.notify.timed_out.store(1, Relaxed);
        s.notify.dropped.store(2, Relaxed);
        s.transactions.record(Duration::from_micros(500), true);
        s.transactions.record(Duration::from_millis(20), false);
        s.transactions.record(Duration::from_secs(2), true);
        s.lines_cut.store(3, Relaxed);
        s.sessions_evicted.store(8, Relaxed);
        s.metrics_dropped_cap.store(6, Relaxed);
        s.metrics_dropped_deadline.store(1, Relaxed);
        let f = &s.fleet;
        f.connected.store(true, Relaxed);
        f.published.store(12, Relaxed);
        f.outbox.store(2, Relaxed);
        f.received.store(30, Relaxed);
        f.applied.store(17, Relaxed);
        f.reject("untrusted");
        f.rejected[1].fetch_add(3, Relaxed);
        f.refused_here.store(1, Relaxed);
        f.lag.store(5, Relaxed);
        s
    }

    #[test]
    fn the_exposition_has_every_metric_with_help_type_and_exact_values() {
        let text = render(&known_stats());
        let expected = "\
# HELP gaoler_lines_read_total Log lines and journal entries read, over all sources.
# TYPE gaoler_lines_read_total counter
gaoler_lines_read_total 42
# HELP gaoler_lines_cut_total Log lines longer than max_line_length: counted, never matched.
# TYPE gaoler_lines_cut_total counter
gaoler_lines_cut_total 3
# HELP gaoler_sessions_evicted_total Sessions of multi-line filters forgotten before they ended, at max_sessions.
# TYPE gaoler_sessions_evicted_total counter
gaoler_sessions_evicted_total 8
# HELP gaoler_lines_over_regex_limit_total Log lines a look-around regex gave up on at its backtracking limit: skipped.
# TYPE gaoler_lines_over_regex_limit_total counter
gaoler_lines_over_regex_limit_total 0
# HELP gaoler_notify_events_total Ban and unban events handled by the [[notify]] notifiers, by result: sent, failed, timed_out (killed or abandoned at the timeout), dropped (a full queue).
# TYPE gaoler_notify_events_total counter
gaoler_notify_events_total{result=\"sent\"} 9
gaoler_notify_events_total{result=\"failed\"} 0
gaoler_notify_events_total{result=\"timed_out\"} 1
gaoler_notify_events_total{result=\"dropped\"} 2
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
# HELP gaoler_metrics_connections_dropped_total Connections to this endpoint closed early: to make room at its connection cap, or past the deadline for a request or an answer.
# TYPE gaoler_metrics_connections_dropped_total counter
gaoler_metrics_connections_dropped_total{reason=\"cap\"} 6
gaoler_metrics_connections_dropped_total{reason=\"deadline\"} 1
# HELP gaoler_fleet_connected 1 while connected to a NATS server of the fleet.
# TYPE gaoler_fleet_connected gauge
gaoler_fleet_connected 1
# HELP gaoler_fleet_published_total This host's ban decisions JetStream acknowledged.
# TYPE gaoler_fleet_published_total counter
gaoler_fleet_published_total 12
# HELP gaoler_fleet_outbox This host's ban decisions waiting to be published.
# TYPE gaoler_fleet_outbox gauge
gaoler_fleet_outbox 2
# HELP gaoler_fleet_received_total Messages taken from the fleet's stream, this host's own included.
# TYPE gaoler_fleet_received_total counter
gaoler_fleet_received_total 30
# HELP gaoler_fleet_applied_total Other hosts' bans put in force here.
# TYPE gaoler_fleet_applied_total counter
gaoler_fleet_applied_total 17
# HELP gaoler_fleet_rejected_total Messages from the fleet not applied, by reason.
# TYPE gaoler_fleet_rejected_total counter
gaoler_fleet_rejected_total{reason=\"malformed\"} 0
gaoler_fleet_rejected_total{reason=\"untrusted\"} 4
gaoler_fleet_rejected_total{reason=\"replayed\"} 0
gaoler_fleet_rejected_total{reason=\"expired\"} 0
gaoler_fleet_rejected_total{reason=\"ignored\"} 0
gaoler_fleet_rejected_total{reason=\"too_broad\"} 0
gaoler_fleet_rejected_total{reason=\"rate_limited\"} 0
gaoler_fleet_rejected_total{reason=\"refused_by_jail\"} 1
# HELP gaoler_fleet_consumer_lag Messages in the fleet's stream this host has not taken yet.
# TYPE gaoler_fleet_consumer_lag gauge
gaoler_fleet_consumer_lag 5
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
        assert_eq!((helps, types), (24, 24));
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
