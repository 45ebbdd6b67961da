//! Start-up shared by every service binary and by `imagelib serve`: connect to NATS and
//! ensure the stream, connect to PostgreSQL in the service's schema, bind the listener,
//! serve until SIGTERM.

use std::future::Future;
use std::net::SocketAddr;

use imagelib_events::bus::{BusError, EventBus};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::config::{CommonConfig, ConfigError};
use crate::db::DbError;
use crate::http::HttpOptions;
use crate::service::{ServeError, Service};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("{0}")]
    Other(String),
}

/// What a service needs from the outside world.
#[derive(Debug, Clone)]
pub struct Infra {
    pub bus: EventBus,
    pub pool: PgPool,
}

/// Connect to the stream (ensured) and to the database (`schema`, migrated by the caller).
pub async fn connect(
    common: &CommonConfig,
    service: &str,
    schema: &str,
) -> Result<Infra, StartupError> {
    common.validate()?;
    let bus = EventBus::connect(
        &common.nats_connect(),
        &format!("imagelib-{service}"),
        common.stream_settings(),
    )
    .await?;
    bus.ensure_stream().await?;
    let pool = crate::db::connect(&common.database_url, schema, 10).await?;
    Ok(Infra { bus, pool })
}

/// One or more services bound to one HTTP listener.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    services: Vec<Service>,
    options: HttpOptions,
}

impl Application {
    pub async fn new(
        addr: SocketAddr,
        services: Vec<Service>,
        options: HttpOptions,
    ) -> Result<Self, StartupError> {
        let listener = crate::service::bind(addr).await?;
        Ok(Application {
            listener,
            services,
            options,
        })
    }

    /// One service as a process of its own: connect, build it with `build`, bind `addr`.
    pub async fn single<F, Fut>(
        common: &CommonConfig,
        name: &'static str,
        schema: &str,
        addr: SocketAddr,
        build: F,
    ) -> Result<Self, StartupError>
    where
        F: FnOnce(Infra) -> Fut,
        Fut: Future<Output = Result<Service, StartupError>>,
    {
        Self::single_with(common, name, schema, addr, build, vec![]).await
    }

    /// [`Application::single`] with services that need no infrastructure of their own
    /// beside it (the web console's sign-in and assets).
    pub async fn single_with<F, Fut>(
        common: &CommonConfig,
        name: &'static str,
        schema: &str,
        addr: SocketAddr,
        build: F,
        extra: Vec<Service>,
    ) -> Result<Self, StartupError>
    where
        F: FnOnce(Infra) -> Fut,
        Fut: Future<Output = Result<Service, StartupError>>,
    {
        let infra = connect(common, name, schema).await?;
        let mut services = vec![build(infra).await?];
        services.extend(extra);
        let options = HttpOptions {
            max_body_bytes: common.max_body_bytes,
            title: format!("imagelib {name}"),
            ..Default::default()
        };
        Self::new(addr, services, options).await
    }

    /// The bound address (tests bind port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        tracing::info!(addr = %self.local_addr(), services = ?self.services.iter().map(|s| s.name).collect::<Vec<_>>(), "listening");
        crate::service::serve(self.listener, self.services, self.options, shutdown).await?;
        Ok(())
    }
}
