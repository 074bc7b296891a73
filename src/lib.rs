//! gaoler: a Fail2Ban-style auto-banning daemon. Log lines flow one way:
//! `source -> filter -> jail -> ban -> firewall + store`, over bounded channels.
//!
//! Layout:
//! - `config`   TOML files -> validated `Config`; every error as file:line:col
//! - `types`    shared vocabulary: targets, ban times, bans, clock, ignore lists
//! - `source`   log sources: file tailing
//! - `filter`   compiled filters: message -> failure (pure)
//! - `jail`     failure windows and ban decisions (pure, takes `now`)
//! - `ban`      the one owner of ban state: store, kernel, expiry, restore
//! - `firewall` trait `Firewall`; `nft` (the only file that knows nftables), `log`, fake
//! - `store`    trait `BanStore`; sled implementation; fake
//! - `stats`    counters shared for `ctl status` / `ctl stats` / `/metrics`
//! - `metrics`  `[metrics] listen`: Prometheus text format over a tiny HTTP server
//! - `ipc`      ctl protocol: versioned requests/responses, framing, server, client
//! - `ctl`      the `ctl` subcommands' output: tables and JSON
//! - `daemon`   `run`: the only place that wires stages together
//! - `test_filter` the `test-filter` command
//! - `cli`      clap types
//! - `logging`  the daemon's own log: level changes, text/JSON, reopenable file
//! - `util`     readable I/O errors

pub mod ban;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod filter;
pub mod firewall;
pub mod import;
pub mod ipc;
pub mod jail;
pub mod logging;
pub mod metrics;
pub mod source;
pub mod stats;
pub mod store;
pub mod test_filter;
pub mod types;
pub mod units;
pub mod util;
