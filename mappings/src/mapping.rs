//! Mapping files: loading, checking and applying.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::eval::{self, Direction, EvalCx, Limits, Table, Tables, Unresolved};
use crate::expr::Expr;
use crate::resolver::XrefResolver;
use crate::schema::{self, Schema, Violation};

/// A mapping that cannot be loaded. Every variant names the file and, where it applies, the line
/// and the field.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("{file}: cannot read mapping: {source}")]
    Io {
        /// File name.
        file: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The YAML is malformed or has unknown/missing keys.
    #[error("{file}:{line}:{column}: invalid mapping: {message}")]
    Yaml {
        /// File name.
        file: String,
        /// 1-based line (0 if unknown).
        line: usize,
        /// 1-based column (0 if unknown).
        column: usize,
        /// What the YAML reader said.
        message: String,
    },
    /// A field (or `key`/`when`/`entity`) is wrong: bad jq, unknown table, unknown target.
    #[error("{file}:{line}: {section} field `{field}`: {message}")]
    Field {
        /// File name.
        file: String,
        /// 1-based line of the offending entry.
        line: usize,
        /// `to_canonical`, `from_canonical` or `mapping`.
        section: String,
        /// The target field (or `key`, `when`, `entity`, …).
        field: String,
        /// The reason; for jq errors it quotes the expression and jq's message.
        message: String,
    },
}

/// A record that cannot be mapped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// The input is not a JSON object.
    #[error("mapping {mapping}: input record is not a JSON object (got {got})")]
    NotObject {
        /// Mapping name.
        mapping: Arc<str>,
        /// Type of the input.
        got: String,
    },
    /// An expression failed.
    #[error(
        "mapping {mapping}: field `{field}` (line {line}): {reason} [input path {path}; expr `{expr}`]"
    )]
    Field {
        /// Mapping name.
        mapping: Arc<str>,
        /// Target field.
        field: String,
        /// Line of the field in the mapping file.
        line: u32,
        /// Input path read when it failed (`.` if unknown).
        path: String,
        /// The expression.
        expr: String,
        /// Why.
        reason: String,
    },
    /// A required field got no value.
    #[error(
        "mapping {mapping}: field `{field}` (line {line}) is required but `{expr}` gave no value [input path {path}]"
    )]
    Required {
        /// Mapping name.
        mapping: Arc<str>,
        /// Target field.
        field: String,
        /// Line of the field in the mapping file.
        line: u32,
        /// Input path the expression reads (`.` if unknown).
        path: String,
        /// The expression.
        expr: String,
    },
    /// The canonical record (output of to-canonical, input of from-canonical) breaks its schema.
    #[error("mapping {mapping}: {which} record breaks the {entity} schema: {}", list(.violations))]
    Schema {
        /// Mapping name.
        mapping: Arc<str>,
        /// Canonical entity.
        entity: String,
        /// `output` (to-canonical) or `input` (from-canonical).
        which: &'static str,
        /// Every broken rule.
        violations: Vec<Violation>,
    },
}

fn list(v: &[Violation]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The result of mapping one record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Mapped {
    /// The output record (`null` if skipped).
    pub record: Value,
    /// The record's external id (vendor side): from the input in to-canonical, from the output
    /// in from-canonical (`None` when the canonical record has no link to this system yet).
    pub key: Option<String>,
    /// Ids `xref(...)` could not translate; they are absent from the output.
    pub unresolved: Vec<Unresolved>,
    /// True if the `when` filter excluded the record (nothing to write).
    pub skipped: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    system: String,
    entity: String,
    #[serde(default)]
    description: Option<String>,
    key: String,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    when_canonical: Option<String>,
    #[serde(default)]
    tables: Option<yaml_serde::Mapping>,
    to_canonical: Vec<RawField>,
    from_canonical: Vec<RawField>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    field: String,
    expr: String,
    #[serde(default)]
    default: Option<Value>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    keep_null: bool,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

/// What one field produced, for `preview`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldTrace {
    /// Target field.
    pub target: String,
    /// Expression text.
    pub expr: String,
    /// Line in the mapping file.
    pub line: u32,
    /// True if compiled to direct evaluation, false if run by jaq.
    pub fast: bool,
    /// The value (`None` = no value), or the error text.
    pub result: Result<Option<Value>, String>,
    /// Ids this field could not translate.
    pub unresolved: Vec<Unresolved>,
}

/// One target field of one direction.
#[derive(Debug, Clone)]
pub struct Rule {
    target: String,
    path: Vec<String>,
    expr: Expr,
    default: Option<Value>,
    required: bool,
    keep_null: bool,
    line: u32,
}

impl Rule {
    /// Target field (dots make nested objects: `status.is_resigned`).
    pub fn target(&self) -> &str {
        &self.target
    }
    /// The expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }
    /// Line in the mapping file.
    pub fn line(&self) -> u32 {
        self.line
    }
    /// Whether the record fails when the expression gives no value.
    pub fn required(&self) -> bool {
        self.required
    }
}

/// How to compile a mapping.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Run every expression in jaq's interpreter instead of compiling the common shapes to
    /// direct evaluation. Same results, several times slower: for comparisons and benchmarks.
    pub jaq_only: bool,
    /// Bounds on the file, its expressions and the evaluation of each record.
    pub limits: Limits,
}

/// A loaded, compiled mapping between one vendor system and one canonical entity.
#[derive(Debug, Clone)]
pub struct Mapping {
    name: Arc<str>,
    system: String,
    entity: String,
    description: Option<String>,
    key: Expr,
    key_line: u32,
    when: Option<Expr>,
    when_canonical: Option<Expr>,
    tables: Tables,
    /// Top-level input keys to-canonical reads, when they are known (all expressions compiled);
    /// other keys are skipped while parsing.
    projection: Option<Vec<String>>,
    to: Vec<Rule>,
    from: Vec<Rule>,
    schema: &'static Schema,
    limits: Limits,
}

/// Finds lines of keys in the YAML text, for messages.
struct Locator<'t> {
    lines: Vec<&'t str>,
}

impl<'t> Locator<'t> {
    fn new(text: &'t str) -> Self {
        Self {
            lines: text.lines().collect(),
        }
    }

    /// Line (1-based) of a top-level key such as `key:`.
    fn top(&self, key: &str) -> usize {
        let prefix = format!("{key}:");
        self.lines
            .iter()
            .position(|l| l.starts_with(&prefix))
            .map_or(0, |i| i + 1)
    }

    /// Line of the `n`-th entry of a section, preferring its `expr:` line.
    fn entry(&self, section: &str, n: usize, want_expr: bool) -> usize {
        let start = self.top(section);
        if start == 0 {
            return 0;
        }
        let mut seen = 0usize;
        let mut entry_line = None;
        // Entries are the `- ` items at the indentation of the first one; deeper `- ` lines
        // belong to values (e.g. a block-style `default:` list).
        let mut item_indent = None;
        for (i, l) in self.lines.iter().enumerate().skip(start) {
            if !l.is_empty() && !l.starts_with(' ') && !l.starts_with('-') && !l.starts_with('#') {
                break; // next top-level key
            }
            let indent = l.len() - l.trim_start().len();
            let is_item = l.trim_start().starts_with("- ") || l.trim() == "-";
            if is_item && item_indent.is_none() {
                item_indent = Some(indent);
            }
            if is_item && item_indent == Some(indent) {
                if entry_line.is_some() {
                    break;
                }
                if seen == n {
                    entry_line = Some(i + 1);
                    if !want_expr {
                        return i + 1;
                    }
                }
                seen += 1;
            }
            if entry_line.is_some() {
                let t = l.trim_start().trim_start_matches("- ").trim_start();
                if t.starts_with("expr:") {
                    return i + 1;
                }
            }
        }
        entry_line.unwrap_or(start)
    }
}

fn yaml_err(file: &str, e: &yaml_serde::Error) -> LoadError {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    LoadError::Yaml {
        file: file.to_owned(),
        line,
        column,
        message: e.to_string(),
    }
}

/// Checks a mapping file's nesting before the YAML parser sees it (its time grows with the
/// square of the nesting). Counts block levels by indentation (and `- ` items opening on one
/// line) plus flow `[`/`{` outside quotes, comments and block scalars: an over-estimate of the
/// nesting written out (aliases are bounded by the YAML reader's own repetition limit).
/// The error gives the 1-based line and column where the limit is passed.
pub fn check_yaml_depth(text: &str, max: usize) -> Result<(), (usize, usize, String)> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let too_deep = |line: usize, col: usize| {
        Err((
            line,
            col,
            format!("nested deeper than {max} levels (the limit for mapping files)"),
        ))
    };
    // Indentation of the line that opened a block scalar (`key: |`): the more indented lines
    // after it are text.
    let mut block_scalar: Option<usize> = None;
    for (i, l) in text.lines().enumerate() {
        let body = l.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = l.len() - body.len();
        match block_scalar {
            Some(at) if indent > at => continue,
            _ => block_scalar = None,
        }
        if flow == 0 && opens_block_scalar(body) {
            block_scalar = Some(indent);
        }
        let mut items = 0usize;
        let mut rest = body;
        while let Some(r) = rest.strip_prefix('-')
            && (r.is_empty() || r.starts_with(' '))
        {
            items += 1;
            rest = r.trim_start_matches(' ');
        }
        if flow == 0 {
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        // Flow collections open where a value starts (line start, after `:`, `-`, `,`, `[`,
        // `{`) or anywhere inside another one; quotes are plain text elsewhere (`don't`).
        let (mut quote, mut escaped, mut prev) = (None, false, ' ');
        let mut value_start = true;
        for (col, c) in l.char_indices() {
            if let Some(q) = quote {
                if q == '"' && c == '\\' && !escaped {
                    escaped = true;
                    continue;
                }
                if c == q && !escaped {
                    quote = None;
                }
                escaped = false;
                continue;
            }
            match c {
                ' ' | '\t' => {
                    prev = c;
                    continue;
                }
                '#' if prev == ' ' || prev == '\t' || col == 0 => break,
                '"' | '\'' if value_start => quote = Some(c),
                '[' | '{' if value_start || flow > 0 => {
                    flow += 1;
                    if indents.len() + items + flow > max {
                        return too_deep(i + 1, col + 1);
                    }
                }
                ']' | '}' if flow > 0 => flow -= 1,
                _ => {}
            }
            value_start = matches!(c, ':' | '-' | ',' | '[' | '{') || (flow > 0 && c == '?');
            prev = c;
        }
        if indents.len() + items + flow > max {
            return too_deep(i + 1, indent + 1);
        }
    }
    Ok(())
}

/// `key: |`, `- >-`, `key: |2 # comment`: the line's value is a block scalar.
fn opens_block_scalar(line: &str) -> bool {
    let line = line.split(" #").next().unwrap_or_default().trim_end();
    let mut words = line.rsplit(' ');
    let indicator = words.next().unwrap_or_default();
    let before = words.find(|w| !w.is_empty()).unwrap_or_default();
    indicator.starts_with(['|', '>'])
        && indicator[1..]
            .chars()
            .all(|c| matches!(c, '-' | '+' | '0'..='9'))
        && (before.ends_with(':') || before == "-")
}

fn yaml_key_text(k: &yaml_serde::Value) -> Option<String> {
    match k {
        yaml_serde::Value::String(s) => Some(s.clone()),
        yaml_serde::Value::Number(n) => Some(n.to_string()),
        yaml_serde::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The largest mapping file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A mapping file's text: a regular file only, at most [`MAX_FILE_BYTES`].
fn read_file(path: &Path) -> std::io::Result<String> {
    let bytes = read_capped(path, MAX_FILE_BYTES)?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// The bytes of a regular file, at most `max` of them: a FIFO (which would block) or a device
/// such as `/dev/zero` (which never ends) is refused before it is opened, and a file growing
/// past the cap while it is read is noticed. Shared by every loader of admin-given files.
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let regular = |meta: std::fs::Metadata| {
        if meta.is_file() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidInput,
                "not a regular file (a directory, device or FIFO); only regular files are read",
            ))
        }
    };
    regular(std::fs::metadata(path)?)?;
    let file = std::fs::File::open(path)?;
    regular(file.metadata()?)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than the limit of {max} bytes"),
        ));
    }
    Ok(bytes)
}

impl Mapping {
    /// Loads and compiles a mapping file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = read_file(path).map_err(|source| LoadError::Io {
            file: file.clone(),
            source,
        })?;
        Self::from_str(&file, &text)
    }

    /// Like [`Mapping::load`], with options.
    pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = read_file(path).map_err(|source| LoadError::Io {
            file: file.clone(),
            source,
        })?;
        Self::from_str_with(&file, &text, options)
    }

    /// Compiles a mapping from its YAML text; `name` is used in messages (usually the file name).
    pub fn from_str(name: &str, text: &str) -> Result<Self, LoadError> {
        Self::from_str_with(name, text, &LoadOptions::default())
    }

    /// Like [`Mapping::from_str`], with options.
    pub fn from_str_with(name: &str, text: &str, options: &LoadOptions) -> Result<Self, LoadError> {
        check_yaml_depth(text, options.limits.max_yaml_depth).map_err(
            |(line, column, message)| LoadError::Yaml {
                file: name.to_owned(),
                line,
                column,
                message,
            },
        )?;
        let raw: RawMapping = yaml_serde::from_str(text).map_err(|e| yaml_err(name, &e))?;
        let loc = Locator::new(text);
        let field_err =
            |line: usize, section: &str, field: &str, message: String| LoadError::Field {
                file: name.to_owned(),
                line,
                section: section.to_owned(),
                field: field.to_owned(),
                message,
            };

        let schema = match schema::get(&raw.entity) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                return Err(field_err(
                    loc.top("entity"),
                    "mapping",
                    "entity",
                    e.to_string(),
                ));
            }
            None => {
                let known: Vec<&str> = schema::entities().collect();
                return Err(field_err(
                    loc.top("entity"),
                    "mapping",
                    "entity",
                    format!(
                        "unknown entity {:?} (known: {})",
                        raw.entity,
                        known.join(", ")
                    ),
                ));
            }
        };
        if raw.system.trim().is_empty() {
            return Err(field_err(
                loc.top("system"),
                "mapping",
                "system",
                "must not be empty".into(),
            ));
        }

        let mut tables = Tables::new();
        if let Some(t) = &raw.tables {
            let line = loc.top("tables");
            for (k, v) in t {
                let tname = yaml_key_text(k).ok_or_else(|| {
                    field_err(line, "tables", "?", "table names must be strings".into())
                })?;
                let yaml_serde::Value::Mapping(entries) = v else {
                    return Err(field_err(
                        line,
                        "tables",
                        &tname,
                        "a table is a mapping of keys to values".into(),
                    ));
                };
                let mut out = Vec::new();
                for (ek, ev) in entries {
                    let key = yaml_key_text(ek).ok_or_else(|| {
                        field_err(
                            line,
                            "tables",
                            &tname,
                            "table keys must be strings or numbers".into(),
                        )
                    })?;
                    let val: Value = yaml_serde::from_value(ev.clone()).map_err(|e| {
                        field_err(line, "tables", &tname, format!("value of {key:?}: {e}"))
                    })?;
                    out.push((key, val));
                }
                tables.insert(tname, Table::new(out));
            }
        }

        let compile = |src: &str, line: usize, section: &str, field: &str| {
            Expr::compile_limited(src, &tables, !options.jaq_only, &options.limits).map_err(|e| {
                field_err(
                    line,
                    section,
                    field,
                    format!("expression `{}` does not compile: {e}", eval::cut(src)),
                )
            })
        };
        let key = compile(&raw.key, loc.top("key"), "mapping", "key")?;
        let when = raw
            .when
            .as_deref()
            .map(|w| compile(w, loc.top("when"), "mapping", "when"))
            .transpose()?;
        let when_canonical = raw
            .when_canonical
            .as_deref()
            .map(|w| compile(w, loc.top("when_canonical"), "mapping", "when_canonical"))
            .transpose()?;

        let rules = |section: &str, fields: &[RawField]| -> Result<Vec<Rule>, LoadError> {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for (i, f) in fields.iter().enumerate() {
                let entry_line = loc.entry(section, i, false);
                let path: Vec<String> = f.field.split('.').map(str::to_owned).collect();
                if f.field.is_empty() || path.iter().any(String::is_empty) {
                    return Err(field_err(
                        entry_line,
                        section,
                        &f.field,
                        "empty field name".into(),
                    ));
                }
                if !seen.insert(f.field.clone()) {
                    return Err(field_err(
                        entry_line,
                        section,
                        &f.field,
                        "field is mapped twice".into(),
                    ));
                }
                if section == "to_canonical" && !schema.properties().iter().any(|p| *p == path[0]) {
                    return Err(field_err(
                        entry_line,
                        section,
                        &f.field,
                        format!(
                            "the canonical {} has no field `{}` (fields: {})",
                            schema.entity(),
                            path[0],
                            schema.properties().join(", ")
                        ),
                    ));
                }
                let expr = compile(&f.expr, loc.entry(section, i, true), section, &f.field)?;
                out.push(Rule {
                    target: f.field.clone(),
                    path,
                    expr,
                    default: f.default.clone(),
                    required: f.required,
                    keep_null: f.keep_null,
                    line: u32::try_from(entry_line).unwrap_or(u32::MAX),
                });
            }
            Ok(out)
        };
        let to = rules("to_canonical", &raw.to_canonical)?;
        let from = rules("from_canonical", &raw.from_canonical)?;
        for req in schema.required() {
            if !to.iter().any(|r| r.path[0] == *req) {
                return Err(field_err(
                    loc.top("to_canonical"),
                    "to_canonical",
                    req,
                    format!(
                        "the canonical {} requires `{req}` but no rule produces it",
                        schema.entity()
                    ),
                ));
            }
        }

        let projection = {
            let mut keys = Vec::new();
            let mut ok = key.root_keys(&mut keys);
            if let Some(w) = &when {
                ok &= w.root_keys(&mut keys);
            }
            for r in &to {
                ok &= r.expr.root_keys(&mut keys);
            }
            ok.then_some(keys)
        };

        Ok(Self {
            projection,
            name: Arc::from(name),
            system: raw.system,
            entity: raw.entity,
            description: raw.description,
            key,
            key_line: u32::try_from(loc.top("key")).unwrap_or(u32::MAX),
            when,
            when_canonical,
            tables,
            to,
            from,
            schema,
            limits: options.limits.clone(),
        })
    }

    /// Name used in messages (the file name when loaded from a file).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Vendor system (`dingtalk`, `feishu`, `wecom`, …).
    pub fn system(&self) -> &str {
        &self.system
    }
    /// Canonical entity (`person`, `department`, …).
    pub fn entity(&self) -> &str {
        &self.entity
    }
    /// Free-text description from the file.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// The canonical schema of the entity.
    pub fn schema(&self) -> &'static Schema {
        self.schema
    }
    /// The rules of one direction.
    pub fn rules(&self, dir: Direction) -> &[Rule] {
        match dir {
            Direction::ToCanonical => &self.to,
            Direction::FromCanonical => &self.from,
        }
    }
    /// Every expression of the mapping with a label (for `check`).
    pub fn expressions(&self) -> Vec<(String, &Expr)> {
        let mut out = vec![("key".to_owned(), &self.key)];
        if let Some(w) = &self.when {
            out.push(("when".to_owned(), w));
        }
        if let Some(w) = &self.when_canonical {
            out.push(("when_canonical".to_owned(), w));
        }
        for r in &self.to {
            out.push((format!("to_canonical.{}", r.target), &r.expr));
        }
        for r in &self.from {
            out.push((format!("from_canonical.{}", r.target), &r.expr));
        }
        out
    }

    /// Parses one JSON input record for `dir`. For to-canonical, when every expression is
    /// compiled, only the top-level keys the mapping reads are materialised (the rest is checked
    /// for syntax and skipped), which is the same result for the mapping at a lower cost.
    pub fn parse_input(&self, dir: Direction, bytes: &[u8]) -> serde_json::Result<Value> {
        match (&self.projection, dir) {
            (Some(keys), Direction::ToCanonical) => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                let v = serde::de::DeserializeSeed::deserialize(Projected(keys), &mut de)?;
                de.end()?;
                Ok(v)
            }
            _ => serde_json::from_slice(bytes),
        }
    }

    /// The top-level keys to-canonical reads, if known (see [`Mapping::parse_input`]).
    pub fn projection(&self) -> Option<&[String]> {
        self.projection.as_deref()
    }

    /// Maps a vendor record to the canonical model and validates it.
    pub fn to_canonical(
        &self,
        input: &Value,
        resolver: &dyn XrefResolver,
    ) -> Result<Mapped, RecordError> {
        self.apply(Direction::ToCanonical, input, resolver)
    }

    /// Maps a canonical record (validated first) to the vendor's shape.
    pub fn from_canonical(
        &self,
        input: &Value,
        resolver: &dyn XrefResolver,
    ) -> Result<Mapped, RecordError> {
        self.apply(Direction::FromCanonical, input, resolver)
    }

    /// Maps one record in the given direction.
    pub fn apply(
        &self,
        dir: Direction,
        input: &Value,
        resolver: &dyn XrefResolver,
    ) -> Result<Mapped, RecordError> {
        if !input.is_object() {
            return Err(RecordError::NotObject {
                mapping: self.name.clone(),
                got: match input {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    Value::Array(_) => "an array",
                    Value::Object(_) => "an object",
                }
                .to_owned(),
            });
        }
        if dir == Direction::FromCanonical {
            self.schema
                .validate(input)
                .map_err(|violations| RecordError::Schema {
                    mapping: self.name.clone(),
                    entity: self.entity.clone(),
                    which: "input",
                    violations,
                })?;
        }
        let cx = EvalCx::new(resolver, &self.system, dir, &self.tables, &self.limits);
        let filter = match dir {
            Direction::ToCanonical => &self.when,
            Direction::FromCanonical => &self.when_canonical,
        };
        if let Some(w) = filter {
            let keep = w
                .eval(input, &cx)
                .map_err(|e| self.field_error("when", 0, w, e))?
                .is_some_and(|v| !matches!(*v, Value::Null | Value::Bool(false)));
            if !keep {
                return Ok(Mapped {
                    record: Value::Null,
                    key: None,
                    unresolved: Vec::new(),
                    skipped: true,
                });
            }
        }
        let mut key = None;
        if dir == Direction::ToCanonical {
            key = self.eval_key(input, &cx)?;
            if key.is_none() {
                return Err(RecordError::Required {
                    mapping: self.name.clone(),
                    field: "key".to_owned(),
                    line: self.key_line,
                    path: self.key.leading_path().unwrap_or_else(|| ".".into()),
                    expr: self.key.source().to_owned(),
                });
            }
        }
        let mut out = Map::new();
        for rule in self.rules(dir) {
            let before = cx.unresolved.borrow().len();
            let v = rule
                .expr
                .eval(input, &cx)
                .map_err(|e| self.field_error(&rule.target, rule.line, &rule.expr, e))?;
            for u in cx.unresolved.borrow_mut()[before..].iter_mut() {
                u.field.clone_from(&rule.target);
            }
            let v = match v {
                Some(v) if !v.is_null() => v.into_owned(),
                _ => match &rule.default {
                    Some(d) => d.clone(),
                    None if rule.required => {
                        return Err(RecordError::Required {
                            mapping: self.name.clone(),
                            field: rule.target.clone(),
                            line: rule.line,
                            path: rule.expr.leading_path().unwrap_or_else(|| ".".into()),
                            expr: rule.expr.source().to_owned(),
                        });
                    }
                    None if rule.keep_null => Value::Null,
                    None => continue,
                },
            };
            insert(&mut out, &rule.path, v);
        }
        let record = Value::Object(out);
        if dir == Direction::ToCanonical {
            self.schema
                .validate(&record)
                .map_err(|violations| RecordError::Schema {
                    mapping: self.name.clone(),
                    entity: self.entity.clone(),
                    which: "output",
                    violations,
                })?;
        } else {
            // The vendor-side key is read from the vendor-shaped output.
            let cx_out = EvalCx::new(resolver, &self.system, dir, &self.tables, &self.limits);
            key = self.eval_key(&record, &cx_out)?;
        }
        Ok(Mapped {
            record,
            key,
            unresolved: cx.unresolved.into_inner(),
            skipped: false,
        })
    }

    /// Evaluates each field on its own (no defaults, no validation), for `preview`.
    pub fn trace(
        &self,
        dir: Direction,
        input: &Value,
        resolver: &dyn XrefResolver,
    ) -> Vec<FieldTrace> {
        self.rules(dir)
            .iter()
            .map(|rule| {
                let cx = EvalCx::new(resolver, &self.system, dir, &self.tables, &self.limits);
                let result = match rule.expr.eval(input, &cx) {
                    Ok(v) => Ok(v.map(std::borrow::Cow::into_owned)),
                    Err(e) => Err(match e.path {
                        Some(p) => format!("{} [input path {p}]", eval::clip(e.reason)),
                        None => eval::clip(e.reason),
                    }),
                };
                let mut unresolved = cx.unresolved.into_inner();
                for u in &mut unresolved {
                    u.field.clone_from(&rule.target);
                }
                FieldTrace {
                    target: rule.target.clone(),
                    expr: rule.expr.source().to_owned(),
                    line: rule.line,
                    fast: rule.expr.is_fast(),
                    result,
                    unresolved,
                }
            })
            .collect()
    }

    /// A vendor record's external id (the mapping's `key`) alone, without mapping its fields:
    /// so a caller can still say which record failed to map. `None` when the key does not
    /// evaluate to a non-empty string or a number.
    pub fn key_of(&self, input: &Value) -> Option<String> {
        let cx = EvalCx::new(
            &crate::NoLinks,
            &self.system,
            Direction::ToCanonical,
            &self.tables,
            &self.limits,
        );
        self.eval_key(input, &cx).ok().flatten()
    }

    fn eval_key(&self, v: &Value, cx: &EvalCx<'_>) -> Result<Option<String>, RecordError> {
        let k = self
            .key
            .eval(v, cx)
            .map_err(|e| self.field_error("key", self.key_line, &self.key, e))?;
        Ok(match k.as_deref() {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    }

    fn field_error(
        &self,
        field: &str,
        line: u32,
        expr: &Expr,
        e: crate::eval::EvalError,
    ) -> RecordError {
        RecordError::Field {
            mapping: self.name.clone(),
            field: field.to_owned(),
            line,
            path: e
                .path
                .or_else(|| expr.leading_path())
                .unwrap_or_else(|| ".".to_owned()),
            expr: eval::cut(expr.source()),
            reason: eval::clip(e.reason),
        }
    }
}

fn insert(out: &mut Map<String, Value>, path: &[String], v: Value) {
    match path {
        [] => {}
        [last] => {
            out.insert(last.clone(), v);
        }
        [first, rest @ ..] => {
            let slot = out
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(m) = slot {
                insert(m, rest, v);
            }
        }
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} {})", self.name, self.system, self.entity)
    }
}

/// Deserialises a JSON value keeping only the given top-level object keys.
struct Projected<'k>(&'k [String]);

impl<'de> serde::de::DeserializeSeed<'de> for Projected<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// A map key, borrowed from the input when it has no escapes.
struct KeyStr<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for KeyStr<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = KeyStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(KeyStr(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(KeyStr(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(KeyStr(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::de::Visitor<'de> for Projected<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(KeyStr(k)) = map.next_key()? {
            // Length first: most skipped keys differ in length, which avoids a memcmp each.
            if self.0.iter().any(|w| w.len() == k.len() && *w == k) {
                let v: Value = map.next_value()?;
                out.insert(k.into_owned(), v);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(Value::Object(out))
    }
    // Anything but an object is kept as is, so that `apply` reports "not a JSON object".
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::MemoryResolver;

    fn shipped(name: &str) -> Mapping {
        match crate::shipped::FILES.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Mapping::from_str(n, text).unwrap_or_else(|e| panic!("{e}")),
            None => panic!("{name}"),
        }
    }

    #[test]
    fn locator_finds_entries_despite_comments_and_nested_lists() {
        let text = "system: x\nentity: person\nkey: .id\nto_canonical:\n  # people\n  - field: name\n    default:\n      - a\n      - b\n    expr: .n\n\n  - expr: .s\n    field: status\nfrom_canonical: []\n";
        let loc = Locator::new(text);
        assert_eq!(loc.top("key"), 3);
        assert_eq!(loc.entry("to_canonical", 0, false), 6);
        assert_eq!(loc.entry("to_canonical", 0, true), 10);
        assert_eq!(loc.entry("to_canonical", 1, false), 12);
        assert_eq!(loc.entry("to_canonical", 1, true), 12);
        assert_eq!(loc.entry("from_canonical", 0, true), 14);
    }

    #[test]
    fn projection_is_known_only_when_every_expression_is_compiled() {
        let dt = shipped("dingtalk-person.yaml");
        let keys = dt.projection().expect("all compiled");
        for k in [
            "userid",
            "name",
            "org_email",
            "email",
            "mobile",
            "dept_id_list",
            "leader_in_dept",
            "hired_date",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
        assert!(
            !keys.iter().any(|x| x == "unionid" || x == "avatar"),
            "{keys:?}"
        );
        assert!(shipped("wecom-person.yaml").projection().is_none());
    }

    #[test]
    fn projected_parse_maps_exactly_like_a_full_parse() {
        let r = MemoryResolver::new();
        let records = [
            r#"{"userid": "u1", "name": "Li", "unionid": "x", "mobile": "13800000000",
                "leader_in_dept": [{"dept_id": 2, "leader": true}], "extension": "{\"a\":1}",
                "role_list": [{"id": 1, "name": "x", "group_name": "g"}], "hired_date": 1709222400000}"#,
            r#"{"userid": "u\u0032", "na\u006de": "escaped key", "org_email": "A@B.CN"}"#,
            r#"{"userid": "u3", "name": "Dup", "name": "Second wins"}"#,
            r#"{"userid": "u4", "name": "Big", "hired_date": 1.5e3, "x": [1, {"y": null}]}"#,
            "[1, 2]",
            "\"text\"",
        ];
        let dt = shipped("dingtalk-person.yaml");
        for rec in records {
            let bytes = rec.as_bytes();
            let full: Value = serde_json::from_slice(bytes).expect("json");
            let proj = dt.parse_input(Direction::ToCanonical, bytes).expect("json");
            assert_eq!(
                dt.to_canonical(&full, &r),
                dt.to_canonical(&proj, &r),
                "{rec}"
            );
        }
        assert!(
            dt.parse_input(Direction::ToCanonical, b"{\"userid\": ")
                .is_err()
        );
        assert!(
            dt.parse_input(Direction::ToCanonical, b"{} trailing")
                .is_err()
        );
    }
}
