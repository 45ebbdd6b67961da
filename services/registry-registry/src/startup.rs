//! Wiring: infrastructure in, a running service out.

use std::net::SocketAddr;
use std::sync::Arc;

use imagelib_platform::auth::Tokens;
use imagelib_platform::{Infra, Readiness, Service, StartupError};
use imagelib_secrets::{MasterKeyring, Vault};
use registry_client::NetworkGuard;

use crate::app::Registries;
use crate::config::Config;
use crate::pulls::PullCounter;
use crate::store::Store;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Build the service on shared infrastructure (its own binary or `imagelib serve`).
pub async fn service(config: &Config, infra: &Infra) -> Result<Service, StartupError> {
    MIGRATOR
        .run(&infra.pool)
        .await
        .map_err(imagelib_platform::db::DbError::from)?;
    let other = |e: &dyn std::fmt::Display| StartupError::Other(e.to_string());
    let keyring = Arc::new(
        MasterKeyring::load_or_create(&config.common.master_key_file).map_err(|e| other(&e))?,
    );
    let bucket = config
        .keys_bucket
        .clone()
        .unwrap_or_else(|| imagelib_secrets::bucket_for_stream(&config.common.stream));
    let vault = Vault::connect(
        infra.bus.jetstream(),
        &bucket,
        config.common.stream_replicas,
        keyring.clone(),
    )
    .await
    .map_err(|e| other(&e))?;
    let rewrapped = vault
        .store()
        .rewrap_all(&keyring)
        .await
        .map_err(|e| other(&e))?;
    if rewrapped > 0 {
        tracing::info!(
            rewrapped,
            "data keys re-wrapped with the primary master key"
        );
    }
    // The configured metadata endpoints (GKE metadata server, Pod Identity agent) are
    // refused to registry requests like the built-in ones.
    let guard = config.providers.harden(
        NetworkGuard::from_lists(
            config.common.deny_networks.as_deref(),
            config.common.allow_networks.as_deref(),
        )
        .map_err(|e| other(&e))?,
    );
    let tokens = Tokens::from_config(&config.common).map_err(|e| other(&e))?;
    let console = imagelib_console::Console::from_config(&config.common).map_err(|e| other(&e))?;
    let store = Store::new(infra.pool.clone());
    let vault = Arc::new(vault);
    let subscriptions = Arc::new(crate::subscriptions::commands::Subscriptions::new(
        infra.bus.clone(),
        crate::subscriptions::store::SubscriptionStore::new(infra.pool.clone()),
        vault.clone(),
        guard.clone(),
        config.delivery.subscriptions_allow_http,
    ));
    let app = Arc::new(Registries::new(
        infra.bus.clone(),
        store.clone(),
        vault,
        guard,
        config.providers.clone(),
        config.validation_timeout(),
    ));
    let unavailable = app.sweep_unavailable().await.map_err(|e| other(&e))?;
    if unavailable > 0 {
        tracing::error!(
            unavailable,
            "registries whose credentials cannot be opened with this master key file are \
             shown as credentials_unavailable; everything else runs"
        );
    }
    let readiness = Readiness::new();
    imagelib_platform::stream_health::watch(&infra.bus, &readiness);
    readiness.set("database", true, None);
    let mut workers = crate::bus::projectors(&infra.bus, &store, &readiness);
    workers.push(shredder(app.clone()));
    workers.extend(
        crate::subscriptions::delivery::workers(subscriptions.clone(), &config.delivery)
            .map_err(|e| other(&e))?,
    );
    let pulls = Arc::new(PullCounter::new(infra.bus.clone(), config.pull_settings()));
    workers.push(pulls.worker());
    Ok(Service {
        name: crate::NAME,
        router: crate::subscriptions::api::router(subscriptions, tokens.clone())
            .merge(crate::api::router(app.clone(), tokens))
            .layer(axum::Extension(pulls))
            .merge(crate::pages::router(app, console).into()),
        readiness,
        workers,
    })
}

/// Destroys the data keys of removed registries that still have one: at start (a removal
/// whose shred failed before a restart), after a removal whose shred failed, and every
/// minute (removals applied by the projector from another replica); failures back off.
fn shredder(app: Arc<Registries>) -> imagelib_platform::Worker {
    imagelib_platform::Worker::new(
        format!("{}.shredder", crate::NAME),
        move |cancel| async move {
            let mut failures = 0u32;
            loop {
                let wait = match app.shred_pending().await {
                    Ok(0) => {
                        failures = 0;
                        std::time::Duration::from_secs(60)
                    }
                    Ok(_) | Err(_) => {
                        failures = failures.saturating_add(1);
                        crate::app::shred_backoff(failures - 1)
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = app.shred_wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        },
    )
}

/// The service as a process of its own.
#[derive(Debug)]
pub struct Application(imagelib_platform::Application);

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let console = imagelib_console::Console::from_config(&config.common)
            .map_err(|e| StartupError::Other(e.to_string()))?;
        let app = imagelib_platform::Application::single_with(
            &config.common,
            crate::NAME,
            crate::SCHEMA,
            config.http_addr(),
            |infra| {
                let config = &config;
                async move { service(config, &infra).await }
            },
            vec![imagelib_console::service(console)],
        )
        .await?;
        Ok(Self(app))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        self.0.run_until_stopped(shutdown).await
    }
}
