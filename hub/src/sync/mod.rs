//! Org-chart reconcile: read a route's source and targets completely, map both
//! sides to the canonical model, link records (xrefs first, then the route's
//! match rules), and plan creates, updates, moves and removals — or conflicts it
//! will not guess about. [`apply`] carries a plan out in dependency order and
//! records every link and written hash, so an interrupted apply run again
//! finishes the work without creating anything twice.
//!
//! Identity: a source record's canonical id is its existing xref, or an id
//! derived from (source connector, entity, external id) — the same on every run,
//! so a crash between a vendor write and its xref cannot fork identities.

pub mod apply;
pub mod connect;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use futures_util::TryStreamExt;
use huitong_connectors::ConnectorError;
use huitong_connectors::capability::{Entity, ListQuery};
use huitong_mappings::{Direction, Mapping, XrefResolver};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::{Config, Deletion, RouteConfig};
use crate::store::{Store, StoreError, content_hash, now_ms};
pub use apply::{ApplyReport, Progress, StepHandler, WireStep, apply, apply_until};
pub use connect::{Directory, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no route named {0:?} is configured")]
    UnknownRoute(String),
    #[error("{0}")]
    Config(String),
    #[error("reading {connector}: {source}")]
    Read {
        connector: String,
        #[source]
        source: ConnectorError,
    },
    #[error("mapping a {entity} of {connector}: {message}")]
    Mapping {
        connector: String,
        entity: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the plan for {target} would disable or delete {removals} of {people} people ({percent:.1} %), above the route's \
         safety threshold of {threshold} %; re-run with --force to apply it"
    )]
    SafetyThreshold {
        target: String,
        removals: usize,
        people: usize,
        percent: f64,
        threshold: f64,
    },
    #[error("queue: {0}")]
    Queue(#[source] crate::queue::QueueError),
    #[error("apply stopped: {0}")]
    Interrupted(String),
}

pub const DEPARTMENT: &str = "department";
pub const PERSON: &str = "person";

/// The deterministic canonical id of a source record not yet linked.
pub fn derived_id(system: &str, entity: &str, external_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(system.as_bytes());
    h.update([0]);
    h.update(entity.as_bytes());
    h.update([0]);
    h.update(external_id.as_bytes());
    let prefix = if entity == PERSON { "p" } else { "d" };
    format!("{prefix}-{}", &hex::encode(h.finalize())[..20])
}

/// Identity links of one connector, as the mappings' resolver.
///
/// On the source side an unknown external id gets its derived canonical id; on
/// a target side it gets a placeholder `?entity:external` until it is paired.
pub struct SideResolver {
    system: String,
    source: bool,
    to_canonical: RwLock<IdMap>,
    to_external: RwLock<IdMap>,
}

/// (entity, one id) -> the other id.
type IdMap = HashMap<(&'static str, Box<str>), Box<str>>;

fn placeholder(entity: &str, external: &str) -> String {
    format!("?{entity}:{external}")
}

fn is_placeholder(id: &str) -> bool {
    id.starts_with('?')
}

/// Replaces every `?entity:external` placeholder in `v` that `resolver` can now resolve with
/// its canonical id; whether anything changed.
fn resolve_placeholders(v: &mut Value, resolver: &SideResolver) -> bool {
    match v {
        Value::String(s) => {
            let linked = s
                .strip_prefix('?')
                .and_then(|rest| rest.split_once(':'))
                .and_then(|(entity, external)| resolver.linked(entity, external));
            match linked {
                Some(c) => {
                    *s = c;
                    true
                }
                None => false,
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |acc, i| resolve_placeholders(i, resolver) | acc),
        Value::Object(o) => o
            .values_mut()
            .fold(false, |acc, i| resolve_placeholders(i, resolver) | acc),
        _ => false,
    }
}

/// The entity names the resolver knows, as static strings (map keys without an allocation).
fn entity_name(entity: &str) -> Option<&'static str> {
    match entity {
        PERSON => Some(PERSON),
        DEPARTMENT => Some(DEPARTMENT),
        _ => None,
    }
}

impl SideResolver {
    fn new(system: &str, source: bool) -> Self {
        SideResolver {
            system: system.to_owned(),
            source,
            to_canonical: RwLock::new(HashMap::new()),
            to_external: RwLock::new(HashMap::new()),
        }
    }

    /// The resolver of `system` with every department and person link the store holds.
    async fn load(store: &dyn Store, system: &str, source: bool) -> Result<Self, SyncError> {
        let r = SideResolver::new(system, source);
        for entity in [DEPARTMENT, PERSON] {
            for (external, canonical) in store.xref_ids_in_system(entity, system).await? {
                r.insert(entity, &external, &canonical);
            }
        }
        Ok(r)
    }

    fn insert(&self, entity: &str, external: &str, canonical: &str) {
        let Some(entity) = entity_name(entity) else {
            return;
        };
        if let Ok(mut m) = self.to_canonical.write() {
            m.insert((entity, external.into()), canonical.into());
        }
        if let Ok(mut m) = self.to_external.write() {
            m.insert((entity, canonical.into()), external.into());
        }
    }

    fn linked(&self, entity: &str, external: &str) -> Option<String> {
        let entity = entity_name(entity)?;
        self.to_canonical
            .read()
            .ok()?
            .get(&(entity, external.into()))
            .map(|c| c.to_string())
    }

    fn external(&self, entity: &str, canonical: &str) -> Option<String> {
        let entity = entity_name(entity)?;
        self.to_external
            .read()
            .ok()?
            .get(&(entity, canonical.into()))
            .map(|c| c.to_string())
    }
}

impl XrefResolver for SideResolver {
    fn to_canonical(&self, entity: &str, _system: &str, external_id: &str) -> Option<String> {
        if let Some(c) = self.linked(entity, external_id) {
            return Some(c);
        }
        Some(if self.source {
            derived_id(&self.system, entity, external_id)
        } else {
            placeholder(entity, external_id)
        })
    }

    fn to_external(&self, entity: &str, _system: &str, canonical_id: &str) -> Option<String> {
        self.external(entity, canonical_id)
    }
}

/// Canonical fields the plan reads for every record (identity, tree, match rules, status);
/// a [`Canon`] keeps them at hand so the rest stays packed.
const HOT_FIELDS: &[&str] = &[
    "id",
    "name",
    "parent_id",
    "employee_no",
    "email",
    "mobile",
    "status",
    "manager",
];

/// A canonical record kept compact — its JSON text, parsed again only where a whole record is
/// needed (a diff, a write) — plus its [`HOT_FIELDS`] that are strings. A large org's plan holds
/// one per record of each side: a `serde_json::Value` tree costs several times the text.
#[derive(Debug)]
pub struct Canon {
    json: Box<str>,
    hot: Box<[(&'static str, Box<str>)]>,
}

impl Canon {
    pub fn new(v: &Value) -> Self {
        let hot = HOT_FIELDS
            .iter()
            .filter_map(|f| v.get(*f).and_then(Value::as_str).map(|s| (*f, s.into())))
            .collect();
        Canon {
            json: v.to_string().into_boxed_str(),
            hot,
        }
    }

    /// The whole record (the text was written by [`Canon::new`], so it parses).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }

    /// A hot field's string value.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.hot
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| &**v)
    }
}

/// One record of one side: its external id and canonical form (shared with the plan's steps,
/// never copied).
#[derive(Debug, Clone)]
struct Rec {
    external_id: String,
    canonical: Arc<Canon>,
}

impl Rec {
    fn id(&self) -> &str {
        self.canonical.get("id").unwrap_or("")
    }
    fn name(&self) -> String {
        self.canonical.get("name").unwrap_or("").to_owned()
    }
    fn parent(&self) -> Option<&str> {
        self.canonical.get("parent_id")
    }
}

struct Side {
    departments: Vec<Rec>,
    people: Vec<Rec>,
    failures: Vec<Conflict>,
    /// Read calls made (list streams + gets), for reporting.
    records_read: usize,
}

async fn read_raw(endpoint: &Endpoint, entity: Entity) -> Result<Vec<Value>, SyncError> {
    let query = ListQuery {
        recursive: true,
        complete: true,
        ..ListQuery::default()
    };
    endpoint
        .directory
        .list(entity, query)
        .try_collect()
        .await
        .map_err(|source| SyncError::Read {
            connector: endpoint.name.clone(),
            source,
        })
}

/// Maps records one by one as they arrive; one that fails to map is reported (never guessed)
/// and left out.
struct Mapper<'a> {
    endpoint: &'a Endpoint,
    mapping: &'a Mapping,
    entity: &'static str,
    resolver: &'a SideResolver,
    seen: HashSet<String>,
    out: Vec<Rec>,
}

impl<'a> Mapper<'a> {
    fn new(
        endpoint: &'a Endpoint,
        mapping: &'a Mapping,
        entity: &'static str,
        resolver: &'a SideResolver,
    ) -> Self {
        Mapper {
            endpoint,
            mapping,
            entity,
            resolver,
            seen: HashSet::new(),
            out: Vec::new(),
        }
    }

    fn push(&mut self, raw: Value, failures: &mut Vec<Conflict>) -> Result<(), SyncError> {
        let mapped = match self
            .mapping
            .apply(Direction::ToCanonical, &raw, self.resolver)
        {
            Ok(m) => m,
            Err(e) => {
                failures.push(Conflict {
                    entity: self.entity,
                    kind: "mapping_error".into(),
                    detail: format!("{}: {e}", self.endpoint.name),
                    records: Vec::new(),
                });
                return Ok(());
            }
        };
        if mapped.skipped {
            return Ok(());
        }
        let Some(external_id) = mapped.key else {
            return Err(SyncError::Mapping {
                connector: self.endpoint.name.clone(),
                entity: self.entity,
                message: "a record has no external id (the mapping's `key`)".into(),
            });
        };
        // Vendors that list per department return a person once per department.
        if !self.seen.insert(external_id.clone()) {
            return Ok(());
        }
        self.out.push(Rec {
            external_id,
            canonical: Arc::new(Canon::new(&mapped.record)),
        });
        Ok(())
    }
}

/// Map every record of `raws` (see [`Mapper`]).
fn map_all(
    endpoint: &Endpoint,
    mapping: &Mapping,
    entity: &'static str,
    raws: Vec<Value>,
    resolver: &SideResolver,
    failures: &mut Vec<Conflict>,
) -> Result<Vec<Rec>, SyncError> {
    let mut m = Mapper::new(endpoint, mapping, entity, resolver);
    m.out.reserve(raws.len());
    for raw in raws {
        m.push(raw, failures)?;
    }
    Ok(m.out)
}

async fn read_side(endpoint: &Endpoint, resolver: &SideResolver) -> Result<Side, SyncError> {
    let mut departments = read_raw(endpoint, Entity::Department).await?;
    let root = endpoint.root_id();
    let dept_key = |d: &Value| -> Option<String> {
        endpoint
            .department
            .apply(Direction::ToCanonical, d, &huitong_mappings::NoLinks)
            .ok()
            .and_then(|m| m.key)
    };
    if !departments
        .iter()
        .any(|d| dept_key(d).as_deref() == Some(root))
    {
        let got = endpoint
            .directory
            .get(Entity::Department, root)
            .await
            .map_err(|source| SyncError::Read {
                connector: endpoint.name.clone(),
                source,
            })?;
        if let Some(r) = got {
            departments.insert(0, r);
        }
    }
    let mut failures = Vec::new();
    let mut records_read = departments.len();
    let departments = map_all(
        endpoint,
        &endpoint.department,
        DEPARTMENT,
        departments,
        resolver,
        &mut failures,
    )?;
    // People are mapped as they stream in: the raw records of a large org never sit in memory
    // all at once.
    let mut people = Mapper::new(endpoint, &endpoint.person, PERSON, resolver);
    let query = ListQuery {
        recursive: true,
        ..ListQuery::default()
    };
    let mut stream = endpoint.directory.list(Entity::User, query);
    while let Some(raw) = stream.try_next().await.map_err(|source| SyncError::Read {
        connector: endpoint.name.clone(),
        source,
    })? {
        records_read += 1;
        people.push(raw, &mut failures)?;
    }
    Ok(Side {
        departments,
        people: people.out,
        failures,
        records_read,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Record an existing target record as the same entity (matched by rules).
    Link,
    Create,
    Update,
    /// An update that changes where the record sits (parent / departments).
    Move,
    Disable,
    Delete,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    pub old: Value,
    pub new: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub action: Action,
    pub entity: &'static str,
    pub canonical_id: String,
    pub name: String,
    /// The record's id in the target (absent for creates).
    pub target_id: Option<String>,
    /// The record's id in the source (absent for removals).
    pub source_id: Option<String>,
    /// For ordering: a department's depth in the tree (0 = root); a person's in the manager
    /// chain (0 = reports to nobody), so managers are written before their reports.
    pub depth: usize,
    /// Also record the link before writing (a first match by rules).
    pub link_first: bool,
    pub changes: BTreeMap<String, Change>,
    /// The canonical record to write (for disables: the target's, with the new status).
    #[serde(skip)]
    pub record: Arc<Canon>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub entity: &'static str,
    pub kind: String,
    pub detail: String,
    pub records: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetPlan {
    pub target: String,
    pub steps: Vec<Step>,
    pub conflicts: Vec<Conflict>,
    pub people_in_target: usize,
    pub removals: usize,
    pub records_read: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub route: String,
    pub source: String,
    /// `reconcile` (both sides read completely) or `live` (only the records an event named).
    pub kind: &'static str,
    /// What its run is recorded as (`huitong sync runs`): one of [`run_kind`]; by default
    /// the plan's `kind`. Set with [`Plan::run_as`].
    #[serde(skip)]
    pub run_kind: &'static str,
    pub records_read: usize,
    pub targets: Vec<TargetPlan>,
    /// Source records, canonical (to store them on apply).
    #[serde(skip)]
    source_records: Vec<(&'static str, String, Arc<Canon>)>,
}

/// The kinds of sync run, as `huitong sync runs` lists them: what started the run.
pub mod run_kind {
    /// `huitong sync apply` (and the demo's apply).
    pub const APPLY: &str = "apply";
    /// A schedule's `reconcile <route>` job.
    pub const SCHEDULED: &str = "scheduled";
    /// A whole-route reconcile started by a vendor event (a new person or department, a
    /// deleted department, a scoped route, …).
    pub const RECONCILE: &str = "reconcile";
    /// The records one vendor event named, planned alone.
    pub const LIVE: &str = "live";
}

impl Plan {
    /// The same plan, its run recorded as `kind` (one of [`run_kind`]).
    pub fn run_as(mut self, kind: &'static str) -> Self {
        self.run_kind = kind;
        self
    }

    /// A plan with no targets yet, keeping the source's records (stored on apply).
    fn new(
        ctx: &RouteContext,
        kind: &'static str,
        records_read: usize,
        departments: &[Rec],
        people: &[Rec],
    ) -> Self {
        let keep =
            |entity: &'static str, r: &Rec| (entity, r.external_id.clone(), r.canonical.clone());
        Plan {
            route: ctx.route.name.clone(),
            source: ctx.source.name.clone(),
            kind,
            run_kind: kind,
            records_read,
            targets: Vec::new(),
            source_records: departments
                .iter()
                .map(|r| keep(DEPARTMENT, r))
                .chain(people.iter().map(|r| keep(PERSON, r)))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.iter().all(|t| t.steps.is_empty())
    }

    pub fn count(&self, action: Action) -> usize {
        self.targets
            .iter()
            .flat_map(|t| &t.steps)
            .filter(|s| s.action == action)
            .count()
    }
}

/// Everything [`plan`] and [`apply`] need, built from the configuration.
pub struct RouteContext {
    pub route: RouteConfig,
    pub source: Arc<Endpoint>,
    pub targets: Vec<Arc<Endpoint>>,
}

impl RouteContext {
    pub fn new(config: &Config, route: &str) -> Result<Self, SyncError> {
        let r = config
            .routes
            .get(route)
            .ok_or_else(|| SyncError::UnknownRoute(route.to_owned()))?
            .clone();
        let conn = |name: &str| {
            config
                .connectors
                .get(name)
                .ok_or_else(|| {
                    SyncError::Config(format!("route {route}: no connector named {name:?}"))
                })
                .and_then(connect::endpoint)
        };
        let source = conn(&r.source)?;
        let targets = r
            .targets
            .iter()
            .map(|t| conn(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RouteContext {
            route: r,
            source,
            targets,
        })
    }
}

fn depth_of(id: &str, parents: &HashMap<String, Option<String>>) -> Option<usize> {
    let mut d = 0;
    let mut cur = id.to_owned();
    let mut seen = HashSet::new();
    while let Some(Some(p)) = parents.get(&cur) {
        if !seen.insert(cur.clone()) {
            return None; // a cycle
        }
        d += 1;
        cur = p.clone();
    }
    parents.contains_key(&cur).then_some(d)
}

fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Fields both mappings really read from their vendor into the canonical model
/// (what a diff compares). A target field mapped from a constant — DingTalk's
/// `status: "active"`, as DingTalk has no disabled state — is not carried.
fn shared_fields(a: &Mapping, b: &Mapping) -> Vec<String> {
    let fa: HashSet<&str> = a
        .rules(Direction::ToCanonical)
        .iter()
        .map(|r| r.target())
        .collect();
    let mut out: Vec<String> = b
        .rules(Direction::ToCanonical)
        .iter()
        .filter(|r| r.expr().source().contains('.'))
        .map(|r| r.target())
        .filter(|f| fa.contains(f) && *f != "id")
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn normalise(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Array(items)) if items.is_empty() => Value::Null,
        Some(Value::Array(items)) => {
            let mut sorted = items.clone();
            sorted.sort_by_key(|x| x.to_string());
            Value::Array(sorted)
        }
        Some(Value::String(s)) if s.is_empty() => Value::Null,
        Some(other) => other.clone(),
    }
}

fn diff(fields: &[String], source: &Value, target: &Value) -> BTreeMap<String, Change> {
    let mut out = BTreeMap::new();
    for f in fields {
        let new = normalise(source.get(f));
        let old = normalise(target.get(f));
        if new != old {
            out.insert(f.clone(), Change { old, new });
        }
    }
    out
}

const PLACEMENT: &[&str] = &["parent_id", "department_ids", "main_department"];

/// The canonical fields a mapping really reads from its vendor (not from a constant), `id` aside:
/// what the vendor holds of a record we wrote.
fn carried_fields(m: &Mapping) -> Vec<String> {
    let mut out: Vec<String> = m
        .rules(Direction::ToCanonical)
        .iter()
        .filter(|r| r.expr().source().contains('.'))
        .map(|r| r.target().to_owned())
        .filter(|f| f != "id")
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The hash recorded when huitong writes `record` to a system whose mapping is `m`, and computed
/// again from what that system reports later: equal means the system holds exactly what huitong
/// wrote (an echo of our own write), compared on the fields it carries, normalised like a diff.
pub fn echo_hash(m: &Mapping, record: &Value) -> String {
    let projected: Map<String, Value> = carried_fields(m)
        .into_iter()
        .map(|f| {
            let v = normalise(record.get(&f));
            (f, v)
        })
        .collect();
    content_hash(&Value::Object(projected))
}

/// A resolver that notes which links a mapping asks for, answering like a target side that
/// knows none yet (placeholders), so the mapping runs the same course.
#[derive(Default)]
struct Requested(std::sync::Mutex<BTreeSet<(String, String)>>);

impl XrefResolver for Requested {
    fn to_canonical(&self, entity: &str, _system: &str, external_id: &str) -> Option<String> {
        if let Ok(mut m) = self.0.lock() {
            m.insert((entity.to_owned(), external_id.to_owned()));
        }
        Some(placeholder(entity, external_id))
    }

    fn to_external(&self, _entity: &str, _system: &str, _canonical_id: &str) -> Option<String> {
        None
    }
}

/// Read one record from a vendor and map it to canonical, resolving only the links it refers
/// to (map once to learn which, fetch those from the store, map again). `source`: references
/// not linked yet get derived ids, as in a plan's source side (else `?entity:ext`
/// placeholders). `None` when the vendor no longer has the record.
async fn read_canonical(
    store: &dyn Store,
    endpoint: &Endpoint,
    entity: &'static str,
    external_id: &str,
    source: bool,
) -> Result<Option<Rec>, SyncError> {
    let (vendor_entity, mapping) = match entity {
        PERSON => (Entity::User, &endpoint.person),
        _ => (Entity::Department, &endpoint.department),
    };
    let raw = endpoint
        .directory
        .get(vendor_entity, external_id)
        .await
        .map_err(|source| SyncError::Read {
            connector: endpoint.name.clone(),
            source,
        })?;
    let Some(raw) = raw else {
        return Ok(None);
    };
    let wanted = Requested::default();
    let _ = mapping.apply(Direction::ToCanonical, &raw, &wanted);
    let resolver = SideResolver::new(&endpoint.name, source);
    let requested = wanted.0.into_inner().unwrap_or_else(|p| p.into_inner());
    for (entity, external) in requested {
        if let Some(x) = store
            .find_by_external(&entity, &endpoint.name, &external)
            .await?
        {
            resolver.insert(&entity, &external, &x.canonical_id);
        }
    }
    let mapped = mapping
        .apply(Direction::ToCanonical, &raw, &resolver)
        .map_err(|e| SyncError::Mapping {
            connector: endpoint.name.clone(),
            entity,
            message: e.to_string(),
        })?;
    if mapped.skipped {
        return Ok(None);
    }
    Ok(Some(Rec {
        external_id: mapped.key.unwrap_or_else(|| external_id.to_owned()),
        canonical: Arc::new(Canon::new(&mapped.record)),
    }))
}

/// Whether `external_id` of `entity` in `endpoint` holds exactly what huitong last wrote there
/// (the hash recorded in its xref, so this survives a restart): the event it emitted about the
/// record is the echo of that write, and nothing needs to flow back.
pub async fn is_echo(
    store: &dyn Store,
    endpoint: &Endpoint,
    entity: &'static str,
    external_id: &str,
) -> Result<bool, SyncError> {
    let Some(xref) = store
        .find_by_external(entity, &endpoint.name, external_id)
        .await?
    else {
        return Ok(false);
    };
    let Some(written) = xref.last_written_hash else {
        return Ok(false);
    };
    let mapping = match entity {
        PERSON => &endpoint.person,
        _ => &endpoint.department,
    };
    Ok(read_canonical(store, endpoint, entity, external_id, false)
        .await?
        .is_some_and(|r| echo_hash(mapping, &r.canonical.value()) == written))
}

/// Person fields the vendors keep unique (WeCom and Feishu refuse a second person with the
/// same mobile or email; DingTalk the same mobile).
const UNIQUE_PERSON_FIELDS: [&str; 2] = ["mobile", "email"];

/// Canonical fields that refer to other records, with the entity they refer to.
const REFERENCES: &[(&str, &str)] = &[
    ("department_ids", DEPARTMENT),
    ("main_department", DEPARTMENT),
    ("leader_of", DEPARTMENT),
    ("manager", PERSON),
    ("parent_id", DEPARTMENT),
    ("leader_ids", PERSON),
];

/// Whether every record `record` refers to is linked in `system`.
async fn references_linked(
    store: &dyn Store,
    system: &str,
    record: &Value,
) -> Result<bool, SyncError> {
    for (field, entity) in REFERENCES {
        let ids: Vec<&str> = match record.get(*field) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for id in ids {
            if store.find_by_canonical(entity, system, id).await?.is_none() {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// How far back the live path counts its own removals against a route's safety threshold.
const LIVE_REMOVAL_WINDOW_MS: i64 = 3_600_000;

/// A plan for just the records a contact event names — the live path's fast way — or `None`
/// when that is not enough and the whole route must be reconciled. It covers records already
/// linked in the source and in every target, whose references (departments, parent, manager,
/// leaders) are linked there too: people and departments changed in place (renamed, moved,
/// new title, email or mobile), people who left (disabled, or deleted where the vendor cannot
/// disable) and people deleted in the source (removed per the deletion policy). Removals count
/// against the route's safety threshold together with the live path's removals of the last
/// hour; past it, or for anything else — a new person or department, a deleted department, a
/// route with a department scope, a conflict — it returns `None`: the full plan handles it,
/// with its match rules, safety threshold and scope. Reads one record per side instead of both
/// orgs.
pub async fn plan_records(
    ctx: &RouteContext,
    store: &dyn Store,
    named: &[(&'static str, String)],
) -> Result<Option<Plan>, SyncError> {
    let route = &ctx.route;
    if route.scope_root.is_some() || !route.scope_deny.is_empty() || named.is_empty() {
        return Ok(None);
    }
    let mut people: Vec<Rec> = Vec::new();
    let mut departments: Vec<Rec> = Vec::new();
    // People deleted in the source: their canonical ids.
    let mut gone: Vec<String> = Vec::new();
    for (entity, external) in named {
        let Some(link) = store
            .find_by_external(entity, &ctx.source.name, external)
            .await?
        else {
            return Ok(None); // new: first links need the whole target
        };
        let read = read_canonical(store, &ctx.source, entity, external, true).await?;
        match (*entity, read) {
            (PERSON, Some(p)) => {
                if !people.iter().any(|q| q.id() == p.id()) {
                    people.push(p);
                }
            }
            (PERSON, None) => gone.push(link.canonical_id),
            (_, Some(d)) if d.parent().is_some() => {
                if !departments.iter().any(|q| q.id() == d.id()) {
                    departments.push(d);
                }
            }
            _ => return Ok(None), // a root, or a department deleted
        }
    }
    let read = people.len() + departments.len();
    let mut plan = Plan::new(ctx, "live", read, &departments, &people);
    for target in &ctx.targets {
        let mut side = Side {
            departments: Vec::new(),
            people: Vec::new(),
            failures: Vec::new(),
            records_read: 0,
        };
        for (entity, src) in departments
            .iter()
            .map(|d| (DEPARTMENT, d))
            .chain(people.iter().map(|p| (PERSON, p)))
        {
            let Some(x) = store
                .find_by_canonical(entity, &target.name, src.id())
                .await?
            else {
                return Ok(None); // not in this target yet
            };
            if !references_linked(store, &target.name, &src.canonical.value()).await? {
                return Ok(None); // refers to a record the target lacks
            }
            let Some(t) = read_canonical(store, target, entity, &x.external_id, false).await?
            else {
                return Ok(None); // gone from the target
            };
            side.records_read += 1;
            if entity == PERSON {
                side.people.push(t);
            } else {
                side.departments.push(t);
            }
        }
        for id in &gone {
            if let Some(x) = store.find_by_canonical(PERSON, &target.name, id).await?
                && let Some(t) =
                    read_canonical(store, target, PERSON, &x.external_id, false).await?
            {
                side.records_read += 1;
                side.people.push(t);
            }
        }
        let resolver = SideResolver::new(&target.name, false);
        let mut tp = pair_and_diff(ctx, target, &resolver, side, &departments, &people)?;
        let in_place = tp.steps.iter().all(|s| {
            !s.link_first
                && match s.entity {
                    PERSON => s.action != Action::Create && s.action != Action::Link,
                    _ => matches!(s.action, Action::Update | Action::Move),
                }
        });
        if !tp.conflicts.is_empty() || !in_place {
            return Ok(None);
        }
        // A leaver the target can disable is an update of the status in a full plan; here it
        // counts as the removal it is.
        for s in &mut tp.steps {
            let leaving = s.entity == PERSON
                && s.changes
                    .get("status")
                    .is_some_and(|c| c.new.as_str().is_some_and(|v| v != "active"));
            if leaving && matches!(s.action, Action::Update | Action::Move) {
                s.action = Action::Disable;
                tp.removals += 1;
            }
        }
        if tp.removals > 0 {
            // The threshold holds across events: a mass removal arriving one event at a time
            // goes to the full plan, which refuses it unless forced.
            let linked = store.count_xrefs(PERSON, &target.name).await?;
            let since = now_ms() - LIVE_REMOVAL_WINDOW_MS;
            let recent: i64 = store
                .list_runs(Some(&route.name), 1000)
                .await?
                .iter()
                .filter(|r| r.kind == run_kind::LIVE && r.started_at_ms >= since)
                .flat_map(|r| ["disable", "delete"].map(|k| r.counts.get(k).copied().unwrap_or(0)))
                .sum();
            let percent = 100.0 * (recent + tp.removals as i64) as f64 / linked.max(1) as f64;
            if percent > route.safety_threshold_percent {
                tracing::info!(route = %route.name, target = %target.name, recent, removals = tp.removals,
                    linked, "live removals past the safety threshold: reconciling the route");
                return Ok(None);
            }
            tp.people_in_target = linked as usize;
        }
        plan.records_read += tp.records_read;
        plan.targets.push(tp);
    }
    Ok(Some(plan))
}

/// Read everything and compute the plan. Changes nothing.
pub async fn plan(ctx: &RouteContext, store: &dyn Store) -> Result<Plan, SyncError> {
    let src_resolver = SideResolver::load(store, &ctx.source.name, true).await?;
    let source = read_side(&ctx.source, &src_resolver).await?;
    let (departments, people, mut scope_conflicts) =
        scope(&ctx.route, source.departments, source.people);
    scope_conflicts.extend(source.failures);

    let mut plan = Plan::new(ctx, "reconcile", source.records_read, &departments, &people);
    for target in &ctx.targets {
        let mut tp = plan_target(ctx, target, store, &departments, &people).await?;
        tp.conflicts.extend(scope_conflicts.iter().cloned());
        plan.records_read += tp.records_read;
        plan.targets.push(tp);
    }
    Ok(plan)
}

/// Apply the route's department scope; report departments that hang in a cycle or off the tree.
fn scope(
    route: &RouteConfig,
    departments: Vec<Rec>,
    people: Vec<Rec>,
) -> (Vec<Rec>, Vec<Rec>, Vec<Conflict>) {
    let parents: HashMap<String, Option<String>> = departments
        .iter()
        .map(|d| (d.id().to_owned(), d.parent().map(str::to_owned)))
        .collect();
    let mut conflicts = Vec::new();
    let by_id: HashMap<&str, &Rec> = departments.iter().map(|d| (d.id(), d)).collect();
    let scope_root = route.scope_root.as_ref().and_then(|ext| {
        departments
            .iter()
            .find(|d| &d.external_id == ext)
            .map(|d| d.id().to_owned())
    });
    let mut keep: HashSet<String> = HashSet::new();
    for d in &departments {
        if depth_of(d.id(), &parents).is_none() {
            conflicts.push(Conflict {
                entity: DEPARTMENT,
                kind: "cycle_or_orphan".into(),
                detail: format!(
                    "department {:?} is not under the root (its parent chain loops or ends at a missing department)",
                    d.name()
                ),
                records: vec![d.external_id.clone()],
            });
            continue;
        }
        // Walk up: denied names exclude the subtree; the scope root must be an ancestor.
        let mut cur = Some(d.id().to_owned());
        let mut denied = false;
        let mut under_scope = scope_root.is_none() || d.parent().is_none();
        while let Some(id) = cur {
            let Some(rec) = by_id.get(id.as_str()) else {
                break;
            };
            if route.scope_deny.iter().any(|p| glob(p, &rec.name())) && rec.parent().is_some() {
                denied = true;
            }
            if scope_root.as_deref() == Some(id.as_str()) {
                under_scope = true;
            }
            cur = rec.parent().map(str::to_owned);
        }
        if !denied && under_scope {
            keep.insert(d.id().to_owned());
        }
    }
    let departments: Vec<Rec> = departments
        .into_iter()
        .filter(|d| keep.contains(d.id()))
        .collect();
    let people = people
        .into_iter()
        .filter_map(|mut p| {
            let mut record = p.canonical.value();
            let listed = record
                .get("department_ids")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ids: Vec<Value> = record
                .get("department_ids")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter(|v| v.as_str().is_some_and(|s| keep.contains(s)))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if ids.is_empty() {
                return None;
            }
            let main_ok = record
                .get("main_department")
                .and_then(Value::as_str)
                .is_some_and(|m| keep.contains(m));
            if main_ok && ids.len() == listed {
                return Some(p); // wholly in scope: unchanged
            }
            if let Some(obj) = record.as_object_mut() {
                if !main_ok {
                    obj.insert("main_department".into(), ids[0].clone());
                }
                obj.insert("department_ids".into(), Value::Array(ids));
            }
            p.canonical = Arc::new(Canon::new(&record));
            Some(p)
        })
        .collect();
    (departments, people, conflicts)
}

async fn plan_target(
    ctx: &RouteContext,
    target: &Endpoint,
    store: &dyn Store,
    departments: &[Rec],
    people: &[Rec],
) -> Result<TargetPlan, SyncError> {
    let resolver = SideResolver::load(store, &target.name, false).await?;
    let side = read_side(target, &resolver).await?;
    pair_and_diff(ctx, target, &resolver, side, departments, people)
}

/// Pair the source's records with the target side's (xrefs, then the root, department names
/// and match rules) and turn the differences into steps. `resolver` is the target's identity
/// map, which `side` was mapped with; pairs found here are added to it.
fn pair_and_diff(
    ctx: &RouteContext,
    target: &Endpoint,
    resolver: &SideResolver,
    side: Side,
    departments: &[Rec],
    people: &[Rec],
) -> Result<TargetPlan, SyncError> {
    let mut conflicts = side.failures.clone();
    let mut steps = Vec::new();

    // ---- pair departments: xref, then the root, then (name, parent) top-down.
    let src_parents: HashMap<String, Option<String>> = departments
        .iter()
        .map(|d| (d.id().to_owned(), d.parent().map(str::to_owned)))
        .collect();
    let mut dept_pairs: HashMap<String, usize> = HashMap::new(); // source canonical id -> target index
    let mut taken: HashSet<usize> = HashSet::new();
    for (i, t) in side.departments.iter().enumerate() {
        if !is_placeholder(t.id()) {
            dept_pairs.insert(t.id().to_owned(), i);
            taken.insert(i);
        }
    }
    let mut ordered: Vec<&Rec> = departments.iter().collect();
    ordered.sort_by_key(|d| depth_of(d.id(), &src_parents).unwrap_or(usize::MAX));
    // Target departments by (parent id, name), for first pairing without a scan per department.
    let mut by_parent_name: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (i, t) in side.departments.iter().enumerate() {
        if let Some(p) = t.parent() {
            by_parent_name
                .entry((p.to_owned(), t.name()))
                .or_default()
                .push(i);
        }
    }
    for d in &ordered {
        if dept_pairs.contains_key(d.id()) {
            continue;
        }
        let candidates: Vec<usize> = match d.parent() {
            None => side
                .departments
                .iter()
                .enumerate()
                .filter(|(i, t)| t.parent().is_none() && !taken.contains(i))
                .map(|(i, _)| i)
                .collect(),
            Some(parent) => {
                let Some(&tp) = dept_pairs.get(parent) else {
                    continue; // the parent will be created: so will this one
                };
                let parent_tid = side.departments[tp].id().to_owned();
                by_parent_name
                    .get(&(parent_tid, d.name()))
                    .map(|v| v.iter().copied().filter(|i| !taken.contains(i)).collect())
                    .unwrap_or_default()
            }
        };
        match candidates.as_slice() {
            [] => {}
            [one] => {
                resolver.insert(DEPARTMENT, &side.departments[*one].external_id, d.id());
                dept_pairs.insert(d.id().to_owned(), *one);
                taken.insert(*one);
                steps.push(link_step(DEPARTMENT, d, &side.departments[*one], 0));
            }
            many => conflicts.push(Conflict {
                entity: DEPARTMENT,
                kind: "ambiguous_match".into(),
                detail: format!(
                    "{} departments named {:?} under the same parent in {}",
                    many.len(),
                    d.name(),
                    target.name
                ),
                records: many
                    .iter()
                    .map(|i| side.departments[*i].external_id.clone())
                    .collect(),
            }),
        }
    }

    // ---- pair people: xref, then the match rules in order.
    let mut person_pairs: HashMap<String, usize> = HashMap::new();
    let mut ptaken: HashSet<usize> = HashSet::new();
    for (i, t) in side.people.iter().enumerate() {
        if !is_placeholder(t.id()) {
            person_pairs.insert(t.id().to_owned(), i);
            ptaken.insert(i);
        }
    }
    let mut blocked: HashSet<String> = HashSet::new();
    // The external ids in `blocked` (on any field).
    let mut blocked_ids: HashSet<String> = HashSet::new();
    // Match rules only matter while some source person is not linked yet (in a steady state
    // every one is, and the per-rule value indexes of a large org are not built at all).
    let all_linked = people.iter().all(|p| person_pairs.contains_key(p.id()));
    let rules: &[crate::config::MatchRule] = if all_linked {
        &[]
    } else {
        &ctx.route.match_rules
    };
    for rule in rules {
        let field = rule.field();
        let key = |r: &Rec| -> Option<String> {
            r.canonical
                .get(field)
                .filter(|s| !s.is_empty())
                .map(|s| s.to_lowercase())
        };
        // Two source people claiming one value: neither is matched on it.
        let mut src_count: HashMap<String, Vec<&Rec>> = HashMap::new();
        for p in people {
            if let Some(k) = key(p) {
                src_count.entry(k).or_default().push(p);
            }
        }
        let mut tgt_index: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, t) in side.people.iter().enumerate() {
            if let Some(k) = key(t) {
                tgt_index.entry(k).or_default().push(i);
            }
        }
        for (k, claimants) in &src_count {
            if claimants.len() > 1 {
                let unlinked: Vec<&&Rec> = claimants
                    .iter()
                    .filter(|p| !person_pairs.contains_key(p.id()))
                    .collect();
                if !unlinked.is_empty() && tgt_index.contains_key(k) {
                    let ids: Vec<String> =
                        claimants.iter().map(|p| p.external_id.clone()).collect();
                    if ids.iter().all(|id| {
                        blocked_ids.insert(id.clone());
                        blocked.insert(format!("{field}:{id}"))
                    }) {
                        conflicts.push(Conflict {
                            entity: PERSON,
                            kind: format!("duplicate_{field}"),
                            detail: format!(
                                "{} people in {} share the {field} {k:?}",
                                claimants.len(),
                                ctx.source.name
                            ),
                            records: ids,
                        });
                    }
                }
            }
        }
        for p in people {
            if person_pairs.contains_key(p.id()) || blocked_ids.contains(&p.external_id) {
                continue;
            }
            let Some(k) = key(p) else { continue };
            if src_count.get(&k).is_some_and(|c| c.len() > 1) {
                continue;
            }
            let candidates: Vec<usize> = tgt_index
                .get(&k)
                .map(|v| v.iter().copied().filter(|i| !ptaken.contains(i)).collect())
                .unwrap_or_default();
            match candidates.as_slice() {
                [] => {}
                [one] => {
                    resolver.insert(PERSON, &side.people[*one].external_id, p.id());
                    person_pairs.insert(p.id().to_owned(), *one);
                    ptaken.insert(*one);
                    steps.push(link_step(PERSON, p, &side.people[*one], 0));
                }
                many => {
                    blocked.insert(format!("{field}:{}", p.external_id));
                    blocked_ids.insert(p.external_id.clone());
                    conflicts.push(Conflict {
                        entity: PERSON,
                        kind: "ambiguous_match".into(),
                        detail: format!(
                            "{} people in {} have the {field} {k:?}",
                            many.len(),
                            target.name
                        ),
                        records: many
                            .iter()
                            .map(|i| side.people[*i].external_id.clone())
                            .collect(),
                    });
                }
            }
        }
    }
    let conflicted: HashSet<String> = blocked
        .iter()
        .filter_map(|b| b.split_once(':').map(|(_, id)| id.to_owned()))
        .collect();

    // Re-map the target with the pairs known, so its references use canonical ids.
    let records_read = side.records_read;
    // The target's references to records paired just now still read `?entity:external`:
    // resolve them (what mapping the vendor records again would give, without keeping them).
    let relink = |recs: Vec<Rec>| -> Vec<Rec> {
        recs.into_iter()
            .map(|mut r| {
                if r.canonical.json.contains("\"?") {
                    let mut v = r.canonical.value();
                    if resolve_placeholders(&mut v, resolver) {
                        r.canonical = Arc::new(Canon::new(&v));
                    }
                }
                r
            })
            .collect()
    };
    let t_depts = relink(side.departments);
    let t_people = relink(side.people);
    let t_dept_by_id: HashMap<&str, &Rec> = t_depts.iter().map(|r| (r.id(), r)).collect();
    let t_person_by_id: HashMap<&str, &Rec> = t_people.iter().map(|r| (r.id(), r)).collect();

    // Fields another system owns are not this route's to write (system of record).
    let route = &ctx.route;
    let dept_fields: Vec<String> = shared_fields(&ctx.source.department, &target.department)
        .into_iter()
        .filter(|f| route.source_owns(DEPARTMENT, Some(f)))
        .collect();
    let person_fields: Vec<String> = shared_fields(&ctx.source.person, &target.person)
        .into_iter()
        .filter(|f| route.source_owns(PERSON, Some(f)))
        .collect();
    let owns_depts = route.source_owns(DEPARTMENT, None);
    let owns_people = route.source_owns(PERSON, None);
    // Link steps carry the diff too (a first match can differ).
    let mut link_index: HashMap<(String, &'static str), usize> = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        link_index.insert((s.canonical_id.clone(), s.entity), i);
    }

    // Departments the target cannot hold (deeper than its vendor allows) are left out, with
    // their people, as conflicts — not attempted and failed at apply.
    let max_levels = target.max_department_levels();
    let mut too_deep: HashSet<&str> = HashSet::new();
    for d in &ordered {
        let depth = depth_of(d.id(), &src_parents).unwrap_or(0);
        if let Some(max) = max_levels
            && depth >= max
            && !t_dept_by_id.contains_key(d.id())
        {
            too_deep.insert(d.id());
            conflicts.push(Conflict {
                entity: DEPARTMENT,
                kind: "too_deep".into(),
                detail: format!(
                    "department {:?} would be at level {} in {}, which allows {max} levels: it is left out with its people",
                    d.name(),
                    depth + 1,
                    target.name
                ),
                records: vec![d.external_id.clone()],
            });
        }
    }
    // A vendor with no disabled state (DingTalk) can only remove a leaver.
    let can_disable = person_fields.iter().any(|f| f == "status");
    // People the target will not hold (in conflict, only in departments it cannot hold, or
    // leavers where it cannot disable): a reference to one (a manager, a leader still named in
    // the source) cannot be written, so it is not a change.
    let unreachable: HashSet<&str> = people
        .iter()
        .filter(|p| {
            !t_person_by_id.contains_key(p.id())
                && (conflicted.contains(&p.external_id)
                    || without_departments(p, &too_deep).1
                    || (!can_disable && p.canonical.get("status").is_some_and(|s| s != "active")))
        })
        .map(Rec::id)
        .collect();
    for d in &ordered {
        if too_deep.contains(d.id()) {
            continue;
        }
        let depth = depth_of(d.id(), &src_parents).unwrap_or(0);
        match t_dept_by_id.get(d.id()) {
            Some(t) => {
                if d.parent().is_none() {
                    continue; // roots are paired, never rewritten
                }
                let mut changes = diff(&dept_fields, &d.canonical.value(), &t.canonical.value());
                drop_unreachable(&mut changes, &unreachable);
                let record = owned_record(route, DEPARTMENT, d, t);
                upsert_step(
                    &mut steps,
                    &link_index,
                    DEPARTMENT,
                    d,
                    Some(t),
                    depth,
                    changes,
                    record,
                );
            }
            None if d.parent().is_none() => conflicts.push(Conflict {
                entity: DEPARTMENT,
                kind: "no_root".into(),
                detail: format!(
                    "{} has no root department to pair with {}'s",
                    target.name, ctx.source.name
                ),
                records: vec![d.external_id.clone()],
            }),
            None if !owns_depts => {} // another system owns departments
            None => steps.push(Step {
                action: Action::Create,
                entity: DEPARTMENT,
                canonical_id: d.id().to_owned(),
                name: d.name(),
                target_id: None,
                source_id: Some(d.external_id.clone()),
                depth,
                link_first: false,
                changes: BTreeMap::new(),
                record: d.canonical.clone(),
            }),
        }
    }
    let manager_depth = manager_depths(people);
    // Values vendors keep unique among their people: a create repeating one that another
    // source person or a target person already holds would be refused — a conflict instead.
    let unique_value = |r: &Rec, field: &str| -> Option<String> {
        r.canonical
            .get(field)
            .filter(|v| !v.is_empty())
            .map(str::to_lowercase)
    };
    let mut holders: HashMap<(&str, String), usize> = HashMap::new();
    // (Inactive source people hold nothing in a target that cannot disable: never created.)
    let held = people
        .iter()
        .filter(|r| can_disable || r.canonical.get("status") == Some("active"))
        .chain(t_people.iter());
    for field in UNIQUE_PERSON_FIELDS {
        for r in held.clone() {
            if let Some(v) = unique_value(r, field) {
                *holders.entry((field, v)).or_default() += 1;
            }
        }
    }
    let mut clashes: BTreeMap<(&str, String), Vec<String>> = BTreeMap::new();
    let mut left_out: Vec<String> = Vec::new();
    let mut removals = 0;
    for p in people {
        if conflicted.contains(&p.external_id) {
            continue;
        }
        // A person also in a department this target cannot hold is synced without it.
        let (fitted, only_too_deep) = without_departments(p, &too_deep);
        if only_too_deep {
            if !t_person_by_id.contains_key(p.id()) && owns_people {
                left_out.push(p.external_id.clone());
            }
            continue;
        }
        let p = fitted.as_ref().unwrap_or(p);
        let inactive = p.canonical.get("status").is_some_and(|s| s != "active");
        if inactive && !can_disable {
            // Not created; removed if it was there.
            if let Some(t) = t_person_by_id.get(p.id())
                && owns_people
            {
                removals += 1;
                steps.push(Step {
                    action: Action::Delete,
                    entity: PERSON,
                    canonical_id: p.id().to_owned(),
                    name: p.name(),
                    target_id: Some(t.external_id.clone()),
                    source_id: Some(p.external_id.clone()),
                    depth: 0,
                    link_first: false,
                    changes: BTreeMap::new(),
                    record: t.canonical.clone(),
                });
            }
            continue;
        }
        match t_person_by_id.get(p.id()) {
            Some(t) => {
                let mut changes = diff(&person_fields, &p.canonical.value(), &t.canonical.value());
                drop_unreachable(&mut changes, &unreachable);
                let depth = manager_depth.get(p.id()).copied().unwrap_or(0);
                let record = owned_record(route, PERSON, p, t);
                upsert_step(
                    &mut steps,
                    &link_index,
                    PERSON,
                    p,
                    Some(t),
                    depth,
                    changes,
                    record,
                );
            }
            None if !owns_people => {} // another system owns people
            None => {
                let clash = UNIQUE_PERSON_FIELDS.iter().find_map(|field| {
                    let v = unique_value(p, field)?;
                    (holders.get(&(*field, v.clone())).copied().unwrap_or(0) > 1)
                        .then_some((*field, v))
                });
                if let Some(key) = clash {
                    clashes.entry(key).or_default().push(p.external_id.clone());
                    continue;
                }
                steps.push(Step {
                    action: Action::Create,
                    entity: PERSON,
                    canonical_id: p.id().to_owned(),
                    name: p.name(),
                    target_id: None,
                    source_id: Some(p.external_id.clone()),
                    depth: manager_depth.get(p.id()).copied().unwrap_or(0),
                    link_first: false,
                    changes: BTreeMap::new(),
                    record: p.canonical.clone(),
                })
            }
        }
    }
    for ((field, value), records) in clashes {
        conflicts.push(Conflict {
            entity: PERSON,
            kind: format!("duplicate_{field}"),
            detail: format!(
                "the {field} {value:?} is held by someone else in {} or {}: not created (the vendor would refuse it)",
                ctx.source.name, target.name
            ),
            records,
        });
    }

    if !left_out.is_empty() {
        conflicts.push(Conflict {
            entity: PERSON,
            kind: "too_deep".into(),
            detail: format!(
                "{} people only in departments {} cannot hold are left out",
                left_out.len(),
                target.name
            ),
            records: left_out,
        });
    }

    // ---- removals: linked target records whose canonical record left the source.
    let src_people: HashSet<&str> = people.iter().map(Rec::id).collect();
    let src_depts: HashSet<&str> = departments.iter().map(Rec::id).collect();
    let removal = if ctx.route.deletion == Deletion::Delete || !can_disable {
        Action::Delete
    } else {
        Action::Disable
    };
    for t in &t_people {
        if is_placeholder(t.id()) || src_people.contains(t.id()) || !owns_people {
            continue;
        }
        let already = t.canonical.get("status") == Some("disabled");
        if removal == Action::Disable && already {
            continue;
        }
        removals += 1;
        // The leaver keeps their record but leads nothing any more (vendors such as WeCom
        // set department leadership from the person's own record).
        let mut record = t.canonical.value();
        if let Some(o) = record.as_object_mut() {
            o.insert("status".into(), json!("disabled"));
            o.insert("leader_of".into(), json!([]));
        }
        let record = Arc::new(Canon::new(&record));
        steps.push(Step {
            action: removal,
            entity: PERSON,
            canonical_id: t.id().to_owned(),
            name: t.name(),
            target_id: Some(t.external_id.clone()),
            source_id: None,
            depth: 0,
            link_first: false,
            changes: BTreeMap::new(),
            record,
        });
    }
    if ctx.route.deletion == Deletion::Delete && owns_depts {
        let t_parents: HashMap<String, Option<String>> = t_depts
            .iter()
            .map(|d| (d.id().to_owned(), d.parent().map(str::to_owned)))
            .collect();
        for t in &t_depts {
            if is_placeholder(t.id()) || src_depts.contains(t.id()) || t.parent().is_none() {
                continue;
            }
            steps.push(Step {
                action: Action::Delete,
                entity: DEPARTMENT,
                canonical_id: t.id().to_owned(),
                name: t.name(),
                target_id: Some(t.external_id.clone()),
                source_id: None,
                depth: depth_of(t.id(), &t_parents).unwrap_or(0),
                link_first: false,
                changes: BTreeMap::new(),
                record: t.canonical.clone(),
            });
        }
    }

    steps.sort_by_key(order_key);
    Ok(TargetPlan {
        target: target.name.clone(),
        people_in_target: t_people.len(),
        removals,
        records_read,
        steps,
        conflicts,
    })
}

/// Takes references to `unreachable` records out of the new side of `changes` (they cannot be
/// written), and drops a change that is then no change at all.
fn drop_unreachable(changes: &mut BTreeMap<String, Change>, unreachable: &HashSet<&str>) {
    if unreachable.is_empty() {
        return;
    }
    let reachable = |v: &Value| !v.as_str().is_some_and(|id| unreachable.contains(id));
    changes.retain(|_, c| {
        let new = match &c.new {
            Value::String(_) if !reachable(&c.new) => Value::Null,
            Value::Array(items) => {
                let kept: Vec<Value> = items.iter().filter(|v| reachable(v)).cloned().collect();
                if kept.is_empty() {
                    Value::Null
                } else {
                    Value::Array(kept)
                }
            }
            other => other.clone(),
        };
        c.new = new;
        c.new != c.old
    });
}

/// `p` without the departments in `drop` (and its main department moved to one it keeps):
/// `(Some(fitted), false)` when some were dropped, `(None, true)` when all of them would be,
/// `(None, false)` when none is in `drop`.
fn without_departments(p: &Rec, drop: &HashSet<&str>) -> (Option<Rec>, bool) {
    if drop.is_empty() {
        return (None, false);
    }
    let mut record = p.canonical.value();
    let Some(ids) = record.get("department_ids").and_then(Value::as_array) else {
        return (None, false);
    };
    let kept: Vec<Value> = ids
        .iter()
        .filter(|i| !i.as_str().is_some_and(|i| drop.contains(i)))
        .cloned()
        .collect();
    if kept.len() == ids.len() {
        return (None, false);
    }
    if kept.is_empty() {
        return (None, true);
    }
    if let Some(o) = record.as_object_mut() {
        let main_kept = o
            .get("main_department")
            .and_then(Value::as_str)
            .is_some_and(|m| !drop.contains(m));
        if !main_kept {
            o.insert("main_department".into(), kept[0].clone());
        }
        o.insert("department_ids".into(), Value::Array(kept));
    }
    let fitted = Rec {
        external_id: p.external_id.clone(),
        canonical: Arc::new(Canon::new(&record)),
    };
    (Some(fitted), false)
}

/// Each person's depth in the manager chain (a loop or a missing manager ends the chain).
fn manager_depths(people: &[Rec]) -> HashMap<&str, usize> {
    let manager: HashMap<&str, &str> = people
        .iter()
        .filter_map(|p| p.canonical.get("manager").map(|m| (p.id(), m)))
        .collect();
    let mut depth: HashMap<&str, usize> = HashMap::with_capacity(people.len());
    for p in people {
        let mut chain = Vec::new();
        let mut cur = p.id();
        let base = loop {
            if let Some(&d) = depth.get(cur) {
                break d;
            }
            if chain.contains(&cur) || chain.len() > 64 {
                break 0;
            }
            chain.push(cur);
            match manager.get(cur) {
                Some(m) => cur = m,
                None => break 0,
            }
        };
        // The chain's last element reports to nobody known (or closes a loop): depth 0.
        let mut d = base;
        for (i, id) in chain.iter().rev().enumerate() {
            if i > 0 || depth.contains_key(cur) {
                d += 1;
            }
            depth.insert(id, d);
        }
    }
    depth
}

fn link_step(entity: &'static str, source: &Rec, target: &Rec, depth: usize) -> Step {
    Step {
        action: Action::Link,
        entity,
        canonical_id: source.id().to_owned(),
        name: source.name(),
        target_id: Some(target.external_id.clone()),
        source_id: Some(source.external_id.clone()),
        depth,
        link_first: true,
        changes: BTreeMap::new(),
        record: source.canonical.clone(),
    }
}

/// What a write of `source` into `target` should leave there: the source's record, except the
/// fields another system owns (system of record), which keep the target's current values.
fn owned_record(
    route: &RouteConfig,
    entity: &'static str,
    source: &Rec,
    target: &Rec,
) -> Arc<Canon> {
    if !route
        .system_of_record
        .keys()
        .any(|k| k.split('.').next() == Some(entity))
    {
        return source.canonical.clone();
    }
    let (src, tgt) = (source.canonical.value(), target.canonical.value());
    let keys: BTreeSet<&String> = [&src, &tgt]
        .iter()
        .filter_map(|v| v.as_object())
        .flat_map(|o| o.keys())
        .filter(|k| k.as_str() != "id" && !route.source_owns(entity, Some(k)))
        .collect();
    if keys.is_empty() {
        return source.canonical.clone();
    }
    let mut record = src.clone();
    if let Some(o) = record.as_object_mut() {
        for k in keys {
            match tgt.get(k) {
                Some(v) => o.insert(k.clone(), v.clone()),
                None => o.remove(k),
            };
        }
    }
    Arc::new(Canon::new(&record))
}

/// Turn a pair's diff into an update/move (folding it into the pair's link step, if any).
#[allow(clippy::too_many_arguments)]
fn upsert_step(
    steps: &mut Vec<Step>,
    link_index: &HashMap<(String, &'static str), usize>,
    entity: &'static str,
    source: &Rec,
    target: Option<&&Rec>,
    depth: usize,
    changes: BTreeMap<String, Change>,
    record: Arc<Canon>,
) {
    let moved = changes.keys().any(|k| PLACEMENT.contains(&k.as_str()));
    let action = if moved { Action::Move } else { Action::Update };
    if let Some(&i) = link_index.get(&(source.id().to_owned(), entity)) {
        let s = &mut steps[i];
        s.depth = depth;
        if !changes.is_empty() {
            s.action = action;
            s.changes = changes;
            s.record = record;
        }
        return;
    }
    if changes.is_empty() {
        return;
    }
    steps.push(Step {
        action,
        entity,
        canonical_id: source.id().to_owned(),
        name: source.name(),
        target_id: target.map(|t| t.external_id.clone()),
        source_id: Some(source.external_id.clone()),
        depth,
        link_first: false,
        changes,
        record,
    });
}

/// Dependency order: departments top-down, then people, then removals of
/// people, then departments bottom-up (the waves of [`apply`]).
fn order_key(s: &Step) -> (u8, i64, String) {
    let (class, depth) = apply::wave_of(s);
    (class, depth, s.canonical_id.clone())
}

/// The plan as a human table.
pub fn render_plan(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "route {}: {} -> {}",
        plan.route,
        plan.source,
        plan.targets
            .iter()
            .map(|t| t.target.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for t in &plan.targets {
        let mut counts: BTreeMap<Action, usize> = BTreeMap::new();
        for s in &t.steps {
            *counts.entry(s.action).or_default() += 1;
        }
        let summary: Vec<String> = counts
            .iter()
            .map(|(a, n)| format!("{n} {}", format!("{a:?}").to_lowercase()))
            .collect();
        let _ = writeln!(
            out,
            "\n== {}: {} ({} conflicts)",
            t.target,
            if summary.is_empty() {
                "nothing to do".to_owned()
            } else {
                summary.join(", ")
            },
            t.conflicts.len()
        );
        for s in &t.steps {
            // Padded by display width: Chinese names take two columns a character.
            let line = format!(
                "  {:<7} {:<10} {} {}",
                format!("{:?}", s.action).to_lowercase(),
                s.entity,
                crate::text::pad(&s.name, 24),
                s.target_id.as_deref().unwrap_or("")
            );
            let _ = writeln!(out, "{}", line.trim_end());
            for (field, c) in &s.changes {
                let _ = writeln!(out, "          {field}: {} -> {}", c.old, c.new);
            }
        }
        for c in &t.conflicts {
            let _ = writeln!(
                out,
                "  CONFLICT {} {}: {} [{}]",
                c.entity,
                c.kind,
                c.detail,
                c.records.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_table_pads_chinese_names_by_display_width() {
        let step = |name: &str, id: &str| Step {
            action: Action::Update,
            entity: PERSON,
            canonical_id: format!("p-{id}"),
            name: name.to_owned(),
            target_id: Some(id.to_owned()),
            source_id: None,
            depth: 0,
            link_first: false,
            changes: BTreeMap::new(),
            record: Arc::new(Canon::new(&json!({}))),
        };
        let plan = Plan {
            route: "org".into(),
            source: "hq".into(),
            kind: "reconcile",
            run_kind: "reconcile",
            records_read: 0,
            targets: vec![TargetPlan {
                target: "sub".into(),
                steps: vec![
                    step("Lin Xin", "u1"),
                    step("林新", "u2"),
                    step("欧阳娜娜 Nana", "u3"),
                ],
                conflicts: vec![],
                people_in_target: 3,
                removals: 0,
                records_read: 0,
            }],
            source_records: vec![],
        };
        let table = render_plan(&plan);
        let columns: Vec<usize> = table
            .lines()
            .filter(|l| l.starts_with("  update"))
            .map(|l| crate::text::width(&l[..l.rfind(' ').unwrap_or(0)]))
            .collect();
        assert_eq!(columns.len(), 3, "{table}");
        assert!(
            columns.iter().all(|c| *c == columns[0]),
            "{columns:?}\n{table}"
        );
    }

    #[test]
    fn placeholders_paired_since_mapping_are_resolved_and_others_kept() {
        let r = SideResolver::new("sub", false);
        r.insert(DEPARTMENT, "7", "d-seven");
        r.insert(PERSON, "u1", "p-one");
        let mut v = json!({"id": "?person:u1", "department_ids": ["?department:7", "?department:8"],
            "manager": "?person:u9", "name": "?odd:name", "leader_of": []});
        assert!(resolve_placeholders(&mut v, &r));
        assert_eq!(
            v,
            json!({"id": "p-one", "department_ids": ["d-seven", "?department:8"],
                "manager": "?person:u9", "name": "?odd:name", "leader_of": []})
        );
        assert!(!resolve_placeholders(&mut v, &r), "nothing left to resolve");
        let c = Canon::new(&v);
        assert_eq!(c.get("id"), Some("p-one"));
        assert_eq!(c.get("department_ids"), None, "only string hot fields");
        assert_eq!(c.value(), v);
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(
            derived_id("hq", PERSON, "ou_1"),
            derived_id("hq", PERSON, "ou_1")
        );
        assert_ne!(
            derived_id("hq", PERSON, "ou_1"),
            derived_id("hq", PERSON, "ou_2")
        );
        assert_ne!(
            derived_id("hq", PERSON, "1"),
            derived_id("hq", DEPARTMENT, "1")
        );
        assert!(derived_id("hq", PERSON, "x").starts_with("p-"));
    }

    #[test]
    fn glob_patterns() {
        assert!(glob("外包*", "外包一组"));
        assert!(glob("*test*", "a-test-b"));
        assert!(!glob("外包*", "研发部"));
        assert!(glob("exact", "exact"));
    }

    #[test]
    fn diff_ignores_order_and_empty_values() {
        let f = vec![
            "department_ids".to_owned(),
            "title".to_owned(),
            "email".to_owned(),
        ];
        let a = json!({"department_ids": ["d1", "d2"], "title": "", "email": "a@x"});
        let b = json!({"department_ids": ["d2", "d1"], "email": "b@x"});
        let d = diff(&f, &a, &b);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d["email"],
            Change {
                old: json!("b@x"),
                new: json!("a@x")
            }
        );
    }
}
