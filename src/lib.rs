//! gaoler: a Fail2Ban-style auto-banning daemon. Log lines flow one way:
//! `source -> filter -> jail -> ban -> firewall + store`, over bounded channels.
//!
//! Layout (a stage may use the stages before it, never those after):
//! - `units`    durations, ban times, log levels: below everything
//! - `types`    shared vocabulary: targets, bans, clock, ignore lists
//! - `config`   TOML files -> validated `Config`; every error as file:line:col
//! - `source`   trait `Source` and the one follow loop; files, the journal, named pipes
//! - `filter`   compiled filters: message -> failure (pure)
//! - `jail`     failure windows and ban decisions (pure, takes `now`)
//! - `ban`      the one owner of ban state: an actor over pure parts (policy,
//!   desired kernel state, reconcile diff, retry queue, recidive) and its outputs
//! - `firewall` trait `Firewall`; `nft` (the only code that knows nftables), `log`, fake
//! - `store`    trait `BanStore`; sled implementation of it and of `source::Positions`
//! - `stats`    counters shared for `ctl status` / `ctl stats` / `/metrics`
//! - `metrics`  `[metrics] listen`: Prometheus text format over a tiny HTTP server
//! - `fleet`    `[fleet]`: bans shared with other hosts over NATS JetStream, signed
//! - `notify`   ban and unban events (with their evidence) for `ctl events` followers
//! - `ipc`      ctl protocol: versioned requests/responses, framing, server, client
//! - `ctl`      the `ctl` subcommands' output: tables and JSON
//! - `daemon`   `run(config, edges, shutdown)`: the only place that wires stages together
//! - `logging`  the daemon's own log: level changes, text/JSON, reopenable file
//! - `test_filter` the `test-filter` command; `import` the `import-fail2ban` command
//! - `cli`      clap types
//! - `util`     readable I/O errors, the host's own addresses

pub mod ban;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod filter;
pub mod firewall;
pub mod fleet;
pub mod import;
pub mod ipc;
pub mod jail;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod source;
pub mod stats;
pub mod store;
pub mod test_filter;
pub mod types;
pub mod units;
pub mod util;
