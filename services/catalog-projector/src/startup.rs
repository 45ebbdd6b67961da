//! Wiring: infrastructure in, a running service out.

use std::net::SocketAddr;
use std::sync::Arc;

use imagelib_platform::auth::Tokens;
use imagelib_platform::http::HttpOptions;
use imagelib_platform::{Infra, Readiness, Service, StartupError};

use crate::config::Config;
use crate::curate::Catalog;
use crate::projection::Projection;

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Migrate the catalog schema of `pool` (its search path).
pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), imagelib_platform::db::DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Build the service on shared infrastructure (`imagelib serve`): without
/// `GET /v1/registries[/{id}]` unless `IMAGELIB_CATALOG__SERVE_REGISTRIES=true`, since
/// registry-registry serves those paths there.
pub async fn service(config: &Config, infra: &Infra) -> Result<Service, StartupError> {
    service_with(
        config,
        infra,
        config.catalog.serve_registries.unwrap_or(false),
    )
    .await
}

/// Build the service, choosing whether it serves its registry routes.
pub async fn service_with(
    config: &Config,
    infra: &Infra,
    serve_registries: bool,
) -> Result<Service, StartupError> {
    let other = |e: &dyn std::fmt::Display| StartupError::Other(e.to_string());
    config.catalog.validate()?;
    migrate(&infra.pool).await?;
    let tokens = Tokens::from_config(&config.common).map_err(|e| other(&e))?;
    let console = imagelib_console::Console::from_config(&config.common).map_err(|e| other(&e))?;
    let projection = Projection::new(infra.pool.clone());
    // The catalog owns the stream's usage gauges: one series per stream, also in
    // `imagelib serve`.
    infra
        .bus
        .watch_stream_usage(std::time::Duration::from_secs(15));
    let readiness = Readiness::new();
    imagelib_platform::stream_health::watch(&infra.bus, &readiness);
    readiness.set("database", true, None);
    let (worker, status) = crate::worker::worker(
        infra.bus.clone(),
        projection.clone(),
        config.catalog.clone(),
        readiness.clone(),
    );
    let catalog = Arc::new(
        Catalog::with_caches(
            infra.bus.clone(),
            projection,
            tokens,
            config.catalog.page_cache_mb,
            config.catalog.row_cache_mb,
        )
        .with_status(status),
    );
    Ok(Service {
        name: crate::NAME,
        router: crate::api::router(catalog.clone(), serve_registries)
            .merge(crate::pages::router(catalog, console).into()),
        readiness,
        workers: vec![worker],
    })
}

/// The service as a process of its own.
#[derive(Debug)]
pub struct Application(imagelib_platform::Application);

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let infra =
            imagelib_platform::runtime::connect(&config.common, crate::NAME, crate::SCHEMA).await?;
        let serve_registries = config.catalog.serve_registries.unwrap_or(true);
        let svc = service_with(&config, &infra, serve_registries).await?;
        let options = HttpOptions {
            max_body_bytes: config.common.max_body_bytes,
            title: format!("imagelib {}", crate::NAME),
            ..Default::default()
        };
        let console = imagelib_console::Console::from_config(&config.common)
            .map_err(|e| StartupError::Other(e.to_string()))?;
        Ok(Self(
            imagelib_platform::Application::new(
                config.http_addr(),
                vec![svc, imagelib_console::service(console)],
                options,
            )
            .await?,
        ))
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
