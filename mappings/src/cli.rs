//! Command logic behind `huitong mapping check|apply|preview`, as library functions so the
//! `huitong` binary (and the admin API) only parse arguments and pick the streams.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::sync::{Mutex, mpsc};

use serde_json::Value;

use crate::expr::Direction;
use crate::mapping::{Mapping, RecordError};
use crate::resolver::XrefResolver;

/// `huitong mapping check <file…>`: loads every file and reports per file.
/// Returns `Ok(true)` if all files are valid.
pub fn check<P: AsRef<Path>>(paths: &[P], out: &mut impl Write) -> io::Result<bool> {
    let mut all_ok = true;
    for p in paths {
        match Mapping::load(p) {
            Ok(m) => {
                let count = |dir| {
                    let rules = m.rules(dir);
                    let fast = rules.iter().filter(|r| r.expr().is_fast()).count();
                    (rules.len(), fast)
                };
                let (tn, tf) = count(Direction::ToCanonical);
                let (fnn, ff) = count(Direction::FromCanonical);
                writeln!(
                    out,
                    "ok    {}: {} {}; to_canonical {tn} fields ({tf} compiled, {} jq), from_canonical {fnn} fields ({ff} compiled, {} jq)",
                    p.as_ref().display(),
                    m.system(),
                    m.entity(),
                    tn - tf,
                    fnn - ff
                )?;
            }
            Err(e) => {
                all_ok = false;
                writeln!(out, "error {e}")?;
            }
        }
    }
    Ok(all_ok)
}

/// Options of [`apply`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Worker threads (0 = number of CPUs).
    pub threads: usize,
    /// Records per batch handed to the workers.
    pub batch: usize,
    /// Write a warning line for each record with unresolved ids.
    pub warn_unresolved: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            threads: 0,
            batch: 8192,
            warn_unresolved: true,
        }
    }
}

/// Counts of an [`apply`] run. The caller exits non-zero if `failed > 0`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    /// Non-blank input lines.
    pub read: u64,
    /// Records written.
    pub written: u64,
    /// Records excluded by `when`.
    pub skipped: u64,
    /// Records that failed (not JSON, expression error, schema violation).
    pub failed: u64,
    /// Written records that have unresolved ids.
    pub with_unresolved: u64,
}

impl ApplyReport {
    fn add(&mut self, o: &ApplyReport) {
        self.read += o.read;
        self.written += o.written;
        self.skipped += o.skipped;
        self.failed += o.failed;
        self.with_unresolved += o.with_unresolved;
    }
}

struct Chunk {
    out: Vec<u8>,
    err: Vec<u8>,
    report: ApplyReport,
}

fn process(
    mapping: &Mapping,
    dir: Direction,
    resolver: &dyn XrefResolver,
    lines: &[(u64, &[u8])],
    warn_unresolved: bool,
) -> Chunk {
    let mut c = Chunk {
        out: Vec::with_capacity(lines.len() * 256),
        err: Vec::new(),
        report: ApplyReport::default(),
    };
    for &(no, line) in lines {
        c.report.read += 1;
        let input: Value = match mapping.parse_input(dir, line) {
            Ok(v) => v,
            Err(e) => {
                c.report.failed += 1;
                let _ = writeln!(c.err, "line {no}: error: not a JSON record: {e}");
                continue;
            }
        };
        match mapping.apply(dir, &input, resolver) {
            Ok(m) if m.skipped => c.report.skipped += 1,
            Ok(m) => {
                if serde_json::to_writer(&mut c.out, &m.record).is_err() {
                    c.report.failed += 1;
                    let _ = writeln!(c.err, "line {no}: error: output cannot be serialised");
                    continue;
                }
                c.out.push(b'\n');
                c.report.written += 1;
                if !m.unresolved.is_empty() {
                    c.report.with_unresolved += 1;
                    if warn_unresolved {
                        let ids: Vec<String> = m
                            .unresolved
                            .iter()
                            .map(|u| format!("{}={}:{}", u.field, u.entity, u.id))
                            .collect();
                        let _ = writeln!(
                            c.err,
                            "line {no}: warning: unresolved ids (left out): {}",
                            ids.join(", ")
                        );
                    }
                }
            }
            Err(e) => {
                c.report.failed += 1;
                let _ = writeln!(c.err, "line {no}: error: {e}");
            }
        }
    }
    c
}

/// `huitong mapping apply`: NDJSON in, NDJSON out (input order kept), one message per failed
/// record on `errors` with its input line number. Work is spread over `options.threads`.
pub fn apply(
    mapping: &Mapping,
    dir: Direction,
    resolver: &dyn XrefResolver,
    mut input: impl BufRead,
    mut output: impl Write,
    mut errors: impl Write,
    options: &ApplyOptions,
) -> io::Result<ApplyReport> {
    let threads = if options.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        options.threads
    };
    let batch = options.batch.max(1);
    let warn = options.warn_unresolved;
    let mut reader = BatchReader { line_no: 0, batch };
    let mut report = ApplyReport::default();

    if threads <= 1 {
        while let Some(b) = reader.next(&mut input)? {
            let c = process(mapping, dir, resolver, &b.lines(), warn);
            write_chunk(&c, &mut output, &mut errors, &mut report)?;
        }
    } else {
        // The calling thread reads and writes (the streams need not be Send); `threads` workers
        // map batches; results are written in input order.
        let (work_tx, work_rx) = mpsc::sync_channel::<(u64, Batch)>(threads * 2);
        let work_rx = Mutex::new(work_rx);
        let (done_tx, done_rx) = mpsc::channel::<(u64, Chunk)>();
        std::thread::scope(|s| -> io::Result<()> {
            for _ in 0..threads {
                let done_tx = done_tx.clone();
                let work_rx = &work_rx;
                s.spawn(move || {
                    loop {
                        let job = match work_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, b)) = job else { return };
                        let c = process(mapping, dir, resolver, &b.lines(), warn);
                        if done_tx.send((seq, c)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(done_tx);
            let mut pending: BTreeMap<u64, Chunk> = BTreeMap::new();
            let (mut sent, mut next_out) = (0u64, 0u64);
            let max_in_flight = (threads * 3) as u64;
            let mut eof = false;
            let result = (|| -> io::Result<()> {
                loop {
                    if !eof && sent - next_out < max_in_flight {
                        match reader.next(&mut input)? {
                            Some(b) => {
                                if work_tx.send((sent, b)).is_err() {
                                    return Err(io::Error::other("mapping worker stopped"));
                                }
                                sent += 1;
                            }
                            None => eof = true,
                        }
                        // Write whatever is ready without waiting.
                        while let Ok((seq, c)) = done_rx.try_recv() {
                            pending.insert(seq, c);
                        }
                    } else if next_out < sent {
                        match done_rx.recv() {
                            Ok((seq, c)) => {
                                pending.insert(seq, c);
                            }
                            Err(_) => return Err(io::Error::other("mapping worker stopped")),
                        }
                    } else {
                        return Ok(());
                    }
                    while let Some(c) = pending.remove(&next_out) {
                        write_chunk(&c, &mut output, &mut errors, &mut report)?;
                        next_out += 1;
                    }
                }
            })();
            drop(work_tx); // lets the workers finish
            result
        })?;
    }
    output.flush()?;
    errors.flush()?;
    Ok(report)
}

fn write_chunk(
    c: &Chunk,
    output: &mut impl Write,
    errors: &mut impl Write,
    report: &mut ApplyReport,
) -> io::Result<()> {
    output.write_all(&c.out)?;
    errors.write_all(&c.err)?;
    report.add(&c.report);
    Ok(())
}

/// A batch of input lines: one buffer and the (line number, start, end) of each record.
struct Batch {
    buf: Vec<u8>,
    ends: Vec<(u64, usize, usize)>,
}

impl Batch {
    fn lines(&self) -> Vec<(u64, &[u8])> {
        self.ends
            .iter()
            .map(|&(no, s, e)| (no, &self.buf[s..e]))
            .collect()
    }
}

struct BatchReader {
    line_no: u64,
    batch: usize,
}

impl BatchReader {
    /// Reads up to `batch` non-blank lines; `None` at end of input.
    fn next(&mut self, input: &mut impl BufRead) -> io::Result<Option<Batch>> {
        let mut buf = Vec::with_capacity(self.batch * 512);
        let mut ends = Vec::with_capacity(self.batch);
        while ends.len() < self.batch {
            let start = buf.len();
            let n = input.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            self.line_no += 1;
            let mut end = buf.len();
            while end > start && matches!(buf[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            if buf[start..end].iter().all(u8::is_ascii_whitespace) {
                buf.truncate(start);
                continue;
            }
            ends.push((self.line_no, start, end));
        }
        Ok((!ends.is_empty()).then_some(Batch { buf, ends }))
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// `huitong mapping preview`: for each sample record (an object, or an array of them), shows
/// the input, each target field with its expression and value, the output and its validation.
/// Returns `Ok(true)` if every sample mapped and validated.
pub fn preview(
    mapping: &Mapping,
    dir: Direction,
    sample: &Value,
    resolver: &dyn XrefResolver,
    out: &mut impl Write,
) -> io::Result<bool> {
    let samples: Vec<&Value> = match sample {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut all_ok = true;
    for (i, s) in samples.iter().enumerate() {
        writeln!(
            out,
            "=== sample {} of {} — {} ({} {}), {dir}",
            i + 1,
            samples.len(),
            mapping.name(),
            mapping.system(),
            mapping.entity()
        )?;
        writeln!(out, "--- input")?;
        writeln!(out, "{}", pretty(s))?;
        writeln!(out, "--- fields")?;
        let traces = mapping.trace(dir, s, resolver);
        let width = traces.iter().map(|t| t.target.len()).max().unwrap_or(0);
        for t in &traces {
            let value = match &t.result {
                Ok(Some(v)) => v.to_string(),
                Ok(None) => "(no value)".to_owned(),
                Err(e) => format!("ERROR {e}"),
            };
            let engine = if t.fast { "compiled" } else { "jq" };
            writeln!(
                out,
                "{:width$}  = {value}    <- {}  [{engine}, line {}]",
                t.target, t.expr, t.line
            )?;
            for u in &t.unresolved {
                writeln!(
                    out,
                    "{:width$}    unresolved {} id {:?}",
                    "", u.entity, u.id
                )?;
            }
        }
        writeln!(out, "--- output")?;
        match mapping.apply(dir, s, resolver) {
            Ok(m) if m.skipped => writeln!(out, "(skipped by the `when` filter)")?,
            Ok(m) => {
                writeln!(out, "{}", pretty(&m.record))?;
                writeln!(out, "--- validation")?;
                let key = m.key.as_deref().unwrap_or("(none)");
                writeln!(out, "ok: valid {} record; key {key}", mapping.entity())?;
            }
            Err(e) => {
                all_ok = false;
                writeln!(out, "(no output)")?;
                writeln!(out, "--- validation")?;
                match &e {
                    RecordError::Schema {
                        violations, which, ..
                    } => {
                        writeln!(
                            out,
                            "FAILED: {which} record breaks the {} schema:",
                            mapping.entity()
                        )?;
                        for v in violations {
                            writeln!(out, "  - {v}")?;
                        }
                    }
                    other => writeln!(out, "FAILED: {other}")?,
                }
            }
        }
    }
    Ok(all_ok)
}
