//! A service as the runtime sees it: HTTP routes, background workers and readiness.
//!
//! Each service crate builds a [`Service`]; its own binary serves one, `imagelib serve`
//! serves all four on one listener. Workers (consumers, schedulers) get a cancellation
//! token and stop when the process drains; a worker that dies marks the service not
//! ready instead of vanishing silently.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

type WorkerFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A background task of a service.
pub struct Worker {
    pub name: String,
    run: Box<dyn FnOnce(CancellationToken) -> WorkerFuture + Send>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).finish()
    }
}

impl Worker {
    pub fn new<F, Fut>(name: impl Into<String>, run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Worker {
            name: name.into(),
            run: Box::new(move |t| Box::pin(run(t))),
        }
    }

    /// Runs the worker until `cancel` (what [`serve`] does with each service's workers).
    pub fn run(self, cancel: CancellationToken) -> impl Future<Output = Result<(), String>> {
        (self.run)(cancel)
    }
}

/// One check of `/readyz`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Working, but short of what it should have (a NATS replica down): `/readyz` lists
    /// it under `degraded` while the service stays ready.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
}

/// Named readiness checks, shared between a service's workers and `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<String, Check>>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self, name: &str, ready: bool, detail: Option<String>) {
        if let Ok(mut m) = self.checks.lock() {
            m.insert(
                name.to_owned(),
                Check {
                    ready,
                    detail,
                    degraded: false,
                },
            );
        }
    }

    /// Ready, but degraded for the reason `detail` says.
    pub fn set_degraded(&self, name: &str, detail: String) {
        if let Ok(mut m) = self.checks.lock() {
            m.insert(
                name.to_owned(),
                Check {
                    ready: true,
                    detail: Some(detail),
                    degraded: true,
                },
            );
        }
    }

    /// A handle that does not keep the checks alive, for watchers that should stop when
    /// their service is gone.
    pub fn downgrade(&self) -> WeakReadiness {
        WeakReadiness(Arc::downgrade(&self.checks))
    }

    pub fn is_ready(&self) -> bool {
        self.checks
            .lock()
            .map(|m| m.values().all(|c| c.ready))
            .unwrap_or(false)
    }

    pub fn report(&self) -> BTreeMap<String, Check> {
        self.checks.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Merge another service's checks under a `<service>.` prefix.
    pub fn combine(parts: &[(&str, Readiness)]) -> CombinedReadiness {
        CombinedReadiness(
            parts
                .iter()
                .map(|(n, r)| ((*n).to_owned(), r.clone()))
                .collect(),
        )
    }
}

/// See [`Readiness::downgrade`].
#[derive(Debug, Clone)]
pub struct WeakReadiness(std::sync::Weak<Mutex<BTreeMap<String, Check>>>);

impl WeakReadiness {
    pub fn upgrade(&self) -> Option<Readiness> {
        self.0.upgrade().map(|checks| Readiness { checks })
    }
}

/// The readiness of several services served together.
#[derive(Debug, Clone, Default)]
pub struct CombinedReadiness(Vec<(String, Readiness)>);

impl CombinedReadiness {
    pub fn is_ready(&self) -> bool {
        self.0.iter().all(|(_, r)| r.is_ready())
    }

    pub fn report(&self) -> BTreeMap<String, Check> {
        let mut out = BTreeMap::new();
        for (service, r) in &self.0 {
            for (k, v) in r.report() {
                out.insert(format!("{service}.{k}"), v);
            }
        }
        out
    }
}

/// What a service crate hands to the runtime.
pub struct Service {
    pub name: &'static str,
    pub router: OpenApiRouter,
    pub readiness: Readiness,
    pub workers: Vec<Worker>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// Bind the HTTP listener.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Serve `services` on `listener` until `shutdown` resolves, then drain: stop accepting,
/// finish in-flight requests, cancel workers and wait for them (bounded).
pub async fn serve(
    listener: TcpListener,
    services: Vec<Service>,
    options: crate::http::HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let cancel = CancellationToken::new();
    let mut routers = Vec::new();
    let mut readiness = Vec::new();
    let mut handles = Vec::new();
    for s in services {
        readiness.push((s.name, s.readiness.clone()));
        for w in s.workers {
            let token = cancel.child_token();
            let ready = s.readiness.clone();
            let name = format!("{}.{}", s.name, w.name);
            ready.set(&format!("worker.{}", w.name), true, None);
            let check = format!("worker.{}", w.name);
            handles.push(tokio::spawn(async move {
                match (w.run)(token).await {
                    Ok(()) => tracing::info!(worker = %name, "worker stopped"),
                    Err(e) => {
                        tracing::error!(worker = %name, error = %e, "worker failed");
                        ready.set(&check, false, Some(format!("stopped: {e}")));
                    }
                }
            }));
        }
        routers.push(s.router);
    }
    let combined = Readiness::combine(&readiness);
    let app = crate::http::app(routers, combined, options);
    let drain = cancel.clone();
    // The peer address reaches handlers (and the audit line of a failed authentication).
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown => {},
                _ = drain.cancelled() => {},
            }
        })
        .await
        .map_err(ServeError::Http);
    cancel.cancel();
    let wait = futures::future::join_all(handles);
    if tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .is_err()
    {
        tracing::warn!("workers did not stop within 10 s");
    }
    result
}
