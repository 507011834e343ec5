//! Cross-reference resolution between external (vendor) ids and canonical ids.
//!
//! Mappings never call the network or a database: the hub implements [`XrefResolver`] over its
//! id-link store and passes it in. [`MemoryResolver`] is a HashMap-backed implementation for
//! tests, previews and the command line.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::BufRead;

/// FxHash-style hasher with a Murmur finaliser: ids are not attacker-chosen here and SipHash dominated lookups.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn finish(&self) -> u64 {
        // fmix64 from MurmurHash3: hashbrown indexes buckets with the low bits, which a bare
        // multiply leaves poorly mixed.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

type IdMap = HashMap<String, String, BuildHasherDefault<FxHasher>>;

/// Looks up id links. Both methods are synchronous and must be cheap: they run once per id per
/// record.
pub trait XrefResolver: Sync {
    /// The canonical id linked to `external_id` of `entity` in `system`, if any.
    fn to_canonical(&self, entity: &str, system: &str, external_id: &str) -> Option<String>;
    /// The external id in `system` linked to canonical `canonical_id` of `entity`, if any.
    fn to_external(&self, entity: &str, system: &str, canonical_id: &str) -> Option<String>;
}

/// Links of one (entity, system) pair.
#[derive(Debug, Default, Clone)]
struct Scope {
    entity: String,
    system: String,
    ext_to_can: IdMap,
    can_to_ext: IdMap,
}

/// In-memory, bidirectional id links.
#[derive(Debug, Default, Clone)]
pub struct MemoryResolver {
    // Few (entity, system) pairs exist, so a linear scan beats hashing a composite key and lets
    // lookups borrow `&str` without allocating.
    scopes: Vec<Scope>,
}

/// A line of an xref file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum XrefFileError {
    /// The reader failed.
    #[error("xref file: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not a JSON object with the four string fields.
    #[error(
        "xref file line {line}: {reason} (expected {{\"entity\":…,\"system\":…,\"external_id\":…,\"canonical_id\":…}})"
    )]
    Line {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
}

impl MemoryResolver {
    /// An empty resolver: every lookup is unresolved.
    pub fn new() -> Self {
        Self::default()
    }

    /// Links `external_id` of `entity` in `system` with `canonical_id` (both directions).
    pub fn insert(&mut self, entity: &str, system: &str, external_id: &str, canonical_id: &str) {
        let idx = match self.scope(entity, system) {
            Some(i) => i,
            None => {
                self.scopes.push(Scope {
                    entity: entity.to_owned(),
                    system: system.to_owned(),
                    ..Scope::default()
                });
                self.scopes.len() - 1
            }
        };
        let scope = &mut self.scopes[idx];
        scope
            .ext_to_can
            .insert(external_id.to_owned(), canonical_id.to_owned());
        scope
            .can_to_ext
            .insert(canonical_id.to_owned(), external_id.to_owned());
    }

    fn scope(&self, entity: &str, system: &str) -> Option<usize> {
        self.scopes
            .iter()
            .position(|s| s.entity == entity && s.system == system)
    }

    /// Number of links.
    pub fn len(&self) -> usize {
        self.scopes.iter().map(|s| s.ext_to_can.len()).sum()
    }

    /// True if there are no links.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads links from NDJSON lines
    /// `{"entity":"person","system":"dingtalk","external_id":"u1","canonical_id":"P1"}`.
    /// Numeric ids are accepted and read as their decimal text. Blank lines are skipped.
    pub fn from_ndjson(input: impl BufRead) -> Result<Self, XrefFileError> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Id<'a> {
            #[serde(borrow)]
            Str(Cow<'a, str>),
            Num(serde_json::Number),
        }
        impl Id<'_> {
            fn text(&self) -> Cow<'_, str> {
                match self {
                    Id::Str(s) => Cow::Borrowed(s.as_ref()),
                    Id::Num(n) => Cow::Owned(n.to_string()),
                }
            }
        }
        #[derive(serde::Deserialize)]
        struct Link<'a> {
            #[serde(borrow)]
            entity: Cow<'a, str>,
            #[serde(borrow)]
            system: Cow<'a, str>,
            #[serde(borrow)]
            external_id: Id<'a>,
            #[serde(borrow)]
            canonical_id: Id<'a>,
        }
        let mut me = Self::new();
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let l: Link<'_> = serde_json::from_str(&line).map_err(|e| XrefFileError::Line {
                line: i + 1,
                reason: e.to_string(),
            })?;
            me.insert(
                &l.entity,
                &l.system,
                &l.external_id.text(),
                &l.canonical_id.text(),
            );
        }
        Ok(me)
    }
}

impl XrefResolver for MemoryResolver {
    fn to_canonical(&self, entity: &str, system: &str, external_id: &str) -> Option<String> {
        let scope = &self.scopes[self.scope(entity, system)?];
        scope.ext_to_can.get(external_id).cloned()
    }
    fn to_external(&self, entity: &str, system: &str, canonical_id: &str) -> Option<String> {
        let scope = &self.scopes[self.scope(entity, system)?];
        scope.can_to_ext.get(canonical_id).cloned()
    }
}

/// A resolver that knows no links (every id is reported unresolved).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLinks;

impl XrefResolver for NoLinks {
    fn to_canonical(&self, _: &str, _: &str, _: &str) -> Option<String> {
        None
    }
    fn to_external(&self, _: &str, _: &str, _: &str) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_work_both_ways_and_are_scoped() {
        let mut r = MemoryResolver::new();
        r.insert("person", "dingtalk", "u1", "P1");
        assert_eq!(
            r.to_canonical("person", "dingtalk", "u1").as_deref(),
            Some("P1")
        );
        assert_eq!(
            r.to_external("person", "dingtalk", "P1").as_deref(),
            Some("u1")
        );
        assert_eq!(r.to_canonical("person", "feishu", "u1"), None);
        assert_eq!(r.to_canonical("department", "dingtalk", "u1"), None);
    }

    #[test]
    fn reads_ndjson_and_reports_bad_lines() {
        let text = "{\"entity\":\"department\",\"system\":\"dingtalk\",\"external_id\":2,\"canonical_id\":\"D2\"}\n\n";
        let r = MemoryResolver::from_ndjson(text.as_bytes()).expect("valid file");
        assert_eq!(
            r.to_canonical("department", "dingtalk", "2").as_deref(),
            Some("D2")
        );
        let err = MemoryResolver::from_ndjson("{}\n{\"entity\":1}".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
