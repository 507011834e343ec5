//! From a `[connectors.NAME]` table to a live connector and its mappings.
//!
//! A connector's mapping of each entity is the shipped one for its vendor, or the admin's own
//! (`[connectors.NAME.mappings] person = "mappings/acme-wecom-person.yaml"`, or a shipped name
//! such as `wecom-person`). `huitong serve` looks at the admin's files every few seconds
//! ([`Endpoint::reload`]): an edited file that compiles replaces the mapping for the next plan,
//! live change and step; one that does not is refused with its file and line, and the old
//! mapping stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use huitong_mappings::Mapping;

use super::SyncError;
use crate::config::{ConnectorConfig, ConnectorKind};
use crate::model::Entity;

pub use huitong_connectors::registry::Directory;

/// The largest mapping file read.
pub const MAPPING_MAX_BYTES: u64 = 1024 * 1024;

/// Where a connector's mapping of one entity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingSource {
    /// A mapping shipped with huitong, by name (`wecom-person`).
    Shipped(String),
    /// An admin's file.
    File(PathBuf),
    /// None: the connector has no shipped mapping of the entity and names no file (why).
    Unset(String),
}

impl MappingSource {
    /// How the configuration names it: a shipped name (`wecom-person`, no `/` nor `.yaml`),
    /// else a path (relative ones from the working directory, as `schedules.dir`).
    pub fn parse(text: &str) -> MappingSource {
        let is_name = !text.contains('/')
            && !text.contains('\\')
            && !text.ends_with(".yaml")
            && !text.ends_with(".yml");
        if is_name {
            MappingSource::Shipped(text.to_owned())
        } else {
            MappingSource::File(PathBuf::from(text))
        }
    }

    /// The shipped mapping of a mapping system (`feishu`, `tryton`) for `entity`.
    pub fn shipped(system: &str, entity: Entity) -> MappingSource {
        MappingSource::Shipped(format!("{system}-{entity}"))
    }

    /// Load and compile it, checking it maps `entity`.
    pub fn load(&self, entity: Entity) -> Result<Mapping, String> {
        let m = match self {
            MappingSource::Shipped(name) => {
                let file = format!("{name}.yaml");
                let Some((_, text)) = huitong_mappings::shipped::FILES
                    .iter()
                    .find(|(f, _)| *f == file)
                else {
                    let names: Vec<&str> = huitong_mappings::shipped::FILES
                        .iter()
                        .map(|(f, _)| f.trim_end_matches(".yaml"))
                        .collect();
                    return Err(format!(
                        "no shipped mapping named {name:?} (shipped: {}; a file path needs a `/` or a .yaml ending)",
                        names.join(", ")
                    ));
                };
                Mapping::from_str(&file, text).map_err(|e| e.to_string())?
            }
            // Capped and regular files only: `serve` reads these again every few seconds, and
            // a FIFO or /dev/zero must not hang it.
            MappingSource::File(path) => {
                let text = crate::files::read_capped(path, MAPPING_MAX_BYTES)
                    .map_err(|e| e.to_string())?;
                Mapping::from_str(&path.display().to_string(), &text).map_err(|e| e.to_string())?
            }
            MappingSource::Unset(why) => return Err(why.clone()),
        };
        if m.entity() != entity.as_str() {
            return Err(format!("{}: maps {:?}, not {entity}", self, m.entity()));
        }
        Ok(m)
    }

    fn path(&self) -> Option<&Path> {
        match self {
            MappingSource::File(p) => Some(p),
            MappingSource::Shipped(_) | MappingSource::Unset(_) => None,
        }
    }
}

impl std::fmt::Display for MappingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MappingSource::Shipped(name) => write!(f, "shipped mapping {name}"),
            MappingSource::File(p) => write!(f, "{}", p.display()),
            MappingSource::Unset(_) => f.write_str("no mapping"),
        }
    }
}

/// A connector's mappings, one per entity, as one snapshot: a plan or a step uses one
/// snapshot throughout, even while a file is being reloaded.
#[derive(Debug)]
pub struct Mappings {
    pub department: Mapping,
    pub person: Mapping,
}

impl Mappings {
    pub fn of(&self, entity: Entity) -> &Mapping {
        match entity {
            Entity::Department => &self.department,
            Entity::Person => &self.person,
        }
    }
}

/// One side of a route: a connector with its mappings.
pub struct Endpoint {
    pub name: String,
    pub kind: ConnectorKind,
    pub directory: Arc<dyn Directory>,
    mappings: RwLock<Arc<Mappings>>,
    /// Per entity: where its mapping comes from, and the file's modification time when it was
    /// last loaded (admin files only).
    sources: Vec<(Entity, MappingSource)>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

/// What [`Endpoint::reload`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reload {
    /// Entities whose mapping was replaced.
    pub replaced: Vec<Entity>,
    /// Files that changed but were refused (the old mapping is kept), with why.
    pub refused: Vec<String>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
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

    /// The mappings as they are now (one snapshot).
    pub fn mappings(&self) -> Arc<Mappings> {
        match self.mappings.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Where each entity's mapping comes from.
    pub fn mapping_sources(&self) -> &[(Entity, MappingSource)] {
        &self.sources
    }

    /// Load again every admin mapping file whose modification time changed since it was
    /// loaded. A file that compiles replaces its mapping; one that does not is refused and
    /// the mapping in use stays (and the file is tried again when it changes next).
    pub fn reload(&self) -> Reload {
        let mut out = Reload::default();
        let Ok(mut stamps) = self.stamps.lock() else {
            return out;
        };
        let mut department = None;
        let mut person = None;
        for (i, (entity, source)) in self.sources.iter().enumerate() {
            let Some(path) = source.path() else { continue };
            let now = modified(path);
            if now == stamps[i] {
                continue;
            }
            stamps[i] = now;
            match source.load(*entity) {
                Ok(m) => {
                    match entity {
                        Entity::Department => department = Some(m),
                        Entity::Person => person = Some(m),
                    }
                    out.replaced.push(*entity);
                }
                Err(e) => out.refused.push(e),
            }
        }
        if department.is_some() || person.is_some() {
            let current = self.mappings();
            // Rebuilt from the current snapshot: the other entity's mapping is kept as it is.
            let rebuilt = Mappings {
                department: department.unwrap_or_else(|| current.department.clone()),
                person: person.unwrap_or_else(|| current.person.clone()),
            };
            if let Ok(mut m) = self.mappings.write() {
                *m = Arc::new(rebuilt);
            }
        }
        out
    }
}

/// A connector's live instance, shared by every clone of the configuration it was loaded
/// with: built on first use, then the same directory (limiter, token cache) for every route,
/// deliver consumer and live event of the process.
#[derive(Clone, Default)]
pub struct Instance(Arc<OnceLock<Arc<Endpoint>>>);

impl Instance {
    /// The instance, if it was built.
    pub fn get(&self) -> Option<&Arc<Endpoint>> {
        self.0.get()
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Instance(built)"
        } else {
            "Instance(not built)"
        })
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
    let sources: Vec<(Entity, MappingSource)> = Entity::ORG
        .into_iter()
        .map(|e| (e, c.mapping_source(e)))
        .collect();
    let load = |entity: Entity, source: &MappingSource| {
        source
            .load(entity)
            .map_err(|message| SyncError::MappingFile {
                connector: c.name.clone(),
                entity,
                message,
            })
    };
    let stamps = sources
        .iter()
        .map(|(_, s)| s.path().and_then(modified))
        .collect();
    let mappings = Mappings {
        department: load(Entity::Department, &sources[0].1)?,
        person: load(Entity::Person, &sources[1].1)?,
    };
    let built = Arc::new(Endpoint {
        name: c.name.clone(),
        kind: c.kind,
        directory,
        mappings: RwLock::new(Arc::new(mappings)),
        sources,
        stamps: Mutex::new(stamps),
    });
    // Two first uses at once: one instance wins, the other is dropped before any call.
    let _ = c.instance.0.set(built.clone());
    Ok(c.instance.0.get().cloned().unwrap_or(built))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_sources_are_names_or_paths() {
        assert_eq!(
            MappingSource::parse("wecom-person"),
            MappingSource::Shipped("wecom-person".into())
        );
        assert_eq!(
            MappingSource::parse("mappings/acme.yaml"),
            MappingSource::File("mappings/acme.yaml".into())
        );
        assert_eq!(
            MappingSource::parse("acme.yml"),
            MappingSource::File("acme.yml".into())
        );
        assert!(
            MappingSource::parse("wecom-person")
                .load(Entity::Person)
                .is_ok()
        );
        let wrong = MappingSource::parse("wecom-department").load(Entity::Person);
        assert!(wrong.unwrap_err().contains("not person"));
        let unknown = MappingSource::parse("acme-person").load(Entity::Person);
        assert!(
            unknown.unwrap_err().contains("wecom-person"),
            "lists the shipped names"
        );
        // Not a regular file: refused at once (a FIFO would block the reload for ever).
        let dir = MappingSource::File("/tmp".into()).load(Entity::Person);
        assert!(dir.unwrap_err().contains("not a regular file"));
        let dev = MappingSource::File("/dev/zero".into()).load(Entity::Person);
        assert!(dev.unwrap_err().contains("not a regular file"));
    }
}
