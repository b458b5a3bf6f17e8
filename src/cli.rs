//! Command line (CONTRACT section 1): parses arguments and calls the library. Exit codes: 0
//! success, 2 invalid configuration or usage, 1 any other failure.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the command line's output (check-config results, versions, errors before logging is set up) is its interface"
)]

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{self, RunOptions};
use crate::config::{Config, FileCheck, DEFAULT_CONFIG_PATH};
use crate::sim::synthetic::SyntheticOptions;

#[derive(Parser, Debug)]
#[command(name = "roadedge", version = long_version(), about = "Roadside edge appliance: RFID readers, GB/T 32960 and JT/T 808 vehicles, durable MQTT uplink")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `VERSION (target, profile)`; the version is the binary's stamp (OTA reads it from here).
fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} ({}, {})",
            app::version(),
            env!("ROADEDGE_BUILD_TARGET"),
            env!("ROADEDGE_BUILD_PROFILE")
        )
    })
}

#[derive(Args, Debug)]
struct ConfigArg {
    /// Configuration file [default: $ROADEDGE_CONFIG, else /etc/roadedge/roadedge.yaml]
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| std::env::var_os("ROADEDGE_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }
}

#[derive(Args, Debug)]
struct CheckConfigArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Check everything but the existence of referenced files (certificates, keys), e.g. a
    /// cabinet's file on a laptop.
    #[arg(long)]
    no_file_checks: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the appliance daemon until SIGTERM/SIGINT.
    Run(ConfigArg),
    /// Validate a configuration file; print every error with its YAML path.
    CheckConfig(CheckConfigArgs),
    /// Read a password on stdin, print an argon2id hash for web.users[].password_hash.
    Passwd,
    /// Run the whole appliance locally with a loopback MQTT/TLS broker and simulated devices.
    Demo(crate::demo::DemoArgs),
    /// Simulators and load generators.
    /// Simulators and load generators (boxed: their arguments are large and parsed once).
    #[command(subcommand)]
    Sim(Box<SimCommand>),
}

#[derive(Subcommand, Debug)]
enum SimCommand {
    /// Run the appliance from a configuration with a synthetic record source appending straight
    /// into the store (durability tests, benchmarks).
    Synthetic(SyntheticArgs),
    /// Simulated GB/T 32960 vehicles (TCP or TLS): login, real-time data, heartbeats, answers.
    Gbt32960(crate::sim::gbt32960::SimArgs),
    /// Simulated GB/T 37987 readers (either dialect) that listen for the edge, dial it, or sit on
    /// a serial port; they run the rules the edge gives them and report tags.
    Reader(crate::sim::reader::ReaderSimArgs),
    /// Simulated JT/T 808 terminals (2013/2019) against an appliance: register, authenticate,
    /// report locations and subpackaged batches, answer parameter queries and terminal control.
    Jt808(crate::sim::jt808::Jt808Args),
    /// Scripted traffic past the site for fusion: 808 and 32960 vehicles that approach, pass the
    /// gantry and leave, a gantry reader reading their tags; one without a tag, one cloned tag.
    Traffic(crate::sim::traffic::TrafficArgs),
}

#[derive(Args, Debug)]
struct SyntheticArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Simulated devices, each appending in order.
    #[arg(long, default_value_t = 8)]
    devices: usize,
    /// Records per second over all devices; 0 = as fast as commits complete.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Every n-th record of a device is critical (0 = never).
    #[arg(long, default_value_t = 10)]
    critical_every: u64,
    /// Identifies this run in the records.
    #[arg(long, default_value = "run")]
    run_id: String,
    /// Bytes of padding per record.
    #[arg(long, default_value_t = 0)]
    padding: usize,
    /// Print `COMMITTED <device> <n> <seq> <kind>` after each commit.
    #[arg(long)]
    report_commits: bool,
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::CheckConfig(c) => {
            let files = if c.no_file_checks {
                FileCheck::Skip
            } else {
                FileCheck::Check
            };
            check_config(&c.config.path(), files)
        }
        Command::Passwd => passwd(),
        Command::Run(c) => run(&c.path(), RunOptions::default()),
        Command::Demo(args) => runtime_block_on(crate::demo::run(args)),
        Command::Sim(sim) => run_sim(*sim),
    }
}

fn run_sim(command: SimCommand) -> ExitCode {
    match command {
        SimCommand::Synthetic(s) => {
            let synthetic = SyntheticOptions {
                devices: s.devices,
                rate: s.rate,
                critical_every: s.critical_every,
                run_id: s.run_id,
                report_commits: s.report_commits,
                padding: s.padding,
            };
            let source: crate::app::IntakeSource = std::sync::Arc::new(move |store, stop| {
                tokio::spawn(crate::sim::synthetic::run(store, synthetic.clone(), stop))
            });
            let options = RunOptions {
                sources: vec![source],
                ..RunOptions::default()
            };
            run(&s.config.path(), options)
        }
        SimCommand::Gbt32960(args) => runtime_block_on(crate::sim::gbt32960::run_cli(args)),
        SimCommand::Jt808(args) => runtime_block_on(crate::sim::jt808::run_cli(args)),
        SimCommand::Traffic(args) => runtime_block_on(crate::sim::traffic::run_cli(args)),
        SimCommand::Reader(args) => runtime_block_on(crate::sim::reader::run_cli(args)),
    }
}

fn check_config(path: &std::path::Path, files: FileCheck) -> ExitCode {
    match Config::load(path, files) {
        Ok(_) => {
            println!("{}: valid", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::from(2)
        }
    }
}

fn passwd() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("cannot read a password from stdin");
        return ExitCode::from(1);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("empty password");
        return ExitCode::from(2);
    }
    match crate::web::auth::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hashing failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(path: &std::path::Path, options: RunOptions) -> ExitCode {
    let config = match Config::load(path, FileCheck::Check) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{}: {errors}", path.display());
            return ExitCode::from(2);
        }
    };
    crate::ops::logging::init(&config.logging.level);
    raise_open_files();
    runtime_block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::ops::shutdown::cancel_on_signal(shutdown.clone()));
        // In-process restarts of the core (configuration apply, revert, `restart`) happen in
        // there; the process and its logging stay.
        app::run_from_file(path, options, shutdown, |_| {}).await
    })
}

/// Raises the soft limit of open files to the hard one: each device connection is a descriptor,
/// and `max_connections` (20,000 per protocol by default) is far above the usual soft limit of
/// 1,024 when the appliance is started outside its systemd unit (which sets `LimitNOFILE`).
fn raise_open_files() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let before = limit.current;
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(?before, to = ?limit.maximum, "open files limit raised to the hard limit"),
        Err(e) => tracing::warn!(?before, "cannot raise the open files limit: {e}"),
    }
}

fn runtime_block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(restart) = e.downcast_ref::<crate::ops::ota::RestartRequired>() {
                // Not a failure: the service manager (Restart=on-failure) starts the binary now
                // in place.
                tracing::warn!("{restart}: exiting with {}", crate::ops::ota::RESTART_EXIT_CODE);
                return ExitCode::from(crate::ops::ota::RESTART_EXIT_CODE);
            }
            tracing::error!("{e:#}");
            eprintln!("roadedge: {e:#}");
            ExitCode::from(1)
        }
    }
}
