//! The sandbox's org: the fixture records plus Feishu's ids, rendered in Feishu's shapes.

use crate::sandbox::prelude::*;

use crate::crypto::sha256;

use crate::sandbox::index::{Groups, OrgIndex, Records, fixture_records};

#[derive(Debug)]
pub(crate) enum OrgError {
    NotFound(String),
    Conflict(String),
    Invalid(String),
}

pub(crate) struct Dept {
    pub fx: FixtureDepartment,
    pub open_id: String,
    pub custom_id: String,
}

pub(crate) struct User {
    pub fx: FixtureUser,
    pub open_id: String,
    pub union_id: String,
    pub user_id: String,
    /// Feishu fields with no fixture counterpart (employee_type, city, …), as given via the API.
    pub extra: Map<String, Value>,
}

fixture_records!(Org, Dept, User, Index);

/// An event to emit: (event_type, event body).
pub(crate) type Emitted = Vec<(&'static str, Value)>;

/// The org: its records, kept in step with their index by [`Records`].
pub(crate) struct Org {
    r: Records<Dept, User, Index>,
}

/// Lookups kept beside the records so that no API call scans the org.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Index {
    dept_by_open: Groups<String>,
    dept_by_custom: Groups<String>,
    user_by_open: Groups<String>,
    user_by_union: Groups<String>,
    user_by_email: Groups<String>,
}

impl OrgIndex<Dept, User> for Index {
    fn set_dept(&mut self, d: &Dept, present: bool) {
        let k = &d.fx.key;
        self.dept_by_open.set(d.open_id.clone(), k, present);
        self.dept_by_custom.set(d.custom_id.clone(), k, present);
    }

    fn set_user(&mut self, k: &str, u: &User, present: bool) {
        self.user_by_open.set(u.open_id.clone(), k, present);
        self.user_by_union.set(u.union_id.clone(), k, present);
        self.user_by_email.set(u.fx.email.clone(), k, present);
    }
}

/// The `*.updated_v3` event of a change from `old` to `new`; none when nothing changed.
fn updated(event_type: &'static str, old: &Value, new: Value) -> Emitted {
    let changed = diff(old, &new);
    if changed.as_object().is_some_and(Map::is_empty) {
        return Vec::new();
    }
    vec![(event_type, json!({"object": new, "old_object": changed}))]
}

/// Every one of `keys` (the `what`s an entry names) exists.
fn known(keys: &[String], what: &str, exists: impl Fn(&str) -> bool) -> Result<(), OrgError> {
    match keys.iter().find(|k| !exists(k)) {
        Some(k) => Err(OrgError::NotFound(format!("{what} {k}"))),
        None => Ok(()),
    }
}

fn hid(prefix: &str, salt: &str, key: &str) -> String {
    let h = hex::encode(sha256(format!("{salt}:{key}").as_bytes()));
    format!("{prefix}{}", &h[..32])
}

/// Unix seconds of local midnight (UTC+8) of a YYYY-MM-DD date.
fn join_time(date: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp() - 8 * 3600)
}

fn join_date(secs: i64) -> Option<String> {
    let dt = chrono::DateTime::from_timestamp(secs + 8 * 3600, 0)?;
    Some(dt.format("%Y-%m-%d").to_string())
}

fn gender_code(g: &str) -> i64 {
    match g {
        "male" => 1,
        "female" => 2,
        _ => 0,
    }
}

fn gender_name(c: i64) -> String {
    match c {
        1 => "male".into(),
        2 => "female".into(),
        _ => String::new(),
    }
}

/// Changed keys of `old` vs `new` with their previous values (Feishu's `old_object`).
fn diff(old: &Value, new: &Value) -> Value {
    let mut out = Map::new();
    if let (Some(o), Some(n)) = (old.as_object(), new.as_object()) {
        for (k, ov) in o {
            if n.get(k) != Some(ov) {
                out.insert(k.clone(), ov.clone());
            }
        }
    }
    Value::Object(out)
}

impl Org {
    pub fn new(fx: &OrgFixture, app_id: &str) -> Self {
        let mut org = Self {
            r: Records::default(),
        };
        for d in &fx.departments {
            org.insert_dept(d.clone(), None, app_id);
        }
        for u in &fx.users {
            org.insert_user(u.clone(), Map::new(), app_id);
        }
        org
    }

    fn insert_dept(&mut self, fx: FixtureDepartment, custom: Option<String>, _app_id: &str) {
        let (open_id, custom_id) = if fx.parent.is_none() {
            ("0".to_string(), "0".to_string())
        } else {
            (
                hid("od-", "dept", &fx.key),
                custom.unwrap_or_else(|| fx.key.clone()),
            )
        };
        self.r.put_dept(Dept {
            fx,
            open_id,
            custom_id,
        });
    }

    fn insert_user(&mut self, fx: FixtureUser, extra: Map<String, Value>, app_id: &str) {
        let u = User {
            open_id: hid("ou_", &format!("open:{app_id}"), &fx.key),
            union_id: hid("on_", "union", &fx.key),
            user_id: fx.key.clone(),
            fx,
            extra,
        };
        self.r.put_user(u);
    }

    // ---- the only writers of `depts` / `users`: each keeps `idx` in step ----

    pub fn next_key(&mut self, prefix: &str) -> String {
        self.r.next_key(prefix)
    }

    pub fn root_key(&self) -> Option<String> {
        self.r.links().roots.first().cloned()
    }

    pub fn dept_key(&self, id: &str, id_type: &str) -> Option<String> {
        if id == "0" {
            return self.root_key();
        }
        if id_type == "department_id" {
            self.r.idx().dept_by_custom.first(id).cloned()
        } else {
            self.r.idx().dept_by_open.first(id).cloned()
        }
    }

    pub fn user_key(&self, id: &str, id_type: &str) -> Option<String> {
        match id_type {
            "union_id" => self.r.idx().user_by_union.first(id).cloned(),
            // user_id is the key
            "user_id" => self.r.users().get(id).map(|u| u.fx.key.clone()),
            _ => self.r.idx().user_by_open.first(id).cloned(),
        }
    }

    pub fn user_by_email(&self, email: &str) -> Option<String> {
        self.r.idx().user_by_email.first(email).cloned()
    }

    pub fn dept_ext(&self, key: &str, id_type: &str) -> String {
        self.r
            .depts()
            .get(key)
            .map(|d| {
                if id_type == "department_id" {
                    d.custom_id.clone()
                } else {
                    d.open_id.clone()
                }
            })
            .unwrap_or_default()
    }

    pub fn user_ext(&self, key: &str, id_type: &str) -> String {
        self.r
            .users()
            .get(key)
            .map(|u| match id_type {
                "union_id" => u.union_id.clone(),
                "user_id" => u.user_id.clone(),
                _ => u.open_id.clone(),
            })
            .unwrap_or_default()
    }

    pub fn render_user(&self, key: &str, did_type: &str) -> Value {
        let Some(u) = self.r.users().get(key) else {
            return Value::Null;
        };
        let f = &u.fx;
        let mobile = if f.mobile.starts_with('+') || f.mobile.is_empty() {
            f.mobile.clone()
        } else {
            format!("+86{}", f.mobile)
        };
        let depts: Vec<String> = f
            .departments
            .iter()
            .map(|d| self.dept_ext(d, did_type))
            .collect();
        let orders: Vec<Value> = depts
            .iter()
            .enumerate()
            .map(|(i, d)| json!({"department_id": d, "user_order": 0, "department_order": i + 1, "is_primary_dept": i == 0}))
            .collect();
        let mut v = json!({
            "open_id": u.open_id, "union_id": u.union_id, "user_id": u.user_id,
            "name": f.name, "en_name": f.en_name, "nickname": "", "email": f.email, "enterprise_email": "",
            "mobile": mobile, "mobile_visible": true, "gender": gender_code(&f.gender),
            "status": {"is_frozen": !f.active, "is_resigned": false, "is_activated": f.active,
                       "is_exited": false, "is_unjoin": false},
            "department_ids": depts, "orders": orders, "employee_no": f.employee_no,
            "employee_type": 1, "job_title": f.title, "is_tenant_manager": false,
            "city": "", "country": "", "work_station": "", "time_zone": "Asia/Shanghai",
            "avatar": {"avatar_72": "", "avatar_240": "", "avatar_640": "", "avatar_origin": ""},
        });
        if let Some(t) = join_time(&f.hired_at) {
            v["join_time"] = json!(t);
        }
        for (k, x) in &u.extra {
            v[k.as_str()] = x.clone();
        }
        v
    }

    pub fn render_dept(&self, key: &str, uid_type: &str, did_type: &str) -> Value {
        let Some(d) = self.r.depts().get(key) else {
            return Value::Null;
        };
        let parent =
            d.fx.parent
                .as_deref()
                .map(|p| self.dept_ext(p, did_type))
                .unwrap_or_default();
        let leaders: Vec<String> =
            d.fx.leaders
                .iter()
                .map(|l| self.user_ext(l, uid_type))
                .collect();
        let member_count = self.member_count(&d.fx.key);
        let mut v = json!({
            "name": d.fx.name,
            "i18n_name": {"zh_cn": d.fx.name, "ja_jp": "", "en_us": ""},
            "parent_department_id": parent,
            "department_id": d.custom_id,
            "open_department_id": d.open_id,
            "order": d.fx.order.to_string(),
            "member_count": member_count,
            "status": {"is_deleted": false},
            "chat_id": "",
            "unit_ids": [],
            "create_group_chat": false,
            "leaders": leaders.iter().enumerate().map(|(i, l)| json!({"leaderType": if i == 0 { 1 } else { 2 }, "leaderID": l})).collect::<Vec<_>>(),
        });
        if let Some(l) = leaders.first() {
            v["leader_user_id"] = json!(l);
        }
        v
    }

    /// Direct (or all, breadth first) sub-departments, by (order, key).
    pub fn children(&self, key: &str, recursive: bool) -> Vec<String> {
        let direct = |k: &str| {
            self.r.sub_depts(k, |a, b| {
                (a.fx.order, &a.fx.key).cmp(&(b.fx.order, &b.fx.key))
            })
        };
        let mut out = direct(key);
        if recursive {
            let mut i = 0;
            while i < out.len() {
                let more = direct(&out[i]);
                out.extend(more);
                i += 1;
            }
        }
        out
    }

    // ---- mutations: every change returns the events Feishu would emit ----

    fn check_user(&self, fx: &FixtureUser) -> Result<(), OrgError> {
        if fx.name.trim().is_empty() {
            return Err(OrgError::Invalid("name is required".into()));
        }
        if fx.departments.is_empty() {
            return Err(OrgError::Invalid(
                "at least one department is required".into(),
            ));
        }
        known(&fx.departments, "department", |d| {
            self.r.depts().contains_key(d)
        })
    }

    pub fn create_user(
        &mut self,
        fx: FixtureUser,
        extra: Map<String, Value>,
        app_id: &str,
    ) -> Result<(String, Emitted), OrgError> {
        if self.r.users().contains_key(&fx.key) || self.r.depts().contains_key(&fx.key) {
            return Err(OrgError::Conflict(format!("key {} exists", fx.key)));
        }
        self.check_user(&fx)?;
        let key = fx.key.clone();
        self.insert_user(fx, extra, app_id);
        let obj = self.render_user(&key, "open_department_id");
        Ok((
            key,
            vec![("contact.user.created_v3", json!({ "object": obj }))],
        ))
    }

    pub fn update_user(
        &mut self,
        key: &str,
        fx: FixtureUser,
        extra: Map<String, Value>,
    ) -> Result<Emitted, OrgError> {
        self.check_user(&fx)?;
        let old = self.render_user(key, "open_department_id");
        let mut u = self
            .r
            .take_user(key)
            .ok_or_else(|| OrgError::NotFound(format!("user {key}")))?;
        u.fx = fx;
        u.extra.extend(extra);
        self.r.put_user(u);
        let new = self.render_user(key, "open_department_id");
        Ok(updated("contact.user.updated_v3", &old, new))
    }

    fn check_dept(&self, fx: &FixtureDepartment, key: &str) -> Result<(), OrgError> {
        if fx.name.trim().is_empty() {
            return Err(OrgError::Invalid("name is required".into()));
        }
        match &fx.parent {
            None => {
                if self
                    .r
                    .depts()
                    .get(key)
                    .is_none_or(|d| d.fx.parent.is_some())
                {
                    return Err(OrgError::Invalid("parent is required".into()));
                }
            }
            Some(p) => {
                if !self.r.depts().contains_key(p) {
                    return Err(OrgError::NotFound(format!("parent department {p}")));
                }
                // No cycles: walking up from the parent must not reach this department.
                let mut cur = Some(p.clone());
                while let Some(c) = cur {
                    if c == key {
                        return Err(OrgError::Invalid(
                            "a department cannot move under itself".into(),
                        ));
                    }
                    cur = self.r.depts().get(&c).and_then(|d| d.fx.parent.clone());
                }
            }
        }
        known(&fx.leaders, "leader", |l| self.r.users().contains_key(l))
    }

    pub fn create_dept(
        &mut self,
        fx: FixtureDepartment,
        custom: Option<String>,
        app_id: &str,
    ) -> Result<(String, Emitted), OrgError> {
        if self.r.users().contains_key(&fx.key) || self.r.depts().contains_key(&fx.key) {
            return Err(OrgError::Conflict(format!("key {} exists", fx.key)));
        }
        if let Some(c) = &custom
            && (self.r.idx().dept_by_custom.get(c.as_str()).is_some() || c == "0")
        {
            return Err(OrgError::Conflict(format!("department_id {c} exists")));
        }
        self.check_dept(&fx, &fx.key)?;
        let key = fx.key.clone();
        self.insert_dept(fx, custom, app_id);
        let obj = self.render_dept(&key, "open_id", "open_department_id");
        Ok((
            key,
            vec![("contact.department.created_v3", json!({ "object": obj }))],
        ))
    }

    pub fn update_dept(&mut self, key: &str, fx: FixtureDepartment) -> Result<Emitted, OrgError> {
        if !self.r.depts().contains_key(key) {
            return Err(OrgError::NotFound(format!("department {key}")));
        }
        self.check_dept(&fx, key)?;
        let old = self.render_dept(key, "open_id", "open_department_id");
        if let Some(mut d) = self.r.take_dept(key) {
            d.fx = fx;
            self.r.put_dept(d);
        }
        let new = self.render_dept(key, "open_id", "open_department_id");
        Ok(updated("contact.department.updated_v3", &old, new))
    }

    // ---- Feishu API bodies -> fixture records ----

    /// Applies a Feishu user body (create or patch) onto `fx`; returns extra Feishu fields.
    pub fn apply_user_body(
        &self,
        fx: &mut FixtureUser,
        body: &Map<String, Value>,
        did_type: &str,
    ) -> Result<Map<String, Value>, OrgError> {
        let mut extra = Map::new();
        for (k, v) in body {
            let s = || {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| OrgError::Invalid(format!("{k} must be a string")))
            };
            match k.as_str() {
                "name" => fx.name = s()?,
                "en_name" => fx.en_name = s()?,
                "email" => fx.email = s()?,
                "mobile" => {
                    let m = s()?;
                    fx.mobile = m.strip_prefix("+86").map(str::to_string).unwrap_or(m);
                }
                "employee_no" => fx.employee_no = s()?,
                "job_title" => fx.title = s()?,
                "gender" => fx.gender = gender_name(v.as_i64().unwrap_or(0)),
                "join_time" => {
                    if let Some(d) = v.as_i64().and_then(join_date) {
                        fx.hired_at = d;
                    }
                }
                "department_ids" => {
                    let ids = v.as_array().ok_or_else(|| {
                        OrgError::Invalid("department_ids must be an array".into())
                    })?;
                    let mut keys = Vec::new();
                    for id in ids {
                        let id = id.as_str().unwrap_or_default();
                        keys.push(
                            self.dept_key(id, did_type)
                                .ok_or_else(|| OrgError::NotFound(format!("department {id}")))?,
                        );
                    }
                    fx.departments = keys;
                }
                "status" => {
                    if let Some(f) = v.get("is_frozen").and_then(Value::as_bool) {
                        fx.active = !f;
                    }
                }
                // Ids are the system's; the rest is kept verbatim.
                "open_id" | "union_id" | "user_id" | "orders" => {}
                _ => {
                    extra.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(extra)
    }

    /// Applies a Feishu department body onto `fx`.
    pub fn apply_dept_body(
        &self,
        fx: &mut FixtureDepartment,
        body: &Map<String, Value>,
        uid_type: &str,
        did_type: &str,
    ) -> Result<(), OrgError> {
        for (k, v) in body {
            match k.as_str() {
                "name" => fx.name = v.as_str().unwrap_or_default().to_string(),
                "parent_department_id" => {
                    let id = v.as_str().unwrap_or_default();
                    fx.parent = Some(
                        self.dept_key(id, did_type)
                            .ok_or_else(|| OrgError::NotFound(format!("department {id}")))?,
                    );
                }
                "order" => {
                    fx.order = v
                        .as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        .ok_or_else(|| OrgError::Invalid("order must be a number".into()))?;
                }
                "leader_user_id" => {
                    let id = v.as_str().unwrap_or_default();
                    if id.is_empty() {
                        fx.leaders.clear();
                    } else {
                        let key = self
                            .user_key(id, uid_type)
                            .ok_or_else(|| OrgError::NotFound(format!("user {id}")))?;
                        fx.leaders.retain(|l| l != &key);
                        fx.leaders.insert(0, key);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// What the console reads and removes, as this org does it.
impl ConsoleOrg for Org {
    type Emitted = Emitted;
    type Error = OrgError;

    fn delete_user(&mut self, key: &str) -> Result<Emitted, OrgError> {
        let obj = self.render_user(key, "open_department_id");
        let u = self
            .r
            .take_user(key)
            .ok_or_else(|| OrgError::NotFound(format!("user {key}")))?;
        let mut events = Vec::new();
        // A deleted user stops leading departments.
        let led: Vec<String> = self.r.links().led.keys(&u.fx.key).cloned().collect();
        for dk in led {
            let mut fx = self.r.depts()[&dk].fx.clone();
            fx.leaders.retain(|l| l != &u.fx.key);
            events.extend(self.update_dept(&dk, fx)?);
        }
        let old = json!({"department_ids": obj["department_ids"], "open_id": u.open_id});
        events.insert(
            0,
            (
                "contact.user.deleted_v3",
                json!({"object": obj, "old_object": old}),
            ),
        );
        Ok(events)
    }

    fn delete_dept(&mut self, key: &str) -> Result<Emitted, OrgError> {
        let d = self
            .r
            .depts()
            .get(key)
            .ok_or_else(|| OrgError::NotFound(format!("department {key}")))?;
        if d.fx.parent.is_none() {
            return Err(OrgError::Invalid(
                "the root department cannot be deleted".into(),
            ));
        }
        if self.r.links().children.count(key) > 0 || self.member_count(key) > 0 {
            return Err(OrgError::Invalid(
                "department still has members or sub-departments".into(),
            ));
        }
        let obj = self.render_dept(key, "open_id", "open_department_id");
        let open_id = d.open_id.clone();
        self.r.take_dept(key);
        let mut obj = obj;
        obj["status"] = json!({"is_deleted": true});
        Ok(vec![(
            "contact.department.deleted_v3",
            json!({"object": obj, "old_object": {"status": {"is_deleted": false}, "open_department_id": open_id}}),
        )])
    }

    fn snapshot(&self) -> Value {
        self.r.snapshot_with(
            "feishu",
            |d| json!({"open_department_id": d.open_id, "department_id": d.custom_id}),
            |u| json!({"open_id": u.open_id, "union_id": u.union_id, "user_id": u.user_id}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::index::{test_dept, test_org, test_user};

    #[test]
    fn dates_roundtrip_in_shanghai_time() {
        let t = join_time("2024-10-27").unwrap();
        assert_eq!(t, 1_729_958_400);
        assert_eq!(join_date(t).unwrap(), "2024-10-27");
    }

    #[test]
    fn diff_lists_previous_values_of_changed_keys() {
        let d = diff(&json!({"a":1,"b":2}), &json!({"a":1,"b":3}));
        assert_eq!(d, json!({"b":2}));
    }

    #[test]
    fn indices_follow_create_move_rename_delete_and_recreate() {
        let mut org = Org::new(&test_org(), "cli_x");
        org.assert_indexed();
        assert_eq!(org.children("d0", false), ["d2", "d1"]);
        assert_eq!(org.children("d0", true), ["d2", "d1", "d3"]);
        assert_eq!(org.members("d1"), ["u1", "u2"]);
        assert_eq!(org.root_key().as_deref(), Some("d0"));

        // create
        org.create_user(test_user("u3", "", "c@x.cn", &["d2"]), Map::new(), "cli_x")
            .unwrap();
        org.assert_indexed();
        let open = org.user_ext("u3", "open_id");
        let union = org.user_ext("u3", "union_id");
        assert_eq!(org.user_key(&open, "open_id").as_deref(), Some("u3"));
        assert_eq!(org.user_key(&union, "union_id").as_deref(), Some("u3"));
        assert_eq!(org.user_key("u3", "user_id").as_deref(), Some("u3"));
        assert_eq!(org.user_by_email("c@x.cn").as_deref(), Some("u3"));
        assert_eq!(org.members("d2"), ["u2", "u3"]);
        assert_eq!(
            org.render_dept("d2", "open_id", "department_id")["member_count"],
            2
        );

        // move + rename + new email
        let mut fx = org.users()["u3"].fx.clone();
        fx.departments = vec!["d3".into()];
        fx.name = "C2".into();
        fx.email = "c2@x.cn".into();
        org.update_user("u3", fx, Map::new()).unwrap();
        org.assert_indexed();
        assert_eq!(org.members("d2"), ["u2"]);
        assert_eq!(org.members("d3"), ["u3"]);
        assert_eq!(org.user_by_email("c@x.cn"), None);
        assert_eq!(org.user_by_email("c2@x.cn").as_deref(), Some("u3"));

        // a department moves and is renamed
        let mut d3 = org.depts()["d3"].fx.clone();
        d3.parent = Some("d2".into());
        d3.name = "three bis".into();
        org.update_dept("d3", d3).unwrap();
        org.assert_indexed();
        assert!(org.children("d1", false).is_empty());
        assert_eq!(org.children("d2", false), ["d3"]);
        assert_eq!(org.children("d0", true), ["d2", "d1", "d3"]);
        let d3_open = org.dept_ext("d3", "open_department_id");
        assert_eq!(
            org.dept_key(&d3_open, "open_department_id").as_deref(),
            Some("d3")
        );
        assert_eq!(org.dept_key("d3", "department_id").as_deref(), Some("d3"));

        // delete a leader: the department loses it
        org.delete_user("u1").unwrap();
        org.assert_indexed();
        assert!(org.depts()["d1"].fx.leaders.is_empty());
        assert_eq!(org.user_by_email("a@x.cn"), None);
        assert_eq!(org.members("d1"), ["u2"]);

        // a department with a member cannot go; once empty it can
        assert!(org.delete_dept("d3").is_err());
        org.delete_user("u3").unwrap();
        org.delete_dept("d3").unwrap();
        org.assert_indexed();
        assert_eq!(org.dept_key(&d3_open, "open_department_id"), None);
        assert!(org.children("d2", false).is_empty());

        // re-create both under other parents
        org.create_dept(test_dept("d3", "again", "d1", &["u2"]), None, "cli_x")
            .unwrap();
        org.create_user(test_user("u1", "", "a@x.cn", &["d3"]), Map::new(), "cli_x")
            .unwrap();
        org.assert_indexed();
        assert_eq!(
            org.dept_key(&d3_open, "open_department_id").as_deref(),
            Some("d3")
        );
        assert_eq!(org.children("d1", false), ["d3"]);
        assert_eq!(org.members("d3"), ["u1"]);
        assert_eq!(org.user_by_email("a@x.cn").as_deref(), Some("u1"));
        assert_eq!(org.r.links().led.keys("u2").collect::<Vec<_>>(), ["d3"]);
    }

    #[test]
    fn pages_are_sliced_in_key_order() {
        let mut org = Org::new(&test_org(), "cli_x");
        for i in 0..700 {
            org.create_user(
                test_user(&format!("m{i}"), "", "", &["d2"]),
                Map::new(),
                "cli_x",
            )
            .unwrap();
        }
        let all = org.members("d2");
        assert_eq!(all.len(), 701);
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(org.members_range("d2", 650, 700), all[650..700].to_vec());
        assert_eq!(org.member_count("d2"), 701);
        org.assert_indexed();
    }
}
