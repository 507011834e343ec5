//! The sandbox's org: fixture records plus DingTalk's ids (numeric `dept_id` with root 1,
//! string `userid`, developer-scoped `unionid`), rendered in DingTalk's shapes.

use crate::sandbox::prelude::*;

use crate::crypto::sha256;

use crate::sandbox::index::{Groups, OrgIndex, Records, fixture_records};

/// A DingTalk-coded failure: (errcode, errmsg).
#[derive(Debug)]
pub(crate) struct OrgError(pub i64, pub String);

fn err<T>(code: i64, msg: impl Into<String>) -> Result<T, OrgError> {
    Err(OrgError(code, msg.into()))
}

pub(crate) struct Dept {
    pub fx: FixtureDepartment,
    pub id: i64,
}

pub(crate) struct User {
    pub fx: FixtureUser,
    pub unionid: String,
    /// DingTalk fields with no fixture counterpart (work_place, remark, …) as given via the API.
    pub extra: Map<String, Value>,
}

/// Events to emit: (EventType, body fields such as `userId` / `deptId`).
pub(crate) type Emitted = Vec<(&'static str, Value)>;

/// The org: its records (kept in step with their index by [`Records`]) and the next dept_id.
pub(crate) struct Org {
    r: Records<Dept, User, Index>,
    next_dept: i64,
}

/// Lookups kept beside the records so that no API call scans the org.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Index {
    dept_by_id: Groups<i64>,
    user_by_unionid: Groups<String>,
    user_by_mobile: Groups<String>,
}

fixture_records!(Org, Dept, User, Index);

impl OrgIndex<Dept, User> for Index {
    fn set_dept(&mut self, d: &Dept, present: bool) {
        self.dept_by_id.set(d.id, &d.fx.key, present);
    }

    fn set_user(&mut self, k: &str, u: &User, present: bool) {
        self.user_by_unionid.set(u.unionid.clone(), k, present);
        self.user_by_mobile.set(u.fx.mobile.clone(), k, present);
    }
}

/// The unionid of a user key (stable, developer-scoped).
pub(crate) fn unionid_of(key: &str) -> String {
    let h = hex::encode(sha256(format!("union:{key}").as_bytes()));
    format!("UN{}", &h[..24])
}

/// ms of local midnight (UTC+8) of a YYYY-MM-DD date.
fn hired_ms(date: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some((d.and_hms_opt(0, 0, 0)?.and_utc().timestamp() - 8 * 3600) * 1000)
}

fn hired_date(ms: i64) -> Option<String> {
    let dt = chrono::DateTime::from_timestamp(ms / 1000 + 8 * 3600, 0)?;
    Some(dt.format("%Y-%m-%d").to_string())
}

/// Reads an int given as a number or a string.
pub(crate) fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads a list given as a JSON array or a comma string (or a JSON array inside a string).
pub(crate) fn list(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::Array(a) => Some(
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect(),
        ),
        Value::String(s) if s.trim_start().starts_with('[') => {
            list(Some(&serde_json::from_str::<Value>(s).ok()?))
        }
        Value::String(s) => Some(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        Value::Number(n) => Some(vec![n.to_string()]),
        _ => None,
    }
}

pub(crate) fn string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// DingTalk department names: 1–64 chars, no `-` or `,`.
fn check_dept_name(name: &str) -> Result<(), OrgError> {
    let n = name.trim().chars().count();
    if n == 0 || n > 64 || name.contains('-') || name.contains(',') {
        return err(60001, "部门名称不合法");
    }
    Ok(())
}

const USER_EXTRA: &[&str] = &[
    "telephone",
    "work_place",
    "remark",
    "org_email",
    "manager_userid",
    "extension",
];

impl Org {
    pub fn new(fx: &OrgFixture) -> Self {
        let mut org = Self {
            r: Records::default(),
            next_dept: 2,
        };
        for d in &fx.departments {
            let id = if d.parent.is_none() {
                1
            } else {
                org.alloc_dept_id()
            };
            org.r.put_dept(Dept { fx: d.clone(), id });
        }
        for u in &fx.users {
            org.r.put_user(User {
                unionid: unionid_of(&u.key),
                fx: u.clone(),
                extra: Map::new(),
            });
        }
        org
    }

    // ---- the only writers of `depts` / `users`: each keeps `idx` in step ----

    fn alloc_dept_id(&mut self) -> i64 {
        let id = self.next_dept;
        self.next_dept += 1;
        id
    }

    pub fn dept_key(&self, id: i64) -> Option<String> {
        self.r.idx().dept_by_id.first(&id).cloned()
    }

    pub fn dept_id(&self, key: &str) -> i64 {
        self.r.depts().get(key).map(|d| d.id).unwrap_or_default()
    }

    pub fn user_by_unionid(&self, unionid: &str) -> Option<&User> {
        self.r
            .idx()
            .user_by_unionid
            .first(unionid)
            .and_then(|k| self.r.users().get(k))
    }

    // ---- rendering ----

    fn user_base(&self, u: &User) -> Map<String, Value> {
        let f = &u.fx;
        let mut m = Map::new();
        m.insert("userid".into(), json!(f.key));
        m.insert("unionid".into(), json!(u.unionid));
        m.insert("name".into(), json!(f.name));
        m.insert("avatar".into(), json!(""));
        m.insert("state_code".into(), json!("86"));
        for (k, v) in [
            ("mobile", &f.mobile),
            ("email", &f.email),
            ("title", &f.title),
            ("job_number", &f.employee_no),
        ] {
            // Optional fields are omitted when empty.
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        }
        if let Some(h) = hired_ms(&f.hired_at) {
            m.insert("hired_date".into(), json!(h));
        }
        m.insert(
            "dept_id_list".into(),
            json!(
                f.departments
                    .iter()
                    .map(|d| self.dept_id(d))
                    .collect::<Vec<_>>()
            ),
        );
        m.insert("active".into(), json!(f.active));
        m.insert("admin".into(), json!(false));
        m.insert("boss".into(), json!(false));
        m.insert("senior".into(), json!(false));
        m.insert("hide_mobile".into(), json!(false));
        m.insert("real_authed".into(), json!(true));
        m.insert("exclusive_account".into(), json!(false));
        for (k, v) in &u.extra {
            m.insert(k.clone(), v.clone());
        }
        m
    }

    fn is_leader(&self, user: &str, dept: &str) -> bool {
        self.r
            .depts()
            .get(dept)
            .is_some_and(|d| d.fx.leaders.iter().any(|l| l == user))
    }

    /// `user/get` shape.
    pub fn render_user(&self, key: &str) -> Value {
        let Some(u) = self.r.users().get(key) else {
            return Value::Null;
        };
        let mut m = self.user_base(u);
        let depts = &u.fx.departments;
        m.insert(
            "dept_order_list".into(),
            json!(
                depts
                    .iter()
                    .map(|d| json!({"dept_id": self.dept_id(d), "order": 0}))
                    .collect::<Vec<_>>()
            ),
        );
        m.insert(
            "leader_in_dept".into(),
            json!(
                depts
                    .iter()
                    .map(|d| json!({"dept_id": self.dept_id(d), "leader": self.is_leader(key, d)}))
                    .collect::<Vec<_>>()
            ),
        );
        m.insert("role_list".into(), json!([]));
        Value::Object(m)
    }

    /// `user/list` row shape (per department).
    pub fn render_user_row(&self, key: &str, dept: &str) -> Value {
        let Some(u) = self.r.users().get(key) else {
            return Value::Null;
        };
        let mut m = self.user_base(u);
        m.insert("leader".into(), json!(self.is_leader(key, dept)));
        m.insert("dept_order".into(), json!(0));
        Value::Object(m)
    }

    fn parent_id(&self, d: &Dept) -> Option<i64> {
        d.fx.parent.as_ref().map(|p| self.dept_id(p))
    }

    /// `department/get` shape.
    pub fn render_dept(&self, key: &str) -> Value {
        let Some(d) = self.r.depts().get(key) else {
            return Value::Null;
        };
        let members = self.member_count(key);
        let mut v = json!({
            "dept_id": d.id, "name": d.fx.name, "order": d.fx.order,
            "source_identifier": "", "dept_manager_userid_list": d.fx.leaders,
            "create_dept_group": false, "auto_add_user": false, "hide_dept": false,
            "outer_dept": false, "group_contain_sub_dept": false,
            "member_count": members, "owning_member_count": members,
        });
        if let Some(p) = self.parent_id(d) {
            v["parent_id"] = json!(p);
        }
        v
    }

    /// `department/listsub` row shape.
    pub fn render_dept_row(&self, key: &str) -> Value {
        let Some(d) = self.r.depts().get(key) else {
            return Value::Null;
        };
        json!({"dept_id": d.id, "name": d.fx.name, "parent_id": self.parent_id(d).unwrap_or(0),
               "create_dept_group": false, "auto_add_user": false})
    }

    /// Direct sub-departments (by order, then id).
    pub fn children(&self, key: &str) -> Vec<String> {
        self.r
            .sub_depts(key, |a, b| (a.fx.order, a.id).cmp(&(b.fx.order, b.id)))
    }

    // ---- mutations (DingTalk API semantics); each returns the events DingTalk would emit ----

    fn dept_keys(&self, ids: &[String]) -> Result<Vec<String>, OrgError> {
        ids.iter()
            .map(|s| {
                s.parse::<i64>()
                    .ok()
                    .and_then(|id| self.dept_key(id))
                    .ok_or_else(|| OrgError(60003, format!("部门不存在: {s}")))
            })
            .collect()
    }

    fn check_mobile(&self, mobile: &str, except: Option<&str>) -> Result<(), OrgError> {
        if mobile.is_empty() {
            return Ok(());
        }
        if mobile.len() != 11 || !mobile.bytes().all(|b| b.is_ascii_digit()) {
            return err(60103, "手机号码不合法");
        }
        if self.r.idx().user_by_mobile.taken_by_other(mobile, except) {
            return err(60104, "手机号码在公司中已存在");
        }
        Ok(())
    }

    /// Applies the API fields of `m` onto `fx` / `extra`.
    fn apply_user_fields(
        &self,
        fx: &mut FixtureUser,
        extra: &mut Map<String, Value>,
        m: &Map<String, Value>,
    ) -> Result<(), OrgError> {
        if let Some(n) = string(m.get("name")) {
            if n.trim().is_empty() || n.chars().count() > 80 {
                return err(40035, "不合法的参数: name");
            }
            fx.name = n;
        }
        if let Some(x) = string(m.get("mobile")) {
            fx.mobile = x;
        }
        if let Some(x) = string(m.get("email")) {
            fx.email = x;
        }
        if let Some(x) = string(m.get("title")) {
            fx.title = x;
        }
        if let Some(x) = string(m.get("job_number")) {
            fx.employee_no = x;
        }
        if let Some(h) = int(m.get("hired_date")) {
            fx.hired_at = hired_date(h).unwrap_or_default();
        }
        if let Some(ids) = list(m.get("dept_id_list")) {
            if ids.is_empty() {
                return err(40035, "不合法的参数: dept_id_list");
            }
            fx.departments = self.dept_keys(&ids)?;
        }
        for k in USER_EXTRA {
            if let Some(v) = m.get(*k) {
                extra.insert((*k).to_string(), v.clone());
            }
        }
        Ok(())
    }

    pub fn api_create_user(
        &mut self,
        m: &Map<String, Value>,
    ) -> Result<(String, Emitted), OrgError> {
        if string(m.get("name")).is_none_or(|n| n.trim().is_empty()) {
            return err(40035, "缺少参数 name");
        }
        if string(m.get("mobile")).is_none_or(|n| n.is_empty()) {
            return err(40035, "缺少参数 mobile");
        }
        if list(m.get("dept_id_list")).is_none_or(|l| l.is_empty()) {
            return err(40035, "缺少参数 dept_id_list");
        }
        let key = match string(m.get("userid")).filter(|s| !s.is_empty()) {
            Some(k) => {
                if k.len() > 64 {
                    return err(33012, "无效的USERID");
                }
                if self.r.users().contains_key(&k) {
                    return err(60102, "UserID在公司中已存在");
                }
                k
            }
            None => self.r.next_key("user"),
        };
        let mut fx = blank_user(&key);
        let mut extra = Map::new();
        self.apply_user_fields(&mut fx, &mut extra, m)?;
        self.check_mobile(&fx.mobile, None)?;
        self.r.put_user(User {
            unionid: unionid_of(&key),
            fx,
            extra,
        });
        Ok((
            key.clone(),
            vec![("user_add_org", json!({"userId": [key]}))],
        ))
    }

    pub fn api_update_user(&mut self, m: &Map<String, Value>) -> Result<Emitted, OrgError> {
        let key = string(m.get("userid")).unwrap_or_default();
        let Some(u) = self.r.users().get(&key) else {
            return err(60121, "找不到该用户");
        };
        let mut fx = u.fx.clone();
        let mut extra = u.extra.clone();
        self.apply_user_fields(&mut fx, &mut extra, m)?;
        self.check_mobile(&fx.mobile, Some(&key))?;
        self.replace_user(&key, fx, extra)
    }

    /// Replaces a user record and returns `user_modify_org` (with `diffInfo`) if anything changed.
    pub fn replace_user(
        &mut self,
        key: &str,
        fx: FixtureUser,
        extra: Map<String, Value>,
    ) -> Result<Emitted, OrgError> {
        for d in &fx.departments {
            if !self.r.depts().contains_key(d) {
                return err(60003, format!("部门不存在: {d}"));
            }
        }
        if fx.departments.is_empty() {
            return err(40035, "不合法的参数: dept_id_list");
        }
        let prev = self.render_user(key);
        let Some(mut u) = self.r.take_user(key) else {
            return err(60121, "找不到该用户");
        };
        u.fx = fx;
        u.extra = extra;
        self.r.put_user(u);
        let curr = self.render_user(key);
        if prev == curr {
            return Ok(Vec::new());
        }
        let mut p = Map::new();
        let mut c = Map::new();
        if let (Some(po), Some(co)) = (prev.as_object(), curr.as_object()) {
            for (k, v) in co {
                if po.get(k) != Some(v) {
                    c.insert(k.clone(), v.clone());
                    p.insert(k.clone(), po.get(k).cloned().unwrap_or(Value::Null));
                }
            }
        }
        Ok(vec![(
            "user_modify_org",
            json!({"userId": [key], "diffInfo": [{"userid": key, "prev": p, "curr": c}]}),
        )])
    }

    pub fn insert_user(&mut self, fx: FixtureUser) -> Result<Emitted, OrgError> {
        if self.r.users().contains_key(&fx.key) || self.r.depts().contains_key(&fx.key) {
            return err(60102, "UserID在公司中已存在");
        }
        if fx.name.trim().is_empty() {
            return err(40035, "缺少参数 name");
        }
        for d in &fx.departments {
            if !self.r.depts().contains_key(d) {
                return err(60003, format!("部门不存在: {d}"));
            }
        }
        if fx.departments.is_empty() {
            return err(40035, "缺少参数 dept_id_list");
        }
        self.check_mobile(&fx.mobile, None)?;
        let key = fx.key.clone();
        self.r.put_user(User {
            unionid: unionid_of(&key),
            fx,
            extra: Map::new(),
        });
        Ok(vec![("user_add_org", json!({"userId": [key]}))])
    }

    fn check_sibling_name(
        &self,
        parent: &str,
        name: &str,
        except: Option<&str>,
    ) -> Result<(), OrgError> {
        if self.r.links().children.keys(parent).any(|k| {
            Some(k.as_str()) != except && self.r.depts().get(k).is_some_and(|d| d.fx.name == name)
        }) {
            return err(60008, "父部门下该部门名称已存在");
        }
        Ok(())
    }

    /// Inserts a department record; `key` None = generated. Returns (key, dept_id, events).
    pub fn insert_dept(
        &mut self,
        mut fx: FixtureDepartment,
    ) -> Result<(String, i64, Emitted), OrgError> {
        check_dept_name(&fx.name)?;
        let Some(parent) = fx.parent.clone() else {
            return err(40035, "缺少参数 parent_id");
        };
        if !self.r.depts().contains_key(&parent) {
            return err(60004, "父部门不存在");
        }
        self.check_sibling_name(&parent, &fx.name, None)?;
        if fx.key.is_empty() {
            fx.key = self.r.next_key("dept");
        } else if self.r.depts().contains_key(&fx.key) || self.r.users().contains_key(&fx.key) {
            return err(60008, "部门已存在");
        }
        for l in &fx.leaders {
            if !self.r.users().contains_key(l) {
                return err(60121, format!("找不到该用户: {l}"));
            }
        }
        let id = self.alloc_dept_id();
        let key = fx.key.clone();
        self.r.put_dept(Dept { fx, id });
        Ok((key, id, vec![("org_dept_create", json!({"deptId": [id]}))]))
    }

    pub fn api_create_dept(&mut self, m: &Map<String, Value>) -> Result<(i64, Emitted), OrgError> {
        let name = string(m.get("name")).unwrap_or_default();
        let parent = int(m.get("parent_id")).ok_or(OrgError(40035, "缺少参数 parent_id".into()))?;
        let Some(pkey) = self.dept_key(parent) else {
            return err(60004, "父部门不存在");
        };
        let fx = FixtureDepartment {
            key: String::new(),
            name,
            parent: Some(pkey),
            order: int(m.get("order")).unwrap_or(0),
            leaders: Vec::new(),
        };
        let (_, id, ev) = self.insert_dept(fx)?;
        Ok((id, ev))
    }

    /// Replaces a department record (checks name, parent, cycles).
    pub fn replace_dept(&mut self, key: &str, fx: FixtureDepartment) -> Result<Emitted, OrgError> {
        let Some(cur) = self.r.depts().get(key) else {
            return err(60003, "部门不存在");
        };
        let id = cur.id;
        if cur.fx.parent.is_none() {
            if fx.parent.is_some() {
                return err(60018, "根部门不能修改上级");
            }
        } else {
            check_dept_name(&fx.name)?;
            let Some(p) = fx.parent.clone() else {
                return err(60018, "不能设置为根部门");
            };
            if !self.r.depts().contains_key(&p) {
                return err(60004, "父部门不存在");
            }
            // No cycles: walk up from the new parent.
            let mut at = Some(p.clone());
            while let Some(a) = at {
                if a == key {
                    return err(60010, "部门层级不合法: 循环");
                }
                at = self.r.depts().get(&a).and_then(|d| d.fx.parent.clone());
            }
            self.check_sibling_name(&p, &fx.name, Some(key))?;
        }
        for l in &fx.leaders {
            if !self.r.users().contains_key(l) {
                return err(60121, format!("找不到该用户: {l}"));
            }
        }
        if cur.fx == fx {
            return Ok(Vec::new());
        }
        if let Some(mut d) = self.r.take_dept(key) {
            d.fx = fx;
            self.r.put_dept(d);
        }
        Ok(vec![("org_dept_modify", json!({"deptId": [id]}))])
    }

    pub fn api_update_dept(&mut self, m: &Map<String, Value>) -> Result<Emitted, OrgError> {
        let id = int(m.get("dept_id")).ok_or(OrgError(40035, "缺少参数 dept_id".into()))?;
        let Some(key) = self.dept_key(id) else {
            return err(60003, "部门不存在");
        };
        let mut fx = self
            .r
            .depts()
            .get(&key)
            .map(|d| d.fx.clone())
            .ok_or(OrgError(60003, "部门不存在".into()))?;
        if let Some(n) = string(m.get("name")) {
            fx.name = n;
        }
        if let Some(p) = int(m.get("parent_id")) {
            fx.parent = Some(
                self.dept_key(p)
                    .ok_or(OrgError(60004, "父部门不存在".into()))?,
            );
        }
        if let Some(o) = int(m.get("order")) {
            fx.order = o;
        }
        if let Some(l) = list(m.get("dept_manager_userid_list")) {
            fx.leaders = l;
        }
        self.replace_dept(&key, fx)
    }
}

/// What the console reads and removes, as this org does it.
impl ConsoleOrg for Org {
    type Emitted = Emitted;
    type Error = OrgError;

    fn delete_user(&mut self, key: &str) -> Result<Emitted, OrgError> {
        if self.r.take_user(key).is_none() {
            return err(60121, "找不到该用户");
        }
        let led: Vec<String> = self.r.links().led.keys(key).cloned().collect();
        for dk in led {
            if let Some(mut d) = self.r.take_dept(&dk) {
                d.fx.leaders.retain(|l| l != key);
                self.r.put_dept(d);
            }
        }
        Ok(vec![("user_leave_org", json!({"userId": [key]}))])
    }

    fn delete_dept(&mut self, key: &str) -> Result<Emitted, OrgError> {
        let Some(d) = self.r.depts().get(key) else {
            return err(60003, "部门不存在");
        };
        if d.fx.parent.is_none() {
            return err(60007, "根部门不能删除");
        }
        let id = d.id;
        if self.r.links().children.count(key) > 0 {
            return err(60006, "该部门下存在子部门");
        }
        if self.member_count(key) > 0 {
            return err(60005, "该部门下存在员工");
        }
        self.r.take_dept(key);
        Ok(vec![("org_dept_remove", json!({"deptId": [id]}))])
    }

    fn snapshot(&self) -> Value {
        self.r.snapshot_with(
            "dingtalk",
            |d| json!({"dept_id": d.id}),
            |u| {
                let mut ids = json!({"userid": u.fx.key, "unionid": u.unionid});
                if !u.extra.is_empty() {
                    ids["extra"] = Value::Object(u.extra.clone());
                }
                ids
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::index::{test_dept, test_org};

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn indices_follow_create_move_rename_delete_and_recreate() {
        let mut org = Org::new(&test_org());
        org.assert_indexed();
        let (d2, d3) = (org.dept_id("d2"), org.dept_id("d3"));
        assert_eq!(org.dept_key(1).as_deref(), Some("d0"));
        assert_eq!(org.dept_key(d3).as_deref(), Some("d3"));
        assert_eq!(org.children("d0"), ["d2", "d1"]);
        assert_eq!(org.members("d1"), ["u1", "u2"]);

        // create through the API: the mobile must be new
        let dup = org.api_create_user(&body(
            json!({"userid": "u3", "name": "C", "mobile": "13800000001", "dept_id_list": [d2]}),
        ));
        assert_eq!(dup.err().map(|e| e.0), Some(60104));
        org.api_create_user(&body(
            json!({"userid": "u3", "name": "C", "mobile": "13800000003", "dept_id_list": [d2]}),
        ))
        .unwrap();
        org.assert_indexed();
        assert_eq!(
            org.user_by_unionid(&unionid_of("u3"))
                .map(|u| u.fx.key.as_str()),
            Some("u3")
        );
        assert_eq!(org.members("d2"), ["u2", "u3"]);
        assert_eq!(org.render_dept("d2")["member_count"], 2);

        // move + rename + new mobile; the old mobile is free again
        org.api_update_user(&body(
            json!({"userid": "u3", "name": "C2", "mobile": "13800000009", "dept_id_list": [d3]}),
        ))
        .unwrap();
        org.assert_indexed();
        assert_eq!(org.members("d2"), ["u2"]);
        assert_eq!(org.members("d3"), ["u3"]);
        assert!(org.check_mobile("13800000003", None).is_ok());
        assert!(org.check_mobile("13800000009", None).is_err());
        assert!(org.check_mobile("13800000009", Some("u3")).is_ok());

        // a department moves and is renamed; sibling names are checked under the new parent
        let taken =
            org.api_update_dept(&body(json!({"dept_id": d3, "name": "two", "parent_id": 1})));
        assert_eq!(taken.err().map(|e| e.0), Some(60008));
        org.api_update_dept(&body(
            json!({"dept_id": d3, "name": "three bis", "parent_id": d2}),
        ))
        .unwrap();
        org.assert_indexed();
        assert!(org.children("d1").is_empty());
        assert_eq!(org.children("d2"), ["d3"]);
        assert_eq!(org.dept_key(d3).as_deref(), Some("d3"));

        // delete a leader: the department loses it
        org.delete_user("u1").unwrap();
        org.assert_indexed();
        assert!(org.depts()["d1"].fx.leaders.is_empty());
        assert!(org.user_by_unionid(&unionid_of("u1")).is_none());
        assert_eq!(org.members("d1"), ["u2"]);

        // a department with a member cannot go; once empty it can
        assert_eq!(org.delete_dept("d3").err().map(|e| e.0), Some(60005));
        assert_eq!(org.delete_dept("d2").err().map(|e| e.0), Some(60006));
        org.delete_user("u3").unwrap();
        org.delete_dept("d3").unwrap();
        org.assert_indexed();
        assert_eq!(org.dept_key(d3), None);
        assert!(org.children("d2").is_empty());

        // re-create: a new dept_id, the same unionid
        let (_, id, _) = org
            .insert_dept(test_dept("d3", "again", "d1", &["u2"]))
            .unwrap();
        assert_ne!(id, d3);
        org.api_create_user(&body(
            json!({"userid": "u1", "name": "A", "mobile": "13800000001", "dept_id_list": [id]}),
        ))
        .unwrap();
        org.assert_indexed();
        assert_eq!(org.dept_key(id).as_deref(), Some("d3"));
        assert_eq!(org.children("d1"), ["d3"]);
        assert_eq!(org.members("d3"), ["u1"]);
        assert_eq!(
            org.user_by_unionid(&unionid_of("u1"))
                .map(|u| u.fx.key.as_str()),
            Some("u1")
        );
        assert_eq!(org.r.links().led.keys("u2").collect::<Vec<_>>(), ["d3"]);
    }

    #[test]
    fn member_pages_are_sliced_in_key_order() {
        let mut org = Org::new(&test_org());
        let d2 = org.dept_id("d2");
        for i in 0..600 {
            org.api_create_user(&body(json!({"userid": format!("m{i}"), "name": "M",
                "mobile": format!("139{i:08}"), "dept_id_list": [d2]})))
                .unwrap();
        }
        let all = org.members("d2");
        assert_eq!(all.len(), 601);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(org.members_range("d2", 500, 600), all[500..600].to_vec());
        org.assert_indexed();
    }
}
