//! `huitong mapping check|apply|preview`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use huitong_mappings::{ApplyOptions, Direction, Mapping, MemoryResolver, XrefResolver};

#[derive(Subcommand)]
pub enum MappingCommand {
    /// Load and validate mapping files; every error names the file, line and field.
    Check {
        /// Mapping files (YAML), or shipped mappings by name such as dingtalk-person.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Map NDJSON records (stdin or --input) to NDJSON (stdout or --output).
    Apply {
        /// Mapping file, or a shipped mapping name such as dingtalk-person.
        file: String,
        #[arg(long, value_enum)]
        direction: DirectionArg,
        #[arg(long, value_name = "F.ndjson")]
        input: Option<PathBuf>,
        #[arg(long, value_name = "F")]
        output: Option<PathBuf>,
        /// Known id links, one {"entity","system","external_id","canonical_id"} per line.
        #[arg(long, value_name = "F.ndjson")]
        xref: Option<PathBuf>,
        /// Worker threads (0 = every core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Show a sample record's input, each field's expression and value, the output and its validation.
    Preview {
        file: String,
        #[arg(long, value_name = "F.json")]
        sample: PathBuf,
        #[arg(long, value_enum, default_value = "to-canonical")]
        direction: DirectionArg,
        #[arg(long, value_name = "F.ndjson")]
        xref: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DirectionArg {
    ToCanonical,
    FromCanonical,
}

impl From<DirectionArg> for Direction {
    fn from(d: DirectionArg) -> Self {
        match d {
            DirectionArg::ToCanonical => Direction::ToCanonical,
            DirectionArg::FromCanonical => Direction::FromCanonical,
        }
    }
}

/// A path if it exists, else a shipped mapping named `system-entity`.
/// The largest sample record read by `mapping preview --sample`.
const SAMPLE_MAX_BYTES: u64 = 16 * 1024 * 1024;

fn load(file: &str) -> anyhow::Result<Mapping> {
    let path = Path::new(file);
    if path.exists() {
        return Mapping::load(path).map_err(|e| anyhow::anyhow!("{e}"));
    }
    let shipped = file
        .strip_suffix(".yaml")
        .unwrap_or(file)
        .split_once('-')
        .and_then(|(system, entity)| huitong_mappings::shipped::load(system, entity));
    match shipped {
        Some(m) => m.map_err(|e| anyhow::anyhow!("{e}")),
        None => anyhow::bail!(
            "no mapping file {file:?} (and no shipped mapping of that name; shipped: dingtalk|feishu|wecom-person|department)"
        ),
    }
}

fn resolver(xref: &Option<PathBuf>) -> anyhow::Result<MemoryResolver> {
    match xref {
        None => Ok(MemoryResolver::new()),
        Some(p) => {
            let f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            MemoryResolver::from_ndjson(BufReader::new(f))
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        }
    }
}

pub fn run(command: &MappingCommand) -> anyhow::Result<ExitCode> {
    match command {
        MappingCommand::Check { files } => {
            let mut out = std::io::stdout().lock();
            let mut ok = true;
            let mut paths = Vec::new();
            for f in files {
                if Path::new(f).exists() {
                    paths.push(PathBuf::from(f));
                } else {
                    match load(f) {
                        Ok(_) => writeln!(out, "ok {f} (shipped)")?,
                        Err(e) => {
                            ok = false;
                            writeln!(out, "error {e:#}")?;
                        }
                    }
                }
            }
            ok &= huitong_mappings::cli::check(&paths, &mut out)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        MappingCommand::Apply {
            file,
            direction,
            input,
            output,
            xref,
            threads,
        } => {
            let mapping = load(file)?;
            let resolver = resolver(xref)?;
            let input: Box<dyn BufRead> = match input {
                Some(p) => Box::new(BufReader::with_capacity(
                    1 << 20,
                    File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
                )),
                None => Box::new(BufReader::with_capacity(1 << 20, std::io::stdin())),
            };
            let output: Box<dyn Write> = match output {
                Some(p) => Box::new(BufWriter::with_capacity(
                    1 << 20,
                    File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout())),
            };
            let options = ApplyOptions {
                threads: *threads,
                ..ApplyOptions::default()
            };
            let report = huitong_mappings::cli::apply(
                &mapping,
                (*direction).into(),
                &resolver as &dyn XrefResolver,
                input,
                output,
                std::io::stderr().lock(),
                &options,
            )?;
            eprintln!(
                "{} read, {} written, {} skipped by `when`, {} failed, {} with unresolved ids",
                report.read, report.written, report.skipped, report.failed, report.with_unresolved
            );
            Ok(if report.failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        MappingCommand::Preview {
            file,
            sample,
            direction,
            xref,
        } => {
            let mapping = load(file)?;
            let resolver = resolver(xref)?;
            let text = huitong::files::read_capped(sample, SAMPLE_MAX_BYTES)?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", sample.display()))?;
            let ok = huitong_mappings::cli::preview(
                &mapping,
                (*direction).into(),
                &value,
                &resolver,
                &mut std::io::stdout().lock(),
            )?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
