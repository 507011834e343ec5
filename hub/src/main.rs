//! The `huitong` command.

mod cmd;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use huitong::app::App;
use huitong::config::{self, Config, Sources};

#[derive(Parser)]
#[command(
    name = "huitong",
    version,
    about = "huitong (汇通): one org chart, bridged chats, tasks, tickets and orders across Feishu, DingTalk, WeCom, mail and CRM/ERP",
    long_about = None,
    after_help = "Configuration layers: the built-in defaults, then --config FILE, then HUITONG_<SECTION>_<KEY> \
                  environment variables (e.g. HUITONG_DATABASE_URL, HUITONG_QUEUE_URL), then flags such as --listen."
)]
struct Cli {
    /// Configuration file (TOML) layered over the built-in defaults.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Log level or tracing filter (overrides log.level), e.g. debug or huitong=debug,info.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The whole journey on a bare machine: three vendor sandboxes, plan, apply, a live change.
    Demo(cmd::demo::DemoArgs),
    /// Run the hub: HTTP server (webhooks, callbacks, admin API, /metrics), queue workers and schedules.
    Serve {
        /// Address to listen on (overrides server.listen), e.g. 127.0.0.1:8080.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Work with the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Declarative (http) connectors: check a definition, list records of a configured one.
    #[command(subcommand)]
    Connector(cmd::connector::ConnectorCommand),
    /// Check, apply and preview field mappings (offline; no database needed).
    #[command(subcommand)]
    Mapping(cmd::mapping::MappingCommand),
    /// Plan or apply a route's org-chart reconcile.
    #[command(subcommand)]
    Sync(cmd::sync::SyncCommand),
    /// Show the schedules, their next fire times and last outcomes.
    #[command(subcommand)]
    Schedule(cmd::schedule::ScheduleCommand),
    /// Run a vendor's API emulator seeded from an org fixture.
    #[command(subcommand, long_about = cmd::sandbox::LONG_ABOUT)]
    Sandbox(cmd::sandbox::SandboxCommand),
    /// Inspect and replay dead-lettered messages (RabbitMQ or the embedded queue).
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters with their queue, attempts and last error.
    List {
        /// Only the delivery queue of this route.
        #[arg(long, conflicts_with = "queue")]
        route: Option<String>,
        /// Only this queue (ingress, normalize, deliver.<route>).
        #[arg(long)]
        queue: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put dead letters back on their queue with the attempt count reset (audited).
    Replay {
        /// The message id to replay.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Replay every dead letter (of --route/--queue, or of all queues).
        #[arg(long)]
        all: bool,
        #[arg(long, conflicts_with = "queue")]
        route: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        /// Who replays, for the audit log (default: $USER).
        #[arg(long)]
        actor: Option<String>,
    },
}

use cmd::OutputFormat;

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print every problem (exit code 2 on error).
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sources(cli: &Cli, listen: Option<&String>) -> Sources {
    let mut sources = Sources::from_process(cli.config.clone());
    if let Some(l) = listen {
        sources
            .overrides
            .push(("server.listen".into(), l.clone(), "--listen".into()));
    }
    if let Some(level) = &cli.log_level {
        sources
            .overrides
            .push(("log.level".into(), level.clone(), "--log-level".into()));
    }
    if let Some(f) = cli.log_format {
        let v = match f {
            LogFormatArg::Human => "human",
            LogFormatArg::Json => "json",
        };
        sources
            .overrides
            .push(("log.format".into(), v.into(), "--log-format".into()));
    }
    sources
}

/// Load the configuration or print every problem and exit with code 2.
fn load(sources: &Sources) -> Result<Config, ExitCode> {
    config::load(sources).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

/// The schedule files by the rule `config check` and `serve` share
/// (`huitong::jobs::check_schedules`): errors are printed and give exit code 2; warnings
/// are printed here when `warnings` (`serve` logs them as it starts the scheduler).
fn schedule_problems(config: &Config, warnings: bool) -> Option<ExitCode> {
    let check = huitong::jobs::check_schedules(config);
    if warnings {
        for w in &check.warnings {
            eprintln!("{w}");
        }
    }
    if check.errors.is_empty() {
        return None;
    }
    eprintln!("schedules have {} problem(s):", check.errors.len());
    for p in &check.errors {
        eprintln!("  - {p}");
    }
    Some(ExitCode::from(2))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve { listen } => {
            let config = match load(&sources(&cli, listen.as_ref())) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if let Some(code) = schedule_problems(&config, false) {
                return Ok(code);
            }
            huitong::telemetry::init_logging(&config.log.level, config.log.format);
            runtime()?.block_on(serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check) => {
            let config = match load(&sources(&cli, None)) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            // The same rule as `serve`: errors stop both, a skipped schedule is a warning.
            if let Some(code) = schedule_problems(&config, true) {
                return Ok(code);
            }
            println!("configuration OK");
            println!("  server.listen   {}", config.server.listen);
            println!("  database.url    {}", config.database.redacted_url());
            println!("  queue.url       {}", config.queue.url.redacted());
            for (name, c) in &config.connectors {
                let secrets: Vec<&str> = c.secrets.keys().map(String::as_str).collect();
                println!(
                    "  connector {name:<12} kind={} secrets set: {}",
                    c.kind.as_str(),
                    if secrets.is_empty() {
                        "none".to_owned()
                    } else {
                        secrets.join(", ")
                    }
                );
            }
            for (name, r) in &config.routes {
                println!(
                    "  route {name:<16} {} -> {}",
                    r.source,
                    r.targets.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Mapping(command) => cmd::mapping::run(command),
        Command::Connector(cmd::connector::ConnectorCommand::Check { definitions }) => {
            Ok(cmd::connector::check(definitions))
        }
        Command::Connector(cmd::connector::ConnectorCommand::Try {
            connector,
            entity,
            limit,
        }) => {
            let config = match load(&sources(&cli, None)) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            huitong::telemetry::init_logging(&config.log.level, config.log.format);
            Ok(runtime()?.block_on(cmd::connector::try_list(config, connector, entity, *limit)))
        }
        Command::Demo(args) => {
            let format = match cli.log_format {
                Some(LogFormatArg::Json) => huitong::config::LogFormat::Json,
                _ => huitong::config::LogFormat::Human,
            };
            // Quiet by default: the tour prints its own story.
            huitong::telemetry::init_logging(cli.log_level.as_deref().unwrap_or("warn"), format);
            runtime()?.block_on(cmd::demo::run(args))
        }
        Command::Sync(command) => {
            let config = match load(&sources(&cli, None)) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            huitong::telemetry::init_logging(&config.log.level, config.log.format);
            runtime()?.block_on(cmd::sync::run(config, command))
        }
        Command::Schedule(command) => {
            let config = match load(&sources(&cli, None)) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            huitong::telemetry::init_logging(&config.log.level, config.log.format);
            runtime()?.block_on(cmd::schedule::run(config, command))
        }
        Command::Sandbox(command) => {
            init_cli_logging(&cli);
            runtime()?.block_on(cmd::sandbox::run(command))
        }
        Command::Dlq(command) => {
            let config = match load(&sources(&cli, None)) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            huitong::telemetry::init_logging(&config.log.level, config.log.format);
            runtime()?.block_on(dlq(config, command))
        }
        Command::Migrate => {
            let config = match load(&sources(&cli, None)) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            huitong::telemetry::init_logging(&config.log.level, config.log.format);
            runtime()?.block_on(async {
                let store = huitong::store::open(&config.database).await?;
                println!(
                    "database {} ({}) is up to date",
                    config.database.redacted_url(),
                    store.backend()
                );
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn queue_filter(route: &Option<String>, queue: &Option<String>) -> Option<String> {
    route
        .as_deref()
        .map(huitong::queue::deliver_queue)
        .or_else(|| queue.clone())
}

async fn dlq(config: Config, command: &DlqCommand) -> anyhow::Result<ExitCode> {
    let app = App::start(config).await?;
    match command {
        DlqCommand::List {
            route,
            queue,
            output,
            limit,
        } => {
            let filter = queue_filter(route, queue);
            let letters = app.queue.dead_letters(filter.as_deref(), *limit).await?;
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&letters)?),
                OutputFormat::Table => {
                    if letters.is_empty() {
                        println!("no dead letters");
                    } else {
                        println!(
                            "{:<38} {:<24} {:>8}  {:<25} LAST ERROR",
                            "ID", "QUEUE", "ATTEMPTS", "DEAD AT"
                        );
                        for d in &letters {
                            let at = d
                                .dead_at_ms
                                .and_then(chrono::DateTime::from_timestamp_millis)
                                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                                .unwrap_or_default();
                            println!(
                                "{:<38} {:<24} {:>8}  {:<25} {}",
                                d.id, d.queue, d.attempts, at, d.last_error
                            );
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay {
            id,
            all: _,
            route,
            queue,
            actor,
        } => {
            let filter = queue_filter(route, queue);
            let actor = actor
                .clone()
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "cli".to_owned());
            let replayed = huitong::queue::replay_and_audit(
                &*app.queue,
                &*app.store,
                &actor,
                filter.as_deref(),
                id.as_deref(),
            )
            .await?;
            for d in &replayed {
                println!(
                    "replayed {} to {} (had {} attempts: {})",
                    d.id, d.queue, d.attempts, d.last_error
                );
            }
            println!("{} message(s) replayed by {actor}", replayed.len());
            if replayed.is_empty() && id.is_some() {
                eprintln!(
                    "error: no dead letter with id {}",
                    id.as_deref().unwrap_or_default()
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = config.server.listen;
    let app = App::start(config).await?;
    let scheduler =
        huitong::jobs::start_scheduler(&app.config, app.store.clone(), app.queue.clone());
    let ingress =
        huitong::jobs::start_ingress(&app.config, app.store.clone(), app.queue.clone()).await?;
    let deliveries =
        huitong::jobs::start_deliveries(&app.config, app.store.clone(), &*app.queue).await?;
    let housekeeping = huitong::jobs::start_housekeeping(app.store.clone());
    let mapping_reload = huitong::jobs::start_mapping_reload(&app.config);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener
        .local_addr()
        .context("listener has no local address")?;
    tracing::info!(address = %local, "huitong listening on http://{local}");
    app.serve(listener, shutdown_signal()).await?;
    housekeeping.abort();
    if let Some(r) = mapping_reload {
        r.abort();
    }
    // Runs in flight (scheduled or live) wait on their steps: the deliver consumers stop last.
    if let Some(s) = scheduler {
        s.shutdown().await;
    }
    ingress.shutdown().await;
    for d in deliveries {
        d.shutdown().await;
    }
    tracing::info!("huitong stopped");
    Ok(())
}

/// Logging for commands that need no configuration file.
fn init_cli_logging(cli: &Cli) {
    let format = match cli.log_format {
        Some(LogFormatArg::Json) => huitong::config::LogFormat::Json,
        _ => huitong::config::LogFormat::Human,
    };
    huitong::telemetry::init_logging(cli.log_level.as_deref().unwrap_or("info"), format);
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
        _ = term => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}
