//! Loading and validating schedule files.
//!
//! Every problem is reported — with the file, the schedule and the key — instead of stopping
//! at the first one, like a compiler.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use yaml_serde::Value;

use crate::job::Job;
use crate::schedule::{DEFAULT_TIMEZONE, MissedPolicy, OverlapPolicy, Schedule};

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The schedule works but probably not as intended.
    Warning,
    /// The file cannot be used.
    Error,
}

/// One problem found while loading.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file.
    pub file: PathBuf,
    /// The schedule's name, or `schedules[i]` when it has no usable name; `None` for
    /// problems with the file as a whole.
    pub schedule: Option<String>,
    /// The key, e.g. `cron`; `None` for problems with the file or the whole entry.
    pub key: Option<String>,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}", self.file.display())?;
        if let Some(s) = &self.schedule {
            write!(f, ": schedule `{s}`")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": key `{k}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Loading failed; every error (and warning) found is inside.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} error(s) in schedule files:\n{}", self.error_count(), render(&self.diagnostics))]
pub struct LoadError {
    /// All diagnostics, errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadError {
    /// Number of errors (warnings excluded).
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

fn render(ds: &[Diagnostic]) -> String {
    ds.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The schedules of a set of files, plus the warnings found.
#[derive(Debug, Clone, Default)]
pub struct ScheduleSet {
    /// Valid schedules, in file order (enabled and disabled).
    pub schedules: Vec<Schedule>,
    /// Warnings (the set is usable).
    pub warnings: Vec<Diagnostic>,
}

/// Largest schedule file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A regular file's text, at most [`MAX_FILE_BYTES`] (a FIFO or device is refused before it is
/// opened, a file growing past the cap while read is noticed).
fn read_capped(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let regular = |m: std::fs::Metadata| {
        if m.is_file() {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::InvalidInput, "not a regular file"))
        }
    };
    regular(std::fs::metadata(path)?)?;
    let file = std::fs::File::open(path)?;
    regular(file.metadata()?)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than the limit of {MAX_FILE_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| Error::new(ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Loads every `*.yaml` / `*.yml` file in `dir` (not recursive, sorted by name).
pub fn load_dir(dir: &Path) -> Result<ScheduleSet, LoadError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            return Err(LoadError {
                diagnostics: vec![file_error(dir, format!("cannot read directory: {e}"))],
            });
        }
    };
    let mut files: Vec<PathBuf> = Vec::new();
    let mut diagnostics = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                let is_yaml = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e == "yaml" || e == "yml");
                if is_yaml && path.is_file() {
                    files.push(path);
                }
            }
            Err(e) => diagnostics.push(file_error(dir, format!("cannot list directory: {e}"))),
        }
    }
    files.sort();
    let mut sources = Vec::new();
    for path in files {
        match read_capped(&path) {
            Ok(text) => sources.push((path, text)),
            Err(e) => diagnostics.push(file_error(&path, format!("cannot read file: {e}"))),
        }
    }
    let mut result = load_sources(
        sources
            .iter()
            .map(|(p, t)| (p.as_path(), t.as_str()))
            .collect::<Vec<_>>()
            .as_slice(),
    );
    match &mut result {
        Ok(_) if diagnostics.is_empty() => {}
        Ok(set) => {
            diagnostics.append(&mut set.warnings);
            return Err(LoadError { diagnostics });
        }
        Err(e) => {
            diagnostics.append(&mut e.diagnostics);
            return Err(LoadError { diagnostics });
        }
    }
    result
}

/// Loads schedules from in-memory sources `(file name, YAML text)`; names must be unique
/// across all of them.
pub fn load_sources(sources: &[(&Path, &str)]) -> Result<ScheduleSet, LoadError> {
    let mut diagnostics = Vec::new();
    let mut schedules: Vec<Schedule> = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for (file, text) in sources {
        for schedule in parse_file(file, text, &mut diagnostics) {
            if let Some(first) = seen.get(&schedule.name) {
                diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    file: file.to_path_buf(),
                    schedule: Some(schedule.name.clone()),
                    key: Some("name".to_owned()),
                    message: format!(
                        "duplicate schedule name; first defined in {}",
                        first.display()
                    ),
                });
                continue;
            }
            seen.insert(schedule.name.clone(), file.to_path_buf());
            schedules.push(schedule);
        }
    }
    if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        Err(LoadError { diagnostics })
    } else {
        Ok(ScheduleSet {
            schedules,
            warnings: diagnostics,
        })
    }
}

fn file_error(file: &Path, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_path_buf(),
        schedule: None,
        key: None,
        message,
    }
}

const KEYS: &[&str] = &[
    "name",
    "cron",
    "timezone",
    "job",
    "overlap",
    "missed",
    "enabled",
    "description",
];

/// Parses one file; valid schedules are returned, every problem is pushed.
fn parse_file(file: &Path, text: &str, out: &mut Vec<Diagnostic>) -> Vec<Schedule> {
    let value: Value = match yaml_serde::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            out.push(file_error(file, format!("not valid YAML: {e}")));
            return Vec::new();
        }
    };
    let Value::Mapping(top) = value else {
        out.push(file_error(
            file,
            "expected a mapping with a `schedules:` list at the top".to_owned(),
        ));
        return Vec::new();
    };
    for (k, _) in top.iter() {
        match k.as_str() {
            Some("schedules") => {}
            Some(other) => out.push(file_error(
                file,
                format!("unknown top-level key `{other}`; expected only `schedules`"),
            )),
            None => out.push(file_error(
                file,
                "top-level keys must be strings".to_owned(),
            )),
        }
    }
    let list = match top.get("schedules") {
        Some(Value::Sequence(list)) => list,
        Some(_) => {
            out.push(Diagnostic {
                key: Some("schedules".to_owned()),
                ..file_error(file, "expected a list of schedules".to_owned())
            });
            return Vec::new();
        }
        None => {
            out.push(file_error(file, "missing `schedules:` list".to_owned()));
            return Vec::new();
        }
    };
    list.iter()
        .enumerate()
        .filter_map(|(i, entry)| parse_entry(file, i, entry, out))
        .collect()
}

struct EntryCtx<'a> {
    file: &'a Path,
    label: String,
    errors: usize,
}

impl EntryCtx<'_> {
    fn push(&mut self, out: &mut Vec<Diagnostic>, sev: Severity, key: &str, message: String) {
        if sev == Severity::Error {
            self.errors += 1;
        }
        out.push(Diagnostic {
            severity: sev,
            file: self.file.to_path_buf(),
            schedule: Some(self.label.clone()),
            key: if key.is_empty() {
                None
            } else {
                Some(key.to_owned())
            },
            message,
        });
    }
}

fn parse_entry(
    file: &Path,
    index: usize,
    entry: &Value,
    out: &mut Vec<Diagnostic>,
) -> Option<Schedule> {
    let mut ctx = EntryCtx {
        file,
        label: format!("schedules[{index}]"),
        errors: 0,
    };
    let Value::Mapping(map) = entry else {
        ctx.push(
            out,
            Severity::Error,
            "",
            "expected a mapping (name, cron, job, ...)".to_owned(),
        );
        return None;
    };

    // Name first, so that every later message can carry it.
    let name = match map.get("name") {
        None => {
            ctx.push(
                out,
                Severity::Error,
                "name",
                "missing (required)".to_owned(),
            );
            None
        }
        Some(Value::String(s)) if valid_name(s) => {
            ctx.label = s.clone();
            Some(s.clone())
        }
        Some(Value::String(s)) => {
            ctx.push(
                out,
                Severity::Error,
                "name",
                format!(
                    "`{s}` is not a valid name: use lowercase ASCII letters, digits, `-`, `_` and `.`, starting with a letter or digit"
                ),
            );
            None
        }
        Some(_) => {
            ctx.push(out, Severity::Error, "name", "expected a string".to_owned());
            None
        }
    };

    for (k, _) in map.iter() {
        match k.as_str() {
            Some(key) if KEYS.contains(&key) => {}
            Some(key) => ctx.push(
                out,
                Severity::Error,
                key,
                format!("unknown key; expected one of: {}", KEYS.join(", ")),
            ),
            None => ctx.push(out, Severity::Error, "", "keys must be strings".to_owned()),
        }
    }

    let cron = match get_string(&mut ctx, out, map, "cron", true) {
        Some(expr) => check_cron(&mut ctx, out, &expr).then_some(expr),
        None => None,
    };

    let timezone = match get_string(&mut ctx, out, map, "timezone", false) {
        None => Some(DEFAULT_TIMEZONE),
        Some(s) => match s.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                ctx.push(
                    out,
                    Severity::Error,
                    "timezone",
                    format!("unknown time zone `{s}`; use an IANA name such as Asia/Shanghai"),
                );
                None
            }
        },
    };

    let job = match get_string(&mut ctx, out, map, "job", true) {
        Some(s) => match Job::parse(&s) {
            Ok(j) => Some(j),
            Err(e) => {
                ctx.push(out, Severity::Error, "job", e.to_string());
                None
            }
        },
        None => None,
    };

    let overlap = match get_string(&mut ctx, out, map, "overlap", false) {
        None => Some(OverlapPolicy::Skip),
        Some(s) => match s.parse::<OverlapPolicy>() {
            Ok(p) => Some(p),
            Err(()) => {
                ctx.push(
                    out,
                    Severity::Error,
                    "overlap",
                    format!("`{s}` is not an overlap policy; expected `skip` or `queue`"),
                );
                None
            }
        },
    };

    let missed = match get_string(&mut ctx, out, map, "missed", false) {
        None => Some(MissedPolicy::RunOnce),
        Some(s) => match s.parse::<MissedPolicy>() {
            Ok(p) => Some(p),
            Err(()) => {
                ctx.push(
                    out,
                    Severity::Error,
                    "missed",
                    format!("`{s}` is not a missed-fire policy; expected `run-once` or `skip`"),
                );
                None
            }
        },
    };

    let enabled = match map.get("enabled") {
        None => Some(true),
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            ctx.push(
                out,
                Severity::Error,
                "enabled",
                "expected `true` or `false`".to_owned(),
            );
            None
        }
    };

    let description = get_string(&mut ctx, out, map, "description", false);

    if ctx.errors > 0 {
        return None;
    }
    let (
        Some(name),
        Some(cron),
        Some(timezone),
        Some(job),
        Some(overlap),
        Some(missed),
        Some(enabled),
    ) = (name, cron, timezone, job, overlap, missed, enabled)
    else {
        return None;
    };
    match Schedule::new(name, &cron, timezone, job, overlap, missed, enabled) {
        Ok(mut s) => {
            s.description = description;
            s.source = file.to_path_buf();
            Some(s)
        }
        Err(e) => {
            ctx.push(out, Severity::Error, "cron", e.to_string());
            None
        }
    }
}

fn get_string(
    ctx: &mut EntryCtx<'_>,
    out: &mut Vec<Diagnostic>,
    map: &yaml_serde::Mapping,
    key: &str,
    required: bool,
) -> Option<String> {
    match map.get(key) {
        None | Some(Value::Null) if required => {
            ctx.push(out, Severity::Error, key, "missing (required)".to_owned());
            None
        }
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            ctx.push(
                out,
                Severity::Error,
                key,
                "expected a string (quote it)".to_owned(),
            );
            None
        }
    }
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Checks the shape of a cron expression beyond what the cron crate checks. Returns whether
/// the expression may be used (warnings do not prevent it).
fn check_cron(ctx: &mut EntryCtx<'_>, out: &mut Vec<Diagnostic>, expr: &str) -> bool {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if expr.trim_start().starts_with('@') {
        ctx.push(
            out,
            Severity::Error,
            "cron",
            format!(
                "`{expr}`: shorthands are not supported; write the 6 fields (sec min hour day-of-month month day-of-week)"
            ),
        );
        return false;
    }
    match fields.len() {
        6 | 7 => {}
        5 => {
            ctx.push(
                out,
                Severity::Error,
                "cron",
                format!(
                    "`{expr}` has 5 fields; huitong cron expressions start with seconds: `0 {expr}`"
                ),
            );
            return false;
        }
        n => {
            ctx.push(
                out,
                Severity::Error,
                "cron",
                format!(
                    "`{expr}` has {n} fields; expected 6 or 7: sec min hour day-of-month month day-of-week [year]"
                ),
            );
            return false;
        }
    }
    let mut ok = true;
    let weekday = fields[5];
    for item in weekday.split(',') {
        let base = item.split('/').next().unwrap_or(item);
        for part in base.split('-') {
            if !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()) {
                ctx.push(
                    out,
                    Severity::Error,
                    "cron",
                    format!(
                        "`{expr}`: numeric weekday `{part}` in `{weekday}`; the cron engine counts 1 = Sunday (not Monday), so write weekday names instead, e.g. Mon-Fri or Sun"
                    ),
                );
                ok = false;
            }
        }
    }
    if ok && let Err(e) = <cron::Schedule as std::str::FromStr>::from_str(expr) {
        ctx.push(
            out,
            Severity::Error,
            "cron",
            format!("`{expr}` is not a valid cron expression: {e}"),
        );
        return false;
    }
    let dom = fields[3];
    if ok && dom != "*" && dom != "?" && weekday != "*" && weekday != "?" {
        ctx.push(
            out,
            Severity::Warning,
            "cron",
            format!(
                "`{expr}` restricts both day-of-month and day-of-week: it fires only on days matching BOTH (classic cron fires on days matching either)"
            ),
        );
    }
    ok
}
