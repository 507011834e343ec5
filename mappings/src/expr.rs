//! Field expressions: jq syntax, compiled once.
//!
//! Every expression is parsed by jaq's parser. Expressions built only from the common mapping
//! shapes (paths, literals, pipes, `//`, `if`, comparisons, string interpolation and the
//! built-ins listed in [`FAST_BUILTINS`]) are lowered to a small tree that is evaluated directly
//! on `serde_json::Value` without copying the input. Anything else is compiled by jaq and run by
//! its interpreter; both paths share the domain built-ins (`xref`, `table`, `phone`, time).

use std::borrow::Cow;
use std::fmt;

use chrono_tz::Tz;
use jaq_core::load::lex::{self, StrPart};
use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::ops::{Cmp, Math};
use jaq_core::path::{Opt, Part};
use serde_json::{Map, Value};

use crate::builtins::{self, Region};
use crate::eval::{self, EvalCx, EvalError, short, table, type_name, xref};
pub use crate::eval::{CompileError, Direction, Limits, Table, Tables, Unresolved};
use crate::jaqrt::{self, JaqFilter};
use jaq_core::load::lex::{Tok, Token};

type Out<'v> = Result<Option<Cow<'v, Value>>, EvalError>;

fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
}

/// jq normalises integral floats; so do we, so that outputs print like jq's.
fn num(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(false) => 1,
        Value::Bool(true) => 2,
        Value::Number(_) => 3,
        Value::String(_) => 4,
        Value::Array(_) => 5,
        Value::Object(_) => 6,
    }
}

/// jq's total order on values.
pub(crate) fn jq_cmp(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => {
                let (f, g) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                f.partial_cmp(&g).unwrap_or(Ordering::Equal)
            }
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let o = jq_cmp(p, q);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut kx: Vec<&String> = x.keys().collect();
            let mut ky: Vec<&String> = y.keys().collect();
            kx.sort();
            ky.sort();
            let o = kx.cmp(&ky);
            if o != Ordering::Equal {
                return o;
            }
            for k in kx {
                let o = jq_cmp(&x[k.as_str()], &y[k.as_str()]);
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        }
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// One step of a path: `.key` or `.[n]`.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(i64),
}

impl fmt::Display for Seg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seg::Key(k)
                if !k.is_empty()
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !k.starts_with(|c: char| c.is_ascii_digit()) =>
            {
                write!(f, ".{k}")
            }
            Seg::Key(k) => write!(f, ".[{}]", Value::String(k.clone())),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Built-ins evaluated directly in Rust.
#[derive(Debug, Clone)]
enum Builtin {
    Empty,
    Not,
    Length,
    AsciiDowncase,
    AsciiUpcase,
    ToString,
    ToNumber,
    ToJson,
    FromJson,
    Type,
    Trim,
    LtrimStr(String),
    RtrimStr(String),
    Split(String),
    Join(String),
    Xref(String),
    Table(String),
    RTable(String),
    Phone(Region),
    PhoneNational(Region),
    FromEpochMs(Tz),
    FromEpochS(Tz),
    ToEpochMs,
    ToEpochS,
    EpochMsToDate(Tz),
    EpochSToDate(Tz),
    DateToEpochMs(Tz),
    DateToEpochS(Tz),
}

/// Names of the built-ins the fast path evaluates without jaq (others run in jaq).
pub const FAST_BUILTINS: &[&str] = &[
    "empty",
    "not",
    "null",
    "true",
    "false",
    "length",
    "ascii_downcase",
    "ascii_upcase",
    "tostring",
    "tonumber",
    "tojson",
    "fromjson",
    "type",
    "trim",
    "ltrimstr",
    "rtrimstr",
    "split",
    "join",
    "first",
    "last",
    "select",
    "map",
    "values",
    "xref",
    "table",
    "rtable",
    "phone",
    "phone_national",
    "from_epoch_ms",
    "from_epoch_s",
    "to_epoch_ms",
    "to_epoch_s",
    "epoch_ms_to_date",
    "epoch_s_to_date",
    "date_to_epoch_ms",
    "date_to_epoch_s",
];

#[derive(Debug, Clone)]
enum StrPiece {
    Lit(String),
    Expr(Node),
}

/// The lowered expression tree.
#[derive(Debug, Clone)]
enum Node {
    Id,
    Lit(Value),
    /// `base` followed by path steps, each optional (`?`) or not; `text` is for messages.
    Path(Box<Node>, Vec<(Seg, bool)>, String),
    Pipe(Box<Node>, Box<Node>),
    Alt(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cmp(Box<Node>, Cmp, Box<Node>),
    Math(Box<Node>, Math, Box<Node>),
    Neg(Box<Node>),
    If(Vec<(Node, Node)>, Option<Box<Node>>),
    Try(Box<Node>),
    Collect(Box<Node>),
    Obj(Vec<(String, Node)>),
    Str(Vec<StrPiece>),
    Map(Box<Node>),
    Select(Box<Node>),
    Call(Builtin),
}

/// A compiled field expression.
#[derive(Clone)]
pub struct Expr {
    source: String,
    kind: Kind,
    reads_input: bool,
}

#[derive(Clone)]
enum Kind {
    Fast(Node),
    Jaq(std::sync::Arc<JaqFilter>),
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expr")
            .field("source", &self.source)
            .field("fast", &self.is_fast())
            .finish()
    }
}

/// Checks an expression's size and nesting before jaq's lexer and parser (both recursive) see
/// it, so that a huge or deeply nested expression is an error, not a stack overflow.
pub(crate) fn check_source(src: &str, limits: &Limits) -> Result<(), CompileError> {
    if src.len() > limits.max_expr_bytes {
        return Err(CompileError(format!(
            "expression is {} bytes long; the limit is {} bytes",
            src.len(),
            limits.max_expr_bytes
        )));
    }
    // Brackets and string interpolation, as the lexer nests them.
    let mut stack: Vec<u8> = Vec::new();
    let mut chars = src.char_indices();
    let mut in_str = false;
    while let Some((at, c)) = chars.next() {
        let opened = if in_str {
            match c {
                '"' => {
                    in_str = false;
                    false
                }
                '\\' => match chars.next() {
                    Some((_, '(')) => {
                        stack.push(b'"');
                        in_str = false;
                        true
                    }
                    _ => false,
                },
                _ => false,
            }
        } else {
            match c {
                '"' => {
                    in_str = true;
                    false
                }
                '#' => {
                    // A comment runs to the end of the line.
                    for (_, c) in chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                    false
                }
                '(' | '[' | '{' => {
                    stack.push(c as u8);
                    true
                }
                ')' => {
                    // Closes an interpolation: back inside its string.
                    if stack.pop() == Some(b'"') {
                        in_str = true;
                    }
                    false
                }
                ']' | '}' => {
                    stack.pop();
                    false
                }
                _ => false,
            }
        };
        if opened && stack.len() > limits.max_expr_nesting {
            let (line, col) = line_col(src, at);
            return Err(CompileError(format!(
                "expression nests brackets or strings deeper than {} levels (at line {line}, column {col} of the expression)",
                limits.max_expr_nesting
            )));
        }
    }
    // Depth bound of the syntax tree: operators and keywords, counted along every path
    // through the nesting. Bracket nesting is bounded above, so the lexer's recursion is too.
    let Ok(tokens) = lex::Lexer::new(src).lex() else {
        return Ok(()); // reported by `syntax_error`
    };
    let Some(depth) = depth_bound(&tokens, 0, limits.max_expr_nesting) else {
        return Err(CompileError(format!(
            "expression nests `if`s and brackets deeper than {} levels",
            limits.max_expr_nesting
        )));
    };
    if depth > limits.max_expr_depth {
        return Err(CompileError(format!(
            "expression is too deep: about {depth} operators and nested terms in a chain (limit {}); split it or use a table",
            limits.max_expr_depth
        )));
    }
    Ok(())
}

fn line_col(src: &str, at: usize) -> (usize, usize) {
    let before = &src[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Symbols that may open one more level of the syntax tree (binary and prefix operators).
const OPS: &[&str] = &[
    "|", ",", "//", "?//", "=", "|=", "+=", "-=", "*=", "/=", "%=", "//=", "==", "!=", "<", "<=",
    ">", ">=", "+", "-", "*", "/", "%", "?",
];

/// Keywords that may open one more level (`if … end` is handled as a region).
const KEYWORDS: &[&str] = &[
    "and", "or", "as", "reduce", "foreach", "try", "catch", "def", "label",
];

/// An upper bound on the depth of the syntax tree of `tokens`: within a bracket, every operator
/// or keyword may open one more level; brackets, string interpolations and `if … end` open one
/// more, and the branches of an `if` are siblings. `None` if brackets and `if`s together nest
/// deeper than `max_nest`.
fn depth_bound(tokens: &[Token<&str>], nest: usize, max_nest: usize) -> Option<usize> {
    region(tokens, &mut 0, nest, max_nest, false)
}

fn region(
    tokens: &[Token<&str>],
    i: &mut usize,
    nest: usize,
    max_nest: usize,
    in_if: bool,
) -> Option<usize> {
    if nest > max_nest {
        return None;
    }
    let (mut best, mut here, mut deepest) = (0usize, 0usize, 0usize);
    while let Some(Token(s, tok)) = tokens.get(*i) {
        *i += 1;
        match tok {
            Tok::Block(inner) => {
                deepest = deepest.max(1 + depth_bound(inner, nest + 1, max_nest)?);
            }
            Tok::Str(parts) => {
                for p in parts {
                    if let StrPart::Term(t) = p {
                        let d = depth_bound(std::slice::from_ref(t), nest + 1, max_nest)?;
                        deepest = deepest.max(1 + d);
                    }
                }
            }
            Tok::Word if *s == "if" => {
                deepest = deepest.max(1 + region(tokens, i, nest + 1, max_nest, true)?);
            }
            Tok::Word if in_if && matches!(*s, "then" | "elif" | "else") => {
                best = best.max(here + deepest);
                (here, deepest) = (0, 0);
            }
            Tok::Word if in_if && *s == "end" => break,
            Tok::Word if KEYWORDS.contains(s) => here += 1,
            Tok::Sym if OPS.contains(s) => here += 1,
            _ => {}
        }
    }
    Some(best.max(here + deepest))
}

/// Reports a lexer or parser error the way jq users read them.
pub(crate) fn syntax_error(src: &str) -> Option<CompileError> {
    let tokens = match lex::Lexer::new(src).lex() {
        Ok(t) => t,
        Err(errs) => {
            let msgs: Vec<String> = errs
                .iter()
                .map(|(expect, rest)| {
                    let at = jaq_core::load::span(src, rest).start;
                    format!(
                        "expected {} at offset {at} (near {:?})",
                        expect.as_str(),
                        preview(rest)
                    )
                })
                .collect();
            return Some(CompileError(format!(
                "jq syntax error: {}",
                msgs.join("; ")
            )));
        }
    };
    let res = jaq_core::load::Parser::new(&tokens).parse(|p| p.term());
    match res {
        Ok(_) => None,
        Err(errs) => {
            let msgs: Vec<String> = errs
                .iter()
                .map(|(expect, found)| {
                    let found = lex::Token::opt_as_str(*found, src);
                    if found.is_empty() {
                        format!("expected {}, found end of expression", expect.as_str())
                    } else {
                        let at = jaq_core::load::span(src, found).start;
                        format!(
                            "expected {}, found {:?} at offset {at}",
                            expect.as_str(),
                            preview(found)
                        )
                    }
                })
                .collect();
            Some(CompileError(format!(
                "jq syntax error: {}",
                msgs.join("; ")
            )))
        }
    }
}

fn preview(s: &str) -> String {
    s.chars().take(20).collect()
}

impl Expr {
    /// Compiles `src`, preferring the direct evaluator and falling back to jaq.
    /// `tables` are the mapping's tables: `table("x")` with an unknown `x` is a compile error.
    pub fn compile(src: &str, tables: &Tables) -> Result<Self, CompileError> {
        Self::compile_with(src, tables, true)
    }

    /// Compiles `src` with jaq only (used to cross-check the direct evaluator).
    pub fn compile_jaq(src: &str, tables: &Tables) -> Result<Self, CompileError> {
        Self::compile_with(src, tables, false)
    }

    fn compile_with(src: &str, tables: &Tables, fast: bool) -> Result<Self, CompileError> {
        Self::compile_limited(src, tables, fast, &Limits::default())
    }

    /// Compiles `src` within `limits` (size and nesting are checked before parsing); `fast`
    /// allows the direct evaluator.
    pub(crate) fn compile_limited(
        src: &str,
        tables: &Tables,
        fast: bool,
        limits: &Limits,
    ) -> Result<Self, CompileError> {
        check_source(src, limits)?;
        if let Some(e) = syntax_error(src) {
            return Err(e);
        }
        let term: Term<&str> = jaq_core::load::parse(src, |p| p.term())
            .ok_or_else(|| CompileError("jq syntax error".to_owned()))?;
        check_names(&term, tables)?;
        let reads_input = reads(&term);
        if fast && let Some(node) = lower(&term)? {
            return Ok(Self {
                source: src.to_owned(),
                kind: Kind::Fast(node),
                reads_input,
            });
        }
        let filter = jaqrt::compile(term)?;
        Ok(Self {
            source: src.to_owned(),
            kind: Kind::Jaq(std::sync::Arc::new(filter)),
            reads_input,
        })
    }

    /// True if the value of this expression can depend on its input record: it reads a path
    /// (`.name`, `.a.b`, `.[0]`), uses `.` or `..`, or calls a function on the input. False for
    /// constants such as `"Dept. A"`, `42`, `null`, `["a", "b"]` or `"x" | ascii_downcase`.
    /// Decided from the parsed expression; where that is not certain (local `def`s,
    /// assignments, unknown functions) it says true.
    pub fn reads_input(&self) -> bool {
        self.reads_input
    }

    /// The expression text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True if the expression runs without the jq interpreter.
    pub fn is_fast(&self) -> bool {
        matches!(self.kind, Kind::Fast(_))
    }

    /// Adds the top-level input keys this expression can read to `keys`. Returns false if it may
    /// need the whole record (jq fallback, `.` as a value, iterating the record, …).
    pub(crate) fn root_keys(&self, keys: &mut Vec<String>) -> bool {
        match &self.kind {
            Kind::Fast(n) => match n.root_keys(true, keys) {
                Ok(may_be_root) => !may_be_root,
                Err(()) => false,
            },
            Kind::Jaq(_) => false,
        }
    }

    /// The input path this expression reads first, if it starts with one (for messages).
    pub(crate) fn leading_path(&self) -> Option<String> {
        match &self.kind {
            Kind::Fast(n) => leading_path(n),
            Kind::Jaq(_) => None,
        }
    }

    /// Evaluates on `input`: `Ok(None)` if it produced no value.
    pub(crate) fn eval<'v>(&self, input: &'v Value, cx: &EvalCx<'_>) -> Out<'v> {
        match &self.kind {
            Kind::Fast(n) => n.eval(input, cx),
            Kind::Jaq(f) => jaqrt::run(f, input, cx).map(|o| o.map(Cow::Owned)),
        }
    }
}

fn leading_path(n: &Node) -> Option<String> {
    match n {
        Node::Path(_, _, text) => Some(text.clone()),
        Node::Pipe(l, _) | Node::Alt(l, _) | Node::Try(l) => leading_path(l),
        _ => None,
    }
}

/// Checks the domain built-ins' literal arguments at load time (unknown table, zone, region).
pub(crate) fn check_names(t: &Term<&str>, tables: &Tables) -> Result<(), CompileError> {
    let mut err = None;
    walk(t, &mut |t| {
        if err.is_some() {
            return;
        }
        if let Term::Call(name, args) = t
            && args.len() == 1
            && let Some(arg) = lit_str(&args[0])
        {
            let r = match *name {
                "table" | "rtable" if !tables.contains_key(&arg) => {
                    let mut known: Vec<&String> = tables.keys().collect();
                    known.sort();
                    let known: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
                    Err(format!(
                        "{name}({arg:?}): no table {arg:?} in this mapping (tables: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ))
                }
                "phone" | "phone_national" => builtins::region(&arg).map(|_| ()),
                "from_epoch_ms" | "from_epoch_s" | "epoch_ms_to_date" | "epoch_s_to_date"
                | "date_to_epoch_ms" | "date_to_epoch_s" => builtins::time_zone(&arg).map(|_| ()),
                _ => Ok(()),
            };
            if let Err(e) = r {
                err = Some(CompileError(e));
            }
        }
    });
    err.map_or(Ok(()), Err)
}

fn walk<'a>(t: &'a Term<&'a str>, f: &mut impl FnMut(&'a Term<&'a str>)) {
    f(t);
    match t {
        Term::Str(_, parts) => {
            for p in parts {
                if let StrPart::Term(t) = p {
                    walk(t, f);
                }
            }
        }
        Term::Arr(Some(t)) | Term::Neg(t) | Term::Label(_, t) => walk(t, f),
        Term::Obj(kvs) => {
            for (k, v) in kvs {
                walk(k, f);
                if let Some(v) = v {
                    walk(v, f);
                }
            }
        }
        Term::BinOp(l, _, r) => {
            walk(l, f);
            walk(r, f);
        }
        Term::Fold(_, x, _, ys) => {
            walk(x, f);
            for y in ys {
                walk(y, f);
            }
        }
        Term::TryCatch(t, c) => {
            walk(t, f);
            if let Some(c) = c {
                walk(c, f);
            }
        }
        Term::IfThenElse(bs, e) => {
            for (c, b) in bs {
                walk(c, f);
                walk(b, f);
            }
            if let Some(e) = e {
                walk(e, f);
            }
        }
        Term::Def(defs, t) => {
            for d in defs {
                walk(&d.body, f);
            }
            walk(t, f);
        }
        Term::Call(_, args) => {
            for a in args {
                walk(a, f);
            }
        }
        Term::Path(t, path) => {
            walk(t, f);
            for (part, _) in &path.0 {
                match part {
                    Part::Index(i) => walk(i, f),
                    Part::Range(a, b) => {
                        if let Some(a) = a {
                            walk(a, f);
                        }
                        if let Some(b) = b {
                            walk(b, f);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Built-ins whose value does not depend on their input (only on their arguments, if any).
const INPUT_FREE: &[(&str, usize)] = &[
    ("empty", 0),
    ("null", 0),
    ("true", 0),
    ("false", 0),
    ("nan", 0),
    ("infinite", 0),
    ("now", 0),
    ("env", 0),
    ("range", 1),
    ("range", 2),
    ("range", 3),
    ("error", 1),
    ("limit", 2),
    ("first", 1),
    ("last", 1),
    ("isempty", 1),
];

/// Whether evaluating `t` can depend on its input (see [`Expr::reads_input`]). Recursion is
/// bounded by the depth checked in `check_source`.
fn reads(t: &Term<&str>) -> bool {
    let any = |ts: &[Term<&str>]| ts.iter().any(reads);
    match t {
        Term::Id | Term::Recurse => true,
        Term::Num(_) | Term::Break(_) | Term::Var(_) | Term::Arr(None) => false,
        // `@csv` and friends format their input.
        Term::Str(Some(_), _) => true,
        Term::Str(None, parts) => parts.iter().any(|p| match p {
            StrPart::Term(t) => reads(t),
            StrPart::Str(_) | StrPart::Char(_) => false,
        }),
        Term::Arr(Some(t)) | Term::Neg(t) | Term::Label(_, t) => reads(t),
        Term::Obj(kvs) => kvs.iter().any(|(k, v)| {
            let key = match k {
                // `{a: …}`: the name is text, not a call.
                Term::Call(_, args) if args.is_empty() => false,
                k => reads(k),
            };
            key || match v {
                Some(v) => reads(v),
                // `{$x}` reads a variable; `{a}`, `{"a"}` read `.a`.
                None => !matches!(k, Term::Var(_)),
            }
        }),
        Term::BinOp(l, op, r) => match op {
            // The right side runs on the left side's output.
            BinaryOp::Pipe(None) => reads(l),
            BinaryOp::Pipe(Some(_))
            | BinaryOp::Comma
            | BinaryOp::Alt
            | BinaryOp::Or
            | BinaryOp::And
            | BinaryOp::Math(_)
            | BinaryOp::Cmp(_) => reads(l) || reads(r),
            // Assignments update paths of the input.
            BinaryOp::Assign | BinaryOp::Update | BinaryOp::UpdateMath(_) | BinaryOp::UpdateAlt => {
                true
            }
        },
        // `reduce SRC as $x (INIT; UPDATE)`: UPDATE (and foreach's EXTRACT) run on the
        // accumulator.
        Term::Fold(_, src, _, args) => reads(src) || args.first().is_some_and(reads),
        // `catch` runs on the error, which comes from the body.
        Term::TryCatch(body, _) => reads(body),
        Term::IfThenElse(branches, otherwise) => {
            branches.iter().any(|(c, b)| reads(c) || reads(b))
                // A missing `else` gives `.`.
                || otherwise.as_deref().is_none_or(reads)
        }
        // Local functions: not analysed.
        Term::Def(..) => true,
        Term::Call(name, args) => !INPUT_FREE.contains(&(*name, args.len())) || any(args),
        Term::Path(base, path) => {
            reads(base)
                || path.0.iter().any(|(part, _)| match part {
                    Part::Index(i) => reads(i),
                    Part::Range(a, b) => {
                        a.as_ref().is_some_and(reads) || b.as_ref().is_some_and(reads)
                    }
                })
        }
    }
}

/// A string literal without interpolation.
fn lit_str(t: &Term<&str>) -> Option<String> {
    let Term::Str(None, parts) = t else {
        return None;
    };
    let mut s = String::new();
    for p in parts {
        match p {
            StrPart::Str(x) => s.push_str(x),
            StrPart::Char(c) => s.push(*c),
            StrPart::Term(_) => return None,
        }
    }
    Some(s)
}

fn lit_int(t: &Term<&str>) -> Option<i64> {
    match t {
        Term::Num(n) => n.parse::<i64>().ok(),
        Term::Neg(inner) => lit_int(inner).map(|i| -i),
        _ => None,
    }
}

/// Lowers a jaq term to the direct evaluator; `Ok(None)` = needs jaq.
fn lower(t: &Term<&str>) -> Result<Option<Node>, CompileError> {
    Ok(lower_opt(t))
}

fn b(n: Node) -> Box<Node> {
    Box::new(n)
}

fn lower_opt(t: &Term<&str>) -> Option<Node> {
    Some(match t {
        Term::Id => Node::Id,
        Term::Num(n) => Node::Lit(serde_json::from_str::<Value>(n).ok()?),
        Term::Str(None, parts) => {
            if let Some(s) = lit_str(t) {
                Node::Lit(Value::String(s))
            } else {
                let mut pieces = Vec::new();
                for p in parts {
                    match p {
                        StrPart::Str(x) => pieces.push(StrPiece::Lit((*x).to_owned())),
                        StrPart::Char(c) => pieces.push(StrPiece::Lit(c.to_string())),
                        StrPart::Term(t) => pieces.push(StrPiece::Expr(lower_opt(t)?)),
                    }
                }
                Node::Str(pieces)
            }
        }
        Term::Arr(None) => Node::Lit(Value::Array(Vec::new())),
        Term::Arr(Some(t)) => Node::Collect(b(lower_opt(t)?)),
        Term::Obj(kvs) => {
            let mut out = Vec::new();
            for (k, v) in kvs {
                let key = lit_str(k).or_else(|| match k {
                    Term::Call(name, args) if args.is_empty() => Some((*name).to_owned()),
                    _ => None,
                })?;
                let val = match v {
                    Some(v) => lower_opt(v)?,
                    None => Node::Path(
                        b(Node::Id),
                        vec![(Seg::Key(key.clone()), false)],
                        format!("{}", Seg::Key(key.clone())),
                    ),
                };
                out.push((key, val));
            }
            Node::Obj(out)
        }
        Term::Neg(t) => Node::Neg(b(lower_opt(t)?)),
        Term::BinOp(l, op, r) => {
            let (l, r) = (lower_opt(l)?, lower_opt(r)?);
            match op {
                BinaryOp::Pipe(None) => Node::Pipe(b(l), b(r)),
                BinaryOp::Alt => Node::Alt(b(l), b(r)),
                BinaryOp::And => Node::And(b(l), b(r)),
                BinaryOp::Or => Node::Or(b(l), b(r)),
                BinaryOp::Cmp(c) => Node::Cmp(b(l), *c, b(r)),
                BinaryOp::Math(m) => Node::Math(b(l), *m, b(r)),
                _ => return None,
            }
        }
        Term::TryCatch(t, None) => Node::Try(b(lower_opt(t)?)),
        Term::IfThenElse(bs, e) => {
            let mut branches = Vec::new();
            for (c, x) in bs {
                branches.push((lower_opt(c)?, lower_opt(x)?));
            }
            let e = match e {
                Some(e) => Some(b(lower_opt(e)?)),
                None => None,
            };
            Node::If(branches, e)
        }
        Term::Call(name, args) => lower_call(name, args)?,
        Term::Path(base, path) => {
            let base = lower_opt(base)?;
            let mut segs = Vec::new();
            let mut text = match &base {
                Node::Id => String::new(),
                _ => return lower_path_on_expr(base, path),
            };
            for (part, opt) in &path.0 {
                let seg = match part {
                    Part::Index(i) => {
                        if let Some(k) = lit_str(i) {
                            Seg::Key(k)
                        } else {
                            Seg::Index(lit_int(i)?)
                        }
                    }
                    Part::Range(..) => return None,
                };
                text.push_str(&seg.to_string());
                segs.push((seg, matches!(opt, Opt::Optional)));
            }
            if text.is_empty() {
                text.push('.');
            } else if text.starts_with('[') {
                text.insert(0, '.');
            }
            Node::Path(b(Node::Id), segs, text)
        }
        _ => return None,
    })
}

/// `f[0]`, `(expr).a`: a path applied to the output of another expression.
fn lower_path_on_expr(base: Node, path: &jaq_core::path::Path<Term<&str>>) -> Option<Node> {
    let mut segs = Vec::new();
    let mut text = String::new();
    for (part, opt) in &path.0 {
        let seg = match part {
            Part::Index(i) => match lit_str(i) {
                Some(k) => Seg::Key(k),
                None => Seg::Index(lit_int(i)?),
            },
            Part::Range(..) => return None,
        };
        text.push_str(&seg.to_string());
        segs.push((seg, matches!(opt, Opt::Optional)));
    }
    Some(Node::Pipe(
        b(base),
        b(Node::Path(
            b(Node::Id),
            segs,
            format!(".{}", text.trim_start_matches('.')),
        )),
    ))
}

fn lower_call(name: &str, args: &[Term<&str>]) -> Option<Node> {
    let lit = |i: usize| args.get(i).and_then(lit_str);
    let tz = |i: usize| lit(i).and_then(|s| builtins::time_zone(&s).ok());
    let region = |i: usize| lit(i).and_then(|s| builtins::region(&s).ok());
    let call = |b: Builtin| Some(Node::Call(b));
    match (name, args.len()) {
        ("empty", 0) => call(Builtin::Empty),
        ("null", 0) => Some(Node::Lit(Value::Null)),
        ("true", 0) => Some(Node::Lit(Value::Bool(true))),
        ("false", 0) => Some(Node::Lit(Value::Bool(false))),
        ("not", 0) => call(Builtin::Not),
        ("length", 0) => call(Builtin::Length),
        ("ascii_downcase", 0) => call(Builtin::AsciiDowncase),
        ("ascii_upcase", 0) => call(Builtin::AsciiUpcase),
        ("tostring", 0) => call(Builtin::ToString),
        ("tonumber", 0) => call(Builtin::ToNumber),
        ("tojson", 0) => call(Builtin::ToJson),
        ("fromjson", 0) => call(Builtin::FromJson),
        ("type", 0) => call(Builtin::Type),
        ("trim", 0) => call(Builtin::Trim),
        ("ltrimstr", 1) => call(Builtin::LtrimStr(lit(0)?)),
        ("rtrimstr", 1) => call(Builtin::RtrimStr(lit(0)?)),
        ("split", 1) => call(Builtin::Split(lit(0)?)),
        ("join", 1) => call(Builtin::Join(lit(0)?)),
        ("first", 0) => Some(Node::Path(
            b(Node::Id),
            vec![(Seg::Index(0), false)],
            ".[0]".into(),
        )),
        ("last", 0) => Some(Node::Path(
            b(Node::Id),
            vec![(Seg::Index(-1), false)],
            ".[-1]".into(),
        )),
        ("select", 1) => Some(Node::Select(b(lower_opt(&args[0])?))),
        ("map", 1) => Some(Node::Map(b(lower_opt(&args[0])?))),
        ("values", 0) => Some(Node::Select(b(Node::Cmp(
            b(Node::Id),
            Cmp::Ne,
            b(Node::Lit(Value::Null)),
        )))),
        ("xref", 1) => call(Builtin::Xref(lit(0)?)),
        ("table", 1) => call(Builtin::Table(lit(0)?)),
        ("rtable", 1) => call(Builtin::RTable(lit(0)?)),
        ("phone", 1) => call(Builtin::Phone(region(0)?)),
        ("phone_national", 1) => call(Builtin::PhoneNational(region(0)?)),
        ("from_epoch_ms", 1) => call(Builtin::FromEpochMs(tz(0)?)),
        ("from_epoch_s", 1) => call(Builtin::FromEpochS(tz(0)?)),
        ("to_epoch_ms", 0) => call(Builtin::ToEpochMs),
        ("to_epoch_s", 0) => call(Builtin::ToEpochS),
        ("epoch_ms_to_date", 1) => call(Builtin::EpochMsToDate(tz(0)?)),
        ("epoch_s_to_date", 1) => call(Builtin::EpochSToDate(tz(0)?)),
        ("date_to_epoch_ms", 1) => call(Builtin::DateToEpochMs(tz(0)?)),
        ("date_to_epoch_s", 1) => call(Builtin::DateToEpochS(tz(0)?)),
        _ => None,
    }
}

fn owned<'v>(v: Value) -> Out<'v> {
    Ok(Some(Cow::Owned(v)))
}

fn index<'v>(v: Cow<'v, Value>, seg: &Seg) -> Result<Cow<'v, Value>, String> {
    fn get<'a>(v: &'a Value, seg: &Seg) -> Result<Option<&'a Value>, String> {
        match (v, seg) {
            (Value::Null, _) => Ok(None),
            (Value::Object(m), Seg::Key(k)) => Ok(m.get(k)),
            (Value::Array(a), Seg::Index(i)) => {
                let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                Ok(usize::try_from(idx).ok().and_then(|i| a.get(i)))
            }
            (other, Seg::Key(k)) => Err(format!("cannot index {} with {:?}", type_name(other), k)),
            (other, Seg::Index(i)) => Err(format!("cannot index {} with {i}", type_name(other))),
        }
    }
    static NULL: Value = Value::Null;
    match v {
        Cow::Borrowed(r) => Ok(Cow::Borrowed(get(r, seg)?.unwrap_or(&NULL))),
        Cow::Owned(o) => Ok(Cow::Owned(get(&o, seg)?.cloned().unwrap_or(Value::Null))),
    }
}

/// Runs `f` on an intermediate value, keeping borrows of the original input when possible.
fn then<'v>(x: Cow<'v, Value>, f: &Node, cx: &EvalCx<'_>) -> Out<'v> {
    match x {
        Cow::Borrowed(r) => f.eval(r, cx),
        Cow::Owned(o) => Ok(f.eval(&o, cx)?.map(|c| Cow::Owned(c.into_owned()))),
    }
}

fn deep_merge(mut a: Map<String, Value>, b: &Map<String, Value>) -> Map<String, Value> {
    for (k, v) in b {
        let merged = match (a.remove(k), v) {
            (Some(Value::Object(x)), Value::Object(y)) => Value::Object(deep_merge(x, y)),
            (_, v) => v.clone(),
        };
        a.insert(k.clone(), merged);
    }
    a
}

fn math(l: &Value, op: Math, r: &Value, cx: &EvalCx<'_>) -> Result<Value, String> {
    use Math::*;
    let (max_str, max_arr) = (cx.budget.max_string_bytes, cx.budget.max_array_len);
    let too_big = |what: String| {
        Err(format!(
            "`{}` would build a {what} (limit {max_str} bytes for strings, {max_arr} elements for arrays)",
            op.as_str()
        ))
    };
    let fail = || {
        Err(format!(
            "cannot calculate {} {} {}",
            short(l),
            op.as_str(),
            short(r)
        ))
    };
    match (l, op, r) {
        (Value::Null, Add, x) | (x, Add, Value::Null) => Ok(x.clone()),
        (Value::Number(x), _, Value::Number(y)) => {
            if let (Some(i), Some(j)) = (x.as_i64(), y.as_i64()) {
                let r = match op {
                    Add => i.checked_add(j),
                    Sub => i.checked_sub(j),
                    Mul => i.checked_mul(j),
                    Rem if j != 0 => i.checked_rem(j),
                    Rem => return Err(format!("cannot calculate {i} % 0")),
                    Div => None,
                };
                if let Some(r) = r {
                    return Ok(Value::from(r));
                }
            }
            let (f, g) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            Ok(num(match op {
                Add => f + g,
                Sub => f - g,
                Mul => f * g,
                Div if g == 0.0 => return Err(format!("cannot divide {} by zero", short(l))),
                Div => f / g,
                Rem => f % g,
            }))
        }
        (Value::String(x), Add, Value::String(y)) if x.len() + y.len() > max_str => {
            too_big(format!("string of {} bytes", x.len() + y.len()))
        }
        (Value::Array(x), Add, Value::Array(y)) if x.len() + y.len() > max_arr => {
            too_big(format!("array of {} elements", x.len() + y.len()))
        }
        (Value::String(x), Add, Value::String(y)) => Ok(Value::String(format!("{x}{y}"))),
        (Value::Array(x), Add, Value::Array(y)) => {
            let mut v = x.clone();
            v.extend(y.iter().cloned());
            Ok(Value::Array(v))
        }
        (Value::Array(x), Sub, Value::Array(y)) => Ok(Value::Array(
            x.iter().filter(|e| !y.contains(e)).cloned().collect(),
        )),
        (Value::String(s), Mul, Value::Number(n)) | (Value::Number(n), Mul, Value::String(s)) => {
            let times = n.as_f64().unwrap_or(0.0);
            if times <= 0.0 {
                Ok(Value::Null)
            } else if times.ceil() * s.len() as f64 > max_str as f64 {
                too_big(format!("string of {} bytes", times.ceil() * s.len() as f64))
            } else {
                Ok(Value::String(s.repeat(times.ceil() as usize)))
            }
        }
        (Value::String(x), Div, Value::String(y)) => Ok(Value::Array(if x.is_empty() {
            Vec::new()
        } else {
            x.split(y.as_str())
                .map(|p| Value::String(p.to_owned()))
                .collect()
        })),
        (Value::Object(x), Mul, Value::Object(y)) => Ok(Value::Object(deep_merge(x.clone(), y))),
        (Value::Object(x), Add, Value::Object(y)) => {
            let mut m = x.clone();
            for (k, v) in y {
                m.insert(k.clone(), v.clone());
            }
            Ok(Value::Object(m))
        }
        _ => fail(),
    }
}

impl Node {
    /// Collects root keys read by this node evaluated on `on_root` input. `Ok(true)` means the
    /// node's output may be the root record itself; `Err` means the whole record is needed.
    fn root_keys(&self, on_root: bool, keys: &mut Vec<String>) -> Result<bool, ()> {
        let both = |l: &Node, r: &Node, keys: &mut Vec<String>| -> Result<(bool, bool), ()> {
            Ok((l.root_keys(on_root, keys)?, r.root_keys(on_root, keys)?))
        };
        match self {
            Node::Id => Ok(on_root),
            Node::Lit(_) => Ok(false),
            Node::Path(base, segs, _) => {
                if !base.root_keys(on_root, keys)? {
                    return Ok(false);
                }
                match segs.first() {
                    None => Ok(true),
                    Some((Seg::Key(k), _)) => {
                        if !keys.contains(k) {
                            keys.push(k.clone());
                        }
                        Ok(false)
                    }
                    Some((Seg::Index(_), _)) => Err(()),
                }
            }
            Node::Pipe(l, r) => {
                let l_root = l.root_keys(on_root, keys)?;
                r.root_keys(l_root, keys)
            }
            Node::Alt(l, r) => {
                let (a, b) = both(l, r, keys)?;
                Ok(a || b)
            }
            Node::And(l, r) | Node::Or(l, r) => {
                both(l, r, keys)?;
                Ok(false)
            }
            Node::Cmp(l, _, r) | Node::Math(l, _, r) => match both(l, r, keys)? {
                (false, false) => Ok(false),
                _ => Err(()),
            },
            Node::Neg(t) | Node::Collect(t) => match t.root_keys(on_root, keys)? {
                false => Ok(false),
                true => Err(()),
            },
            Node::If(branches, otherwise) => {
                let mut may = otherwise.is_none() && on_root;
                for (c, t) in branches {
                    c.root_keys(on_root, keys)?;
                    may |= t.root_keys(on_root, keys)?;
                }
                if let Some(e) = otherwise {
                    may |= e.root_keys(on_root, keys)?;
                }
                Ok(may)
            }
            Node::Try(t) => t.root_keys(on_root, keys),
            Node::Obj(kvs) => {
                for (_, v) in kvs {
                    if v.root_keys(on_root, keys)? {
                        return Err(());
                    }
                }
                Ok(false)
            }
            Node::Str(pieces) => {
                for p in pieces {
                    if let StrPiece::Expr(e) = p
                        && e.root_keys(on_root, keys)?
                    {
                        return Err(());
                    }
                }
                Ok(false)
            }
            Node::Map(f) => {
                if on_root {
                    return Err(());
                }
                f.root_keys(false, keys)?;
                Ok(false)
            }
            Node::Select(f) => {
                f.root_keys(on_root, keys)?;
                Ok(on_root)
            }
            Node::Call(Builtin::Empty | Builtin::Not) => Ok(false),
            Node::Call(_) if on_root => Err(()),
            Node::Call(_) => Ok(false),
        }
    }

    fn eval<'v>(&self, x: &'v Value, cx: &EvalCx<'_>) -> Out<'v> {
        match self {
            Node::Id => Ok(Some(Cow::Borrowed(x))),
            Node::Lit(v) => owned(v.clone()),
            Node::Path(base, segs, text) => {
                let Some(mut cur) = base.eval(x, cx)? else {
                    return Ok(None);
                };
                for (seg, opt) in segs {
                    cur = match index(cur, seg) {
                        Ok(v) => v,
                        Err(_) if *opt => return Ok(None),
                        Err(reason) => {
                            return Err(EvalError {
                                path: Some(text.clone()),
                                reason,
                            });
                        }
                    };
                }
                Ok(Some(cur))
            }
            Node::Pipe(l, r) => {
                let Some(v) = l.eval(x, cx)? else {
                    return Ok(None);
                };
                then(v, r, cx).map_err(|mut e| {
                    if e.path.is_none() {
                        e.path = leading_path(l);
                    }
                    e
                })
            }
            // As in jaq and jq 1.6, an error on the left is an error, not a fallback.
            Node::Alt(l, r) => match l.eval(x, cx)? {
                Some(v) if truthy(&v) => Ok(Some(v)),
                _ => r.eval(x, cx),
            },
            Node::And(l, r) => {
                let Some(a) = l.eval(x, cx)? else {
                    return Ok(None);
                };
                if !truthy(&a) {
                    return owned(Value::Bool(false));
                }
                let Some(c) = r.eval(x, cx)? else {
                    return Ok(None);
                };
                owned(Value::Bool(truthy(&c)))
            }
            Node::Or(l, r) => {
                let Some(a) = l.eval(x, cx)? else {
                    return Ok(None);
                };
                if truthy(&a) {
                    return owned(Value::Bool(true));
                }
                let Some(c) = r.eval(x, cx)? else {
                    return Ok(None);
                };
                owned(Value::Bool(truthy(&c)))
            }
            Node::Cmp(l, op, r) => {
                // jq evaluates the right side first; with single outputs the order only matters
                // for which error is reported.
                let Some(c) = r.eval(x, cx)? else {
                    return Ok(None);
                };
                let Some(a) = l.eval(x, cx)? else {
                    return Ok(None);
                };
                let o = jq_cmp(&a, &c);
                use std::cmp::Ordering::*;
                let res = match op {
                    Cmp::Eq => o == Equal,
                    Cmp::Ne => o != Equal,
                    Cmp::Lt => o == Less,
                    Cmp::Le => o != Greater,
                    Cmp::Gt => o == Greater,
                    Cmp::Ge => o != Less,
                };
                owned(Value::Bool(res))
            }
            Node::Math(l, op, r) => {
                let Some(c) = r.eval(x, cx)? else {
                    return Ok(None);
                };
                let Some(a) = l.eval(x, cx)? else {
                    return Ok(None);
                };
                math(&a, *op, &c, cx)
                    .map(Cow::Owned)
                    .map(Some)
                    .map_err(EvalError::new)
            }
            Node::Neg(t) => {
                let Some(v) = t.eval(x, cx)? else {
                    return Ok(None);
                };
                match as_f64(&v) {
                    Some(_) => math(&Value::from(0), Math::Sub, &v, cx)
                        .map(|v| Some(Cow::Owned(v)))
                        .map_err(EvalError::new),
                    None => Err(EvalError::new(format!("cannot negate {}", short(&v)))),
                }
            }
            Node::If(branches, otherwise) => {
                for (c, then_) in branches {
                    let Some(v) = c.eval(x, cx)? else {
                        return Ok(None);
                    };
                    if truthy(&v) {
                        return then_.eval(x, cx);
                    }
                }
                match otherwise {
                    Some(e) => e.eval(x, cx),
                    None => Ok(Some(Cow::Borrowed(x))),
                }
            }
            Node::Try(t) => Ok(t.eval(x, cx).unwrap_or(None)),
            Node::Collect(t) => {
                let v = t.eval(x, cx)?;
                owned(Value::Array(v.map(Cow::into_owned).into_iter().collect()))
            }
            Node::Obj(kvs) => {
                let mut m = Map::new();
                for (k, v) in kvs {
                    let Some(v) = v.eval(x, cx)? else {
                        return Ok(None);
                    };
                    m.insert(k.clone(), v.into_owned());
                }
                owned(Value::Object(m))
            }
            Node::Str(pieces) => {
                let mut s = String::new();
                for p in pieces {
                    match p {
                        StrPiece::Lit(l) => s.push_str(l),
                        StrPiece::Expr(e) => {
                            let Some(v) = e.eval(x, cx)? else {
                                return Ok(None);
                            };
                            match &*v {
                                Value::String(t) => s.push_str(t),
                                other => s.push_str(&other.to_string()),
                            }
                        }
                    }
                }
                owned(Value::String(s))
            }
            Node::Map(f) => {
                let items: Box<dyn Iterator<Item = &Value>> = match x {
                    Value::Array(a) => Box::new(a.iter()),
                    Value::Object(m) => Box::new(m.values()),
                    other => {
                        return Err(EvalError::new(format!(
                            "cannot iterate over {}",
                            type_name(other)
                        )));
                    }
                };
                let mut out = Vec::new();
                for item in items {
                    if let Some(v) = f.eval(item, cx)? {
                        out.push(v.into_owned());
                    }
                }
                owned(Value::Array(out))
            }
            Node::Select(f) => match f.eval(x, cx)? {
                Some(v) if truthy(&v) => Ok(Some(Cow::Borrowed(x))),
                _ => Ok(None),
            },
            Node::Call(bi) => call(bi, x, cx),
        }
    }
}

fn str_in<'v>(x: &'v Value, what: &str) -> Result<&'v str, EvalError> {
    match x {
        Value::String(s) => Ok(s),
        other => Err(EvalError::new(format!(
            "{what}: expected a string, got {} ({})",
            type_name(other),
            short(other)
        ))),
    }
}

fn call<'v>(bi: &Builtin, x: &'v Value, cx: &EvalCx<'_>) -> Out<'v> {
    let e = EvalError::new;
    match bi {
        Builtin::Empty => Ok(None),
        Builtin::Not => owned(Value::Bool(!truthy(x))),
        Builtin::Length => owned(match x {
            Value::Null => Value::from(0),
            Value::Bool(_) => return Err(e("boolean (true/false) has no length".to_owned())),
            Value::Number(n) => num(n.as_f64().unwrap_or(0.0).abs()),
            Value::String(s) => Value::from(s.chars().count()),
            Value::Array(a) => Value::from(a.len()),
            Value::Object(m) => Value::from(m.len()),
        }),
        Builtin::AsciiDowncase => owned(Value::String(
            str_in(x, "ascii_downcase")?.to_ascii_lowercase(),
        )),
        Builtin::AsciiUpcase => owned(Value::String(
            str_in(x, "ascii_upcase")?.to_ascii_uppercase(),
        )),
        Builtin::ToString => match x {
            Value::String(_) => Ok(Some(Cow::Borrowed(x))),
            other => owned(Value::String(other.to_string())),
        },
        Builtin::ToNumber => match x {
            Value::Number(_) => Ok(Some(Cow::Borrowed(x))),
            Value::String(s) => {
                let t = s.trim();
                if let Ok(i) = t.parse::<i64>() {
                    owned(Value::from(i))
                } else {
                    match t.parse::<f64>() {
                        Ok(f) if f.is_finite() => owned(num(f)),
                        _ => Err(e(format!("cannot parse {} as a number", eval::quote(s)))),
                    }
                }
            }
            other => Err(e(format!(
                "{} cannot be parsed as a number",
                type_name(other)
            ))),
        },
        Builtin::ToJson => owned(Value::String(x.to_string())),
        Builtin::FromJson => {
            let s = str_in(x, "fromjson")?;
            serde_json::from_str(s)
                .map(|v| Some(Cow::Owned(v)))
                .map_err(|err| e(format!("fromjson: {} is not JSON ({err})", eval::quote(s))))
        }
        Builtin::Type => owned(Value::String(type_name(x).to_owned())),
        Builtin::Trim => owned(Value::String(str_in(x, "trim")?.trim().to_owned())),
        Builtin::LtrimStr(p) => match x {
            Value::String(s) if s.starts_with(p.as_str()) => {
                owned(Value::String(s[p.len()..].to_owned()))
            }
            _ => Ok(Some(Cow::Borrowed(x))),
        },
        Builtin::RtrimStr(p) => match x {
            Value::String(s) if s.ends_with(p.as_str()) && !p.is_empty() => {
                owned(Value::String(s[..s.len() - p.len()].to_owned()))
            }
            _ => Ok(Some(Cow::Borrowed(x))),
        },
        Builtin::Split(sep) => {
            let s = str_in(x, "split")?;
            let parts: Vec<Value> = if s.is_empty() {
                Vec::new()
            } else if sep.is_empty() {
                s.chars().map(|c| Value::String(c.to_string())).collect()
            } else {
                s.split(sep.as_str())
                    .map(|p| Value::String(p.to_owned()))
                    .collect()
            };
            owned(Value::Array(parts))
        }
        Builtin::Join(sep) => {
            let Value::Array(a) = x else {
                return Err(e(format!("join: expected an array, got {}", type_name(x))));
            };
            let mut s = String::new();
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    s.push_str(sep);
                }
                match v {
                    Value::Null => {}
                    Value::String(t) => s.push_str(t),
                    Value::Number(_) | Value::Bool(_) => s.push_str(&v.to_string()),
                    other => {
                        return Err(e(format!("join: cannot join {}", type_name(other))));
                    }
                }
            }
            owned(Value::String(s))
        }
        Builtin::Xref(entity) => xref(x, entity, cx).map(|v| Some(Cow::Owned(v))).map_err(e),
        Builtin::Table(name) => table(x, name, false, cx)
            .map(|v| Some(Cow::Owned(v)))
            .map_err(e),
        Builtin::RTable(name) => table(x, name, true, cx)
            .map(|v| Some(Cow::Owned(v)))
            .map_err(e),
        Builtin::Phone(r) => builtins::phone(x, *r)
            .map(|v| Some(Cow::Owned(v)))
            .map_err(e),
        Builtin::PhoneNational(r) => builtins::phone_national(x, *r)
            .map(|v| Some(Cow::Owned(v)))
            .map_err(e),
        Builtin::FromEpochMs(tz) => builtins::from_epoch_ms(x, *tz)
            .map(|v| Some(Cow::Owned(v)))
            .map_err(e),
        Builtin::FromEpochS(tz) => builtins::from_epoch_s(x, *tz)
            .map(|v| Some(Cow::Owned(v)))
            .map_err(e),
        Builtin::ToEpochMs => builtins::to_epoch_ms(x)
            .map(|v| Some(Cow::Owned(v)))
            .map_err(e),
        Builtin::ToEpochS => builtins::to_epoch_s(x)
            .map(|v| Some(Cow::Owned(v)))
            .map_err(e),
        Builtin::EpochMsToDate(tz) => builtins::epoch_ms_to_date(x, *tz)
            .map(|v| Some(Cow::Owned(v)))
            .map_err(e),
        Builtin::EpochSToDate(tz) => builtins::epoch_s_to_date(x, *tz)
            .map(|v| Some(Cow::Owned(v)))
            .map_err(e),
        Builtin::DateToEpochMs(tz) => builtins::date_to_epoch_ms(x, *tz)
            .map(|v| Some(Cow::Owned(v)))
            .map_err(e),
        Builtin::DateToEpochS(tz) => builtins::date_to_epoch_s(x, *tz)
            .map(|v| Some(Cow::Owned(v)))
            .map_err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::MemoryResolver;
    use serde_json::json;

    fn tables() -> Tables {
        let mut t = Tables::new();
        t.insert(
            "status".into(),
            Table::new(vec![
                ("1".into(), json!("active")),
                ("2".into(), json!("disabled")),
                ("5".into(), json!("resigned")),
            ]),
        );
        t
    }

    fn resolver() -> MemoryResolver {
        let mut r = MemoryResolver::new();
        r.insert("department", "dingtalk", "2", "D2");
        r.insert("person", "dingtalk", "u1", "P1");
        r
    }

    fn run(
        expr: &Expr,
        input: &Value,
        dir: Direction,
    ) -> (Result<Option<Value>, EvalError>, Vec<Unresolved>) {
        let r = resolver();
        let t = tables();
        let cx = EvalCx::new(&r, "dingtalk", dir, &t, &Limits::default());
        let out = expr.eval(input, &cx).map(|o| o.map(Cow::into_owned));
        (out, cx.unresolved.into_inner())
    }

    fn sample() -> Value {
        json!({
            "userid": "u1", "name": "Li Lei", "Email": "LI@X.CN", "n": 3, "f": 1.5,
            "dept_id_list": [2, 3], "status": 5, "mobile": "13800000000",
            "hired_date": 1_709_222_400_000_i64, "a": {"b": [10, 20, {"c": "deep"}]},
            "flag": false, "nul": null, "csv": "a,b,,c", "s": " pad ", "when": "2024-03-01"
        })
    }

    /// Expressions that both evaluators must agree on, value for value and error for error.
    const DIFFERENTIAL: &[&str] = &[
        ".",
        ".name",
        ".a.b",
        ".a.b[0]",
        ".a.b[-1].c",
        ".a.b[7]",
        ".missing",
        ".missing.deeper",
        ".name.x?",
        ".[\"name\"]",
        ".a[\"b\"][1]",
        "1",
        "-2",
        "\"lit\"",
        "null",
        "true",
        "[]",
        "{}",
        ".Email | ascii_downcase",
        ".name | ascii_upcase",
        ".n | tostring",
        ".name | tostring",
        ".a | tostring",
        "\"12\" | tonumber",
        "\"1.5\" | tonumber",
        ".n | tonumber",
        ".name | length",
        ".dept_id_list | length",
        ".nul | length",
        ".a | length",
        ".missing // \"dflt\"",
        ".flag // \"dflt\"",
        ".name // \"dflt\"",
        ".n == 3",
        ".n != 3",
        ".n < 4",
        ".n >= 3.0",
        ".name > .n",
        ".flag and true",
        ".flag or .n",
        ".flag | not",
        "if .n > 2 then \"big\" else \"small\" end",
        "if .flag then 1 elif .n == 3 then 2 else 3 end",
        "if .flag then 1 end",
        ".n + 1",
        ".n - 5",
        ".n * 2",
        ".n / 2",
        ".n % 2",
        ".f + .n",
        ".name + \" \" + .userid",
        ".dept_id_list + [4]",
        ".name * 2",
        ".name * 0",
        "2 * .name",
        ".csv / \",\"",
        "{a: {b: 1, c: 2}} * {a: {b: 3}, d: 4}",
        ".dept_id_list - [2]",
        ".nul + 1",
        "{a: .n} + {b: 2}",
        "-.n",
        "[.n]",
        "[.missing]",
        "[empty]",
        "{id: .userid, n}",
        "\"\\(.name) <\\(.n)>\"",
        ".dept_id_list | map(tostring)",
        ".dept_id_list | map(. * 10)",
        ".dept_id_list | map(select(. > 2))",
        ".dept_id_list | first",
        ".dept_id_list | last",
        ".dept_id_list | map(tostring) | join(\",\")",
        ".csv | split(\",\")",
        ".s | trim",
        ".name | ltrimstr(\"Li \")",
        ".name | rtrimstr(\"Lei\")",
        ".n | tojson",
        "\"{\\\"k\\\":1}\" | fromjson",
        ".a | type",
        ".nul | values",
        ".n | values",
        "select(.n > 1) | .name",
        "select(.n > 5) | .name",
        "empty",
        ".name | ascii_downcase?",
        "try (.n | ascii_downcase)",
        ".a.b | .[1]",
        "(.a.b)[2].c",
        // errors
        ".name.x",
        ".name.x // 1",
        ".name.x? // 1",
        "(.n | ascii_downcase) // 1",
        ".n | ascii_downcase",
        ".name | tonumber",
        ".flag | length",
        ".name - 1",
        ".n | .[0]",
        ".a.b[2] | join(\",\")",
        // domain built-ins
        ".userid | xref(\"person\")",
        ".dept_id_list | xref(\"department\")",
        ".nul | xref(\"person\")",
        ".status | table(\"status\")",
        ".dept_id_list | table(\"status\")",
        "\"resigned\" | rtable(\"status\")",
        ".mobile | phone(\"CN\")",
        ".mobile | phone_national(\"CN\")",
        "\"+8613800000000\" | phone_national(\"CN\")",
        ".hired_date | epoch_ms_to_date(\"Asia/Shanghai\")",
        ".hired_date | from_epoch_ms(\"Asia/Shanghai\")",
        ".hired_date / 1000 | from_epoch_s(\"UTC\")",
        ".hired_date / 1000 | epoch_s_to_date(\"UTC\")",
        ".when | date_to_epoch_ms(\"Asia/Shanghai\")",
        ".when | date_to_epoch_s(\"Asia/Shanghai\")",
        "\"2024-03-01T00:00:00+08:00\" | to_epoch_ms",
        "\"2024-03-01T00:00:00+08:00\" | to_epoch_s",
        ".name | phone(\"CN\")",
        ".name | table(\"status\")",
    ];

    #[test]
    fn direct_evaluator_agrees_with_jaq() {
        let t = tables();
        let input = sample();
        let mut mismatches = Vec::new();
        for src in DIFFERENTIAL {
            let fast = Expr::compile(src, &t).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert!(fast.is_fast(), "{src} should run on the fast path");
            let slow = Expr::compile_jaq(src, &t).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert!(!slow.is_fast());
            for dir in [Direction::ToCanonical, Direction::FromCanonical] {
                let (a, ua) = run(&fast, &input, dir);
                let (b, ub) = run(&slow, &input, dir);
                let same = match (&a, &b) {
                    (Ok(x), Ok(y)) => x == y,
                    (Err(_), Err(_)) => true,
                    _ => false,
                };
                if !same || ua != ub {
                    mismatches.push(format!(
                        "{src} ({dir}): fast {a:?} {ua:?} vs jaq {b:?} {ub:?}"
                    ));
                }
            }
        }
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }

    #[test]
    fn xref_reports_unresolved_instead_of_inventing() {
        let t = tables();
        let e = Expr::compile(".dept_id_list | xref(\"department\")", &t).expect("compiles");
        let (out, unresolved) = run(&e, &sample(), Direction::ToCanonical);
        assert_eq!(out, Ok(Some(json!(["D2"]))));
        assert_eq!(unresolved.len(), 1);
        assert_eq!(unresolved[0].id, "3");
        assert_eq!(unresolved[0].entity, "department");
        let back = Expr::compile("\"D2\" | xref(\"department\")", &t).expect("compiles");
        assert_eq!(
            run(&back, &sample(), Direction::FromCanonical).0,
            Ok(Some(json!("2")))
        );
    }

    #[test]
    fn errors_name_the_input_path() {
        let t = tables();
        let e = Expr::compile(".name | table(\"status\")", &t).expect("compiles");
        let (out, _) = run(&e, &sample(), Direction::ToCanonical);
        let err = out.expect_err("Li Lei is no status");
        assert_eq!(err.path.as_deref(), Some(".name"));
        assert!(err.reason.contains("keys: 1, 2, 5"), "{}", err.reason);
    }

    #[test]
    fn unsupported_shapes_fall_back_to_jaq() {
        let t = tables();
        for src in [
            ".dept_id_list[]",
            "[.dept_id_list[] | tostring] | join(\";\")",
            ".name | test(\"^Li\")",
            "reduce .dept_id_list[] as $x (0; . + $x)",
            ".dept_id_list | map(xref(\"department\")) | sort",
        ] {
            let e = Expr::compile(src, &t).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert!(!e.is_fast(), "{src}");
        }
        let e = Expr::compile(".name | test(\"^Li\")", &t).expect("compiles");
        assert_eq!(
            run(&e, &sample(), Direction::ToCanonical).0,
            Ok(Some(json!(true)))
        );
        let e = Expr::compile("[.dept_id_list[] | tostring] | join(\";\")", &t).expect("compiles");
        assert_eq!(
            run(&e, &sample(), Direction::ToCanonical).0,
            Ok(Some(json!("2;3")))
        );
        let e = Expr::compile(".dept_id_list[]", &t).expect("compiles");
        let err = run(&e, &sample(), Direction::ToCanonical)
            .0
            .expect_err("two values");
        assert!(err.reason.contains("more than one"), "{}", err.reason);
    }

    #[test]
    fn reads_input_is_decided_from_the_parsed_expression() {
        let t = tables();
        let cases: &[(&str, bool)] = &[
            // constants, also with dots inside strings
            ("\"Dept. A\"", false),
            ("\"active\"", false),
            ("\"v1.2.3\"", false),
            ("42", false),
            ("-1.5", false),
            ("null", false),
            ("true", false),
            ("[\"a\", \"b\"]", false),
            ("{a: 1, \"b.c\": \"x.y\"}", false),
            ("[]", false),
            ("\"x\" | ascii_downcase", false),
            ("\"a.b\" | split(\".\")", false),
            ("\"\\(1 + 2).0\"", false),
            ("[range(3)]", false),
            ("empty", false),
            ("if true then \"a\" else \"b\" end", false),
            ("reduce range(3) as $i (0; . + $i)", false),
            ("\"x\" as $x | $x", false),
            // reads the record
            (".", true),
            ("..", true),
            (".name", true),
            (".a.b", true),
            (".[0]", true),
            (".[\"dept.name\"]", true),
            (".dept // \"Dept. A\"", true),
            ("\"Dept. A\" // .dept", true),
            ("\"\\(.name) x\"", true),
            ("{name}", true),
            ("{a: .x}", true),
            ("[.a, 1]", true),
            ("length", true),
            ("tostring", true),
            ("select(true)", true),
            ("map(1)", true),
            ("xref(\"person\")", true),
            ("table(\"status\")", true),
            ("if true then 1 end", true),
            ("if .a then 1 else 2 end", true),
            ("1 as $x | .a", true),
            (". as $x | \"c\" | $x", true),
            ("reduce .[] as $x (0; . + $x)", true),
            ("@base64 \"\\(.a)\"", true),
            ("first(.[])", true),
            ("\"x\"[.i:]", true),
            ("try .a catch \"x\"", true),
            (".a = 1", true),
            ("def f: 1; f", true),
        ];
        let mut wrong = Vec::new();
        for (src, want) in cases {
            for e in [Expr::compile(src, &t), Expr::compile_jaq(src, &t)] {
                let e = e.unwrap_or_else(|e| panic!("{src}: {e}"));
                if e.reads_input() != *want {
                    wrong.push(format!("{src}: reads_input() = {}", e.reads_input()));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn instrumented_operators_keep_jaq_semantics() {
        // `+` and `*` go through size-checked natives, `[…]` counts its values, definitions
        // count their calls: outputs and their order are jaq's.
        let t = tables();
        for (src, want) in [
            ("[(1,2) + (10,20)]", json!([11, 21, 12, 22])),
            ("[(\"a\",\"b\") * (1,2)]", json!(["a", "aa", "b", "bb"])),
            (
                "[\"ab\" * 0, \"ab\" * 2, null + 1, {a: 1} * {b: 2}]",
                json!([null, "abab", 1, {"a": 1, "b": 2}]),
            ),
            ("[.dept_id_list[] | . + 1]", json!([3, 4])),
            (".dept_id_list | .[0] += 5", json!([7, 3])),
            (
                "[.name | ., . * 2] | join(\",\")",
                json!("Li Lei,Li LeiLi Lei"),
            ),
            ("[limit(3; repeat(1))]", json!([1, 1, 1])),
            (
                "[range(0; 10; 3)] + [range(2)] + [range(3; 1; -1)]",
                json!([0, 3, 6, 9, 0, 1, 3, 2]),
            ),
            ("[paths] | length", json!(22)),
            ("del(.a) | keys | length", json!(14)),
            (
                "to_entries | map(select(.key == \"n\")) | from_entries",
                json!({"n": 3}),
            ),
            ("path(first(.a, .b))", json!(["a"])),
            ("[.a.b | first] | tojson", json!("[10]")),
            ("\"{\\\"a\\\": [1]}\" | fromjson | .a[0]", json!(1)),
            ("reduce range(1000) as $i (0; . + $i)", json!(499500)),
            (
                "def f($n): if $n > 0 then f($n - 1) + 1 else 0 end; f(30)",
                json!(30),
            ),
            ("[recurse] | length", json!(23)),
        ] {
            let e = Expr::compile_jaq(src, &t).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(
                run(&e, &sample(), Direction::ToCanonical).0,
                Ok(Some(want)),
                "{src}"
            );
        }
    }

    #[test]
    fn source_checks_count_operators_not_names() {
        let limits = Limits::default();
        for ok in [
            ".a.b.c.d.e.f.g.h.i.j.k",
            "{a: .a, b: .b, c: .c}",
            "if .a == 1 then \"x\" elif .a == 2 then \"y\" else \"z\" end",
            "\"\\(.a) \\(.b)\"",
            "# ((((\n.a",
            "\"((((((\"",
        ] {
            assert_eq!(check_source(ok, &limits), Ok(()), "{ok}");
        }
        let deep = format!("{}.{}", "(".repeat(65), ")".repeat(65));
        let e = check_source(&deep, &limits).expect_err("65 levels");
        assert!(e.0.contains("line 1, column 65"), "{e}");
        let e = check_source(&format!("{}.", ".|".repeat(101)), &limits).expect_err("101 pipes");
        assert!(e.0.contains("about 101 operators"), "{e}");
        assert_eq!(
            check_source(&format!("{}.", ".|".repeat(100)), &limits),
            Ok(())
        );
    }

    #[test]
    fn mappings_cannot_reach_the_process() {
        // The environment holds secrets; a mapping must not copy them into vendor records,
        // stop the process or write to its stderr.
        let t = tables();
        for expr in [
            "env.HOME",
            ".name + env.HUITONG_HQ_APP_SECRET",
            "halt",
            "\"x\" | halt_error",
            ".name | debug",
            ".name | stderr",
            "input",
        ] {
            let e = match Expr::compile(expr, &t) {
                Err(e) => e.0,
                Ok(x) => match run(&x, &sample(), Direction::ToCanonical).0 {
                    Err(e) => e.reason,
                    Ok(v) => panic!("{expr} gave {v:?}"),
                },
            };
            assert!(
                e.contains("not available in mappings") || e.contains("undefined"),
                "{expr}: {e}"
            );
        }
        assert!(Expr::compile(".name | ascii_downcase", &t).is_ok());
    }

    #[test]
    fn compile_errors_quote_jq() {
        let t = tables();
        let e = Expr::compile(".name | ", &t).expect_err("dangling pipe");
        assert!(e.0.contains("jq syntax error"), "{e}");
        let e = Expr::compile(".name | no_such_fn", &t).expect_err("undefined");
        assert!(e.0.contains("no_such_fn"), "{e}");
        let e = Expr::compile(".x | table(\"nope\")", &t).expect_err("unknown table");
        assert!(
            e.0.contains("no table \"nope\"") && e.0.contains("status"),
            "{e}"
        );
        let e = Expr::compile(".x | from_epoch_ms(\"Nowhere/City\")", &t).expect_err("zone");
        assert!(e.0.contains("unknown time zone"), "{e}");
        let e = Expr::compile(".x | phone(\"ZZ\")", &t).expect_err("region");
        assert!(e.0.contains("unknown phone region"), "{e}");
    }
}
