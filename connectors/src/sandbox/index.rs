//! Lookup structures the vendor orgs keep beside their records so that every API call costs
//! O(result size + log n) rather than a scan of the whole org: a sorted key set that can be
//! sliced by position ([`SortedKeys`]) and a value -> keys index ([`Groups`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use serde_json::Value;

use super::{AdminError, merge_fixture};
use crate::fixture::{FixtureDepartment, FixtureUser};

/// Keys in ascending order, stored in blocks so that an insert or a removal moves at most a
/// block and the `n`th key is found by skipping whole blocks (a department with 100,000 members
/// pages as cheaply as one with 20).
#[derive(Debug, Default, Clone)]
pub(crate) struct SortedKeys {
    blocks: Vec<Vec<String>>,
    len: usize,
}

/// A block is split when it grows past twice this.
const BLOCK: usize = 256;

impl SortedKeys {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The block that holds `key` or would: the first whose last key is not below it.
    fn block_of(&self, key: &str) -> usize {
        self.blocks
            .partition_point(|b| b.last().is_some_and(|l| l.as_str() < key))
    }

    /// Adds `key`; false when it was there already.
    pub fn insert(&mut self, key: &str) -> bool {
        if self.blocks.is_empty() {
            self.blocks.push(vec![key.to_string()]);
            self.len = 1;
            return true;
        }
        let bi = self.block_of(key).min(self.blocks.len() - 1);
        let b = &mut self.blocks[bi];
        match b.binary_search_by(|k| k.as_str().cmp(key)) {
            Ok(_) => false,
            Err(i) => {
                b.insert(i, key.to_string());
                if b.len() > 2 * BLOCK {
                    let tail = b.split_off(BLOCK);
                    self.blocks.insert(bi + 1, tail);
                }
                self.len += 1;
                true
            }
        }
    }

    /// Inserts `key` when `present`, else removes it.
    pub fn set(&mut self, key: &str, present: bool) {
        if present {
            self.insert(key);
        } else {
            self.remove(key);
        }
    }

    /// Removes `key`; false when it was not there.
    pub fn remove(&mut self, key: &str) -> bool {
        let bi = self.block_of(key);
        let Some(b) = self.blocks.get_mut(bi) else {
            return false;
        };
        match b.binary_search_by(|k| k.as_str().cmp(key)) {
            Ok(i) => {
                b.remove(i);
                if b.is_empty() {
                    self.blocks.remove(bi);
                }
                self.len -= 1;
                true
            }
            Err(_) => false,
        }
    }

    #[cfg(test)]
    pub fn contains(&self, key: &str) -> bool {
        self.blocks
            .get(self.block_of(key))
            .is_some_and(|b| b.binary_search_by(|k| k.as_str().cmp(key)).is_ok())
    }

    pub fn first(&self) -> Option<&String> {
        self.blocks.first().and_then(|b| b.first())
    }

    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.blocks.iter().flatten()
    }

    /// The keys at positions `start..end` (clamped), in order.
    pub fn range(&self, start: usize, end: usize) -> impl Iterator<Item = &String> {
        let end = end.min(self.len);
        let mut skip = start.min(end);
        let mut first = 0;
        while first < self.blocks.len() && skip >= self.blocks[first].len() {
            skip -= self.blocks[first].len();
            first += 1;
        }
        self.blocks[first..]
            .iter()
            .flatten()
            .skip(skip)
            .take(end - start.min(end))
    }

    /// Builds from keys in any order (duplicates dropped), in O(n log n).
    #[cfg(test)]
    pub fn from_unsorted(mut keys: Vec<String>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        let len = keys.len();
        let mut blocks = Vec::with_capacity(len / BLOCK + 1);
        let mut it = keys.into_iter().peekable();
        while it.peek().is_some() {
            blocks.push(it.by_ref().take(BLOCK).collect());
        }
        Self { blocks, len }
    }
}

impl PartialEq for SortedKeys {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

/// value -> the keys of the records holding it, each set in key order (so "the first record
/// with this value" is the one a scan in key order would have found).
#[derive(Debug, Clone)]
pub(crate) struct Groups<V: Hash + Eq> {
    map: HashMap<V, SortedKeys>,
}

impl<V: Hash + Eq> Default for Groups<V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
        }
    }
}

impl<V: Hash + Eq> PartialEq for Groups<V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<V: Hash + Eq> Groups<V> {
    pub fn add(&mut self, value: V, key: &str) {
        self.map.entry(value).or_default().insert(key);
    }

    /// Adds `key` under `value` when `present`, else removes it.
    pub fn set(&mut self, value: V, key: &str, present: bool) {
        if present {
            self.add(value, key);
        } else {
            self.remove(&value, key);
        }
    }

    pub fn remove<Q>(&mut self, value: &Q, key: &str)
    where
        V: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(s) = self.map.get_mut(value) {
            s.remove(key);
            if s.is_empty() {
                self.map.remove(value);
            }
        }
    }

    pub fn get<Q>(&self, value: &Q) -> Option<&SortedKeys>
    where
        V: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(value)
    }

    /// The first key (in key order) holding `value`.
    pub fn first<Q>(&self, value: &Q) -> Option<&String>
    where
        V: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(value).and_then(SortedKeys::first)
    }

    /// Whether a record other than `except` holds `value`.
    pub fn taken_by_other<Q>(&self, value: &Q, except: Option<&str>) -> bool
    where
        V: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map
            .get(value)
            .is_some_and(|s| s.iter().any(|k| Some(k.as_str()) != except))
    }

    /// The keys holding `value`, in key order (none when no record holds it).
    pub fn keys<Q>(&self, value: &Q) -> impl Iterator<Item = &String>
    where
        V: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(value).into_iter().flat_map(SortedKeys::iter)
    }

    pub fn count<Q>(&self, value: &Q) -> usize
    where
        V: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(value).map_or(0, SortedKeys::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_keys_insert_remove_and_slice_across_blocks() {
        let mut s = SortedKeys::default();
        let mut want: Vec<String> = Vec::new();
        // A scrambled order that forces splits.
        for i in 0..2000u32 {
            let k = format!("u{}", (i * 7919) % 2000);
            assert!(s.insert(&k));
            want.push(k);
        }
        assert!(!s.insert("u5"));
        want.sort();
        assert_eq!(s.len(), 2000);
        assert!(s.iter().eq(want.iter()));
        assert!(s.range(600, 650).eq(want[600..650].iter()));
        assert!(s.range(1990, 5000).eq(want[1990..].iter()));
        assert_eq!(s.range(3000, 3010).count(), 0);
        for k in want.iter().step_by(3) {
            assert!(s.remove(k));
        }
        assert!(!s.remove("u0"));
        let rest: Vec<&String> = want
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, k)| k)
            .collect();
        assert!(s.iter().eq(rest.iter().copied()));
        assert!(s.contains(rest[10]) && !s.contains(&want[0]));
        assert_eq!(
            s,
            SortedKeys::from_unsorted(rest.iter().map(|k| (*k).clone()).collect())
        );
    }

    #[test]
    fn groups_keep_the_first_key_and_drop_empty_values() {
        let mut g: Groups<String> = Groups::default();
        g.add("a@x".into(), "u2");
        g.add("a@x".into(), "u1");
        assert_eq!(g.first("a@x").map(String::as_str), Some("u1"));
        assert!(g.taken_by_other("a@x", Some("u1")));
        g.remove("a@x", "u2");
        assert!(!g.taken_by_other("a@x", Some("u1")));
        g.remove("a@x", "u1");
        assert_eq!(g, Groups::default());
    }
}

/// The small org the vendors' org tests start from: root `d0`; `d1` (order 2, led by `u1`) and
/// `d2` (order 1) under it; `d3` under `d1`; `u1` in `d1`, `u2` in `d1` and `d2`, each with a
/// mobile and an email.
#[cfg(test)]
pub(crate) fn test_org() -> crate::fixture::OrgFixture {
    crate::fixture::OrgFixture::from_json(
        r#"{"departments": [
            {"key": "d0", "name": "root"},
            {"key": "d1", "name": "one", "parent": "d0", "order": 2, "leaders": ["u1"]},
            {"key": "d2", "name": "two", "parent": "d0", "order": 1},
            {"key": "d3", "name": "three", "parent": "d1"}
        ], "users": [
            {"key": "u1", "name": "A", "mobile": "13800000001", "email": "a@x.cn", "departments": ["d1"]},
            {"key": "u2", "name": "B", "mobile": "13800000002", "email": "b@x.cn", "departments": ["d1", "d2"]}
        ]}"#,
    )
    .unwrap()
}

/// A fixture user for the vendors' org tests: named after its key in capitals, active.
#[cfg(test)]
pub(crate) fn test_user(key: &str, mobile: &str, email: &str, depts: &[&str]) -> FixtureUser {
    FixtureUser {
        name: key.to_uppercase(),
        email: email.into(),
        mobile: mobile.into(),
        departments: depts.iter().map(|d| d.to_string()).collect(),
        ..super::kit::blank_user(key)
    }
}

/// A test department `key` named `name` under `parent`, led by `leaders`.
#[cfg(test)]
pub(crate) fn test_dept(
    key: &str,
    name: &str,
    parent: &str,
    leaders: &[&str],
) -> FixtureDepartment {
    FixtureDepartment {
        key: key.into(),
        name: name.into(),
        parent: Some(parent.into()),
        order: 0,
        leaders: leaders.iter().map(|l| l.to_string()).collect(),
    }
}

/// A vendor's department record: its fixture entry plus the vendor's ids.
pub(crate) trait DeptRecord {
    fn fx(&self) -> &FixtureDepartment;
}

/// A vendor's user record: its fixture entry plus the vendor's ids and fields.
pub(crate) trait UserRecord {
    fn fx(&self) -> &FixtureUser;
}

/// [`DeptRecord`] and [`UserRecord`] for a vendor's `Dept` and `User` (each with an `fx` field),
/// and its `Org` (with its [`Records`] in `r`) read as those records.
macro_rules! fixture_records {
    ($org:ty, $dept:ty, $user:ty, $index:ty) => {
        impl std::ops::Deref for $org {
            type Target = $crate::sandbox::index::Records<$dept, $user, $index>;
            fn deref(&self) -> &Self::Target {
                &self.r
            }
        }

        impl $crate::sandbox::index::DeptRecord for $dept {
            fn fx(&self) -> &$crate::fixture::FixtureDepartment {
                &self.fx
            }
        }

        impl $crate::sandbox::index::UserRecord for $user {
            fn fx(&self) -> &$crate::fixture::FixtureUser {
                &self.fx
            }
        }
    };
}
pub(crate) use fixture_records;

/// The lookups a vendor's sandbox org keeps beside its records, besides the [`Links`]. Each
/// record's entries are written by one function, adding them (`present`) or removing them, so a
/// removal undoes exactly what the addition did.
pub(crate) trait OrgIndex<D, U> {
    fn set_dept(&mut self, d: &D, present: bool);
    /// `k` is the user's fixture key.
    fn set_user(&mut self, k: &str, u: &U, present: bool);
}

/// The links of the fixture records every vendor's org follows: the departments without a
/// parent, each department's children and members, the departments each user leads.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Links {
    pub roots: SortedKeys,
    /// parent key -> child keys
    pub children: Groups<String>,
    /// department key -> member keys
    pub members: Groups<String>,
    /// user key -> keys of the departments it leads
    pub led: Groups<String>,
}

impl Links {
    fn set_dept(&mut self, d: &FixtureDepartment, present: bool) {
        let k = &d.key;
        match &d.parent {
            None => self.roots.set(k, present),
            Some(p) => self.children.set(p.clone(), k, present),
        }
        for l in &d.leaders {
            self.led.set(l.clone(), k, present);
        }
    }

    fn set_user(&mut self, u: &FixtureUser, present: bool) {
        for d in &u.departments {
            self.members.set(d.clone(), &u.key, present);
        }
    }
}

/// A sandbox org's departments and users by fixture key, with the [`Links`] and the vendor's
/// index kept in step: `put_*` / `take_*` are the only writers, so no lookup can go stale.
#[derive(Debug)]
pub(crate) struct Records<D, U, I> {
    depts: BTreeMap<String, D>,
    users: BTreeMap<String, U>,
    links: Links,
    idx: I,
    /// The last number [`Records::next_key`] gave.
    seq: u64,
}

impl<D, U, I: Default> Default for Records<D, U, I> {
    fn default() -> Self {
        Records {
            depts: Default::default(),
            users: Default::default(),
            links: Links::default(),
            idx: I::default(),
            seq: 0,
        }
    }
}

impl<D: DeptRecord, U: UserRecord, I: OrgIndex<D, U>> Records<D, U, I> {
    /// Inserts or replaces a department.
    pub fn put_dept(&mut self, d: D) {
        if let Some(old) = self.depts.remove(&d.fx().key) {
            self.links.set_dept(old.fx(), false);
            self.idx.set_dept(&old, false);
        }
        self.links.set_dept(d.fx(), true);
        self.idx.set_dept(&d, true);
        self.depts.insert(d.fx().key.clone(), d);
    }

    pub fn take_dept(&mut self, key: &str) -> Option<D> {
        let d = self.depts.remove(key)?;
        self.links.set_dept(d.fx(), false);
        self.idx.set_dept(&d, false);
        Some(d)
    }

    /// Inserts or replaces a user.
    pub fn put_user(&mut self, u: U) {
        if let Some(old) = self.users.remove(&u.fx().key) {
            self.links.set_user(old.fx(), false);
            self.idx.set_user(&old.fx().key, &old, false);
        }
        self.links.set_user(u.fx(), true);
        self.idx.set_user(&u.fx().key, &u, true);
        self.users.insert(u.fx().key.clone(), u);
    }

    pub fn take_user(&mut self, key: &str) -> Option<U> {
        let u = self.users.remove(key)?;
        self.links.set_user(u.fx(), false);
        self.idx.set_user(&u.fx().key, &u, false);
        Some(u)
    }

    /// Panics unless the links and the index equal ones built from scratch.
    #[cfg(test)]
    pub fn assert_indexed(&self)
    where
        I: Default + PartialEq + std::fmt::Debug,
    {
        let (mut links, mut idx) = (Links::default(), I::default());
        for d in self.depts.values() {
            links.set_dept(d.fx(), true);
            idx.set_dept(d, true);
        }
        for u in self.users.values() {
            links.set_user(u.fx(), true);
            idx.set_user(&u.fx().key, u, true);
        }
        assert_eq!(self.links, links);
        assert_eq!(self.idx, idx);
    }
}

impl<D, U, I> Records<D, U, I> {
    /// A key no department or user has: `prefix` and the next number.
    pub fn next_key(&mut self, prefix: &str) -> String {
        loop {
            self.seq += 1;
            let k = format!("{prefix}{}", self.seq);
            if !self.depts.contains_key(&k) && !self.users.contains_key(&k) {
                return k;
            }
        }
    }

    pub fn depts(&self) -> &BTreeMap<String, D> {
        &self.depts
    }

    pub fn users(&self) -> &BTreeMap<String, U> {
        &self.users
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    pub fn idx(&self) -> &I {
        &self.idx
    }

    /// The direct members of department `key`, in key order.
    pub fn members(&self, key: &str) -> Vec<String> {
        self.members_range(key, 0, usize::MAX)
    }

    /// The direct members of department `key` at positions `start..end` (key order).
    pub fn members_range(&self, key: &str, start: usize, end: usize) -> Vec<String> {
        self.links
            .members
            .get(key)
            .map(|m| m.range(start, end).cloned().collect())
            .unwrap_or_default()
    }

    pub fn member_count(&self, key: &str) -> usize {
        self.links.members.count(key)
    }
}

impl<D: DeptRecord, U: UserRecord, I> Records<D, U, I> {
    /// The user `key` and its fixture entry with `patch` merged in (an admin's PATCH).
    pub fn patched_user(&self, key: &str, patch: &Value) -> Result<(&U, FixtureUser), AdminError> {
        let cur = self
            .users
            .get(key)
            .ok_or_else(|| AdminError::NotFound(format!("user {key}")))?;
        Ok((cur, merge_fixture(cur.fx(), key, patch)?))
    }

    /// `GET /_sandbox/org`: every fixture entry with the vendor's ids (`dept_ids`, `user_ids`)
    /// under the key `vendor`.
    pub fn snapshot_with(
        &self,
        vendor: &str,
        dept_ids: impl Fn(&D) -> Value,
        user_ids: impl Fn(&U) -> Value,
    ) -> Value {
        fn entry<T: serde::Serialize>(fx: &T, vendor: &str, ids: Value) -> Value {
            let mut v = serde_json::to_value(fx).unwrap_or(Value::Null);
            v[vendor] = ids;
            v
        }
        let depts: Vec<Value> = (self.depts.values())
            .map(|d| entry(d.fx(), vendor, dept_ids(d)))
            .collect();
        let users: Vec<Value> = (self.users.values())
            .map(|u| entry(u.fx(), vendor, user_ids(u)))
            .collect();
        serde_json::json!({"departments": depts, "users": users})
    }

    /// The direct sub-departments of `key`, in the vendor's order (`cmp`).
    pub fn sub_depts(
        &self,
        key: &str,
        mut cmp: impl FnMut(&D, &D) -> std::cmp::Ordering,
    ) -> Vec<String> {
        let mut c: Vec<&D> = (self.links.children.keys(key))
            .filter_map(|c| self.depts.get(c))
            .collect();
        c.sort_by(|a, b| cmp(a, b));
        c.into_iter().map(|d| d.fx().key.clone()).collect()
    }

    /// The fixture entry of department `key` with `patch` merged in (an admin's PATCH).
    pub fn patched_dept(&self, key: &str, patch: &Value) -> Result<FixtureDepartment, AdminError> {
        let cur = self
            .depts
            .get(key)
            .ok_or_else(|| AdminError::NotFound(format!("department {key}")))?;
        merge_fixture(cur.fx(), key, patch)
    }
}
