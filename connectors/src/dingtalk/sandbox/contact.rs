//! Org chart endpoints (old generation, POST, `?access_token=`).

use crate::sandbox::prelude::*;
use axum::body::Bytes;

use super::org::{OrgError, int, string};
use super::{App, AppState, old_body, old_err, old_ok, org_err};
use crate::dingtalk::contact::{
    DEPT_CREATE, DEPT_DELETE, DEPT_GET, DEPT_LISTSUB, DEPT_UPDATE, USER_CREATE, USER_DELETE,
    USER_GET, USER_LIST, USER_UPDATE,
};

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(DEPT_LISTSUB, post(listsub))
        .route("/topapi/v2/department/listsubid", post(listsubid))
        .route(DEPT_GET, post(dept_get))
        .route(DEPT_CREATE, post(dept_create))
        .route(DEPT_UPDATE, post(dept_update))
        .route(DEPT_DELETE, post(dept_delete))
        .route(USER_LIST, post(user_list))
        .route("/topapi/user/listid", post(user_listid))
        .route(USER_GET, post(user_get))
        .route(USER_CREATE, post(user_create))
        .route(USER_UPDATE, post(user_update))
        .route(USER_DELETE, post(user_delete))
}

/// A handler's reply: the error replies return early with `?`.
type R = Result<Response, Response>;

/// The dept key of `dept_id` (default `default`), or 60003.
fn dept_of(app: &App, m: &Map<String, Value>, default: Option<i64>) -> Result<String, Response> {
    let Some(id) = int(m.get("dept_id")).or(default) else {
        return Err(old_err(40035, "缺少参数 dept_id"));
    };
    lock(&app.org)
        .dept_key(id)
        .ok_or_else(|| old_err(60003, "部门不存在"))
}

/// A change (made with [`Console::change`]) answered with `{}`.
fn changed(r: Result<(), OrgError>) -> R {
    r.map_err(org_err)?;
    Ok(old_ok(json!({})))
}

async fn listsub(State(app): AppState, h: HeaderMap, b: Bytes) -> R {
    let m = old_body(&h, &b)?;
    // dept_id is optional: root.
    let key = dept_of(&app, &m, Some(1))?;
    let org = lock(&app.org);
    let rows: Vec<Value> = org
        .children(&key)
        .iter()
        .map(|k| org.render_dept_row(k))
        .collect();
    Ok(old_ok(json!({"result": rows})))
}

async fn listsubid(State(app): AppState, h: HeaderMap, b: Bytes) -> R {
    let m = old_body(&h, &b)?;
    let key = dept_of(&app, &m, Some(1))?;
    let org = lock(&app.org);
    let ids: Vec<i64> = org.children(&key).iter().map(|k| org.dept_id(k)).collect();
    Ok(old_ok(json!({"result": {"dept_id_list": ids}})))
}

async fn dept_get(State(app): AppState, h: HeaderMap, b: Bytes) -> R {
    let m = old_body(&h, &b)?;
    let k = dept_of(&app, &m, None)?;
    Ok(old_ok(json!({"result": lock(&app.org).render_dept(&k)})))
}

async fn dept_create(State(app): AppState, h: HeaderMap, b: Bytes) -> R {
    let m = old_body(&h, &b)?;
    let id = app
        .change_with(|org| org.api_create_dept(&m))
        .map_err(org_err)?;
    Ok(old_ok(json!({"result": {"dept_id": id}})))
}

async fn dept_update(State(app): AppState, h: HeaderMap, b: Bytes) -> R {
    let m = old_body(&h, &b)?;
    changed(app.change(|org| org.api_update_dept(&m)))
}

async fn dept_delete(State(app): AppState, h: HeaderMap, b: Bytes) -> R {
    let m = old_body(&h, &b)?;
    let key = dept_of(&app, &m, None)?;
    changed(app.change(|org| org.delete_dept(&key)))
}

async fn user_list(State(app): AppState, h: HeaderMap, b: Bytes) -> R {
    let m = old_body(&h, &b)?;
    let key = dept_of(&app, &m, None)?;
    let Some(cursor) = int(m.get("cursor")).filter(|c| *c >= 0) else {
        return Err(old_err(40035, "不合法的参数: cursor"));
    };
    let Some(size) = int(m.get("size")).filter(|s| (1..=100).contains(s)) else {
        return Err(old_err(40035, "不合法的参数: size"));
    };
    let org = lock(&app.org);
    let total = org.member_count(&key);
    let start = usize::try_from(cursor).unwrap_or(usize::MAX).min(total);
    let end = start
        .saturating_add(usize::try_from(size).unwrap_or(0))
        .min(total);
    let list: Vec<Value> = org
        .members_range(&key, start, end)
        .iter()
        .map(|u| org.render_user_row(u, &key))
        .collect();
    let has_more = end < total;
    let mut result = json!({"has_more": has_more, "list": list});
    if has_more {
        result["next_cursor"] = json!(end);
    }
    Ok(old_ok(json!({"result": result})))
}

async fn user_listid(State(app): AppState, h: HeaderMap, b: Bytes) -> R {
    let m = old_body(&h, &b)?;
    let key = dept_of(&app, &m, None)?;
    let ids = lock(&app.org).members(&key);
    Ok(old_ok(json!({"result": {"userid_list": ids}})))
}

async fn user_get(State(app): AppState, h: HeaderMap, b: Bytes) -> R {
    let m = old_body(&h, &b)?;
    let Some(uid) = string(m.get("userid")).filter(|s| !s.is_empty()) else {
        return Err(old_err(40035, "缺少参数 userid"));
    };
    let org = lock(&app.org);
    if !org.users().contains_key(&uid) {
        return Err(old_err(60121, "找不到该用户"));
    }
    Ok(old_ok(json!({"result": org.render_user(&uid)})))
}

async fn user_create(State(app): AppState, h: HeaderMap, b: Bytes) -> R {
    let m = old_body(&h, &b)?;
    let key = app
        .change_with(|org| org.api_create_user(&m))
        .map_err(org_err)?;
    let union = super::org::unionid_of(&key);
    // camelCase here, as DingTalk answers.
    Ok(old_ok(json!({"result": {"userid": key, "unionId": union}})))
}

async fn user_update(State(app): AppState, h: HeaderMap, b: Bytes) -> R {
    let m = old_body(&h, &b)?;
    changed(app.change(|org| org.api_update_user(&m)))
}

async fn user_delete(State(app): AppState, h: HeaderMap, b: Bytes) -> R {
    let m = old_body(&h, &b)?;
    let uid = string(m.get("userid")).unwrap_or_default();
    changed(app.change(|org| org.delete_user(&uid)))
}
