//! Wiring: infrastructure in, a running service out.

use std::net::SocketAddr;

use std::sync::Arc;

use imagelib_platform::auth::Tokens;
use imagelib_platform::{Infra, Readiness, Service, StartupError};

use crate::app::Deployer;
use crate::config::Config;
use crate::store::Store;
use crate::target::gitops::Gitops;
use crate::target::kubernetes::Kubernetes;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Build the service on shared infrastructure (its own binary or `imagelib serve`).
pub async fn service(config: &Config, infra: &Infra) -> Result<Service, StartupError> {
    MIGRATOR
        .run(&infra.pool)
        .await
        .map_err(imagelib_platform::db::DbError::from)?;
    let other = |e: &dyn std::fmt::Display| StartupError::Other(e.to_string());
    let settings = config.deployer.clone();
    let gitops = Gitops::open(&config.common.gitops_dir)
        .await
        .map_err(|e| other(&e))?;
    let kubernetes = match &settings.kubernetes_api {
        Some(api) => {
            let ca = settings
                .kubernetes_ca_file
                .as_ref()
                .map(std::fs::read_to_string)
                .transpose()
                .map_err(|e| other(&format!("IMAGELIB_DEPLOYER__KUBERNETES_CA_FILE: {e}")))?;
            let k = Kubernetes::new(api, None, ca.as_deref()).map_err(|e| other(&e))?;
            // Re-read whenever the file changes: projected service-account tokens rotate.
            Some(match &settings.kubernetes_token_file {
                Some(p) => k.with_token_file(p.clone()).map_err(|e| {
                    other(&format!("IMAGELIB_DEPLOYER__KUBERNETES_TOKEN_FILE: {e}"))
                })?,
                None => k,
            })
        }
        None => None,
    };
    let tokens = Tokens::from_config(&config.common).map_err(|e| other(&e))?;
    let console = imagelib_console::Console::from_config(&config.common).map_err(|e| other(&e))?;
    let store = Store::new(infra.pool.clone());
    let app = Arc::new(Deployer {
        bus: infra.bus.clone(),
        store: store.clone(),
        settings,
        gitops,
        kubernetes,
    });
    let readiness = Readiness::new();
    imagelib_platform::stream_health::watch(&infra.bus, &readiness);
    readiness.set("database", true, None);
    let mut workers = crate::bus::projectors(&infra.bus, &store, &readiness);
    workers.push(crate::bus::recovery(
        app.clone(),
        std::time::Duration::from_secs(30),
    ));
    workers.push(crate::bus::policy_watch(
        app.clone(),
        readiness.clone(),
        std::time::Duration::from_secs(10),
    ));
    Ok(Service {
        name: crate::NAME,
        router: crate::api::router(app.clone(), tokens)
            .merge(crate::pages::router(app, console).into()),
        readiness,
        workers,
    })
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
