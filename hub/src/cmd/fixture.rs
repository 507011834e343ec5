//! `huitong sandbox fixture`: a generated org fixture for the sandboxes (deterministic: the
//! same arguments give the same bytes on every platform).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use huitong_connectors::fixture::{GenOptions, MAX_GENERATED_USERS, generate};

#[derive(Args)]
pub struct FixtureArgs {
    /// Number of users (u0, u1, …).
    #[arg(long, default_value_t = 20, value_name = "N")]
    users: usize,
    /// Number of departments, the root included [default: max(3, users / 20)].
    #[arg(long, value_name = "M", value_parser = at_least_one)]
    depts: Option<usize>,
    /// Seed of the generator.
    #[arg(long, default_value_t = 7, value_name = "S")]
    seed: u64,
    /// Write the fixture here instead of to stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("there is always a root department: at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

pub fn run(args: &FixtureArgs) -> anyhow::Result<ExitCode> {
    if args.users as u64 > MAX_GENERATED_USERS {
        anyhow::bail!("--users: at most {MAX_GENERATED_USERS} (distinct mobiles)");
    }
    let org = generate(&GenOptions {
        users: args.users,
        departments: args.depts,
        seed: args.seed,
    });
    let json = org.to_json();
    match &args.out {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(json.as_bytes())
                .and_then(|()| out.flush())
                .context("cannot write the fixture to stdout")?;
        }
        Some(path) => {
            std::fs::write(path, &json)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!(
                "wrote {}: {} users, {} departments",
                path.display(),
                org.users.len(),
                org.departments.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
