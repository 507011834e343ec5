//! The sandbox's org: the fixture records plus WeCom's ids (numeric department id, root 1;
//! string userid = the fixture key), rendered in WeCom's shapes, and the `change_contact`
//! events every change produces.

use crate::sandbox::prelude::*;

use crate::crypto::sha256;

use crate::sandbox::index::{Groups, OrgIndex, Records, fixture_records};

#[derive(Debug)]
pub(crate) enum OrgError {
    /// (WeCom code, message)
    Code(i64, String),
}

pub(crate) fn oe<T>(code: i64, msg: impl Into<String>) -> Result<T, OrgError> {
    Err(OrgError::Code(code, msg.into()))
}

pub(crate) struct Dept {
    pub fx: FixtureDepartment,
    pub id: i64,
    pub name_en: String,
}

pub(crate) struct User {
    pub fx: FixtureUser,
    /// 1 activated, 2 disabled, 4 not activated, 5 left.
    pub status: i64,
    /// WeCom fields with no fixture counterpart (telephone, address, direct_leader, …), as
    /// given through the API.
    pub extra: Map<String, Value>,
}

/// A `change_contact` event body (XML fields), emitted after the change.
pub(crate) type Emitted = Vec<Map<String, Value>>;

/// The org: its records (kept in step with their index by [`Records`]) and the next dept id.
pub(crate) struct Org {
    r: Records<Dept, User, Index>,
    next_id: i64,
}

/// Lookups kept beside the records so that no API call scans the org.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Index {
    dept_by_id: Groups<i64>,
    /// lowercased userid -> keys (userids are case-insensitive)
    user_by_lower: Groups<String>,
    user_by_mobile: Groups<String>,
    /// lowercased email -> keys
    user_by_email: Groups<String>,
    /// user key -> keys of the users naming it as `direct_leader` (given through the API)
    led_directly: Groups<String>,
    /// (member, department) pairs: the rows of `user/list_id`
    rows: usize,
}

/// The `direct_leader` userids given through the API.
fn direct_leader_ids(u: &User) -> impl Iterator<Item = &str> {
    u.extra
        .get("direct_leader")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fixture_records!(Org, Dept, User, Index);

impl OrgIndex<Dept, User> for Index {
    fn set_dept(&mut self, d: &Dept, present: bool) {
        self.dept_by_id.set(d.id, &d.fx.key, present);
    }

    fn set_user(&mut self, k: &str, u: &User, present: bool) {
        self.user_by_lower.set(k.to_ascii_lowercase(), k, present);
        self.user_by_mobile.set(u.fx.mobile.clone(), k, present);
        self.user_by_email
            .set(u.fx.email.to_ascii_lowercase(), k, present);
        let rows = u.fx.departments.len();
        self.rows = if present {
            self.rows + rows
        } else {
            self.rows.saturating_sub(rows)
        };
        for l in direct_leader_ids(u) {
            self.led_directly.set(l.to_string(), k, present);
        }
    }
}

pub const ROOT_ID: i64 = 1;

/// A valid userid: 1–64 bytes of `[0-9A-Za-z_\-@.]`, starting with a letter or digit.
pub fn valid_userid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-@.".contains(c))
}

fn gender_code(g: &str) -> &'static str {
    match g {
        "male" | "1" => "1",
        "female" | "2" => "2",
        _ => "0",
    }
}

fn gender_name(c: &str) -> String {
    match c {
        "1" => "male".into(),
        "2" => "female".into(),
        _ => String::new(),
    }
}

fn change(change_type: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("MsgType".into(), json!("event"));
    m.insert("Event".into(), json!("change_contact"));
    m.insert("ChangeType".into(), json!(change_type));
    m
}

fn join_ints(v: &[i64]) -> String {
    v.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

impl Org {
    pub fn new(fx: &OrgFixture) -> Self {
        let mut org = Self {
            r: Records::default(),
            next_id: ROOT_ID + 1,
        };
        for d in &fx.departments {
            let id = if d.parent.is_none() {
                ROOT_ID
            } else {
                let id = org.next_id;
                org.next_id += 1;
                id
            };
            org.r.put_dept(Dept {
                fx: d.clone(),
                id,
                name_en: String::new(),
            });
        }
        for u in &fx.users {
            org.r.put_user(User {
                status: if u.active { 1 } else { 2 },
                fx: u.clone(),
                extra: Map::new(),
            });
        }
        org
    }

    // ---- the only writers of `depts` / `users`: each keeps `idx` in step ----

    /// The number of (member, department) pairs.
    pub fn membership_rows(&self) -> usize {
        self.r.idx().rows
    }

    pub fn next_key(&mut self, prefix: &str) -> String {
        self.r.next_key(prefix)
    }

    pub fn alloc_dept_id(&mut self) -> i64 {
        while self.r.idx().dept_by_id.get(&self.next_id).is_some() {
            self.next_id += 1;
        }
        self.next_id
    }

    pub fn dept_key(&self, id: i64) -> Option<String> {
        self.r.idx().dept_by_id.first(&id).cloned()
    }

    pub fn dept_id(&self, key: &str) -> i64 {
        self.r.depts().get(key).map_or(0, |d| d.id)
    }

    /// userids are case-insensitive.
    pub fn user_key(&self, userid: &str) -> Option<String> {
        if let Some(u) = self.r.users().get(userid) {
            return Some(u.fx.key.clone());
        }
        self.r
            .idx()
            .user_by_lower
            .first(userid.to_ascii_lowercase().as_str())
            .cloned()
    }

    pub fn open_userid(key: &str) -> String {
        format!(
            "wo{}",
            &hex::encode(sha256(format!("open:{key}").as_bytes()))[..30]
        )
    }

    /// The members's direct leaders: given through the API, or else the first leader of the
    /// main department (of its parent when the member leads it).
    pub fn direct_leaders(&self, key: &str) -> Vec<String> {
        let Some(u) = self.r.users().get(key) else {
            return Vec::new();
        };
        if let Some(Value::Array(a)) = u.extra.get("direct_leader") {
            return a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
        }
        let mut dept = u.fx.departments.first().cloned();
        while let Some(dk) = dept {
            let Some(d) = self.r.depts().get(&dk) else {
                break;
            };
            if let Some(l) = d.fx.leaders.iter().find(|l| *l != key) {
                return vec![l.clone()];
            }
            dept = d.fx.parent.clone();
        }
        Vec::new()
    }

    pub fn render_user(&self, key: &str, trim: bool) -> Value {
        let Some(u) = self.r.users().get(key) else {
            return Value::Null;
        };
        let f = &u.fx;
        let depts: Vec<i64> = f.departments.iter().map(|d| self.dept_id(d)).collect();
        let leader: Vec<i64> = f
            .departments
            .iter()
            .map(|d| {
                i64::from(
                    self.r
                        .depts()
                        .get(d)
                        .is_some_and(|d| d.fx.leaders.contains(&f.key)),
                )
            })
            .collect();
        let mut attrs = Vec::new();
        if !f.employee_no.is_empty() {
            attrs.push(json!({"type": 0, "name": "工号", "text": {"value": f.employee_no}, "value": f.employee_no}));
        }
        if !f.hired_at.is_empty() {
            attrs.push(json!({"type": 0, "name": "入职日期", "text": {"value": f.hired_at}, "value": f.hired_at}));
        }
        let mut v = json!({
            "userid": f.key, "name": f.name, "department": depts,
            "order": vec![0; depts.len()], "position": f.title, "mobile": f.mobile,
            "gender": gender_code(&f.gender), "email": f.email, "biz_mail": "",
            "is_leader_in_dept": leader, "direct_leader": self.direct_leaders(key),
            "avatar": "", "thumb_avatar": "", "telephone": "", "alias": f.en_name, "address": "",
            "open_userid": Self::open_userid(&f.key),
            "main_department": depts.first().copied().unwrap_or(ROOT_ID),
            "extattr": {"attrs": attrs}, "status": u.status, "qr_code": "",
            "external_position": "", "external_profile": {"external_corp_name": "", "external_attr": []},
        });
        for (k, x) in &u.extra {
            if k != "direct_leader" {
                v[k.as_str()] = x.clone();
            }
        }
        if trim && let Some(m) = v.as_object_mut() {
            for k in [
                "avatar",
                "thumb_avatar",
                "gender",
                "mobile",
                "email",
                "biz_mail",
                "qr_code",
                "address",
            ] {
                m.remove(k);
            }
        }
        v
    }

    pub fn render_dept(&self, key: &str) -> Value {
        let Some(d) = self.r.depts().get(key) else {
            return Value::Null;
        };
        let parent = d.fx.parent.as_deref().map_or(0, |p| self.dept_id(p));
        json!({"id": d.id, "name": d.fx.name, "name_en": d.name_en,
            "department_leader": d.fx.leaders, "parentid": parent, "order": d.fx.order})
    }

    /// Direct sub-departments, larger `order` first.
    fn direct(&self, key: &str) -> Vec<String> {
        self.r.sub_depts(key, |a, b| {
            b.fx.order.cmp(&a.fx.order).then(a.id.cmp(&b.id))
        })
    }

    /// The department and its subtree, depth first (pre-order, siblings by `direct`).
    pub fn subtree(&self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        // A stack of children lists in reverse, so that popping yields them in order.
        let mut stack = vec![key.to_string()];
        while let Some(k) = stack.pop() {
            let mut kids = self.direct(&k);
            kids.reverse();
            stack.extend(kids);
            out.push(k);
        }
        out
    }

    // ---- events ----

    fn user_event(&self, change_type: &str, key: &str) -> Map<String, Value> {
        let mut m = change(change_type);
        let u = self.render_user(key, false);
        let s = |k: &str| u.get(k).cloned().unwrap_or(json!(""));
        let ints = |k: &str| {
            u.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_i64).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        m.insert("UserID".into(), s("userid"));
        m.insert("Name".into(), s("name"));
        m.insert("Department".into(), json!(join_ints(&ints("department"))));
        m.insert(
            "MainDepartment".into(),
            json!(u["main_department"].to_string()),
        );
        m.insert(
            "IsLeaderInDept".into(),
            json!(join_ints(&ints("is_leader_in_dept"))),
        );
        m.insert(
            "DirectLeader".into(),
            json!(self.direct_leaders(key).join(",")),
        );
        m.insert("Position".into(), s("position"));
        m.insert("Mobile".into(), s("mobile"));
        m.insert("Gender".into(), s("gender"));
        m.insert("Email".into(), s("email"));
        m.insert("BizMail".into(), s("biz_mail"));
        m.insert("Status".into(), json!(u["status"].to_string()));
        m.insert("Avatar".into(), s("avatar"));
        m.insert("Alias".into(), s("alias"));
        m.insert("Telephone".into(), s("telephone"));
        m.insert("Address".into(), s("address"));
        let items: Vec<Value> = u["extattr"]["attrs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| json!({"Name": x["name"], "Type": 0, "Text": {"Value": x["text"]["value"]}}))
                    .collect()
            })
            .unwrap_or_default();
        if !items.is_empty() {
            m.insert("ExtAttr".into(), json!({ "Item": items }));
        }
        m
    }

    fn party_event(&self, change_type: &str, key: &str) -> Map<String, Value> {
        let mut m = change(change_type);
        if let Some(d) = self.r.depts().get(key) {
            let parent = d.fx.parent.as_deref().map_or(0, |p| self.dept_id(p));
            m.insert("Id".into(), json!(d.id.to_string()));
            m.insert("Name".into(), json!(d.fx.name));
            m.insert("ParentId".into(), json!(parent.to_string()));
            if change_type == "create_party" {
                m.insert("Order".into(), json!(d.fx.order.to_string()));
            }
        }
        m
    }

    // ---- mutations: each returns the events WeCom emits ----

    fn check_user(&self, fx: &FixtureUser) -> Result<(), OrgError> {
        if fx.name.trim().is_empty() || fx.name.chars().count() > 64 {
            return oe(60112, "invalid name");
        }
        if fx.departments.is_empty() {
            return oe(60127, "missing department");
        }
        if fx.departments.len() > 100 {
            return oe(60128, "too many departments");
        }
        for d in &fx.departments {
            if !self.r.depts().contains_key(d) {
                return oe(60123, format!("invalid department {d}"));
            }
        }
        if fx.mobile.is_empty() && fx.email.is_empty() {
            return oe(60129, "missing mobile or email");
        }
        if !fx.mobile.is_empty()
            && !fx
                .mobile
                .chars()
                .all(|c| c.is_ascii_digit() || c == '+' || c == '-')
        {
            return oe(60103, "invalid mobile");
        }
        if !fx.email.is_empty() && !fx.email.contains('@') {
            return oe(60105, "invalid email");
        }
        // The first other member (in key order) holding the mobile or the email decides.
        let other = |keys: Option<&crate::sandbox::index::SortedKeys>| {
            keys.and_then(|ks| ks.iter().find(|k| **k != fx.key).cloned())
        };
        let by_mobile = if fx.mobile.is_empty() {
            None
        } else {
            other(self.r.idx().user_by_mobile.get(fx.mobile.as_str()))
        };
        let by_email = if fx.email.is_empty() {
            None
        } else {
            other(
                self.r
                    .idx()
                    .user_by_email
                    .get(fx.email.to_ascii_lowercase().as_str()),
            )
        };
        match (by_mobile, by_email) {
            (Some(m), Some(e)) if e < m => oe(60106, "email existed"),
            (Some(_), _) => oe(60104, "mobile existed"),
            (None, Some(_)) => oe(60106, "email existed"),
            (None, None) => Ok(()),
        }
    }

    pub fn create_user(
        &mut self,
        fx: FixtureUser,
        status: i64,
        mut extra: Map<String, Value>,
    ) -> Result<Emitted, OrgError> {
        if !valid_userid(&fx.key) {
            return oe(40003, "invalid userid");
        }
        if self.user_key(&fx.key).is_some() {
            return oe(60102, "userid existed");
        }
        self.check_user(&fx)?;
        let key = fx.key.clone();
        let leads = extra.remove("__leads");
        self.r.put_user(User { fx, status, extra });
        self.apply_leads(&key, leads);
        Ok(vec![self.user_event("create_user", &key)])
    }

    pub fn update_user(
        &mut self,
        key: &str,
        fx: FixtureUser,
        status: Option<i64>,
        mut extra: Map<String, Value>,
    ) -> Result<Emitted, OrgError> {
        self.check_user(&fx)?;
        let before = self.render_user(key, false);
        let leads = extra.remove("__leads");
        let mut u = self
            .r
            .take_user(key)
            .ok_or_else(|| OrgError::Code(60111, "userid not found".into()))?;
        u.fx = fx;
        if let Some(s) = status {
            u.status = s;
        }
        u.extra.extend(extra);
        self.r.put_user(u);
        self.apply_leads(key, leads);
        if self.render_user(key, false) == before {
            return Ok(Vec::new());
        }
        Ok(vec![self.user_event("update_user", key)])
    }

    fn check_dept(&self, fx: &FixtureDepartment, key: &str) -> Result<(), OrgError> {
        let n = fx.name.chars().count();
        if n == 0 || n > 64 {
            return oe(60001, "department name length invalid");
        }
        if fx.name.contains(['\\', ':', '*', '?', '"', '<', '>', '|']) {
            return oe(60009, "department name include invalid char");
        }
        match &fx.parent {
            None => {
                if self.r.depts().get(key).is_none_or(|d| d.id != ROOT_ID) {
                    return oe(60004, "parent department not found");
                }
            }
            Some(p) => {
                if !self.r.depts().contains_key(p) {
                    return oe(60004, "parent department not found");
                }
                let mut cur = Some(p.clone());
                let mut depth = 1;
                while let Some(c) = cur {
                    if c == key {
                        return oe(60010, "department cycle");
                    }
                    depth += 1;
                    cur = self.r.depts().get(&c).and_then(|d| d.fx.parent.clone());
                }
                if depth > 15 {
                    return oe(81001, "department level too deep");
                }
                if self.r.links().children.keys(p.as_str()).any(|k| {
                    k != key && self.r.depts().get(k).is_some_and(|d| d.fx.name == fx.name)
                }) {
                    return oe(60008, "department existed");
                }
            }
        }
        for l in &fx.leaders {
            if !self.r.users().contains_key(l) {
                return oe(60111, format!("leader {l} not found"));
            }
        }
        Ok(())
    }

    pub fn create_dept(
        &mut self,
        fx: FixtureDepartment,
        id: i64,
        name_en: String,
    ) -> Result<Emitted, OrgError> {
        if self.r.depts().contains_key(&fx.key) || self.r.users().contains_key(&fx.key) {
            return oe(60008, format!("key {} exists", fx.key));
        }
        if id <= ROOT_ID || self.dept_key(id).is_some() {
            return oe(60008, "department id existed or invalid");
        }
        if fx.parent.is_none() {
            return oe(60004, "parent department not found");
        }
        self.check_dept(&fx, &fx.key)?;
        if self.r.depts().len() >= 30_000 {
            return oe(81002, "department count over limit");
        }
        let key = fx.key.clone();
        self.r.put_dept(Dept { fx, id, name_en });
        Ok(vec![self.party_event("create_party", &key)])
    }

    pub fn update_dept(
        &mut self,
        key: &str,
        fx: FixtureDepartment,
        name_en: Option<String>,
    ) -> Result<Emitted, OrgError> {
        let cur = self
            .r
            .depts()
            .get(key)
            .ok_or_else(|| OrgError::Code(60003, "department not found".into()))?;
        if cur.id == ROOT_ID && fx.parent.is_some() {
            return oe(60010, "the root department cannot move");
        }
        self.check_dept(&fx, key)?;
        let before = self.render_dept(key);
        if let Some(mut d) = self.r.take_dept(key) {
            d.fx = fx;
            if let Some(n) = name_en {
                d.name_en = n;
            }
            self.r.put_dept(d);
        }
        if self.render_dept(key) == before {
            return Ok(Vec::new());
        }
        Ok(vec![self.party_event("update_party", key)])
    }

    // ---- API bodies onto fixture records ----

    /// Applies a `user/create|update` body onto `fx`; returns the status change (`enable`) and
    /// the fields kept verbatim.
    pub fn apply_user_body(
        &self,
        fx: &mut FixtureUser,
        body: &Map<String, Value>,
    ) -> Result<(Option<bool>, Map<String, Value>), OrgError> {
        let mut extra = Map::new();
        let mut enable = None;
        let mut leader_flags: Option<Vec<i64>> = None;
        for (k, v) in body {
            let s = || match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => oe(40058, format!("{k} must be a string")),
            };
            match k.as_str() {
                "name" => fx.name = s()?,
                "alias" => fx.en_name = s()?,
                "mobile" => fx.mobile = s()?,
                "email" => fx.email = s()?,
                "position" => fx.title = s()?,
                "gender" => fx.gender = gender_name(&s()?),
                "department" => {
                    let ids = v
                        .as_array()
                        .ok_or_else(|| OrgError::Code(60123, "department must be a list".into()))?;
                    let mut keys = Vec::new();
                    for id in ids {
                        let n = crate::wecom::contact::as_int(id).unwrap_or(-1);
                        keys.push(self.dept_key(n).ok_or_else(|| {
                            OrgError::Code(60123, format!("invalid department {n}"))
                        })?);
                    }
                    fx.departments = keys;
                }
                "main_department" => {
                    let n = crate::wecom::contact::as_int(v).unwrap_or(-1);
                    let key = self
                        .dept_key(n)
                        .ok_or_else(|| OrgError::Code(60123, format!("invalid department {n}")))?;
                    extra.insert("__main".into(), json!(key));
                }
                "is_leader_in_dept" => {
                    leader_flags = Some(
                        v.as_array()
                            .map(|a| a.iter().filter_map(crate::wecom::contact::as_int).collect())
                            .unwrap_or_default(),
                    );
                }
                "enable" => enable = crate::wecom::contact::as_int(v).map(|e| e == 1),
                "extattr" => {
                    for a in v["attrs"].as_array().into_iter().flatten() {
                        let val = a["text"]["value"]
                            .as_str()
                            .or_else(|| a["value"].as_str())
                            .unwrap_or_default()
                            .to_string();
                        match a["name"].as_str() {
                            Some("工号") => fx.employee_no = val,
                            Some("入职日期") => fx.hired_at = val,
                            _ => {}
                        }
                    }
                }
                "direct_leader" => {
                    let a = v.as_array().cloned().unwrap_or_default();
                    if a.len() > 5 {
                        return oe(60137, "at most 5 direct leaders");
                    }
                    extra.insert(k.clone(), Value::Array(a));
                }
                // Ids and request-only flags.
                "userid" | "new_userid" | "order" | "to_invite" | "avatar_mediaid" => {}
                _ => {
                    extra.insert(k.clone(), v.clone());
                }
            }
        }
        // main_department puts that department first.
        if let Some(Value::String(main)) = extra.remove("__main") {
            if !fx.departments.contains(&main) {
                return oe(60123, "main_department is not one of department");
            }
            fx.departments.retain(|d| d != &main);
            fx.departments.insert(0, main);
        }
        if let Some(flags) = leader_flags {
            let ids: Vec<i64> = match body.get("department").and_then(Value::as_array) {
                Some(a) => a.iter().filter_map(crate::wecom::contact::as_int).collect(),
                None => fx.departments.iter().map(|d| self.dept_id(d)).collect(),
            };
            if flags.len() != ids.len() {
                return oe(60132, "is_leader_in_dept size mismatch department");
            }
            extra.insert(
                "__leads".into(),
                json!(
                    ids.iter()
                        .zip(flags)
                        .map(|(d, f)| json!([d, f]))
                        .collect::<Vec<_>>()
                ),
            );
        }
        Ok((enable, extra))
    }

    /// Sets the leadership flags recorded by [`Org::apply_user_body`] (`__leads`).
    fn apply_leads(&mut self, key: &str, leads: Option<Value>) {
        let Some(Value::Array(pairs)) = leads else {
            return;
        };
        for p in pairs {
            let (Some(id), Some(flag)) = (p[0].as_i64(), p[1].as_i64()) else {
                continue;
            };
            let Some(dk) = self.dept_key(id) else {
                continue;
            };
            if let Some(mut d) = self.r.take_dept(&dk) {
                let has = d.fx.leaders.iter().any(|l| l == key);
                if flag == 1 && !has {
                    d.fx.leaders.push(key.to_string());
                } else if flag != 1 && has {
                    d.fx.leaders.retain(|l| l != key);
                }
                self.r.put_dept(d);
            }
        }
    }

    /// Applies a `department/create|update` body onto `fx`; returns `name_en` when given.
    pub fn apply_dept_body(
        &self,
        fx: &mut FixtureDepartment,
        body: &Map<String, Value>,
    ) -> Result<Option<String>, OrgError> {
        let mut name_en = None;
        for (k, v) in body {
            match k.as_str() {
                "name" => fx.name = v.as_str().unwrap_or_default().to_string(),
                "name_en" => name_en = Some(v.as_str().unwrap_or_default().to_string()),
                "parentid" => {
                    let n = crate::wecom::contact::as_int(v).unwrap_or(-1);
                    fx.parent = Some(self.dept_key(n).ok_or_else(|| {
                        OrgError::Code(60004, "parent department not found".into())
                    })?);
                }
                "order" => {
                    let o = crate::wecom::contact::as_int(v)
                        .ok_or_else(|| OrgError::Code(40058, "order must be a number".into()))?;
                    if !(0..(1i64 << 32)).contains(&o) {
                        return oe(40058, "order out of range");
                    }
                    fx.order = o;
                }
                "department_leader" => {
                    let mut keys = Vec::new();
                    for l in v.as_array().into_iter().flatten() {
                        let id = l.as_str().unwrap_or_default();
                        keys.push(self.user_key(id).ok_or_else(|| {
                            OrgError::Code(60111, format!("userid {id} not found"))
                        })?);
                    }
                    fx.leaders = keys;
                }
                _ => {}
            }
        }
        Ok(name_en)
    }
}

/// What the console reads and removes, as this org does it.
impl ConsoleOrg for Org {
    type Emitted = Emitted;
    type Error = OrgError;

    fn snapshot(&self) -> Value {
        self.r.snapshot_with(
            "wecom",
            |d| {
                let parent = d.fx.parent.as_deref().map_or(0, |p| self.dept_id(p));
                json!({"id": d.id, "parentid": parent, "name_en": d.name_en})
            },
            |u| {
                let depts: Vec<i64> = u.fx.departments.iter().map(|d| self.dept_id(d)).collect();
                json!({"userid": u.fx.key, "status": u.status, "department": depts,
                    "main_department": depts.first().copied().unwrap_or(ROOT_ID), "extra": u.extra})
            },
        )
    }

    fn delete_user(&mut self, key: &str) -> Result<Emitted, OrgError> {
        let u = self
            .r
            .take_user(key)
            .ok_or_else(|| OrgError::Code(60111, "userid not found".into()))?;
        let mut m = change("delete_user");
        m.insert("UserID".into(), json!(u.fx.key));
        // A deleted member stops leading departments (WeCom reports no party change for it).
        let led: Vec<String> = self.r.links().led.keys(&u.fx.key).cloned().collect();
        for dk in led {
            if let Some(mut d) = self.r.take_dept(&dk) {
                d.fx.leaders.retain(|l| l != &u.fx.key);
                self.r.put_dept(d);
            }
        }
        // Members whose direct leader was this member lose it.
        let followers: Vec<String> = self.r.idx().led_directly.keys(&u.fx.key).cloned().collect();
        for ok in followers {
            if let Some(mut other) = self.r.take_user(&ok) {
                if let Some(Value::Array(a)) = other.extra.get_mut("direct_leader") {
                    a.retain(|x| x.as_str() != Some(u.fx.key.as_str()));
                }
                self.r.put_user(other);
            }
        }
        Ok(vec![m])
    }

    fn delete_dept(&mut self, key: &str) -> Result<Emitted, OrgError> {
        let d = self
            .r
            .depts()
            .get(key)
            .ok_or_else(|| OrgError::Code(60003, "department not found".into()))?;
        if d.id == ROOT_ID {
            return oe(60007, "not allow to delete root department");
        }
        if self.r.links().children.count(key) > 0 {
            return oe(60006, "department contains sub-department");
        }
        if self.r.links().members.count(key) > 0 {
            return oe(60005, "department contains user");
        }
        let id = d.id;
        self.r.take_dept(key);
        let mut m = change("delete_party");
        m.insert("Id".into(), json!(id.to_string()));
        Ok(vec![m])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::index::{test_dept, test_org, test_user};

    #[test]
    fn userids_and_genders() {
        assert!(valid_userid("zhang.san@x-1_"));
        assert!(!valid_userid("_x"));
        assert!(!valid_userid("a b"));
        assert!(!valid_userid(&"a".repeat(65)));
        assert_eq!(gender_code("female"), "2");
        assert_eq!(gender_name("1"), "male");
    }

    fn code<T>(r: Result<T, OrgError>) -> Option<i64> {
        r.err().map(|OrgError::Code(c, _)| c)
    }

    #[test]
    fn indices_follow_create_move_rename_delete_and_recreate() {
        let mut org = Org::new(&test_org());
        org.assert_indexed();
        let d3 = org.dept_id("d3");
        assert_eq!(org.dept_key(ROOT_ID).as_deref(), Some("d0"));
        assert_eq!(org.subtree("d0"), ["d0", "d1", "d3", "d2"]);
        assert_eq!(org.members("d1"), ["u1", "u2"]);
        assert_eq!(org.membership_rows(), 3);

        // create: mobile and email (any case) must be new; userids are case-insensitive
        let dup = org.create_user(test_user("Zed", "13800000002", "", &["d2"]), 1, Map::new());
        assert_eq!(code(dup), Some(60104));
        let dup = org.create_user(test_user("Zed", "", "A@X.CN", &["d2"]), 1, Map::new());
        assert_eq!(code(dup), Some(60106));
        let mut extra = Map::new();
        extra.insert("direct_leader".into(), json!(["u1"]));
        org.create_user(test_user("Zed", "13800000003", "z@x.cn", &["d2"]), 1, extra)
            .unwrap();
        org.assert_indexed();
        assert_eq!(org.user_key("zed").as_deref(), Some("Zed"));
        assert_eq!(org.user_key("ZED").as_deref(), Some("Zed"));
        assert_eq!(
            code(org.create_user(test_user("zED", "13800000004", "", &["d2"]), 1, Map::new())),
            Some(60102)
        );
        assert_eq!(org.members("d2"), ["Zed", "u2"]);
        assert_eq!(org.membership_rows(), 4);

        // move + rename + new mobile and email: the old ones are free again
        let mut fx = org.users()["Zed"].fx.clone();
        fx.departments = vec!["d3".into(), "d2".into()];
        fx.name = "Zed2".into();
        fx.mobile = "13800000009".into();
        fx.email = "z2@x.cn".into();
        org.update_user("Zed", fx, None, Map::new()).unwrap();
        org.assert_indexed();
        assert_eq!(org.members("d3"), ["Zed"]);
        assert_eq!(org.membership_rows(), 5);
        org.create_user(
            test_user("u4", "13800000003", "Z@x.cn", &["d2"]),
            1,
            Map::new(),
        )
        .unwrap();
        org.delete_user("u4").unwrap();
        org.assert_indexed();

        // a department moves and is renamed; sibling names are checked under the new parent
        let mut fx = org.depts()["d3"].fx.clone();
        fx.parent = Some("d0".into());
        fx.name = "two".into();
        assert_eq!(code(org.update_dept("d3", fx.clone(), None)), Some(60008));
        fx.parent = Some("d2".into());
        fx.name = "three bis".into();
        org.update_dept("d3", fx, None).unwrap();
        org.assert_indexed();
        assert_eq!(org.subtree("d0"), ["d0", "d1", "d2", "d3"]);
        assert_eq!(org.dept_key(d3).as_deref(), Some("d3"));

        // delete a leader: the department and the direct reports lose it
        org.delete_user("u1").unwrap();
        org.assert_indexed();
        assert!(org.depts()["d1"].fx.leaders.is_empty());
        assert_eq!(org.users()["Zed"].extra["direct_leader"], json!([]));
        assert_eq!(org.user_key("u1"), None);

        // a department with a member cannot go; once empty it can
        assert_eq!(code(org.delete_dept("d3")), Some(60005));
        assert_eq!(code(org.delete_dept("d2")), Some(60006));
        org.delete_user("Zed").unwrap();
        org.delete_dept("d3").unwrap();
        org.assert_indexed();
        assert_eq!(org.dept_key(d3), None);
        assert_eq!(org.subtree("d2"), ["d2"]);

        // re-create (a new id); leadership flags through __leads
        let id = org.alloc_dept_id();
        org.create_dept(test_dept("d3", "again", "d1", &[]), id, String::new())
            .unwrap();
        let mut extra = Map::new();
        extra.insert("__leads".into(), json!([[id, 1]]));
        org.create_user(test_user("u1", "13800000001", "a@x.cn", &["d3"]), 1, extra)
            .unwrap();
        org.assert_indexed();
        assert_eq!(org.dept_key(id).as_deref(), Some("d3"));
        assert_eq!(org.members("d3"), ["u1"]);
        assert_eq!(org.depts()["d3"].fx.leaders, ["u1"]);
        assert_eq!(org.r.links().led.keys("u1").collect::<Vec<_>>(), ["d3"]);
        assert_eq!(org.alloc_dept_id(), id + 1);
    }
}
