//! Reading a side: every record of a connector (or one record), mapped to canonical with
//! that side's resolver. A record that fails to map is reported as a conflict, never guessed.

use std::collections::HashSet;

use futures_util::TryStreamExt;
use huitong_connectors::capability::ListQuery;
use huitong_mappings::{Direction, Mapping};
use serde_json::Value;

use super::SyncError;
use super::canon::Rec;
use super::connect::{Endpoint, Mappings};
use super::plan::{Conflict, ConflictKind};
use super::resolve::{Requested, SideResolver};
use crate::model::Entity;
use crate::store::Store;

/// One side of a route as read: its records mapped to canonical, and what would not map.
#[derive(Debug, Default)]
pub struct Side {
    pub departments: Vec<Rec>,
    pub people: Vec<Rec>,
    pub failures: Vec<Conflict>,
    /// The external ids of records that failed to map (where their key could be read): the
    /// planner leaves what they are linked to alone instead of creating or removing it.
    pub unmapped: Vec<(Entity, String)>,
    /// Records read (listed or fetched), for reporting.
    pub records_read: usize,
}

impl Side {
    pub fn push(&mut self, entity: Entity, rec: Rec) {
        match entity {
            Entity::Department => self.departments.push(rec),
            Entity::Person => self.people.push(rec),
        }
    }
}

fn read_error(endpoint: &Endpoint) -> impl Fn(huitong_connectors::ConnectorError) -> SyncError {
    let connector = endpoint.name.clone();
    move |source| SyncError::Read {
        connector: connector.clone(),
        source,
    }
}

async fn read_raw(endpoint: &Endpoint, entity: Entity) -> Result<Vec<Value>, SyncError> {
    let query = ListQuery {
        recursive: true,
        complete: true,
        ..ListQuery::default()
    };
    endpoint
        .directory
        .list(entity.vendor(), query)
        .try_collect()
        .await
        .map_err(read_error(endpoint))
}

/// Maps records one by one as they arrive; one that fails to map is reported (never guessed)
/// and left out.
pub(super) struct Mapper<'a> {
    connector: &'a str,
    mapping: &'a Mapping,
    entity: Entity,
    resolver: &'a SideResolver,
    seen: HashSet<String>,
    pub(super) out: Vec<Rec>,
    pub(super) unmapped: Vec<(Entity, String)>,
}

impl<'a> Mapper<'a> {
    pub(super) fn new(
        connector: &'a str,
        mapping: &'a Mapping,
        entity: Entity,
        resolver: &'a SideResolver,
    ) -> Self {
        Mapper {
            connector,
            mapping,
            entity,
            resolver,
            seen: HashSet::new(),
            out: Vec::new(),
            unmapped: Vec::new(),
        }
    }

    pub(super) fn push(
        &mut self,
        raw: Value,
        failures: &mut Vec<Conflict>,
    ) -> Result<(), SyncError> {
        let mapped = match self
            .mapping
            .apply(Direction::ToCanonical, &raw, self.resolver)
        {
            Ok(m) => m,
            Err(e) => {
                let key = self.mapping.key_of(&raw);
                if let Some(k) = &key {
                    self.unmapped.push((self.entity, k.clone()));
                }
                failures.push(Conflict {
                    entity: self.entity,
                    kind: ConflictKind::MappingError,
                    detail: format!("{}: {e}", self.connector),
                    records: key.into_iter().collect(),
                });
                return Ok(());
            }
        };
        if mapped.skipped {
            return Ok(());
        }
        let Some(external_id) = mapped.key else {
            return Err(SyncError::Mapping {
                connector: self.connector.to_owned(),
                entity: self.entity,
                message: "a record has no external id (the mapping's `key`)".into(),
            });
        };
        // Vendors that list per department return a person once per department.
        if !self.seen.insert(external_id.clone()) {
            return Ok(());
        }
        self.out.push(Rec::new(external_id, &mapped.record));
        Ok(())
    }
}

/// Read every department and person of `endpoint`, mapped with `maps` and `resolver`.
pub(super) async fn read_side(
    endpoint: &Endpoint,
    maps: &Mappings,
    resolver: &SideResolver,
) -> Result<Side, SyncError> {
    let mut departments = read_raw(endpoint, Entity::Department).await?;
    let root = endpoint.root_id();
    let dept_key = |d: &Value| -> Option<String> {
        maps.department
            .apply(Direction::ToCanonical, d, &huitong_mappings::NoLinks)
            .ok()
            .and_then(|m| m.key)
    };
    // Vendors list departments below the root; a declared connector (root id "") lists its
    // roots with the rest.
    if !root.is_empty()
        && !departments
            .iter()
            .any(|d| dept_key(d).as_deref() == Some(root))
    {
        let got = endpoint
            .directory
            .get(Entity::Department.vendor(), root)
            .await
            .map_err(read_error(endpoint))?;
        if let Some(r) = got {
            departments.insert(0, r);
        }
    }
    let mut side = Side {
        records_read: departments.len(),
        ..Side::default()
    };
    let mut mapper = Mapper::new(
        &endpoint.name,
        &maps.department,
        Entity::Department,
        resolver,
    );
    mapper.out.reserve(departments.len());
    for raw in departments {
        mapper.push(raw, &mut side.failures)?;
    }
    side.departments = mapper.out;
    side.unmapped = mapper.unmapped;
    // People are mapped as they stream in: the raw records of a large org never sit in memory
    // all at once.
    let mut people = Mapper::new(&endpoint.name, &maps.person, Entity::Person, resolver);
    let query = ListQuery {
        recursive: true,
        ..ListQuery::default()
    };
    let mut stream = endpoint.directory.list(Entity::Person.vendor(), query);
    while let Some(raw) = stream.try_next().await.map_err(read_error(endpoint))? {
        side.records_read += 1;
        people.push(raw, &mut side.failures)?;
    }
    side.people = people.out;
    side.unmapped.extend(people.unmapped);
    Ok(side)
}

/// Read one record from a vendor and map it to canonical, resolving only the links it refers
/// to (map once to learn which, fetch those from the store, map again). `source`: references
/// not linked yet get derived ids, as in a plan's source side (else `?entity:ext`
/// placeholders). `None` when the vendor no longer has the record.
pub(super) async fn read_canonical(
    store: &dyn Store,
    endpoint: &Endpoint,
    maps: &Mappings,
    entity: Entity,
    external_id: &str,
    source: bool,
) -> Result<Option<Rec>, SyncError> {
    let mapping = maps.of(entity);
    let raw = endpoint
        .directory
        .get(entity.vendor(), external_id)
        .await
        .map_err(read_error(endpoint))?;
    let Some(raw) = raw else {
        return Ok(None);
    };
    let wanted = Requested::default();
    let _ = mapping.apply(Direction::ToCanonical, &raw, &wanted);
    let resolver = SideResolver::new(&endpoint.name, source);
    for (entity, external) in wanted.into_requests() {
        if let Some(x) = store
            .find_by_external(entity, &endpoint.name, &external)
            .await?
        {
            resolver.insert(entity, &external, &x.canonical_id);
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
    Ok(Some(Rec::new(
        mapped.key.unwrap_or_else(|| external_id.to_owned()),
        &mapped.record,
    )))
}
