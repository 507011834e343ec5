//! `huitong sync plan|apply <route>`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Subcommand;
use huitong::config::Config;
use huitong::store::{NewAudit, now_ms};
use huitong::sync::{self, Action, RouteContext, SyncError};

use super::OutputFormat;

#[derive(Subcommand)]
pub enum SyncCommand {
    /// Read source and targets, and print what apply would do. Changes nothing.
    Plan {
        route: String,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Plan, then carry the plan out in dependency order (safe to re-run after an interruption).
    Apply {
        route: String,
        /// Apply even when the plan disables or deletes more people than the route's safety threshold.
        #[arg(long)]
        force: bool,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
        /// Who applies, for the audit log (default: $USER).
        #[arg(long)]
        actor: Option<String>,
    },
}

pub async fn run(config: Config, command: &SyncCommand) -> anyhow::Result<ExitCode> {
    let store = huitong::store::open(&config.database).await?;
    match command {
        SyncCommand::Plan { route, output } => {
            let ctx = RouteContext::new(&config, route)?;
            let plan = sync::plan(&ctx, &*store).await?;
            match output {
                OutputFormat::Json => {
                    // Streamed: a large org's plan is tens of megabytes of JSON.
                    use std::io::Write;
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    serde_json::to_writer_pretty(&mut out, &plan)?;
                    writeln!(out)?;
                    out.flush()?;
                }
                OutputFormat::Table => print!("{}", sync::render_plan(&plan)),
            }
            Ok(ExitCode::SUCCESS)
        }
        SyncCommand::Apply {
            route,
            force,
            output,
            actor,
        } => {
            let ctx = RouteContext::new(&config, route)?;
            let started = std::time::Instant::now();
            let plan = sync::plan(&ctx, &*store).await?;
            if matches!(output, OutputFormat::Table) {
                print!("{}", sync::render_plan(&plan));
            }
            let tty = std::io::stderr().is_terminal();
            let last_line = std::sync::Mutex::new(None::<std::time::Instant>);
            let progress = move |done: usize, total: usize| {
                if tty {
                    let width = 30;
                    let filled = (done * width)
                        .checked_div(total)
                        .unwrap_or(width)
                        .min(width);
                    eprint!(
                        "\r[{}{}] {done}/{total}",
                        "#".repeat(filled),
                        "-".repeat(width - filled)
                    );
                    if done == total {
                        eprintln!();
                    }
                } else if let Ok(mut last) = last_line.lock() {
                    // Without a terminal: a line every two seconds and at the end.
                    if done == total || last.is_none_or(|t| t.elapsed().as_secs() >= 2) {
                        *last = Some(std::time::Instant::now());
                        eprintln!("applied {done}/{total} steps");
                    }
                }
            };
            // The steps go through deliver.<route>; this process consumes them too (a running
            // `huitong serve` on the same queue shares the work).
            let queue = huitong::queue::open(&config, store.clone()).await?;
            let consumer =
                huitong::jobs::start_delivery(&config, route, store.clone(), &*queue).await?;
            let cancel = tokio_util::sync::CancellationToken::new();
            let on_ctrl_c = cancel.clone();
            let ctrl_c = tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("\ninterrupted: stopping; run `sync apply` again to finish the work");
                    on_ctrl_c.cancel();
                }
            });
            let applied =
                sync::apply_until(&ctx, &plan, &*store, &*queue, *force, &progress, &cancel).await;
            ctrl_c.abort();
            consumer.shutdown().await;
            let report = match applied {
                Ok(r) => r,
                Err(e @ SyncError::SafetyThreshold { .. }) => {
                    eprintln!("refused: {e}");
                    return Ok(ExitCode::from(3));
                }
                Err(e @ SyncError::Interrupted(_)) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(130));
                }
                Err(e) => return Err(e.into()),
            };
            let actor = actor
                .clone()
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "cli".to_owned());
            store
                .audit(
                    &NewAudit {
                        actor,
                        action: "sync.apply".into(),
                        target: format!("route:{route}"),
                        before: None,
                        after: Some(serde_json::json!({"run": report.run_id, "counts": report.counts, "forced": force})),
                    },
                    now_ms(),
                )
                .await?;
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                OutputFormat::Table => {
                    for e in &report.errors {
                        eprintln!("error: {e}");
                    }
                    println!(
                        "applied route {route} in {:.1} s (run {}): {} created, {} updated, {} moved, {} linked, {} disabled, {} deleted, {} failed",
                        started.elapsed().as_secs_f64(),
                        report.run_id,
                        plan.count(Action::Create),
                        plan.count(Action::Update),
                        plan.count(Action::Move),
                        plan.count(Action::Link),
                        plan.count(Action::Disable),
                        plan.count(Action::Delete),
                        report.counts.get("failed").copied().unwrap_or(0),
                    );
                }
            }
            Ok(if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
