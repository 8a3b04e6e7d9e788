//! `live-engine`: run the engine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc over glibc malloc: the request path allocates many small
/// short-lived objects across threads (headers, JSON, futures), where
/// glibc's arenas spent ~13 % of the engine's CPU in a gift storm.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use engine::{Config, Engine};

#[derive(Parser)]
#[command(
    name = "live-engine",
    version,
    about = "Live streaming engine with audience interaction"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine (HTTP API, WebSockets, actors, store, event bus).
    Serve {
        /// TOML configuration file; every key can also be set as LIVE_<KEY>.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Check that the money adds up: wallets against the ledger, gifts
    /// against their ledger lines and billing's settlements. Reads the
    /// store read-only, beside a running engine or a stopped one. Exit 0:
    /// no difference; 1: differences (each printed with its count and
    /// coins); 2: the store or the configuration cannot be read.
    Reconcile {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only gifts and top-ups created at or after this time
        /// (milliseconds since the Unix epoch).
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Only gifts and top-ups created before this time (ms).
        #[arg(long, default_value_t = u64::MAX)]
        until: u64,
    },
    /// Print the effective configuration (defaults, file, environment) as TOML-like debug output.
    Config {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config { config } => match Config::load(config.as_deref()) {
            Ok(config) => {
                println!("{config:#?}");
                ExitCode::SUCCESS
            }
            Err(error) => config_error(&error),
        },
        Command::Reconcile {
            config,
            since,
            until,
        } => match Config::load(config.as_deref()) {
            Ok(config) => reconcile(&config, since, until),
            Err(error) => config_error(&error),
        },
        Command::Serve { config, log_format } => {
            let config = match Config::load(config.as_deref()) {
                Ok(config) => config,
                Err(error) => return config_error(&error),
            };
            init_logs(log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("error: cannot start the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn reconcile(config: &Config, since: u64, until: u64) -> ExitCode {
    let snapshot = match storage::audit::load_embedded(&config.data_dir, since, until) {
        Ok(snapshot) => snapshot,
        Err(error) => {
            eprintln!("error: cannot read the store: {error}");
            return ExitCode::from(2);
        }
    };
    let result = storage::audit::reconcile(&snapshot);
    println!(
        "reconcile {}: {} gifts ({} coins), {} settlements, {} wallets",
        config.data_dir.display(),
        result.gifts,
        result.gift_coins,
        result.settlements,
        result.wallets
    );
    if result.is_clean() {
        println!("no differences");
        return ExitCode::SUCCESS;
    }
    for difference in &result.differences {
        println!("DIFFERENCE {difference}");
    }
    ExitCode::from(1)
}

fn config_error(error: &str) -> ExitCode {
    eprintln!("error: invalid configuration: {error}");
    ExitCode::from(2)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let engine = Engine::start(config).await?;
    tokio::select! {
        _ = shutdown_signal() => engine.shutdown().await,
        _ = engine.failed() => anyhow::bail!("the actor tree stopped: a supervisor exceeded its restart budget"),
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIVE_LOG")
        .unwrap_or_else(|_| "info,tower_http=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
