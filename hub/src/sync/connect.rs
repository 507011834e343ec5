//! From a `[connectors.NAME]` table to a live connector and its mappings.

use std::sync::{Arc, OnceLock};

use huitong_mappings::Mapping;

use super::SyncError;
use crate::config::{ConnectorConfig, ConnectorKind};

pub use huitong_connectors::registry::Directory;

/// One side of a route: a connector with the mappings of its kind.
pub struct Endpoint {
    pub name: String,
    pub kind: ConnectorKind,
    pub directory: Arc<dyn Directory>,
    pub department: Mapping,
    pub person: Mapping,
}

impl Endpoint {
    /// How many levels of departments the vendor allows, the root being level 1.
    pub fn max_department_levels(&self) -> Option<usize> {
        self.kind.max_department_levels()
    }

    /// Whether the vendor's user create/update sets department leadership from the person's
    /// record (WeCom `is_leader_in_dept`; DingTalk reports `leader_in_dept` but does not take
    /// it on write, Feishu keeps leaders on the department): a department's leaders then
    /// arrive with their own people, and need no second write of the department.
    pub fn person_carries_leadership(&self) -> bool {
        self.kind.person_carries_leadership()
    }

    /// The vendor's root department id.
    pub fn root_id(&self) -> &'static str {
        self.kind.root_department_id()
    }
}

/// A connector's live instance, shared by every clone of the configuration it was loaded
/// with: built on first use, then the same directory (limiter, token cache) for every route,
/// deliver consumer and live event of the process.
#[derive(Clone, Default)]
pub struct Instance(Arc<OnceLock<Arc<Endpoint>>>);

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Instance(built)"
        } else {
            "Instance(not built)"
        })
    }
}

fn shipped(kind: ConnectorKind, entity: &str) -> Result<Mapping, SyncError> {
    match huitong_mappings::shipped::load(kind.as_str(), entity) {
        Some(Ok(m)) => Ok(m),
        Some(Err(e)) => Err(SyncError::Config(format!(
            "shipped {} {entity} mapping: {e}",
            kind.as_str()
        ))),
        None => Err(SyncError::Config(format!(
            "no shipped {} {entity} mapping",
            kind.as_str()
        ))),
    }
}

/// The connector named by `c`: its one live instance in this process (no network call yet).
pub fn endpoint(c: &ConnectorConfig) -> Result<Arc<Endpoint>, SyncError> {
    if let Some(e) = c.instance.0.get() {
        return Ok(e.clone());
    }
    let directory = c
        .kind
        .directory(&c.vendor_settings())
        .map_err(|e| SyncError::Config(format!("connector {}: {}", c.name, e.message())))?;
    let built = Arc::new(Endpoint {
        name: c.name.clone(),
        kind: c.kind,
        directory,
        department: shipped(c.kind, "department")?,
        person: shipped(c.kind, "person")?,
    });
    // Two first uses at once: one instance wins, the other is dropped before any call.
    let _ = c.instance.0.set(built.clone());
    Ok(c.instance.0.get().cloned().unwrap_or(built))
}
