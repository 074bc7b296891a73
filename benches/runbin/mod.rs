//! What the benches that run the real binary share: which binary (this build's, or
//! `GAOLER_BENCH_BIN`), waiting for its `READY=1` as systemd does (the bench points
//! `NOTIFY_SOCKET` at a datagram socket of its own), and reporting rounds.

use std::os::unix::net::UnixDatagram;
use std::time::Instant;

/// Seconds from `t0` until `READY=1` arrives on `notify`; an error when the socket's
/// read timeout passes first.
pub fn ready_after(notify: &UnixDatagram, t0: Instant) -> std::io::Result<f64> {
    let mut buf = [0u8; 4096];
    loop {
        let n = notify.recv(&mut buf)?;
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            return Ok(t0.elapsed().as_secs_f64());
        }
    }
}

/// The gaoler binary measured: this build's, or `GAOLER_BENCH_BIN`.
pub fn bin() -> String {
    std::env::var("GAOLER_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_gaoler").to_string())
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The rounds, for the report.
pub fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
