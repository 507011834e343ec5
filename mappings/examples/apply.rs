//! Runs `huitong mapping apply` logic from stdin to stdout (for benchmarks before the CLI is
//! wired):
//!
//! ```text
//! cargo run --release -p huitong-mappings --example apply -- MAPPING.yaml \
//!     [--direction to-canonical|from-canonical] [--threads N] [--xref LINKS.ndjson] \
//!     [--no-warn-unresolved] [--jaq-only] < in.ndjson > out.ndjson
//! ```
//! `--jaq-only` runs every expression in jaq's interpreter (for comparison).
//! ```text
//! ```
//! Exit status: 0 if every record mapped, 1 if any failed, 2 on usage or load errors.

use std::io::{self, BufReader, BufWriter};
use std::process::ExitCode;

use huitong_mappings::cli::{self, ApplyOptions};
use huitong_mappings::{Direction, LoadOptions, Mapping, MemoryResolver};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run() -> Result<bool, String> {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut dir = Direction::ToCanonical;
    let mut options = ApplyOptions::default();
    let mut resolver = MemoryResolver::new();
    let mut load = LoadOptions::default();
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--direction" => dir = value("--direction")?.parse()?,
            "--threads" => {
                options.threads = value("--threads")?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?;
            }
            "--xref" => {
                let path = value("--xref")?;
                let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
                resolver = MemoryResolver::from_ndjson(BufReader::new(f))
                    .map_err(|e| format!("{path}: {e}"))?;
            }
            "--no-warn-unresolved" => options.warn_unresolved = false,
            "--jaq-only" => load.jaq_only = true,
            other if file.is_none() && !other.starts_with("--") => file = Some(other.to_owned()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let file = file.ok_or("usage: apply MAPPING.yaml [--direction D] [--threads N] [--xref F]")?;
    let mapping = Mapping::load_with(&file, &load).map_err(|e| e.to_string())?;
    let stdin = io::stdin().lock();
    let stdout = BufWriter::with_capacity(1 << 20, io::stdout().lock());
    let stderr = BufWriter::new(io::stderr().lock());
    let report = cli::apply(
        &mapping,
        dir,
        &resolver,
        BufReader::with_capacity(1 << 20, stdin),
        stdout,
        stderr,
        &options,
    )
    .map_err(|e| format!("i/o error: {e}"))?;
    eprintln!(
        "apply: read {} written {} skipped {} failed {} with-unresolved {}",
        report.read, report.written, report.skipped, report.failed, report.with_unresolved
    );
    Ok(report.failed == 0)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
