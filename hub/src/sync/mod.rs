//! Org-chart reconcile: read a route's source and targets completely, map both
//! sides to the canonical model, pair records (links first, then the route's
//! match rules), and plan creates, updates, moves and removals — or conflicts it
//! will not guess about. [`apply`] carries a plan out in dependency order and
//! records every link and written hash, so an interrupted apply run again
//! finishes the work without creating anything twice.
//!
//! The seams, in the order a plan crosses them:
//! - [`read`]: a side's records mapped to canonical ([`canon`]: compact records;
//!   [`resolve`]: the side's identity links as the mappings' resolver),
//! - [`scope`]: the route's department scope over the source,
//! - [`pair`]: which target record each source record is (pure),
//! - [`diff`]: the fields compared and their changes; the echo hash (pure),
//! - [`target`]: one target's steps and conflicts from both sides (pure),
//! - [`plan`]: the plan types and the reads behind a reconcile or a live change,
//! - [`apply`]: the plan through the queue; [`echo`]: an event that is our own write;
//!   [`render`]: the plan as a table; [`reconcile`]: plan + apply of a whole route.
//!
//! Identity: a source record's canonical id is its existing xref, or an id
//! derived from (source connector, entity, external id) — the same on every run,
//! so a crash between a vendor write and its xref cannot fork identities.

pub mod apply;
pub mod canon;
pub mod connect;
pub mod diff;
pub mod echo;
pub mod pair;
pub mod plan;
pub mod read;
pub mod reconcile;
pub mod render;
pub mod resolve;
pub mod scope;
pub mod target;
#[cfg(test)]
mod tests;

use huitong_connectors::ConnectorError;

pub use crate::model::{Action, Entity, WireStep};
use crate::store::StoreError;
pub use apply::{ApplyReport, Progress, StepHandler, apply, apply_until};
pub use canon::{Canon, Rec, derived_id};
pub use connect::{Directory, Endpoint, Mappings};
pub use diff::{Change, echo_hash};
pub use echo::is_echo;
pub use plan::{
    Conflict, ConflictKind, Plan, PlanKind, RouteContext, RunKind, Step, TargetPlan, plan,
    plan_records, run_kind,
};
pub use reconcile::{ReconcileError, Reconciled, reconcile};
pub use render::render_plan;
pub use resolve::SideResolver;

/// The canonical entities of the org chart, by their former names.
pub const DEPARTMENT: Entity = Entity::Department;
pub const PERSON: Entity = Entity::Person;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no route named {0:?} is configured")]
    UnknownRoute(String),
    /// The configuration cannot be used as it is (a connector or route that does not build).
    #[error("{0}")]
    Config(String),
    /// A connector's mapping file cannot be loaded or compiled.
    #[error("connector {connector}: {entity} mapping: {message}")]
    MappingFile {
        connector: String,
        entity: Entity,
        message: String,
    },
    #[error("reading {connector}: {source}")]
    Read {
        connector: String,
        #[source]
        source: ConnectorError,
    },
    /// A record could not be mapped (to canonical, or for its target).
    #[error("mapping a {entity} of {connector}: {message}")]
    Mapping {
        connector: String,
        entity: Entity,
        message: String,
    },
    /// A link the store holds contradicts the one a step would record.
    #[error("{system} {entity} {external_id} is already linked to {linked}, not {wanted}")]
    ExternalLinked {
        system: String,
        entity: Entity,
        external_id: String,
        linked: String,
        wanted: String,
    },
    #[error("{canonical_id} is already linked to {system} {entity} {linked}, not {wanted}")]
    CanonicalLinked {
        system: String,
        entity: Entity,
        canonical_id: String,
        linked: String,
        wanted: String,
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
