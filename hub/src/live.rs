//! Live changes: vendor events arrive on the `ingress` queue (see
//! `callbacks.rs`); a contact change in a route's source brings that route's
//! targets up to date within seconds.
//!
//! This first slice reconciles the whole route on an event, coalescing bursts:
//! a reconcile that started after an event was received already covers it, so
//! that event is acknowledged without another run. Loops cannot form: a write
//! into a target produces, at most, events of a connector that is a source of
//! no route — or, on a two-way pair, a reconcile that finds nothing to change
//! (the diff compares content, not events).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::config::Config;
use crate::queue::{Envelope, Handler, Outcome, Task};
use crate::store::{Store, now_ms};

/// Whether a vendor event type is an org-chart (contact) change.
pub fn is_contact_event(event_type: &str) -> bool {
    let t = event_type.to_ascii_lowercase();
    t.starts_with("contact.")            // Feishu: contact.user.created_v3, contact.department.updated_v3 …
        || t.starts_with("change_contact") // WeCom: change_contact.create_user …
        || t.starts_with("user_") // DingTalk: user_add_org, user_modify_org, user_leave_org
        || t.starts_with("org_dept_") // DingTalk: org_dept_create, org_dept_modify, org_dept_remove
        || t.contains("contact_change")
}

/// Handles `IngressV1` messages: contact changes trigger their routes' reconcile.
pub struct IngressHandler {
    config: Config,
    store: Arc<dyn Store>,
    /// Per route: when its last reconcile started (ms).
    started: Mutex<HashMap<String, Arc<Mutex<i64>>>>,
}

impl IngressHandler {
    pub fn new(config: Config, store: Arc<dyn Store>) -> Self {
        IngressHandler {
            config,
            store,
            started: Mutex::new(HashMap::new()),
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
        let Task::IngressV1 {
            connector,
            event_type,
            event_id,
            received_at_ms,
            ..
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
