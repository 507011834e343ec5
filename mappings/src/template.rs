//! Templates: jq expressions with named variables, for files other than mappings — a
//! connector definition's request bodies, record selectors and pagination rules. The same
//! language, built-ins and [`Limits`] as mapping expressions (bounded compile, bounded
//! evaluation), without tables or `xref`.
//!
//! ```
//! use huitong_mappings::Template;
//! use serde_json::json;
//! let t = Template::compile(r#"{name: .title, company: $params.company}"#, &["params"]).unwrap();
//! let out = t.eval(&json!({"title": "ACME"}), &[json!({"company": 1})]).unwrap();
//! assert_eq!(out, Some(json!({"name": "ACME", "company": 1})));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use jaq_core::load::parse::Term;
use serde_json::Value;

use crate::eval::{self, Direction, EvalCx, Limits};
use crate::expr;
use crate::jaqrt::{self, JaqFilter};
use crate::resolver::NoLinks;

/// A compiled template: a jq expression and the names of the variables it may use.
#[derive(Clone)]
pub struct Template {
    source: String,
    vars: Vec<String>,
    filter: Arc<JaqFilter>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("source", &self.source)
            .field("vars", &self.vars)
            .finish()
    }
}

/// Why a template did not compile or failed on a value. The text never quotes a long value
/// in full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

impl Template {
    /// Compiles `src`; `vars` are the variables it may use, named without the `$`.
    pub fn compile(src: &str, vars: &[&str]) -> Result<Self, TemplateError> {
        let limits = Limits::default();
        let fail = |e: eval::CompileError| TemplateError(e.0);
        expr::check_source(src, &limits).map_err(fail)?;
        if let Some(e) = expr::syntax_error(src) {
            return Err(fail(e));
        }
        let term: Term<&str> = jaq_core::load::parse(src, |p| p.term())
            .ok_or_else(|| TemplateError("jq syntax error".to_owned()))?;
        expr::check_names(&term, &HashMap::new()).map_err(fail)?;
        let names: Vec<String> = vars.iter().map(|v| format!("${v}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let filter = jaqrt::compile_with_vars(term, &refs).map_err(fail)?;
        Ok(Self {
            source: src.to_owned(),
            vars: vars.iter().map(|v| (*v).to_owned()).collect(),
            filter: Arc::new(filter),
        })
    }

    /// The expression text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates on `input` with `values` for the variables, in the order they were declared
    /// (missing ones are `null`): `Ok(None)` when it produced no value, an error when it
    /// produced more than one, failed, or exceeded the evaluation limits.
    pub fn eval(&self, input: &Value, values: &[Value]) -> Result<Option<Value>, TemplateError> {
        let mut all: Vec<Value> = values.iter().take(self.vars.len()).cloned().collect();
        all.resize(self.vars.len(), Value::Null);
        let tables = HashMap::new();
        let cx = EvalCx::new(
            &NoLinks,
            "",
            Direction::ToCanonical,
            &tables,
            &Limits::default(),
        );
        jaqrt::run_with_vars(&self.filter, input, &all, &cx)
            .map_err(|e| TemplateError(eval::clip(e.reason)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variables_are_bound_in_their_declared_order() {
        let t = Template::compile(r#""\($a)-\($b)-\(.x)""#, &["a", "b"]).unwrap();
        assert_eq!(
            t.eval(&json!({"x": 3}), &[json!(1), json!("two")]).unwrap(),
            Some(json!("1-two-3"))
        );
        // Missing values are null.
        assert_eq!(
            t.eval(&json!({"x": 3}), &[]).unwrap(),
            Some(json!("null-null-3"))
        );
    }

    #[test]
    fn unknown_variables_and_bad_syntax_do_not_compile() {
        let e = Template::compile("$nope", &["params"]).unwrap_err();
        assert!(e.0.contains("nope"), "{e}");
        assert!(Template::compile("{a: ", &[]).is_err());
        let deep = "[".repeat(5000);
        assert!(Template::compile(&deep, &[]).is_err());
    }

    #[test]
    fn evaluation_is_bounded_and_errors_are_short() {
        let t = Template::compile("repeat(1)", &[]).unwrap();
        assert!(t.eval(&Value::Null, &[]).is_err());
        let t = Template::compile("error(.)", &[]).unwrap();
        let e = t.eval(&json!("x".repeat(100_000)), &[]).unwrap_err();
        assert!(e.0.len() < 2_000, "{}", e.0.len());
        let t = Template::compile(".[]", &[]).unwrap();
        assert!(t.eval(&json!([1, 2]), &[]).is_err());
        assert_eq!(t.eval(&json!([]), &[]).unwrap(), None);
    }
}
