//! Live changes: vendor events arrive on the `ingress` queue (see
//! `callbacks.rs`); a contact change in a route's source brings that route's
//! targets up to date within seconds.
//!
//! An event first goes through **echo suppression**: the records it names are
//! read back from the vendor and hashed the way huitong hashed what it last
//! wrote there (the hash is kept in the xref, so this survives a restart); when
//! every named record holds exactly what huitong wrote, the event is our own
//! write coming back and is dropped. A two-way pair therefore settles after one
//! hop. Anything else reconciles the whole route, coalescing bursts: a reconcile
//! that started after an event was received already covers it, so that event is
//! acknowledged without another run.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;

use serde_json::Value;

use crate::config::{Config, ConnectorKind};
use crate::queue::{Envelope, Handler, Outcome, Task};
use crate::store::{Store, now_ms};
use crate::sync::{self, DEPARTMENT, Endpoint, PERSON};

/// Whether a vendor event type is an org-chart (contact) change.
pub fn is_contact_event(event_type: &str) -> bool {
    let t = event_type.to_ascii_lowercase();
    t.starts_with("contact.")            // Feishu: contact.user.created_v3, contact.department.updated_v3 …
        || t.starts_with("change_contact") // WeCom: change_contact.create_user …
        || t.starts_with("user_") // DingTalk: user_add_org, user_modify_org, user_leave_org
        || t.starts_with("org_dept_") // DingTalk: org_dept_create, org_dept_modify, org_dept_remove
        || t.contains("contact_change")
}

/// The records (entity, vendor id) a contact event names; `None` when it can't tell.
pub fn changed_records(
    kind: ConnectorKind,
    event_type: &str,
    payload: &Value,
) -> Option<Vec<(&'static str, String)>> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    match kind {
        ConnectorKind::Feishu => {
            let event = payload.get("event").unwrap_or(payload);
            let object = event.get("object")?;
            if event_type.starts_with("contact.user.") {
                Some(vec![(PERSON, s(object, "open_id")?)])
            } else if event_type.starts_with("contact.department.") {
                Some(vec![(DEPARTMENT, s(object, "open_department_id")?)])
            } else {
                None
            }
        }
        ConnectorKind::DingTalk => {
            let c = huitong_connectors::dingtalk::events::contact_change(event_type, payload)?;
            let mut out: Vec<(&'static str, String)> =
                c.user_ids.into_iter().map(|u| (PERSON, u)).collect();
            out.extend(c.dept_ids.into_iter().map(|d| (DEPARTMENT, d.to_string())));
            (!out.is_empty()).then_some(out)
        }
        ConnectorKind::WeCom => {
            let change = event_type.strip_prefix("change_contact.")?;
            if change.ends_with("_user") {
                Some(vec![(PERSON, s(payload, "UserID")?)])
            } else if change.ends_with("_party") {
                let id = payload.get("Id")?;
                let id = id
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| id.to_string());
                Some(vec![(DEPARTMENT, id)])
            } else {
                None
            }
        }
    }
}

/// Handles `IngressV1` messages: contact changes trigger their routes' reconcile.
pub struct IngressHandler {
    config: Config,
    store: Arc<dyn Store>,
    /// Per route: when its last reconcile started (ms).
    started: Mutex<HashMap<String, Arc<Mutex<i64>>>>,
    /// Connectors built so far (their tokens and rate limits are kept between events).
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    /// Events dropped as echoes of huitong's own writes.
    pub echoes: std::sync::atomic::AtomicU64,
}

impl IngressHandler {
    pub fn new(config: Config, store: Arc<dyn Store>) -> Self {
        IngressHandler {
            config,
            store,
            started: Mutex::new(HashMap::new()),
            endpoints: Mutex::new(HashMap::new()),
            echoes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    async fn endpoint(&self, connector: &str) -> Option<Arc<Endpoint>> {
        let mut map = self.endpoints.lock().await;
        if let Some(e) = map.get(connector) {
            return Some(e.clone());
        }
        let c = self.config.connectors.get(connector)?;
        match sync::connect::endpoint(c) {
            Ok(e) => {
                let e = Arc::new(e);
                map.insert(connector.to_owned(), e.clone());
                Some(e)
            }
            Err(e) => {
                tracing::warn!(connector = %connector, error = %e, "cannot build the connector for echo checks");
                None
            }
        }
    }

    /// Whether every record the event names holds exactly what huitong last wrote there.
    async fn is_echo(&self, connector: &str, event_type: &str, payload: &Value) -> bool {
        let Some(endpoint) = self.endpoint(connector).await else {
            return false;
        };
        let Some(records) = changed_records(endpoint.kind, event_type, payload) else {
            return false;
        };
        for (entity, id) in &records {
            match sync::is_echo(&*self.store, &endpoint, entity, id).await {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) => {
                    tracing::warn!(connector = %connector, entity, id = %id, error = %e, "echo check failed; treating the event as a change");
                    return false;
                }
            }
        }
        true
    }

    async fn route_lock(&self, route: &str) -> Arc<Mutex<i64>> {
        self.started
            .lock()
            .await
            .entry(route.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(0)))
            .clone()
    }
}

#[async_trait]
impl Handler for IngressHandler {
    async fn handle(&self, envelope: &Envelope) -> Outcome {
        let Task::IngressV1 {
            connector,
            event_type,
            event_id,
            received_at_ms,
            payload,
        } = &envelope.task
        else {
            return Outcome::Permanent(format!(
                "the ingress queue does not take {:?}",
                envelope.task
            ));
        };
        if !is_contact_event(event_type) {
            tracing::debug!(connector = %connector, event_type = %event_type, "not an org change; nothing to do");
            return Outcome::Ok;
        }
        let routes: Vec<String> = self
            .config
            .routes
            .values()
            .filter(|r| &r.source == connector)
            .map(|r| r.name.clone())
            .collect();
        if routes.is_empty() {
            return Outcome::Ok;
        }
        if self.is_echo(connector, event_type, payload).await {
            self.echoes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            crate::telemetry::echo_suppressed(connector);
            tracing::info!(connector = %connector, event_type = %event_type, event_id = ?event_id,
                "echo of huitong's own write; dropped");
            return Outcome::Ok;
        }
        for route in routes {
            let lock = self.route_lock(&route).await;
            let mut last_start = lock.lock().await;
            if *last_start > *received_at_ms {
                tracing::debug!(route = %route, event_id = ?event_id, "covered by a reconcile that started after the event");
                continue;
            }
            *last_start = now_ms();
            tracing::info!(route = %route, connector = %connector, event_type = %event_type, event_id = ?event_id,
                "org change: reconciling the route");
            if let Err(e) = crate::jobs::reconcile(&self.config, &*self.store, &route).await {
                // Let the next try run again.
                *last_start = 0;
                return Outcome::Retry(format!("route {route}: {e}"));
            }
        }
        Outcome::Ok
    }
}
