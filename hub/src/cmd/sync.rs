//! `huitong sync plan|apply <route>`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Subcommand;
use huitong::config::Config;
use huitong::store::{NewAudit, StepStatus, SyncRun, now_ms};
use huitong::sync::{self, Action, RouteContext, SyncError};
use huitong::text::{pad, pad_left, width};

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
    /// The latest sync runs: kind (apply: `sync apply`; scheduled: a schedule's job;
    /// reconcile: a whole route reconciled after a vendor event; live: the records of one
    /// event), status, duration, counts.
    Runs {
        /// Only this route's runs.
        #[arg(long)]
        route: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// One run in full, with the steps that failed and why (and any still in flight).
    Run {
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn took(run: &SyncRun) -> String {
    match run.finished_at_ms {
        Some(end) => format!("{:.1} s", (end - run.started_at_ms) as f64 / 1000.0),
        None => "-".to_owned(),
    }
}

fn counts(run: &SyncRun) -> String {
    if run.counts.is_empty() {
        return "-".to_owned();
    }
    run.counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The runs as a table, columns padded by display width (route names may be Chinese).
fn runs_table(runs: &[SyncRun]) -> String {
    let mut out = String::new();
    let route_w = runs.iter().map(|r| width(&r.route)).fold(10, usize::max);
    let kind_w = runs.iter().map(|r| width(&r.kind)).fold(9, usize::max);
    let mut line = |cells: [&str; 7]| {
        let [run, started, route, kind, status, took, counts] = cells;
        let text = format!(
            "{}  {}  {}  {}  {}  {}  {counts}",
            pad(run, 36),
            pad(started, 23),
            pad(route, route_w),
            pad(kind, kind_w),
            pad(status, 11),
            pad_left(took, 9),
        );
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line([
        "run", "started", "route", "kind", "status", "took", "counts",
    ]);
    for r in runs {
        line([
            &r.id,
            &when(r.started_at_ms),
            &r.route,
            &r.kind,
            r.status.as_str(),
            &took(r),
            &counts(r),
        ]);
    }
    out
}

pub async fn run(config: Config, command: &SyncCommand) -> anyhow::Result<ExitCode> {
    let store = huitong::store::open(&config.database).await?;
    match command {
        SyncCommand::Runs {
            route,
            limit,
            output,
        } => {
            let runs = store.list_runs(route.as_deref(), *limit).await?;
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
                OutputFormat::Table => {
                    if runs.is_empty() {
                        println!("no sync runs yet");
                    }
                    print!("{}", runs_table(&runs));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SyncCommand::Run { id, output } => {
            let Some(run) = store.get_run(id).await? else {
                eprintln!("no sync run {id:?} (see `huitong sync runs`)");
                return Ok(ExitCode::from(2));
            };
            let failed = store.run_steps(id, Some(StepStatus::Failed)).await?;
            let mut open = store.run_steps(id, Some(StepStatus::Started)).await?;
            open.extend(store.run_steps(id, Some(StepStatus::Retrying)).await?);
            match output {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"run": run, "failed_steps": failed, "open_steps": open})
                    )?
                ),
                OutputFormat::Table => {
                    println!("run      {}", run.id);
                    println!("route    {} ({})", run.route, run.kind);
                    println!("status   {}", run.status.as_str());
                    println!("started  {}", when(run.started_at_ms));
                    println!("took     {}", took(&run));
                    println!("counts   {}", counts(&run));
                    if let Some(e) = &run.error {
                        println!("error    {e}");
                    }
                    if !open.is_empty() {
                        println!("\n{} step(s) in flight or waiting for a retry", open.len());
                    }
                    if !failed.is_empty() {
                        println!("\nfailed steps:");
                        for s in &failed {
                            println!(
                                "  #{:<6} {} {:<7} {}",
                                s.seq,
                                pad(&s.target, 10),
                                s.action,
                                s.error.as_deref().unwrap_or("")
                            );
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
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
            let plan = sync::plan(&ctx, &*store)
                .await?
                .run_as(sync::run_kind::APPLY);
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
