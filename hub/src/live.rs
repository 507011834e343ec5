//! Live changes: vendor events arrive on the `ingress` queue (see
//! `callbacks.rs`); a contact change in a route's source brings that route's
//! targets up to date within seconds.
//!
//! An event first goes through **echo suppression**: the records it names are
//! read back from the vendor and hashed the way huitong hashed what it last
//! wrote there (the hash is kept in the xref, so this survives a restart); when
//! every named record holds exactly what huitong wrote, the event is our own
//! write coming back and is dropped. A two-way pair therefore settles after one
//! hop.
//!
//! Anything else is **normalised record by record** where that suffices
//! (`sync::plan_records`: records already linked everywhere — changed in place,
//! left, or deleted — within the safety threshold): only the named records are
//! read on each side, and their steps are delivered through `deliver.<route>` as
//! a small `live` run. Otherwise — a new person or department, a deleted
//! department, a scoped route — the whole route is reconciled,
//! coalescing bursts: a reconcile that started after an event was received
//! already covers it, so that event is acknowledged without another run.

use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

use async_trait::async_trait;
use tokio::sync::Mutex;

use serde_json::Value;

use crate::config::{Config, ConnectorKind};
use crate::model::Entity;
use crate::queue::{Envelope, Handler, Outcome, Queue, Task};
use crate::store::{Store, now_ms};
use crate::sync::{self, Endpoint, RouteContext};

/// Whether an event of this connector's vendor is an org-chart (contact) change.
pub fn is_contact_event(kind: ConnectorKind, event_type: &str) -> bool {
    kind.is_contact_event(event_type) || event_type.to_ascii_lowercase().contains("contact_change")
}

/// The records (entity, vendor id) a contact event names — each connector reads its own
/// vendor's event shapes; `None` when it can't tell.
pub fn changed_records(
    kind: ConnectorKind,
    event_type: &str,
    payload: &Value,
) -> Option<Vec<(Entity, String)>> {
    let records = kind.contact_records(event_type, payload)?;
    Some(
        records
            .into_iter()
            .filter_map(|(e, id)| Some((Entity::of_vendor(e)?, id)))
            .collect(),
    )
}

/// Handles `IngressV1` messages: contact changes trigger their routes' reconcile.
pub struct IngressHandler {
    config: Config,
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    /// Per route: when its last reconcile started (ms).
    started: Mutex<HashMap<String, Arc<Mutex<i64>>>>,
    /// Connectors built so far (their tokens and rate limits are kept between events).
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    /// Routes built so far (per-record plans reuse their connectors).
    contexts: Mutex<HashMap<String, Arc<RouteContext>>>,
    /// Events dropped as echoes of huitong's own writes.
    pub echoes: std::sync::atomic::AtomicU64,
    /// Route updates done record by record (no full reconcile).
    pub per_record: std::sync::atomic::AtomicU64,
}

impl IngressHandler {
    pub fn new(config: Config, store: Arc<dyn Store>, queue: Arc<dyn Queue>) -> Self {
        IngressHandler {
            config,
            store,
            queue,
            started: Mutex::new(HashMap::new()),
            endpoints: Mutex::new(HashMap::new()),
            contexts: Mutex::new(HashMap::new()),
            echoes: std::sync::atomic::AtomicU64::new(0),
            per_record: std::sync::atomic::AtomicU64::new(0),
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
                map.insert(connector.to_owned(), e.clone());
                Some(e)
            }
            Err(e) => {
                tracing::warn!(connector = %connector, error = %e, "cannot build the connector for echo checks");
                None
            }
        }
    }

    /// The records a contact event names, read with the connector's own event shapes.
    async fn named(
        &self,
        connector: &str,
        event_type: &str,
        payload: &Value,
    ) -> Option<(Arc<Endpoint>, Vec<(Entity, String)>)> {
        let endpoint = self.endpoint(connector).await?;
        let records = changed_records(endpoint.kind, event_type, payload)?;
        Some((endpoint, records))
    }

    /// Whether every record the event names holds exactly what huitong last wrote there.
    async fn is_echo(&self, endpoint: &Endpoint, records: &[(Entity, String)]) -> bool {
        for (entity, id) in records {
            match sync::is_echo(&*self.store, endpoint, *entity, id).await {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) => {
                    tracing::warn!(connector = %endpoint.name, entity = %entity, id = %id, error = %e, "echo check failed; treating the event as a change");
                    return false;
                }
            }
        }
        !records.is_empty()
    }

    async fn route_context(&self, route: &str) -> Result<Arc<RouteContext>, sync::SyncError> {
        let mut map = self.contexts.lock().await;
        if let Some(c) = map.get(route) {
            return Ok(c.clone());
        }
        let ctx = Arc::new(RouteContext::new(&self.config, route)?);
        map.insert(route.to_owned(), ctx.clone());
        Ok(ctx)
    }

    /// The live fast path: plan and apply only the records the event names. `false` when the
    /// route must be reconciled as a whole instead.
    async fn deliver_records(&self, route: &str, records: &[(Entity, String)]) -> bool {
        let ctx = match self.route_context(route).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(route = %route, error = %e, "cannot build the route");
                return false;
            }
        };
        let plan = match sync::plan_records(&ctx, &*self.store, records).await {
            Ok(Some(plan)) => plan,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(route = %route, error = %e, "per-record plan failed; reconciling the route");
                return false;
            }
        };
        if plan.is_empty() {
            tracing::debug!(route = %route, records = records.len(), "the named records are in sync");
            return true;
        }
        match sync::apply(&ctx, &plan, &*self.store, &*self.queue, false, &|_, _| {}).await {
            Ok(report) if report.errors.is_empty() => {
                self.per_record
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(route = %route, run = %report.run_id, records = records.len(), counts = ?report.counts,
                    "org change delivered record by record");
                true
            }
            Ok(report) => {
                tracing::warn!(route = %route, run = %report.run_id, errors = ?report.errors, "per-record apply failed; reconciling the route");
                false
            }
            Err(e) => {
                tracing::warn!(route = %route, error = %e, "per-record apply failed; reconciling the route");
                false
            }
        }
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
        let connector = match &envelope.task {
            Task::IngressV1 { connector, .. } => connector.as_str(),
            _ => "",
        };
        let span =
            tracing::info_span!("ingress", connector = %connector, trace = %envelope.trace_id);
        self.handle_ingress(envelope).instrument(span).await
    }
}

impl IngressHandler {
    async fn handle_ingress(&self, envelope: &Envelope) -> Outcome {
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
        let contact = self
            .config
            .connectors
            .get(connector.as_str())
            .is_some_and(|c| is_contact_event(c.kind, event_type));
        if !contact {
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
        let named = self.named(connector, event_type, payload).await;
        if let Some((endpoint, records)) = &named
            && self.is_echo(endpoint, records).await
        {
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
            if let Some((_, records)) = &named
                && self.deliver_records(&route, records).await
            {
                continue;
            }
            *last_start = now_ms();
            tracing::info!(route = %route, connector = %connector, event_type = %event_type, event_id = ?event_id,
                "org change: reconciling the route");
            if let Err(e) = sync::reconcile(
                &self.config,
                &*self.store,
                &*self.queue,
                &route,
                sync::RunKind::Reconcile,
            )
            .await
            {
                // Let the next try run again.
                *last_start = 0;
                return Outcome::Retry(format!("route {route}: {e}"));
            }
        }
        Outcome::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(name: &str) -> ConnectorKind {
        ConnectorKind::parse(name).expect("a registered vendor")
    }

    #[test]
    fn each_vendor_says_which_of_its_events_are_org_changes() {
        assert!(is_contact_event(kind("feishu"), "contact.user.created_v3"));
        assert!(!is_contact_event(kind("feishu"), "im.message.receive_v1"));
        assert!(is_contact_event(kind("dingtalk"), "user_modify_org"));
        assert!(is_contact_event(kind("dingtalk"), "org_dept_create"));
        assert!(is_contact_event(
            kind("wecom"),
            "change_contact.create_user"
        ));
        assert!(!is_contact_event(kind("wecom"), "message.text"));
        // Another vendor's event names mean nothing here.
        assert!(!is_contact_event(kind("feishu"), "user_add_org"));
    }

    #[test]
    fn each_vendor_names_the_records_its_contact_events_are_about() {
        let feishu = json!({"schema": "2.0", "header": {"event_type": "contact.user.updated_v3"},
            "event": {"object": {"open_id": "ou_1", "name": "x"}, "old_object": {"name": "y"}}});
        assert_eq!(
            changed_records(kind("feishu"), "contact.user.updated_v3", &feishu),
            Some(vec![(Entity::Person, "ou_1".to_owned())])
        );
        let dept = json!({"event": {"object": {"open_department_id": "od-9"}}});
        assert_eq!(
            changed_records(kind("feishu"), "contact.department.created_v3", &dept),
            Some(vec![(Entity::Department, "od-9".to_owned())])
        );
        assert_eq!(
            changed_records(kind("feishu"), "im.message.receive_v1", &feishu),
            None
        );
        assert_eq!(
            changed_records(
                kind("wecom"),
                "change_contact.update_user",
                &json!({"UserID": "zhangsan", "ChangeType": "update_user"})
            ),
            Some(vec![(Entity::Person, "zhangsan".to_owned())])
        );
        assert_eq!(
            changed_records(
                kind("wecom"),
                "change_contact.create_party",
                &json!({"Id": 7})
            ),
            Some(vec![(Entity::Department, "7".to_owned())])
        );
        assert_eq!(
            changed_records(
                kind("dingtalk"),
                "user_modify_org",
                &json!({"EventType": "user_modify_org", "UserId": ["u1", "u2"]})
            ),
            Some(vec![
                (Entity::Person, "u1".to_owned()),
                (Entity::Person, "u2".to_owned())
            ])
        );
        assert_eq!(
            changed_records(
                kind("dingtalk"),
                "org_dept_modify",
                &json!({"DeptId": [42]})
            ),
            Some(vec![(Entity::Department, "42".to_owned())])
        );
        assert_eq!(
            changed_records(kind("dingtalk"), "user_modify_org", &json!({})),
            None
        );
    }
}
