//! The command line (clap types only): `run`, `check`, `test-filter`, `ctl ...`,
//! `import-fail2ban`, `fleet ...`.
//! `--config DIR` is global and may stand anywhere.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_DIR;
use crate::ipc::Request;

#[derive(Parser, Debug)]
#[command(
    name = "gaoler",
    version,
    about = "Fail2Ban-style auto-banning daemon on nftables"
)]
pub struct Cli {
    /// Directory holding gaoler.toml, jails/ and filters/.
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_CONFIG_DIR)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon in the foreground (systemd Type=notify).
    Run,
    /// Validate the whole configuration; print every error as file:line:col.
    Check,
    /// Run a filter over a log file (or - for stdin), like fail2ban-regex.
    TestFilter {
        /// A filter name from filter_path, or a path to a filter .toml file; with
        /// `--jail`, a jail name.
        filter: String,
        /// The log to read; `-` or nothing reads standard input.
        log: Option<PathBuf>,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
        /// Also print the lines no failregex matched.
        #[arg(long)]
        show_missed: bool,
        /// Time zone of timestamps without an offset (IANA name, UTC, +01:00, local);
        /// default: local, or the jail's with `--jail`.
        #[arg(long)]
        logtimezone: Option<String>,
        /// FILTER names a configured jail (enabled or not): test with its filter,
        /// filter_vars, trusted_proxies and logtimezone.
        #[arg(long)]
        jail: bool,
        /// Set a filter variable, as a jail's filter_vars does (repeatable), e.g.
        /// `--var mode=aggressive`; not with `--jail`.
        #[arg(long = "var", value_name = "NAME=VALUE", conflicts_with = "jail")]
        vars: Vec<String>,
    },
    /// Query and steer the running daemon.
    Ctl(CtlArgs),
    /// Convert a fail2ban configuration (jails, filters, defaults) into a new gaoler
    /// configuration directory, with a report; exit 0 when the result passes `check`.
    #[command(name = "import-fail2ban")]
    ImportFail2ban {
        /// The fail2ban configuration directory.
        #[arg(default_value = "/etc/fail2ban")]
        dir: PathBuf,
        /// The directory to write gaoler.toml, jails/ and filters/ into (new or empty).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Fleet ban sharing: keys.
    #[command(subcommand)]
    Fleet(FleetCommand),
}

#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Write a new secret key to FILE and print its public key.
    ///
    /// The file is created with mode 0600; an existing file is never overwritten.
    /// The public key (one line of base64) goes into other hosts' `trusted_keys`.
    Keygen {
        /// The key file to create, e.g. /etc/gaoler/fleet.key.
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// Print JSON (stable fields, see the README).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Is the daemon up? Exit 0 if so, 1 if not.
    Ping,
    /// Versions of the daemon and its protocol.
    Version,
    /// Jails, their counters, and (for one jail) its current bans.
    Status { jail: Option<String> },
    /// Current bans with the time left.
    Banned {
        #[arg(long)]
        jail: Option<String>,
    },
    /// Ban an address by hand.
    Ban {
        jail: String,
        ip: String,
        /// How long: seconds, 10m, 1h, 1d, or `permanent`; default: the jail's bantime.
        #[arg(long, allow_hyphen_values = true)]
        bantime: Option<String>,
    },
    /// Lift the bans of an address (in every jail, or one), or all bans.
    Unban {
        ip: Option<String>,
        #[arg(long)]
        jail: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Throughput and totals since start.
    Stats,
    /// Ban sharing: connection, published, received, applied, rejected, outbox, lag.
    Fleet,
    /// An address: its current bans with the log lines that made them, and its past
    /// bans.
    Show { ip: String },
    /// Follow bans and unbans as they happen, one a line, until interrupted.
    Events {
        #[arg(long)]
        jail: Option<String>,
    },
    /// Change the daemon's own log level now: error, warn, info, debug or trace (until
    /// a restart, or a reload with another log_level).
    LogLevel { level: String },
    /// Reopen the daemon's log_file, after logrotate moved it.
    FlushLogs,
    /// Re-read the configuration: checked whole first (nothing changes if it is
    /// invalid); bans and failure counts of unchanged jails survive.
    Reload,
}

impl CtlCommand {
    /// The protocol request this command sends (`json`: the JSON output is asked
    /// for, which has more in it).
    pub fn request(&self, json: bool) -> Request {
        match self {
            CtlCommand::Ping => Request::Ping,
            CtlCommand::Version => Request::Version,
            CtlCommand::Status { jail } => Request::Status { jail: jail.clone() },
            CtlCommand::Banned { jail } => Request::Banned {
                jail: jail.clone(),
                matches: json,
            },
            CtlCommand::Ban { jail, ip, bantime } => Request::Ban {
                jail: jail.clone(),
                ip: ip.clone(),
                bantime: bantime.clone(),
            },
            CtlCommand::Unban { ip, jail, all } => Request::Unban {
                ip: ip.clone(),
                jail: jail.clone(),
                all: *all,
            },
            CtlCommand::Stats => Request::Stats,
            CtlCommand::Fleet => Request::Fleet,
            CtlCommand::Show { ip } => Request::Show { ip: ip.clone() },
            CtlCommand::Events { jail } => Request::Events { jail: jail.clone() },
            CtlCommand::Reload => Request::Reload,
            CtlCommand::LogLevel { level } => Request::LogLevel {
                level: level.clone(),
            },
            CtlCommand::FlushLogs => Request::FlushLogs,
        }
    }
}
