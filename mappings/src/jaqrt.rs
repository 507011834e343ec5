//! The jaq fallback: expressions the direct evaluator does not cover run in jaq's interpreter,
//! with the domain built-ins available as native filters.

use jaq_core::box_iter::box_once;
use jaq_core::data::HasLut;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::native::{Fun, v};
use jaq_core::{Bind, Ctx, DataT, Error, Exn, Lut, Native, RunPtr, ValXs, Vars};
use jaq_json::{Num, Val};
use serde_json::Value;

use crate::builtins;
use crate::expr::{self, CompileError, EvalCx, EvalError};

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
        ("xref", v(1), |cv| {
            with_arg!(cv, "xref", |cx, entity, x| apply(&x, |j| expr::xref(
                j, &entity, cx
            )))
        }),
        ("table", v(1), |cv| {
            with_arg!(cv, "table", |cx, name, x| apply(&x, |j| expr::table(
                j, &name, false, cx
            )))
        }),
        ("rtable", v(1), |cv| {
            with_arg!(cv, "rtable", |cx, name, x| apply(&x, |j| expr::table(
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
    ];
    funs.into_iter()
        .map(|(name, args, run)| (name, args, Native::<Data>::new(run)))
        .collect()
}

/// Compiles `src` with the jq standard library and our built-ins.
pub(crate) fn compile(src: &str) -> Result<JaqFilter, CompileError> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs::<Data>()
        .chain(jaq_std::funs::<Data>())
        .chain(jaq_json::funs::<Data>())
        .chain(natives());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let program = File {
        code: src,
        path: (),
    };
    let modules = loader.load(&arena, program).map_err(|errs| {
        let msgs: Vec<String> = errs.iter().map(|(_, e)| format!("{e:?}")).collect();
        CompileError(format!("jq syntax error: {}", msgs.join("; ")))
    })?;
    jaq_core::Compiler::default()
        .with_funs(funs)
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
    let val = cx.jaq_input.get_or_init(|| from_json(input)).clone();
    let ctx = Ctx::<Data>::new(RunData { lut: &f.lut, cx }, Vars::new([]));
    let mut outs = f.id.run((ctx, val));
    let first = match outs.next() {
        None => return Ok(None),
        Some(r) => r.map_err(exn_text)?,
    };
    if let Some(second) = outs.next() {
        let second = second.map_err(exn_text)?;
        return Err(EvalError {
            path: None,
            reason: format!(
                "expression produced more than one value ({first}, {second}, …); wrap it in [ … ] to collect them"
            ),
        });
    }
    Ok(Some(to_json(&first)))
}

fn exn_text(e: Exn<'_, Val>) -> EvalError {
    let reason = match e.get_err() {
        Ok(e) => e.to_string(),
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
