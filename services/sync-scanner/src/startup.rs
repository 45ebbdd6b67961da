//! Wiring: infrastructure in, a running service out.

use std::net::SocketAddr;
use std::sync::Arc;

use imagelib_platform::auth::Tokens;
use imagelib_platform::{Infra, Readiness, Service, StartupError};
use imagelib_secrets::{MasterKeyring, Vault};
use registry_client::NetworkGuard;

use crate::config::Config;
use crate::jobs::Jobs;
use crate::rules::AgentRules;
use crate::runner::Runner;
use crate::scan::Scanner;
use crate::store::Store;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Build the service on shared infrastructure (its own binary or `imagelib serve`).
pub async fn service(config: &Config, infra: &Infra) -> Result<Service, StartupError> {
    MIGRATOR
        .run(&infra.pool)
        .await
        .map_err(imagelib_platform::db::DbError::from)?;
    let other = |e: &dyn std::fmt::Display| StartupError::Other(e.to_string());
    let sc = &config.scanner;
    let agent = Arc::new(
        AgentRules::load(sc.agent_config.as_deref(), sc.agent_registry).map_err(|e| other(&e))?,
    );
    let keyring = Arc::new(
        MasterKeyring::load_or_create(&config.common.master_key_file).map_err(|e| other(&e))?,
    );
    let vault = Vault::connect(
        infra.bus.jetstream(),
        &config.keys_bucket(),
        config.common.stream_replicas,
        keyring,
    )
    .await
    .map_err(|e| other(&e))?;
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
    let roots =
        crate::trust::Roots::load(sc.trust_root.as_deref(), sc.notation_trust_store.as_deref())
            .map_err(|e| other(&e))?;
    let store = Store::new(infra.pool.clone());
    let scanner = Scanner::new(
        store.clone(),
        infra.bus.clone(),
        Arc::new(vault),
        guard,
        config.providers.clone(),
        agent,
        sc.clone(),
        roots,
    );
    let holder = format!("{}#{}", scanner.actor(), uuid::Uuid::new_v4().simple());
    let jobs = Jobs::open(&infra.bus, holder, sc.lease_ttl())
        .await
        .map_err(|e| other(&e))?
        .with_max_deliver(sc.job_max_deliver);

    let readiness = Readiness::new();
    imagelib_platform::stream_health::watch(&infra.bus, &readiness);
    readiness.set("database", true, None);
    let mut workers = Vec::new();
    let (reevaluate_tx, reevaluate_rx) = tokio::sync::mpsc::unbounded_channel();
    for aggregate in crate::bus::PROJECTED {
        let requests = (aggregate == imagelib_events::Aggregate::Sync).then(|| {
            (
                jobs.clone(),
                std::time::Duration::from_secs(sc.request_max_age_secs),
            )
        });
        workers.push(crate::bus::projector(
            &infra.bus,
            store.clone(),
            readiness.clone(),
            aggregate,
            &sc.instance,
            requests,
            (aggregate == imagelib_events::Aggregate::Rule).then(|| reevaluate_tx.clone()),
        ));
    }
    let runner = Runner::new(
        scanner,
        jobs,
        infra.bus.clone(),
        store.clone(),
        readiness.clone(),
        sc.clone(),
    );
    workers.push(runner.job_worker());
    workers.push(runner.schedule_worker());
    workers.push(runner.reevaluate_worker(reevaluate_rx));
    workers.push(runner.integrity_worker());
    let api = Arc::new(crate::api::ApiState {
        store,
        config: sc.clone(),
    });
    Ok(Service {
        name: crate::NAME,
        router: crate::api::router(api, tokens),
        readiness,
        workers,
    })
}

/// The service as a process of its own.
#[derive(Debug)]
pub struct Application(imagelib_platform::Application);

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let for_service = config.clone();
        Ok(Self(
            imagelib_platform::Application::single(
                &config.common,
                crate::NAME,
                crate::SCHEMA,
                config.http_addr(),
                |infra| async move { service(&for_service, &infra).await },
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
