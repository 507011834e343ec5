//! The org chart in the sandbox: departments and members, `user/list_id` cursor paging.

use super::org::{Org, ROOT_ID};
use super::{App, AppState, json_body, ok, ok_msg, org_err, wc_err};
use crate::sandbox::prelude::*;

use crate::wecom::contact::as_int;

type Q = Query<HashMap<String, String>>;
type R = Result<Response, Response>;

fn restricted(app: &App) -> Result<(), Response> {
    if app.opts.restrict_reads {
        return Err(wc_err(
            48002,
            "api forbidden: use user/list_id and department/simplelist",
        ));
    }
    Ok(())
}

fn qint(q: &HashMap<String, String>, k: &str) -> Result<Option<i64>, Response> {
    match q.get(k).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| wc_err(60123, &format!("invalid {k}"))),
    }
}

/// The subtree under `?id=` (default: the root), keys.
fn subtree(app: &App, q: &HashMap<String, String>) -> Result<Vec<String>, Response> {
    let id = qint(q, "id")?.unwrap_or(ROOT_ID);
    let org = lock(&app.org);
    let key = org
        .dept_key(id)
        .ok_or_else(|| wc_err(60123, "invalid party id"))?;
    Ok(org.subtree(&key))
}

/// The key of department `id`, or 60003.
fn dept_key(org: &Org, id: i64) -> Result<String, Response> {
    org.dept_key(id)
        .ok_or_else(|| wc_err(60003, "department not found"))
}

/// The key of user `id`, or 60111.
fn user_key(org: &Org, id: &str) -> Result<String, Response> {
    org.user_key(id)
        .ok_or_else(|| wc_err(60111, "userid not found"))
}

pub(super) async fn dept_list(State(app): AppState, Query(q): Q) -> R {
    restricted(&app)?;
    let keys = subtree(&app, &q)?;
    let org = lock(&app.org);
    let list: Vec<Value> = keys.iter().map(|k| org.render_dept(k)).collect();
    Ok(ok(json!({ "department": list })))
}

pub(super) async fn dept_simplelist(State(app): AppState, Query(q): Q) -> R {
    let keys = subtree(&app, &q)?;
    let org = lock(&app.org);
    let list: Vec<Value> = keys
        .iter()
        .map(|k| {
            let d = org.render_dept(k);
            json!({"id": d["id"], "parentid": d["parentid"], "order": d["order"]})
        })
        .collect();
    Ok(ok(json!({ "department_id": list })))
}

pub(super) async fn dept_get(State(app): AppState, Query(q): Q) -> R {
    restricted(&app)?;
    let id = qint(&q, "id")?.ok_or_else(|| wc_err(60123, "invalid party id"))?;
    let org = lock(&app.org);
    let key = dept_key(&org, id)?;
    Ok(ok(json!({ "department": org.render_dept(&key) })))
}

pub(super) async fn dept_create(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    if b.get("name").and_then(Value::as_str).is_none() {
        return Err(wc_err(60001, "department name length invalid"));
    }
    if b.get("parentid").is_none() {
        return Err(wc_err(60004, "parent department not found"));
    }
    let id = app.change_with(|org| {
        let id = match b.get("id") {
            None => org.alloc_dept_id(),
            Some(v) => as_int(v).ok_or_else(|| wc_err(60123, "invalid party id"))?,
        };
        let key = org.next_key("wc-d");
        let mut fx = FixtureDepartment {
            key,
            name: String::new(),
            parent: None,
            order: 0,
            leaders: Vec::new(),
        };
        let name_en = org.apply_dept_body(&mut fx, &b).map_err(org_err)?;
        let ev = org
            .create_dept(fx, id, name_en.unwrap_or_default())
            .map_err(org_err)?;
        Ok((id, ev))
    })?;
    Ok(ok_msg("created", json!({ "id": id })))
}

pub(super) async fn dept_update(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let id = b
        .get("id")
        .and_then(as_int)
        .ok_or_else(|| wc_err(60123, "invalid party id"))?;
    app.change(|org| {
        let key = dept_key(org, id)?;
        let mut fx = org.depts()[&key].fx.clone();
        let name_en = org.apply_dept_body(&mut fx, &b).map_err(org_err)?;
        org.update_dept(&key, fx, name_en).map_err(org_err)
    })?;
    Ok(ok_msg("updated", json!({})))
}

pub(super) async fn dept_delete(State(app): AppState, Query(q): Q) -> R {
    let id = qint(&q, "id")?.ok_or_else(|| wc_err(60123, "invalid party id"))?;
    app.change(|org| {
        let key = dept_key(org, id)?;
        org.delete_dept(&key).map_err(org_err)
    })?;
    Ok(ok_msg("deleted", json!({})))
}

pub(super) async fn user_get(State(app): AppState, Query(q): Q) -> R {
    restricted(&app)?;
    let id = q
        .get("userid")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| wc_err(41009, "missing userid"))?;
    let org = lock(&app.org);
    let Some(key) = org.user_key(id) else {
        return Err(wc_err(60111, "userid not found"));
    };
    Ok(ok(org.render_user(&key, app.opts.trim_private_fields)))
}

/// Members of `department_id` (with `fetch_child=1`, of its subtree too), each once.
fn dept_members(app: &App, q: &HashMap<String, String>) -> Result<Vec<String>, Response> {
    let id = qint(q, "department_id")?.ok_or_else(|| wc_err(60123, "invalid party id"))?;
    let org = lock(&app.org);
    let key = org
        .dept_key(id)
        .ok_or_else(|| wc_err(60123, "invalid party id"))?;
    let depts = if q.get("fetch_child").map(String::as_str) == Some("1") {
        org.subtree(&key)
    } else {
        vec![key]
    };
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for d in depts {
        for m in org.members(&d) {
            if seen.insert(m.clone()) {
                out.push(m);
            }
        }
    }
    Ok(out)
}

pub(super) async fn user_simplelist(State(app): AppState, Query(q): Q) -> R {
    user_rows(&app, &q, false, |u| {
        json!({"userid": u["userid"], "name": u["name"], "department": u["department"],
            "open_userid": u["open_userid"]})
    })
}

pub(super) async fn user_list(State(app): AppState, Query(q): Q) -> R {
    user_rows(&app, &q, app.opts.trim_private_fields, |u| u)
}

/// The members of the departments `q` asks for, each as `row` makes it of the user (rendered
/// with `trim`): `{"userlist": […]}`.
fn user_rows(
    app: &App,
    q: &HashMap<String, String>,
    trim: bool,
    row: impl Fn(Value) -> Value,
) -> R {
    restricted(app)?;
    let keys = dept_members(app, q)?;
    let org = lock(&app.org);
    let list: Vec<Value> = keys.iter().map(|k| row(org.render_user(k, trim))).collect();
    Ok(ok(json!({ "userlist": list })))
}

/// Cursors are opaque: `c` + hex of the row offset, salted with the corp id.
fn cursor_of(corp: &str, offset: usize) -> String {
    let salt = crate::crypto::sha256(corp.as_bytes());
    let x = (offset as u64)
        ^ u64::from_be_bytes([
            salt[0], salt[1], salt[2], salt[3], salt[4], salt[5], salt[6], salt[7],
        ]);
    format!("c{x:016x}")
}

fn offset_of(corp: &str, cursor: &str) -> Option<usize> {
    let x = u64::from_str_radix(cursor.strip_prefix('c')?, 16).ok()?;
    let salt = crate::crypto::sha256(corp.as_bytes());
    let off = x ^ u64::from_be_bytes([
        salt[0], salt[1], salt[2], salt[3], salt[4], salt[5], salt[6], salt[7],
    ]);
    usize::try_from(off).ok()
}

pub(super) async fn user_list_id(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let limit = match b.get("limit") {
        None => 10_000,
        Some(v) => match as_int(v) {
            Some(n) if (1..=10_000).contains(&n) => n as usize,
            _ => return Err(wc_err(40058, "limit must be 1..10000")),
        },
    };
    let org = lock(&app.org);
    // One row per (member, department), members in key order. Only the page's rows are built:
    // the members before it are skipped by their department count.
    let total = org.membership_rows();
    let start = match b
        .get("cursor")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        None => 0,
        Some(c) => match offset_of(&app.opts.corp_id, c) {
            Some(n) if n <= total => n,
            _ => return Err(wc_err(50100, "invalid cursor")),
        },
    };
    let end = start.saturating_add(limit).min(total);
    let mut rows: Vec<Value> = Vec::with_capacity(end - start);
    let mut at = 0usize;
    for u in org.users().values() {
        if at >= end {
            break;
        }
        let n = u.fx.departments.len();
        if at + n > start {
            for (i, d) in u.fx.departments.iter().enumerate() {
                if (start..end).contains(&(at + i)) {
                    rows.push(json!({"userid": u.fx.key, "department": org.dept_id(d)}));
                }
            }
        }
        at += n;
    }
    let next = if end < total {
        cursor_of(&app.opts.corp_id, end)
    } else {
        String::new()
    };
    Ok(ok(json!({"next_cursor": next, "dept_user": rows})))
}

/// The body's `userid`, or 41009.
fn body_userid(b: &Map<String, Value>) -> Result<String, Response> {
    b.get("userid")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| wc_err(41009, "missing userid"))
}

pub(super) async fn user_create(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let userid = body_userid(&b)?;
    if b.get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(wc_err(60112, "invalid name"));
    }
    if b.get("department").is_none() {
        return Err(wc_err(60127, "missing department"));
    }
    app.change(|org| {
        let mut fx = blank_user(&userid);
        let (enable, extra) = org.apply_user_body(&mut fx, &b).map_err(org_err)?;
        fx.active = enable != Some(false);
        // A member created through the API has not joined yet: status 4 until activated.
        let status = if fx.active { 4 } else { 2 };
        org.create_user(fx, status, extra).map_err(org_err)
    })?;
    Ok(ok_msg("created", json!({})))
}

pub(super) async fn user_update(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let userid = body_userid(&b)?;
    app.change(|org| {
        let key = user_key(org, &userid)?;
        let mut fx = org.users()[&key].fx.clone();
        let cur_status = org.users()[&key].status;
        let (enable, extra) = org.apply_user_body(&mut fx, &b).map_err(org_err)?;
        let status = match enable {
            Some(false) => Some(2),
            Some(true) if cur_status == 2 => Some(1),
            _ => None,
        };
        if let Some(e) = enable {
            fx.active = e;
        }
        org.update_user(&key, fx, status, extra).map_err(org_err)
    })?;
    Ok(ok_msg("updated", json!({})))
}

pub(super) async fn user_delete(State(app): AppState, Query(q): Q) -> R {
    let id = q
        .get("userid")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| wc_err(41009, "missing userid"))?;
    app.change(|org| {
        let key = user_key(org, id)?;
        org.delete_user(&key).map_err(org_err)
    })?;
    Ok(ok_msg("deleted", json!({})))
}

pub(super) async fn user_batchdelete(State(app): AppState, body: axum::body::Bytes) -> R {
    let b = json_body(&body)?;
    let ids: Vec<String> = str_list(b.get("useridlist"));
    if ids.is_empty() || ids.len() > 200 {
        return Err(wc_err(40058, "useridlist must have 1..200 userids"));
    }
    app.change(|org| {
        let mut keys = Vec::new();
        for id in &ids {
            keys.push(
                org.user_key(id)
                    .ok_or_else(|| wc_err(60111, &format!("userid {id} not found")))?,
            );
        }
        let mut ev = Vec::new();
        for k in keys {
            ev.extend(org.delete_user(&k).map_err(org_err)?);
        }
        Ok(ev)
    })?;
    Ok(ok_msg("deleted", json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_opaque_and_roundtrip() {
        let c = cursor_of("wwcorp", 1000);
        assert!(!c.contains("1000"));
        assert_eq!(offset_of("wwcorp", &c), Some(1000));
        assert_eq!(offset_of("wwcorp", "garbage"), None);
    }
}
