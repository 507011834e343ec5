//! The jaq fallback: expressions the direct evaluator does not cover run in jaq's interpreter,
//! with the domain built-ins available as native filters.

use jaq_core::box_iter::box_once;
use jaq_core::data::HasLut;
use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Def, Pattern, Term};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::native::{Fun, v};
use jaq_core::ops::Math;
use jaq_core::path::Part;
use jaq_core::{Bind, Ctx, DataT, Error, Exn, Lut, Native, RunPtr, ValXs, Vars};
use jaq_json::{Num, Val};
use serde_json::Value;

use crate::builtins;
use crate::eval::{self, CompileError, EvalCx, EvalError};

/// Data kind of our filters: jaq values plus the record's evaluation context.
pub(crate) struct Data;

#[derive(Clone)]
pub(crate) struct RunData<'a> {
    lut: &'a Lut<Data>,
    cx: &'a EvalCx<'a>,
}

impl DataT for Data {
    type V<'a> = Val;
    type Data<'a> = RunData<'a>;
}

impl<'a> HasLut<'a, Data> for RunData<'a> {
    fn lut(&self) -> &'a Lut<Data> {
        self.lut
    }
}

pub(crate) type JaqFilter = jaq_core::Filter<Data>;

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<JaqFilter>();
};

fn err<'a>(msg: String) -> ValXs<'a, Val> {
    box_once(Err(Exn::from(Error::str(msg))))
}

/// Applies a serde-level built-in to a jaq value.
fn apply<'a>(input: &Val, f: impl FnOnce(&Value) -> Result<Value, String>) -> ValXs<'a, Val> {
    match f(&to_json(input)) {
        Ok(v) => box_once(Ok(from_json(&v))),
        Err(e) => err(e),
    }
}

fn arg_str(v: &Val, fname: &str) -> Result<String, String> {
    match v {
        Val::TStr(b) | Val::BStr(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        other => Err(format!("{fname}: argument must be a string, got {other}")),
    }
}

macro_rules! with_arg {
    ($cv:ident, $fname:literal, |$cx:ident, $arg:ident, $x:ident| $body:expr) => {{
        let mut cv = $cv;
        let raw = cv.0.pop_var();
        let $cx = cv.0.data().cx;
        let $x = cv.1;
        match arg_str(&raw, $fname) {
            Ok($arg) => $body,
            Err(e) => err(e),
        }
    }};
}

fn zone(name: &str) -> Result<chrono_tz::Tz, String> {
    builtins::time_zone(name)
}

type NativeDef = (&'static str, Box<[Bind]>, RunPtr<Data>);

fn natives() -> Vec<Fun<Data>> {
    let funs: Vec<NativeDef> = vec![
        // The filters that reach the process (see PROCESS_FILTERS) answer with an error: the
        // standard library's own definitions refer to some of them.
        ("env", v(0), |_| err(process_filter("env"))),
        ("halt", v(1), |_| err(process_filter("halt"))),
        // Behind `debug`, `debug(msg)`, `stderr` and `halt_error`.
        ("debug_empty", v(0), |_| err(process_filter("debug"))),
        ("stderr_empty", v(0), |_| err(process_filter("stderr"))),
        ("input", v(0), |_| err(process_filter("input"))),
        ("inputs", v(0), |_| err(process_filter("inputs"))),
        ("xref", v(1), |cv| {
            with_arg!(cv, "xref", |cx, entity, x| apply(&x, |j| eval::xref(
                j, &entity, cx
            )))
        }),
        ("table", v(1), |cv| {
            with_arg!(cv, "table", |cx, name, x| apply(&x, |j| eval::table(
                j, &name, false, cx
            )))
        }),
        ("rtable", v(1), |cv| {
            with_arg!(cv, "rtable", |cx, name, x| apply(&x, |j| eval::table(
                j, &name, true, cx
            )))
        }),
        ("phone", v(1), |cv| {
            with_arg!(cv, "phone", |_cx, r, x| apply(&x, |j| builtins::phone(
                j,
                builtins::region(&r)?
            )))
        }),
        ("phone_national", v(1), |cv| {
            with_arg!(cv, "phone_national", |_cx, r, x| apply(&x, |j| {
                builtins::phone_national(j, builtins::region(&r)?)
            }))
        }),
        ("from_epoch_ms", v(1), |cv| {
            with_arg!(cv, "from_epoch_ms", |_cx, tz, x| apply(&x, |j| {
                builtins::from_epoch_ms(j, zone(&tz)?)
            }))
        }),
        ("from_epoch_s", v(1), |cv| {
            with_arg!(cv, "from_epoch_s", |_cx, tz, x| apply(&x, |j| {
                builtins::from_epoch_s(j, zone(&tz)?)
            }))
        }),
        ("epoch_ms_to_date", v(1), |cv| {
            with_arg!(cv, "epoch_ms_to_date", |_cx, tz, x| apply(&x, |j| {
                builtins::epoch_ms_to_date(j, zone(&tz)?)
            }))
        }),
        ("epoch_s_to_date", v(1), |cv| {
            with_arg!(cv, "epoch_s_to_date", |_cx, tz, x| apply(&x, |j| {
                builtins::epoch_s_to_date(j, zone(&tz)?)
            }))
        }),
        ("date_to_epoch_ms", v(1), |cv| {
            with_arg!(cv, "date_to_epoch_ms", |_cx, tz, x| apply(&x, |j| {
                builtins::date_to_epoch_ms(j, zone(&tz)?)
            }))
        }),
        ("date_to_epoch_s", v(1), |cv| {
            with_arg!(cv, "date_to_epoch_s", |_cx, tz, x| apply(&x, |j| {
                builtins::date_to_epoch_s(j, zone(&tz)?)
            }))
        }),
        ("to_epoch_ms", v(0), |cv| {
            apply(&cv.1, builtins::to_epoch_ms)
        }),
        ("to_epoch_s", v(0), |cv| apply(&cv.1, builtins::to_epoch_s)),
        ("__fromjson", v(0), |cv| {
            apply(&cv.1, |j| match j {
                Value::String(s) => serde_json::from_str::<Value>(s)
                    .map_err(|e| format!("fromjson: {} is not JSON ({e})", eval::quote(s))),
                other => Err(format!(
                    "fromjson: expected a string, got {}",
                    eval::type_name(other)
                )),
            })
        }),
        ("__add", v(2), |mut cv| {
            let r = cv.0.pop_var();
            let l = cv.0.pop_var();
            let b = &cv.0.data().cx.budget;
            let too_long = match (&l, &r) {
                (Val::TStr(x) | Val::BStr(x), Val::TStr(y) | Val::BStr(y)) => (x.len() + y.len()
                    > b.max_string_bytes)
                    .then(|| format!("string of {} bytes", x.len() + y.len())),
                (Val::Arr(x), Val::Arr(y)) => (x.len() + y.len() > b.max_array_len)
                    .then(|| format!("array of {} elements", x.len() + y.len())),
                _ => None,
            };
            match too_long {
                Some(what) => err(b.fail(format!(
                    "`+` would build a {what} (limit {} bytes for strings, {} elements for arrays)",
                    b.max_string_bytes, b.max_array_len
                ))),
                None => box_once((l + r).map_err(Exn::from)),
            }
        }),
        ("__mul", v(2), |mut cv| {
            let r = cv.0.pop_var();
            let l = cv.0.pop_var();
            let b = &cv.0.data().cx.budget;
            let repeat = match (&l, &r) {
                (Val::TStr(s) | Val::BStr(s), Val::Num(n))
                | (Val::Num(n), Val::TStr(s) | Val::BStr(s)) => {
                    Some(num_f64(n).ceil() * s.len() as f64)
                }
                _ => None,
            };
            match repeat {
                Some(len) if len > b.max_string_bytes as f64 => err(b.fail(format!(
                    "`*` would repeat a string to {len} bytes (limit {} bytes)",
                    b.max_string_bytes
                ))),
                _ => box_once((l * r).map_err(Exn::from)),
            }
        }),
        ("__range", v(3), |mut cv| {
            let by = cv.0.pop_var();
            let to = cv.0.pop_var();
            let from = cv.0.pop_var();
            let cx = cv.0.data().cx;
            // As in jq: `range("a"; "c"; "b")` would build ever longer strings.
            if ![&from, &to, &by].iter().all(|v| matches!(v, Val::Num(_))) {
                return err(format!(
                    "range: bounds and step must be numbers, got {}, {}, {}",
                    eval::cut(&from.to_string()),
                    eval::cut(&to.to_string()),
                    eval::cut(&by.to_string())
                ));
            }
            Box::new(range(from, to, by).map(move |x| {
                cx.budget.tick().map_err(|e| Exn::from(Error::str(e)))?;
                x.map_err(Exn::from)
            }))
        }),
    ];
    let mut out: Vec<Fun<Data>> = funs
        .into_iter()
        .map(|(name, args, run)| (name, args, Native::<Data>::new(run)))
        .collect();
    out.push((
        TICK,
        v(0),
        Native::<Data>::new(|cv| match cv.0.data().cx.budget.tick() {
            Ok(()) => box_once(Ok(cv.1)),
            Err(e) => err(e),
        })
        .with_paths(|cv| match cv.0.data().cx.budget.tick() {
            Ok(()) => box_once(Ok(cv.1)),
            Err(e) => box_once(Err(Exn::from(Error::str(e)))),
        })
        .with_update(|cv, f| match cv.0.data().cx.budget.tick() {
            Ok(()) => f(cv.1),
            Err(e) => err(e),
        }),
    ));
    out
}

fn num_f64(n: &Num) -> f64 {
    match n {
        Num::Int(i) => *i as f64,
        Num::Float(f) => *f,
        other => other.to_string().parse().unwrap_or(f64::INFINITY),
    }
}

/// `range($from; $upto; $by)` as jaq's native one, but counted in the budget.
fn range(from: Val, to: Val, by: Val) -> impl Iterator<Item = Result<Val, Error<Val>>> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let cmp = by.partial_cmp(&Val::from(0usize)).unwrap_or(Equal);
    let mut next = Some(Ok(from));
    std::iter::from_fn(move || match next.take()? {
        Ok(x) => {
            let more = match cmp {
                Greater => x < to,
                Less => x > to,
                Equal => x != to,
            };
            if more {
                next = Some(x.clone() + by.clone());
                Some(Ok(x))
            } else {
                None
            }
        }
        Err(e) => Some(Err(e)),
    })
}

/// Name of the native that spends one step of the budget and passes its input on.
const TICK: &str = "__tick";

/// Definitions that replace jaq's for mappings: counted `range`, depth-limited `fromjson`.
const PRELUDE: &str = "
def range($upto): __range(0; $upto; 1);
def range($from; $upto): __range($from; $upto; 1);
def range($from; $upto; $by): __range($from; $upto; $by);
def fromjson: __fromjson;
def base64url: @base64 | gsub(\"[+]\"; \"-\") | gsub(\"/\"; \"_\");
";

fn call<'s>(name: &'s str, args: Vec<Term<&'s str>>) -> Term<&'s str> {
    Term::Call(name, args)
}

fn pipe<'s>(l: Term<&'s str>, r: Term<&'s str>) -> Term<&'s str> {
    Term::BinOp(Box::new(l), BinaryOp::Pipe(None), Box::new(r))
}

/// The size-checked native for `+` or `*`.
fn checked(op: Math) -> &'static str {
    if matches!(op, Math::Add) {
        "__add"
    } else {
        "__mul"
    }
}

/// Puts a step of the budget at the start of every definition's body, before every call of a
/// filter argument (`f` in `def map(f)`: a chain of them recurses without calling a `def`) and
/// after every value collected by `[…]`, and routes `+` and `*` through the size-checked natives.
fn instrument(t: Term<&str>) -> Term<&str> {
    Instr::new(false).term(t)
}

/// jaq's own definitions: a step at the start of those that call themselves (also from a
/// nested definition), which are the ones that can loop (`repeat`, `until`, `while`,
/// `recurse`, …). The others run a bounded number of steps per call, and instrumenting them
/// would slow down every expression that uses them.
fn instrument_library(d: Def<&str>) -> Def<&str> {
    Instr::new(true).def(d)
}

struct Instr<'s> {
    /// jaq's library (see [`instrument_library`]) rather than an expression.
    library: bool,
    /// Filter arguments of the enclosing definitions.
    params: Vec<&'s str>,
    /// Names called so far (to find recursive definitions).
    calls: Vec<&'s str>,
}

impl<'s> Instr<'s> {
    fn new(library: bool) -> Self {
        Self {
            library,
            params: Vec::new(),
            calls: Vec::new(),
        }
    }

    fn def(&mut self, d: Def<&'s str>) -> Def<&'s str> {
        let outer = self.params.len();
        let seen = self.calls.len();
        if !self.library {
            self.params
                .extend(d.args.iter().filter(|a| !a.starts_with('$')));
        }
        let body = self.term(d.body);
        self.params.truncate(outer);
        let tick = !self.library || self.calls[seen..].contains(&d.name);
        Def {
            name: d.name,
            args: d.args,
            body: if tick {
                pipe(call(TICK, Vec::new()), body)
            } else {
                body
            },
        }
    }

    fn term(&mut self, t: Term<&'s str>) -> Term<&'s str> {
        macro_rules! i {
            ($t:expr) => {
                Box::new(self.term(*$t))
            };
        }
        if let Term::Call(name, _) = &t {
            self.calls.push(name);
        }
        match t {
            Term::Def(defs, t) => {
                let defs = defs.into_iter().map(|d| self.def(d)).collect();
                Term::Def(defs, i!(t))
            }
            Term::Call(name, args) if args.is_empty() && self.params.contains(&name) => {
                pipe(call(TICK, Vec::new()), Term::Call(name, args))
            }
            Term::Arr(Some(t)) if !self.library => {
                Term::Arr(Some(Box::new(pipe(self.term(*t), call(TICK, Vec::new())))))
            }
            Term::BinOp(l, BinaryOp::Math(op @ (Math::Add | Math::Mul)), r) if !self.library => {
                call(checked(op), vec![self.term(*l), self.term(*r)])
            }
            // `l op= r` is `r as $x | l |= . op $x`.
            Term::BinOp(l, BinaryOp::UpdateMath(op @ (Math::Add | Math::Mul)), r)
                if !self.library =>
            {
                let x = "$__update";
                let name = checked(op);
                Term::BinOp(
                    i!(r),
                    BinaryOp::Pipe(Some(Pattern::Var(x))),
                    Box::new(Term::BinOp(
                        i!(l),
                        BinaryOp::Update,
                        Box::new(call(name, vec![Term::Id, Term::Var(x)])),
                    )),
                )
            }
            Term::BinOp(l, op, r) => Term::BinOp(i!(l), op, i!(r)),
            Term::Str(fmt, parts) => Term::Str(
                fmt,
                parts
                    .into_iter()
                    .map(|p| match p {
                        StrPart::Term(t) => StrPart::Term(self.term(t)),
                        p => p,
                    })
                    .collect(),
            ),
            Term::Obj(kvs) => Term::Obj(
                kvs.into_iter()
                    .map(|(k, v)| (self.term(k), v.map(|v| self.term(v))))
                    .collect(),
            ),
            Term::Arr(Some(t)) => Term::Arr(Some(i!(t))),
            Term::Neg(t) => Term::Neg(i!(t)),
            Term::Label(l, t) => Term::Label(l, i!(t)),
            Term::Fold(kind, x, pat, ys) => Term::Fold(
                kind,
                i!(x),
                pat,
                ys.into_iter().map(|y| self.term(y)).collect(),
            ),
            Term::TryCatch(t, c) => Term::TryCatch(i!(t), c.map(|c| i!(c))),
            Term::IfThenElse(bs, e) => Term::IfThenElse(
                bs.into_iter()
                    .map(|(c, t)| (self.term(c), self.term(t)))
                    .collect(),
                e.map(|e| i!(e)),
            ),
            Term::Call(name, args) => {
                Term::Call(name, args.into_iter().map(|a| self.term(a)).collect())
            }
            Term::Path(base, path) => Term::Path(
                i!(base),
                jaq_core::path::Path(
                    path.0
                        .into_iter()
                        .map(|(part, opt)| {
                            let part = match part {
                                Part::Index(t) => Part::Index(self.term(t)),
                                Part::Range(a, b) => {
                                    Part::Range(a.map(|a| self.term(a)), b.map(|b| self.term(b)))
                                }
                            };
                            (part, opt)
                        })
                        .collect(),
                ),
            ),
            t @ (Term::Id
            | Term::Recurse
            | Term::Num(_)
            | Term::Arr(None)
            | Term::Break(_)
            | Term::Var(_)) => t,
        }
    }
}

/// jq filters that reach the process rather than the record: the environment (secrets live
/// there), stopping the process, and writing to its stderr. They are replaced by natives that
/// fail the record with a clear error.
const PROCESS_FILTERS: &[&str] = &[
    "env",
    "halt",
    "debug_empty",
    "stderr_empty",
    "input",
    "inputs",
];

fn process_filter(name: &str) -> String {
    format!("`{name}` is not available in mappings (it reaches the process, not the record)")
}

/// Compiles a parsed expression with the jq standard library and our built-ins. The
/// expression and the library's definitions are instrumented (see [`instrument`]) so that
/// every record's evaluation is bounded by its [`crate::eval::Budget`].
pub(crate) fn compile(main: Term<&str>) -> Result<JaqFilter, CompileError> {
    compile_with_vars(main, &[])
}

/// [`compile`] with global variables (`vars`, each starting with `$`), whose values
/// [`run_with_vars`] supplies in the same order.
pub(crate) fn compile_with_vars<'s>(
    main: Term<&'s str>,
    vars: &[&'s str],
) -> Result<JaqFilter, CompileError> {
    let arena = Arena::default();
    let ours = jaq_core::load::parse(PRELUDE, |p| p.defs())
        .ok_or_else(|| CompileError("internal error: mapping prelude does not parse".into()))?;
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs())
        .map(|d| -> Def<&'s str> { instrument_library(d) })
        .chain(ours)
        .chain([Def {
            name: "__main",
            args: Vec::new(),
            body: instrument(main),
        }]);
    let funs = jaq_core::funs::<Data>()
        .chain(jaq_std::funs::<Data>())
        .chain(jaq_json::funs::<Data>())
        .filter(|f| !PROCESS_FILTERS.contains(&f.0))
        .chain(natives());
    let loader = Loader::new(defs);
    let program = File {
        code: "__main",
        path: (),
    };
    let modules = loader.load(&arena, program).map_err(|errs| {
        let msgs: Vec<String> = errs.iter().map(|(_, e)| format!("{e:?}")).collect();
        CompileError(format!("jq syntax error: {}", msgs.join("; ")))
    })?;
    jaq_core::Compiler::default()
        .with_funs(funs)
        .with_global_vars(vars.iter().copied())
        .compile(modules)
        .map_err(|errs| {
            let msgs: Vec<String> = errs
                .iter()
                .flat_map(|(_, es)| es.iter())
                .map(|(name, undef)| match undef {
                    jaq_core::compile::Undefined::Filter(arity) => {
                        format!("undefined filter `{name}/{arity}`")
                    }
                    other => format!("undefined {} `{name}`", other.as_str()),
                })
                .collect();
            CompileError(format!("jq error: {}", msgs.join("; ")))
        })
}

/// Runs a compiled filter: no output → `None`, one → `Some`, more → error.
pub(crate) fn run(
    f: &JaqFilter,
    input: &Value,
    cx: &EvalCx<'_>,
) -> Result<Option<Value>, EvalError> {
    run_with_vars(f, input, &[], cx)
}

/// [`run`] with the values of the filter's global variables, in their declared order.
pub(crate) fn run_with_vars(
    f: &JaqFilter,
    input: &Value,
    vars: &[Value],
    cx: &EvalCx<'_>,
) -> Result<Option<Value>, EvalError> {
    let val = cx.jaq_input.get_or_init(|| from_json(input)).clone();
    cx.budget.enter();
    let ctx = Ctx::<Data>::new(
        RunData { lut: &f.lut, cx },
        Vars::new(vars.iter().map(from_json)),
    );
    let mut outs = f.id.run((ctx, val));
    let first = outs.next();
    let second = match first {
        Some(Ok(_)) => outs.next(),
        _ => None,
    };
    drop(outs);
    // A spent budget wins over whatever the expression made of its error (`try`, `?`).
    if let Some(reason) = cx.budget.exceeded() {
        return Err(EvalError { path: None, reason });
    }
    let first = match first {
        None => return Ok(None),
        Some(r) => r.map_err(exn_text)?,
    };
    if let Some(second) = second {
        let second = second.map_err(exn_text)?;
        return Err(EvalError {
            path: None,
            reason: format!(
                "expression produced more than one value ({}, {}, …); wrap it in [ … ] to collect them",
                eval::cut(&first.to_string()),
                eval::cut(&second.to_string())
            ),
        });
    }
    Ok(Some(to_json(&first)))
}

fn exn_text(e: Exn<'_, Val>) -> EvalError {
    let reason = match e.get_err() {
        Ok(e) => eval::clip(e.to_string()),
        Err(_) => "halt or break is not allowed in a mapping expression".to_owned(),
    };
    EvalError { path: None, reason }
}

/// serde_json → jaq.
pub(crate) fn from_json(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Val::Num(Num::from_integral(i))
            } else if let Some(u) = n.as_u64() {
                Val::Num(Num::from_integral(u))
            } else {
                Val::Num(Num::Float(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Value::String(s) => Val::utf8_str(s.clone()),
        Value::Array(a) => Val::Arr(jaq_json::Rc::new(a.iter().map(from_json).collect())),
        Value::Object(m) => {
            let mut map = jaq_json::Map::default();
            for (k, v) in m {
                map.insert(Val::utf8_str(k.clone()), from_json(v));
            }
            Val::obj(map)
        }
    }
}

fn num_json(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::from(*i as i64),
        Num::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
                Value::from(*f as i64)
            } else {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
        }
        other => {
            let text = other.to_string();
            serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))
        }
    }
}

/// jaq → serde_json (non-string object keys are written as their JSON text).
pub(crate) fn to_json(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => num_json(n),
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(a) => Value::Array(a.iter().map(to_json).collect()),
        Val::Obj(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m.iter() {
                let key = match k {
                    Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                    other => other.to_string(),
                };
                out.insert(key, to_json(v));
            }
            Value::Object(out)
        }
    }
}
