//! The composition of one huitong process: configuration, store, queue, the
//! HTTP surface and the push channels. `huitong serve` and the end-to-end tests
//! build the same `App`.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use async_trait::async_trait;

use crate::config::Config;
use crate::queue::{self, Queue, QueueError};
use crate::server::{self, AppState, Probe};
use crate::store::{self, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
}

struct QueueProbe(Arc<dyn Queue>);

#[async_trait]
impl Probe for QueueProbe {
    fn name(&self) -> &'static str {
        "queue"
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

impl App {
    /// Open the store (running migrations) and everything else the process needs.
    pub async fn start(config: Config) -> Result<App, AppError> {
        let store = store::open(&config.database).await?;
        tracing::info!(
            backend = store.backend(),
            database = %config.database.redacted_url(),
            queue = %config.queue.url.redacted(),
            "store ready"
        );
        let queue = queue::open(&config, store.clone()).await?;
        tracing::info!(kind = queue.kind(), "queue ready");
        Ok(App {
            config,
            store,
            queue,
        })
    }

    fn probes(&self) -> Vec<Arc<dyn Probe>> {
        vec![
            Arc::new(self.store.clone()),
            Arc::new(QueueProbe(self.queue.clone())),
        ]
    }

    pub fn router(&self) -> axum::Router {
        let state = AppState {
            probes: Arc::new(self.probes()),
        };
        let callbacks = Arc::new(crate::callbacks::Callbacks::from_config(
            &self.config,
            self.store.clone(),
            self.queue.clone(),
        ));
        server::router_with(state, &self.config.server, callbacks.routes())
    }

    /// Serve on a pre-bound listener, and run the push channels (`push.rs`), until `shutdown`
    /// resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        crate::telemetry::metrics();
        let router = self.router();
        // Connectors with `events = "push"`: their connections close when `shutdown` resolves.
        let push = crate::push::start(&self.config, self.store.clone(), self.queue.clone());
        let stop_push = push.stopper();
        let shutdown = async move {
            shutdown.await;
            let _ = stop_push.send(true);
        };
        let served = server::serve(
            listener,
            router,
            self.config.server.limits,
            self.config.server.shutdown_grace,
            shutdown,
        )
        .await;
        push.shutdown().await;
        served.map_err(AppError::Serve)
    }
}
