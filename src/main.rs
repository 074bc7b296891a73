//! The `gaoler` binary: parses the command line, sets up logging, calls into the
//! library, and turns errors into exit codes (0 ok, 1 runtime failure, 2 usage/config).

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use gaoler::cli::{Cli, Command, FleetCommand};
use gaoler::config::BackendKind;
use gaoler::firewall::{Backend, Firewall, LogFirewall, NftFirewall};
use gaoler::ipc::access::SocketGroup;
use gaoler::ipc::server;
use gaoler::store::SledStore;
use gaoler::types::SystemClock;
use gaoler::{config, ctl, daemon, metrics, test_filter};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Run => run(&cli),
        Command::Check => check(&cli),
        Command::TestFilter {
            filter,
            log,
            json,
            show_missed,
            logtimezone,
            jail,
            vars,
        } => filter_test(
            &cli,
            filter,
            *jail,
            vars,
            log.as_deref(),
            logtimezone.as_deref(),
            *json,
            *show_missed,
        ),
        Command::ImportFail2ban { dir, output } => import_fail2ban(dir, output),
        Command::Fleet(FleetCommand::Keygen { file }) => fleet_keygen(file),
        Command::Ctl(args) => {
            let socket = socket_path(&cli);
            let group = config::socket_group(&cli.config);
            let request = args.command.request(args.json);
            // `ctl events` follows until interrupted; the others ask once.
            let asked = match args.command {
                gaoler::cli::CtlCommand::Events { .. } => ctl::follow_events,
                _ => ctl::run,
            };
            asked(&socket, group.as_deref(), &request, args.json)
        }
    };
    ExitCode::from(code as u8)
}

fn print_errors(errors: &config::ConfigErrors) {
    for e in &errors.0 {
        eprintln!("{e}");
    }
}

fn check(cli: &Cli) -> i32 {
    match config::load(&cli.config) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                eprintln!("{w} (warning)");
            }
            let enabled = cfg.enabled_jails().count();
            println!(
                "{}: configuration is valid ({} jails, {} enabled)",
                cli.config.display(),
                cfg.jails.len(),
                enabled
            );
            0
        }
        Err(errors) => {
            print_errors(&errors);
            eprintln!("{} error(s) in the configuration", errors.0.len());
            2
        }
    }
}

/// Converts a fail2ban tree, prints the report, then checks the result like `check`.
fn import_fail2ban(dir: &std::path::Path, output: &std::path::Path) -> i32 {
    let report = match gaoler::import::import(dir, output) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    print!("{}", report.render());
    match config::load(output) {
        Ok(cfg) => {
            println!(
                "{}: written; `gaoler check` passes ({} jails enabled)",
                output.display(),
                cfg.enabled_jails().count()
            );
            0
        }
        Err(errors) => {
            print_errors(&errors);
            eprintln!(
                "{}: written, but `gaoler check` finds {} error(s) to fix by hand",
                output.display(),
                errors.0.len()
            );
            2
        }
    }
}

/// Writes a new fleet key and prints its public key (one line).
fn fleet_keygen(file: &std::path::Path) -> i32 {
    match gaoler::fleet::keys::keygen(file) {
        Ok(public) => {
            println!("{public}");
            0
        }
        Err(e) => {
            eprintln!("gaoler fleet keygen: {e}");
            2
        }
    }
}

/// The socket named in gaoler.toml (read alone, without the jails and filters).
fn socket_path(cli: &Cli) -> std::path::PathBuf {
    config::socket_path(&cli.config)
}

fn run(cli: &Cli) -> i32 {
    let cfg = match config::load(&cli.config) {
        Ok(cfg) => cfg,
        Err(errors) => {
            print_errors(&errors);
            eprintln!(
                "gaoler: not starting: {} error(s) in the configuration",
                errors.0.len()
            );
            return 2;
        }
    };
    // The guard writes out what is still queued when `run` returns.
    let (logs, _flush_at_exit) = match gaoler::logging::init(&cfg.daemon) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gaoler: not starting: {e}");
            return 1;
        }
    };
    // systemd starts services at 1024 open files (soft): room for nft's pipes, the
    // store and the logs beside the ctl and metrics connections (`server::serve` caps
    // ctl at a quarter of the limit).
    match gaoler::util::raise_fd_limit() {
        Ok((before, now)) if now > before => {
            tracing::debug!(before, now, "open-files limit raised to the hard limit");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(
            error = %gaoler::util::io_reason(&e),
            limit = gaoler::util::fd_limit(),
            "cannot raise the open-files limit (ctl serves at most a quarter of it at once)"
        ),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!(
                "gaoler: cannot start the runtime: {}",
                gaoler::util::io_reason(&e)
            );
            return 1;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let hangups = match daemon::handle_signals(shutdown.clone()) {
            Ok(h) => h,
            Err(e) => {
                eprintln!(
                    "gaoler: cannot install signal handlers: {}",
                    gaoler::util::io_reason(&e)
                );
                return 1;
            }
        };
        let started = match edges(&cfg, logs).await {
            Ok(edges) => daemon::run(cfg, edges, shutdown, hangups).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("gaoler: {e}");
                1
            }
        }
    })
}

/// The daemon's real side effects, in the order that fails safest: a second daemon
/// is refused before anything is touched; the store (which refuses a second
/// process with a clearer message than a taken port) before the listeners, and
/// opened first so that reading its bans overlaps the rest; the control socket last.
async fn edges(
    cfg: &config::Config,
    logs: gaoler::logging::LogControl,
) -> Result<daemon::Edges<Backend>, daemon::DaemonError> {
    server::refuse_if_live(&cfg.daemon.socket)?;
    let group = cfg
        .daemon
        .socket_group
        .as_deref()
        .map(SocketGroup::resolve)
        .transpose()?;
    let store = SledStore::open(&cfg.daemon.state_dir)?;
    // The restore's read of every ban overlaps the rest of the start.
    store.read_ahead();
    let positions = Arc::new(store.positions());
    let mut firewall = match cfg.firewall.backend {
        BackendKind::Nftables => Backend::Nft(NftFirewall::new(&cfg.firewall.table)),
        BackendKind::Log => Backend::Log(LogFirewall),
    };
    firewall.probe().await?;
    let metrics = match cfg.metrics {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    // The fleet's key is read now: a key that cannot be read stops the start, as a
    // config error would (`check` reports it too).
    let fleet = match &cfg.fleet {
        Some(f) => Some(daemon::FleetEdge {
            key: gaoler::fleet::keys::load_signing_key(&f.key)?,
            outbox: Arc::new(store.outbox()),
        }),
        None => None,
    };
    let control = server::bind(&cfg.daemon.socket, group.as_ref())?;
    Ok(daemon::Edges {
        fleet,
        firewall,
        evidence: Arc::new(store.reader()),
        store: Box::new(store),
        positions,
        clock: Arc::new(SystemClock),
        control,
        group,
        metrics,
        logs: Arc::new(logs),
    })
}

#[allow(clippy::too_many_arguments)]
fn filter_test(
    cli: &Cli,
    name: &str,
    is_jail: bool,
    vars: &[String],
    log: Option<&std::path::Path>,
    tz: Option<&str>,
    json: bool,
    show_missed: bool,
) -> i32 {
    let mut opts = test_filter::Options {
        all_matches: json,
        missed: show_missed,
        ..Default::default()
    };
    let (filter, jail_tz) = if is_jail {
        let cfg = match config::load(&cli.config) {
            Ok(cfg) => cfg,
            Err(errors) => {
                print_errors(&errors);
                return 2;
            }
        };
        let Some(jail) = cfg.jails.iter().find(|j| j.name == name) else {
            let names: Vec<&str> = cfg.jails.iter().map(|j| j.name.as_str()).collect();
            eprintln!(
                "gaoler test-filter: no jail `{name}` in {} (jails: {})",
                cli.config.display(),
                names.join(", ")
            );
            return 2;
        };
        opts.proxies = jail.trusted_proxies.clone();
        (jail.filter.clone(), Some(jail.logtimezone))
    } else {
        let mut pairs = Vec::new();
        for v in vars {
            let Some((k, val)) = v.split_once('=') else {
                eprintln!("gaoler test-filter: --var {v}: expected NAME=VALUE");
                return 2;
            };
            pairs.push((k.trim().to_string(), val.to_string()));
        }
        match config::load_filter_with(&cli.config, name, &pairs) {
            Ok(f) => (f, None),
            Err(errors) => {
                print_errors(&errors);
                return 2;
            }
        }
    };
    let tz = match tz.map(gaoler::filter::LogTz::parse) {
        Some(Ok(tz)) => tz,
        Some(Err(e)) => {
            eprintln!("gaoler test-filter: --logtimezone: {e}");
            return 2;
        }
        None => jail_tz.unwrap_or_default(),
    };
    let result = match log {
        None => test_filter::run(&filter, tz, std::io::stdin().lock(), &opts),
        Some(p) if p.as_os_str() == "-" => {
            test_filter::run(&filter, tz, std::io::stdin().lock(), &opts)
        }
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => test_filter::run_file(&filter, tz, f, &opts),
            Err(e) => {
                eprintln!(
                    "gaoler test-filter: cannot open {}: {}",
                    p.display(),
                    gaoler::util::io_reason(&e)
                );
                return 2;
            }
        },
    };
    match result {
        Ok(report) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            0
        }
        Ok(report) => {
            // The matches quote log lines (user names): escaped for the terminal.
            print!(
                "{}",
                gaoler::util::terminal_safe(&test_filter::render(&report, &filter))
            );
            0
        }
        Err(e) => {
            eprintln!(
                "gaoler test-filter: read error: {}",
                gaoler::util::io_reason(&e)
            );
            1
        }
    }
}
