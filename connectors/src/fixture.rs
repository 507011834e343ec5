//! The vendor-neutral org fixture format (shared/fixtures/README.md) that seeds every sandbox.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixtureDepartment {
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub order: i64,
    #[serde(default)]
    pub leaders: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixtureUser {
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub en_name: String,
    #[serde(default)]
    pub email: String,
    /// 11-digit CN mobile, no country code.
    #[serde(default)]
    pub mobile: String,
    #[serde(default)]
    pub employee_no: String,
    #[serde(default)]
    pub title: String,
    /// Department keys, the first is the main one.
    #[serde(default)]
    pub departments: Vec<String>,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub gender: String,
    /// YYYY-MM-DD
    #[serde(default)]
    pub hired_at: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OrgFixture {
    pub departments: Vec<FixtureDepartment>,
    pub users: Vec<FixtureUser>,
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("invalid org fixture: {0}")]
    Invalid(String),
}

impl OrgFixture {
    pub fn load(path: &Path) -> Result<Self, FixtureError> {
        let p = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| FixtureError::Io {
            path: p.clone(),
            source,
        })?;
        let org: Self = serde_json::from_slice(&text)
            .map_err(|source| FixtureError::Parse { path: p, source })?;
        org.validate()?;
        Ok(org)
    }

    pub fn from_json(text: &str) -> Result<Self, FixtureError> {
        let org: Self = serde_json::from_str(text).map_err(|source| FixtureError::Parse {
            path: "<string>".into(),
            source,
        })?;
        org.validate()?;
        Ok(org)
    }

    /// Unique keys, exactly one root, parents / leaders / memberships that exist.
    pub fn validate(&self) -> Result<(), FixtureError> {
        let bad = |m: String| Err(FixtureError::Invalid(m));
        let mut dkeys = HashSet::new();
        for d in &self.departments {
            if !dkeys.insert(d.key.as_str()) {
                return bad(format!("duplicate department key {}", d.key));
            }
        }
        let roots = self
            .departments
            .iter()
            .filter(|d| d.parent.is_none())
            .count();
        if roots != 1 {
            return bad(format!(
                "expected exactly one root department, found {roots}"
            ));
        }
        let mut ukeys = HashSet::new();
        for u in &self.users {
            if !ukeys.insert(u.key.as_str()) {
                return bad(format!("duplicate user key {}", u.key));
            }
            for d in &u.departments {
                if !dkeys.contains(d.as_str()) {
                    return bad(format!("user {} in unknown department {d}", u.key));
                }
            }
        }
        for d in &self.departments {
            if let Some(p) = &d.parent
                && !dkeys.contains(p.as_str())
            {
                return bad(format!("department {} has unknown parent {p}", d.key));
            }
            for l in &d.leaders {
                if !ukeys.contains(l.as_str()) {
                    return bad(format!("department {} has unknown leader {l}", d.key));
                }
            }
        }
        Ok(())
    }

    pub fn root(&self) -> Option<&FixtureDepartment> {
        self.departments.iter().find(|d| d.parent.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_shared_fixtures() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
        let small = OrgFixture::load(&dir.join("small-org.json")).unwrap();
        assert_eq!(small.users.len(), 20);
        assert_eq!(small.departments.len(), 3);
        let medium = OrgFixture::load(&dir.join("medium-org.json")).unwrap();
        assert_eq!(medium.users.len(), 300);
        assert_eq!(medium.departments.len(), 25);
        assert!(medium.root().is_some());
    }

    #[test]
    fn rejects_broken_fixtures() {
        let two_roots = r#"{"departments":[{"key":"a","name":"A","parent":null},{"key":"b","name":"B","parent":null}],"users":[]}"#;
        assert!(matches!(
            OrgFixture::from_json(two_roots),
            Err(FixtureError::Invalid(_))
        ));
        let unknown = r#"{"departments":[{"key":"a","name":"A","parent":null}],"users":[{"key":"u","name":"U","departments":["zz"]}]}"#;
        assert!(matches!(
            OrgFixture::from_json(unknown),
            Err(FixtureError::Invalid(_))
        ));
    }
}
