//! `huitong schedule list`.

use std::process::ExitCode;

use clap::Subcommand;
use huitong::config::Config;
use huitong_schedules::{FireStore, list_schedules, load_dir, render_json, render_table};

use super::OutputFormat;

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Each schedule's cron, zone, job, policies, next fire times and last outcome.
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
        /// How many upcoming fire times to show.
        #[arg(long, default_value_t = 3)]
        next: usize,
    },
}

pub async fn run(config: Config, command: &ScheduleCommand) -> anyhow::Result<ExitCode> {
    let ScheduleCommand::List { output, next } = command;
    let dir = &config.schedules.dir;
    if !dir.exists() {
        eprintln!(
            "no schedules: folder {} does not exist (schedules.dir)",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let set = match load_dir(dir) {
        Ok(set) => set,
        Err(e) => {
            eprint!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    for w in &set.warnings {
        eprintln!("{w}");
    }
    let store = huitong::store::open(&config.database).await?;
    let fires: &dyn FireStore = &*store;
    let views = list_schedules(&set.schedules, fires, chrono::Utc::now(), *next).await?;
    match output {
        OutputFormat::Json => println!("{}", render_json(&views)?),
        OutputFormat::Table => print!("{}", render_table(&views)),
    }
    Ok(ExitCode::SUCCESS)
}
