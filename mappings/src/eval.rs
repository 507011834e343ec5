//! What evaluating an expression on one record needs, shared by the direct evaluator
//! (`expr`) and the jaq runtime (`jaqrt`): the record's context, the error types and the
//! domain built-ins that consult the context (`xref`, `table`). Both evaluators depend on this
//! module; it depends on neither.

use std::borrow::Cow;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::resolver::XrefResolver;

/// Which way a mapping runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Vendor record → canonical record.
    ToCanonical,
    /// Canonical record → vendor record.
    FromCanonical,
}

impl Direction {
    /// `to-canonical` or `from-canonical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ToCanonical => "to-canonical",
            Self::FromCanonical => "from-canonical",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "to-canonical" | "to_canonical" => Ok(Self::ToCanonical),
            "from-canonical" | "from_canonical" => Ok(Self::FromCanonical),
            other => Err(format!(
                "unknown direction {other:?} (use to-canonical or from-canonical)"
            )),
        }
    }
}

/// An id that `xref(...)` could not translate. The output carries no id for it (it is never
/// invented); the hub decides whether to create the link, retry later or reject the record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unresolved {
    /// Target field whose expression asked for the id (`key` for the key expression).
    pub field: String,
    /// Entity of the id (`person`, `department`, …).
    pub entity: String,
    /// The vendor system of the mapping.
    pub system: String,
    /// The id that had no link (external in to-canonical, canonical in from-canonical).
    pub id: String,
    /// Direction of the lookup.
    pub direction: &'static str,
}

/// A value table declared in a mapping file (`tables:`), e.g. vendor status codes.
#[derive(Debug, Clone, Default)]
pub struct Table {
    entries: Vec<(String, Value)>,
    forward: HashMap<String, usize>,
    reverse: HashMap<String, usize>,
}

impl Table {
    /// Builds a table; keys are compared as text, so `1` and `"1"` are the same key.
    pub fn new(entries: Vec<(String, Value)>) -> Self {
        let mut forward = HashMap::new();
        let mut reverse = HashMap::new();
        for (i, (k, v)) in entries.iter().enumerate() {
            forward.entry(k.clone()).or_insert(i);
            reverse.entry(key_text(v).into_owned()).or_insert(i);
        }
        Self {
            entries,
            forward,
            reverse,
        }
    }

    fn known_keys(&self) -> String {
        let keys: Vec<&str> = self.entries.iter().map(|(k, _)| k.as_str()).collect();
        keys.join(", ")
    }
}

/// Named tables of one mapping.
pub type Tables = HashMap<String, Table>;

/// Evaluation context of one record: resolver, tables and what went unresolved.
pub(crate) struct EvalCx<'r> {
    pub resolver: &'r dyn XrefResolver,
    pub system: &'r str,
    pub dir: Direction,
    pub tables: &'r Tables,
    pub unresolved: RefCell<Vec<Unresolved>>,
    /// The record converted to jaq's value type, made at most once per record.
    pub jaq_input: OnceCell<jaq_json::Val>,
    /// What this record's evaluation may still spend (jaq fallback).
    pub budget: Budget,
}

impl<'r> EvalCx<'r> {
    /// A fresh context for one record.
    pub(crate) fn new(
        resolver: &'r dyn XrefResolver,
        system: &'r str,
        dir: Direction,
        tables: &'r Tables,
        limits: &Limits,
    ) -> Self {
        Self {
            resolver,
            system,
            dir,
            tables,
            unresolved: RefCell::new(Vec::new()),
            jaq_input: OnceCell::new(),
            budget: Budget::new(limits),
        }
    }
}

/// Default of [`Limits::max_expr_bytes`].
pub const MAX_EXPR_BYTES: usize = 16 * 1024;
/// Default of [`Limits::max_expr_nesting`].
pub const MAX_EXPR_NESTING: usize = 64;
/// Default of [`Limits::max_expr_depth`].
pub const MAX_EXPR_DEPTH: usize = 100;
/// Default of [`Limits::max_steps`].
pub const MAX_STEPS: u64 = 1_000_000;
/// Default of [`Limits::max_time`].
pub const MAX_TIME: Duration = Duration::from_secs(2);
/// Default of [`Limits::max_stack_bytes`].
pub const MAX_STACK_BYTES: usize = 768 * 1024;
/// Default of [`Limits::max_string_bytes`].
pub const MAX_STRING_BYTES: usize = 16 * 1024 * 1024;
/// Default of [`Limits::max_array_len`].
pub const MAX_ARRAY_LEN: usize = 1_000_000;
/// Default of [`Limits::max_yaml_depth`].
pub const MAX_YAML_DEPTH: usize = 32;
/// Nesting limit of `fromjson` (and of every JSON record read): serde_json's own, fixed limit.
pub const MAX_JSON_DEPTH: usize = 128;
/// Length of a value quoted in an error message before it is cut.
pub const MAX_QUOTE_CHARS: usize = 200;

/// Bounds on mapping files, expressions and the evaluation of one record. The defaults are the
/// `MAX_*` constants of this module; see "Limits" in `mappings/README.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest expression, in bytes (checked before parsing).
    pub max_expr_bytes: usize,
    /// Deepest nesting of `(`, `[`, `{` and string interpolation in an expression (checked
    /// before parsing).
    pub max_expr_nesting: usize,
    /// Bound on an expression's syntax-tree depth: operators, keywords and nesting counted
    /// along any path (checked before parsing; a long chain like `a | b | c | …` counts each `|`).
    pub max_expr_depth: usize,
    /// Evaluation steps per record in the jq interpreter: calls of the expression's `def`s and
    /// of their filter arguments, rounds of jq's looping built-ins (`repeat`, `until`,
    /// `while`, `recurse`, …), values of `range` and values collected by `[…]`.
    pub max_steps: u64,
    /// Wall-clock time per record in the jq interpreter.
    pub max_time: Duration,
    /// Stack the jq interpreter may use for one expression (bounds recursion of `def`s).
    pub max_stack_bytes: usize,
    /// Longest string `*` (repetition) and `+` may build.
    pub max_string_bytes: usize,
    /// Longest array `+` may build.
    pub max_array_len: usize,
    /// Deepest nesting of a mapping file's YAML (block indentation and flow `[`/`{`).
    pub max_yaml_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_expr_bytes: MAX_EXPR_BYTES,
            max_expr_nesting: MAX_EXPR_NESTING,
            max_expr_depth: MAX_EXPR_DEPTH,
            max_steps: MAX_STEPS,
            max_time: MAX_TIME,
            max_stack_bytes: MAX_STACK_BYTES,
            max_string_bytes: MAX_STRING_BYTES,
            max_array_len: MAX_ARRAY_LEN,
            max_yaml_depth: MAX_YAML_DEPTH,
        }
    }
}

/// What one record's evaluation may spend. Once exceeded it stays exceeded, so that a `try`
/// in the expression cannot swallow the error and carry on.
pub(crate) struct Budget {
    steps: Cell<u64>,
    max_steps: u64,
    max_time: Duration,
    started: Cell<Option<Instant>>,
    stack_base: Cell<usize>,
    max_stack: usize,
    pub max_string_bytes: usize,
    pub max_array_len: usize,
    exceeded: RefCell<Option<String>>,
}

/// Address of a local of the caller's frame: compared with a base to measure stack use.
#[inline(never)]
fn stack_here() -> usize {
    let marker = 0u8;
    std::ptr::from_ref(std::hint::black_box(&marker)).addr()
}

impl Budget {
    fn new(l: &Limits) -> Self {
        Self {
            steps: Cell::new(0),
            max_steps: l.max_steps,
            max_time: l.max_time,
            started: Cell::new(None),
            stack_base: Cell::new(0),
            max_stack: l.max_stack_bytes,
            max_string_bytes: l.max_string_bytes,
            max_array_len: l.max_array_len,
            exceeded: RefCell::new(None),
        }
    }

    /// Marks where the interpreter's stack starts (called when a run begins).
    pub(crate) fn enter(&self) {
        self.stack_base.set(stack_here());
        if self.started.get().is_none() {
            self.started.set(Some(Instant::now()));
        }
    }

    /// The error if the budget was exceeded.
    pub(crate) fn exceeded(&self) -> Option<String> {
        self.exceeded.borrow().clone()
    }

    /// Records that a limit was hit (the first reason is kept) and returns the reason.
    pub(crate) fn fail(&self, reason: String) -> String {
        let mut e = self.exceeded.borrow_mut();
        e.get_or_insert(reason).clone()
    }

    /// One step: counts it and checks steps, time and stack.
    pub(crate) fn tick(&self) -> Result<(), String> {
        if let Some(e) = &*self.exceeded.borrow() {
            return Err(e.clone());
        }
        let n = self.steps.get() + 1;
        self.steps.set(n);
        if n > self.max_steps {
            return Err(self.fail(format!(
                "evaluation stopped after {} steps (limit per record; does a loop or recursion not end?)",
                self.max_steps
            )));
        }
        if n.is_multiple_of(256)
            && let Some(t0) = self.started.get()
            && t0.elapsed() > self.max_time
        {
            return Err(self.fail(format!(
                "evaluation stopped after {:?} (time limit per record; does a loop not end?)",
                self.max_time
            )));
        }
        let base = self.stack_base.get();
        if base != 0 && base.abs_diff(stack_here()) > self.max_stack {
            return Err(self.fail(format!(
                "evaluation stopped: recursion deeper than the {} KiB stack limit (does a recursive def not end?)",
                self.max_stack / 1024
            )));
        }
        Ok(())
    }
}

/// Quotes a string for a message, cut to [`MAX_QUOTE_CHARS`] characters.
pub(crate) fn quote(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTE_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// An expression (or other source text) for a message, cut to [`MAX_QUOTE_CHARS`] characters.
pub(crate) fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTE_CHARS) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}… ({} bytes)", &s[..at], s.len()),
    }
}

/// Cuts a message that quotes a long value: the first [`MAX_QUOTE_CHARS`] * 2 characters, then
/// how long it was.
pub(crate) fn clip(msg: String) -> String {
    match msg.char_indices().nth(MAX_QUOTE_CHARS * 2) {
        None => msg,
        Some((cut, _)) => format!("{}… (message cut, {} bytes)", &msg[..cut], msg.len()),
    }
}

/// Why an expression failed on a record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EvalError {
    /// The input path being read when it failed, if known (e.g. `.hired_date`).
    pub path: Option<String>,
    pub reason: String,
}

impl EvalError {
    pub(crate) fn new(reason: String) -> Self {
        Self { path: None, reason }
    }
}

/// Text used for table keys and ids: strings as they are, numbers and booleans as JSON.
pub(crate) fn key_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        other => Cow::Owned(other.to_string()),
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(crate) fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        let cut: String = s.chars().take(37).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// Why an expression does not compile; the text quotes jq's own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError(pub String);

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn tostring(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `xref("entity")`: translates one id or an array of ids; unresolved ids are dropped from
/// arrays (null for a single id) and reported in the context.
pub(crate) fn xref(x: &Value, entity: &str, cx: &EvalCx<'_>) -> Result<Value, String> {
    let one = |id: &Value| -> Result<Value, String> {
        let text = match id {
            Value::Null => return Ok(Value::Null),
            Value::String(s) if s.is_empty() => return Ok(Value::Null),
            Value::String(s) => Cow::Borrowed(s.as_str()),
            Value::Number(n) => Cow::Owned(n.to_string()),
            other => {
                return Err(format!(
                    "xref({entity:?}): expected an id (string or number), got {} ({})",
                    type_name(other),
                    short(other)
                ));
            }
        };
        let found = match cx.dir {
            Direction::ToCanonical => cx.resolver.to_canonical(entity, cx.system, &text),
            Direction::FromCanonical => cx.resolver.to_external(entity, cx.system, &text),
        };
        match found {
            Some(id) => Ok(Value::String(id)),
            None => {
                cx.unresolved.borrow_mut().push(Unresolved {
                    field: String::new(),
                    entity: entity.to_owned(),
                    system: cx.system.to_owned(),
                    id: text.into_owned(),
                    direction: cx.dir.as_str(),
                });
                Ok(Value::Null)
            }
        }
    };
    match x {
        Value::Array(ids) => {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                match one(id)? {
                    Value::Null => {}
                    v => out.push(v),
                }
            }
            Ok(Value::Array(out))
        }
        other => one(other),
    }
}

/// `table("name")` / `rtable("name")`: value-table lookup (arrays are mapped element-wise).
pub(crate) fn table(
    x: &Value,
    name: &str,
    reverse: bool,
    cx: &EvalCx<'_>,
) -> Result<Value, String> {
    let fname = if reverse { "rtable" } else { "table" };
    let t = cx
        .tables
        .get(name)
        .ok_or_else(|| format!("{fname}({name:?}): no such table"))?;
    let one = |v: &Value| -> Result<Value, String> {
        if v.is_null() {
            return Ok(Value::Null);
        }
        if matches!(v, Value::Array(_) | Value::Object(_)) {
            return Err(format!(
                "{fname}({name:?}): cannot look up {}",
                type_name(v)
            ));
        }
        let k = key_text(v);
        if reverse {
            match t.reverse.get(k.as_ref()) {
                Some(&i) => Ok(Value::String(t.entries[i].0.clone())),
                None => {
                    let values: Vec<String> = t.entries.iter().map(|(_, v)| tostring(v)).collect();
                    Err(format!(
                        "rtable({name:?}): value {} is not in the table (values: {})",
                        short(v),
                        values.join(", ")
                    ))
                }
            }
        } else {
            match t.forward.get(k.as_ref()) {
                Some(&i) => Ok(t.entries[i].1.clone()),
                None => Err(format!(
                    "table({name:?}): key {} is not in the table (keys: {})",
                    short(v),
                    t.known_keys()
                )),
            }
        }
    };
    match x {
        Value::Array(items) => items
            .iter()
            .map(one)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => one(other),
    }
}
