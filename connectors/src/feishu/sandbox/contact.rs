//! Contact v3 in the sandbox: departments and users.

use crate::sandbox::prelude::*;
use axum::extract::Path;

use super::org::{Org, OrgError};
use super::{App, AppState, did_type, fs_err, json_body, ok, page_by, qbool, uid_type};

type Q = Query<HashMap<String, String>>;
type R = Result<Response, Response>;

fn org_err(e: OrgError, not_found_code: i64) -> Response {
    match e {
        OrgError::NotFound(m) => fs_err(
            StatusCode::BAD_REQUEST,
            not_found_code,
            &format!("{m} not exist"),
        ),
        OrgError::Conflict(m) => fs_err(StatusCode::BAD_REQUEST, 43007, &m),
        OrgError::Invalid(m) => fs_err(
            StatusCode::BAD_REQUEST,
            99992402,
            &format!("field validation failed: {m}"),
        ),
    }
}

pub(super) fn routes() -> Router<std::sync::Arc<App>> {
    Router::new()
        .route(
            "/open-apis/contact/v3/departments",
            axum::routing::post(create_dept),
        )
        .route(
            "/open-apis/contact/v3/departments/{id}/children",
            get(children),
        )
        .route(
            "/open-apis/contact/v3/departments/{id}",
            get(get_dept)
                .patch(patch_dept)
                .put(patch_dept)
                .delete(delete_dept),
        )
        .route(
            "/open-apis/contact/v3/users/find_by_department",
            get(find_by_department),
        )
        .route(
            "/open-apis/contact/v3/users",
            axum::routing::post(create_user),
        )
        .route(
            "/open-apis/contact/v3/users/{id}",
            get(get_user)
                .patch(patch_user)
                .put(patch_user)
                .delete(delete_user),
        )
}

/// The key of the department `id` (of type `d`), or 40015.
fn dept_key(org: &Org, id: &str, d: &str) -> Result<String, Response> {
    org.dept_key(id, d)
        .ok_or_else(|| fs_err(StatusCode::BAD_REQUEST, 40015, "department not exist"))
}

/// The key of the user `id` (of type `u`), or 41050.
fn user_key(org: &Org, id: &str, u: &str) -> Result<String, Response> {
    org.user_key(id, u)
        .ok_or_else(|| fs_err(StatusCode::BAD_REQUEST, 41050, "no user authority error"))
}

/// The department `id` (of type `d`): its key and fixture entry, to change.
fn dept_entry(org: &Org, id: &str, d: &str) -> Result<(String, FixtureDepartment), Response> {
    let key = dept_key(org, id, d)?;
    let fx = org.depts()[&key].fx.clone();
    Ok((key, fx))
}

/// The user `id` (of type `u`): its key and fixture entry, to change.
fn user_entry(org: &Org, id: &str, u: &str) -> Result<(String, FixtureUser), Response> {
    let key = user_key(org, id, u)?;
    let fx = org.users()[&key].fx.clone();
    Ok((key, fx))
}

/// `client_token`: the key of the `kind` (`dept`, `user`) a create with this token made before.
/// A retried create changes nothing and answers with that one (if it still exists).
fn created_before(app: &App, q: &HashMap<String, String>, kind: &str) -> Option<String> {
    let ct = q.get("client_token")?;
    lock(&app.im)
        .client_tokens
        .get(&format!("{kind}:{ct}"))
        .cloned()
}

/// Remembers the `kind` `key` a create with a `client_token` made.
fn remember_created(app: &App, q: &HashMap<String, String>, kind: &str, key: &str) {
    if let Some(ct) = q.get("client_token") {
        lock(&app.im)
            .client_tokens
            .insert(format!("{kind}:{ct}"), key.to_string());
    }
}

async fn children(State(app): AppState, Path(id): Path<String>, Query(q): Q) -> R {
    let (u, d) = (uid_type(&q)?, did_type(&q)?);
    let org = lock(&app.org);
    let key = dept_key(&org, &id, &d)?;
    // The whole (recursive) list is walked for every page (keys only: cheap); only the page is
    // rendered.
    let keys = org.children(&key, qbool(&q, "fetch_child"));
    let render = |s: usize, e: usize| keys[s..e].iter().map(|k| org.render_dept(k, &u, &d));
    let page = contact_page(keys.len(), &q, |s, e| render(s, e).collect())?;
    Ok(ok(page))
}

/// A page of a contact listing: 10 records by default, at most 50 (40011 for a bad page size,
/// 40012 for a bad page token).
fn contact_page(
    total: usize,
    q: &HashMap<String, String>,
    render: impl FnOnce(usize, usize) -> Vec<Value>,
) -> Result<Value, Response> {
    page_by(total, q, (10, 50), (40011, 40012), render)
}

async fn get_dept(State(app): AppState, Path(id): Path<String>, Query(q): Q) -> R {
    let (u, d) = (uid_type(&q)?, did_type(&q)?);
    let org = lock(&app.org);
    let key = dept_key(&org, &id, &d)?;
    Ok(ok(json!({"department": org.render_dept(&key, &u, &d)})))
}

async fn create_dept(State(app): AppState, Query(q): Q, body: axum::body::Bytes) -> R {
    let (u, d) = (uid_type(&q)?, did_type(&q)?);
    let b = json_body(&body)?;
    let name = b.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty()
        || b.get("parent_department_id")
            .and_then(Value::as_str)
            .is_none()
    {
        return Err(fs_err(
            StatusCode::BAD_REQUEST,
            99992402,
            "field validation failed: name and parent_department_id are required",
        ));
    }
    let custom = b
        .get("department_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(c) = &custom {
        let valid = !c.starts_with("od-")
            && c.len() <= 64
            && c.chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_alphanumeric())
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_-@.".contains(ch));
        if !valid {
            return Err(fs_err(
                StatusCode::BAD_REQUEST,
                99992402,
                "field validation failed: department_id",
            ));
        }
    }
    let key = app.change_with(|org| {
        if let Some(k) = created_before(&app, &q, "dept").filter(|k| org.depts().contains_key(k)) {
            return Ok((k, Vec::new()));
        }
        let key = custom.clone().unwrap_or_else(|| org.next_key("api-d"));
        let mut fx = FixtureDepartment {
            key: key.clone(),
            name: String::new(),
            parent: None,
            order: 0,
            leaders: Vec::new(),
        };
        org.apply_dept_body(&mut fx, &b, &u, &d)
            .map_err(|e| org_err(e, 40015))?;
        let r = org
            .create_dept(fx, custom, &app.opts.app_id)
            .map_err(|e| org_err(e, 40015))?;
        remember_created(&app, &q, "dept", &key);
        Ok(r)
    })?;
    let org = lock(&app.org);
    Ok(ok(json!({"department": org.render_dept(&key, &u, &d)})))
}

async fn patch_dept(
    State(app): AppState,
    Path(id): Path<String>,
    Query(q): Q,
    body: axum::body::Bytes,
) -> R {
    let (u, d) = (uid_type(&q)?, did_type(&q)?);
    let b = json_body(&body)?;
    let key = app.change_with(|org| {
        let (key, mut fx) = dept_entry(org, &id, &d)?;
        org.apply_dept_body(&mut fx, &b, &u, &d)
            .map_err(|e| org_err(e, 40015))?;
        let ev = org.update_dept(&key, fx).map_err(|e| org_err(e, 40015))?;
        Ok((key, ev))
    })?;
    let org = lock(&app.org);
    Ok(ok(json!({"department": org.render_dept(&key, &u, &d)})))
}

async fn delete_dept(State(app): AppState, Path(id): Path<String>, Query(q): Q) -> R {
    let d = did_type(&q)?;
    app.change(|org| {
        let key = dept_key(org, &id, &d)?;
        org.delete_dept(&key).map_err(|e| org_err(e, 40015))
    })?;
    Ok(ok(json!({})))
}

async fn find_by_department(State(app): AppState, Query(q): Q) -> R {
    let d = did_type(&q)?;
    uid_type(&q)?;
    let id = q.get("department_id").ok_or_else(|| {
        fs_err(
            StatusCode::BAD_REQUEST,
            99992402,
            "field validation failed: department_id is required",
        )
    })?;
    let org = lock(&app.org);
    let key = dept_key(&org, id, &d)?;
    let render = |s, e| -> Vec<Value> {
        let members = org.members_range(&key, s, e);
        members.iter().map(|k| org.render_user(k, &d)).collect()
    };
    Ok(ok(contact_page(org.member_count(&key), &q, render)?))
}

async fn get_user(State(app): AppState, Path(id): Path<String>, Query(q): Q) -> R {
    let (u, d) = (uid_type(&q)?, did_type(&q)?);
    let org = lock(&app.org);
    let key = user_key(&org, &id, &u)?;
    Ok(ok(json!({"user": org.render_user(&key, &d)})))
}

async fn create_user(State(app): AppState, Query(q): Q, body: axum::body::Bytes) -> R {
    let (u, d) = (uid_type(&q)?, did_type(&q)?);
    let b = json_body(&body)?;
    for req in ["name", "mobile", "department_ids", "employee_type"] {
        if b.get(req).is_none_or(|v| {
            v.is_null() || v.as_str() == Some("") || v.as_array().is_some_and(Vec::is_empty)
        }) {
            return Err(fs_err(
                StatusCode::BAD_REQUEST,
                99992402,
                &format!("field validation failed: {req} is required"),
            ));
        }
    }
    let key = app.change_with(|org| {
        if let Some(k) = created_before(&app, &q, "user").filter(|k| org.users().contains_key(k)) {
            return Ok((k, Vec::new()));
        }
        let key = match b
            .get("user_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(k) => k.to_string(),
            None => org.next_key("api-u"),
        };
        let mut fx = blank_user(&key);
        let extra: Map<String, Value> = org
            .apply_user_body(&mut fx, &b, &d)
            .map_err(|e| org_err(e, 40015))?;
        let r = org
            .create_user(fx, extra, &app.opts.app_id)
            .map_err(|e| org_err(e, 40015))?;
        remember_created(&app, &q, "user", &key);
        Ok(r)
    })?;
    let _ = u;
    let org = lock(&app.org);
    Ok(ok(json!({"user": strip_mobile(org.render_user(&key, &d))})))
}

/// The create reply does not echo the mobile.
fn strip_mobile(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("mobile");
    }
    v
}

async fn patch_user(
    State(app): AppState,
    Path(id): Path<String>,
    Query(q): Q,
    body: axum::body::Bytes,
) -> R {
    let (u, d) = (uid_type(&q)?, did_type(&q)?);
    let b = json_body(&body)?;
    let key = app.change_with(|org| {
        let (key, mut fx) = user_entry(org, &id, &u)?;
        let extra = org
            .apply_user_body(&mut fx, &b, &d)
            .map_err(|e| org_err(e, 40015))?;
        let ev = org
            .update_user(&key, fx, extra)
            .map_err(|e| org_err(e, 40015))?;
        Ok((key, ev))
    })?;
    let org = lock(&app.org);
    Ok(ok(json!({"user": org.render_user(&key, &d)})))
}

async fn delete_user(State(app): AppState, Path(id): Path<String>, Query(q): Q) -> R {
    let u = uid_type(&q)?;
    app.change(|org| {
        let key = user_key(org, &id, &u)?;
        org.delete_user(&key).map_err(|e| org_err(e, 40015))
    })?;
    Ok(ok(json!({})))
}
