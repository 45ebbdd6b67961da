//! `imagelib serve`: every service in one process, sharing one NATS connection and one
//! listener; each keeps its own PostgreSQL schema, exactly as when run apart.

use std::net::SocketAddr;

use imagelib_platform::config::CommonConfig;
use imagelib_platform::http::HttpOptions;
use imagelib_platform::{Infra, StartupError};

/// The all-in-one default (DESIGN section 10).
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// Each service's configuration, as `imagelib serve` runs them.
#[derive(Debug, Clone, Default)]
pub struct Configs {
    pub common: CommonConfig,
    pub registry_registry: registry_registry::config::Config,
    pub sync_scanner: sync_scanner::config::Config,
    pub catalog_projector: catalog_projector::config::Config,
    pub serving_deployer: serving_deployer::config::Config,
}

impl Configs {
    /// Every service reads the same sources (defaults, file, `IMAGELIB_*`).
    pub fn load() -> Result<Self, imagelib_platform::ConfigError> {
        Ok(Configs {
            common: imagelib_platform::config::load()?,
            registry_registry: registry_registry::config::Config::load()?,
            sync_scanner: sync_scanner::config::Config::load()?,
            catalog_projector: catalog_projector::config::Config::load()?,
            serving_deployer: serving_deployer::config::Config::load()?,
        })
    }

    /// `common` for every service, service-specific settings at their defaults.
    #[allow(clippy::needless_update)] // not every service has settings of its own yet
    pub fn from_common(common: CommonConfig) -> Self {
        Configs {
            registry_registry: registry_registry::config::Config {
                common: common.clone(),
                ..Default::default()
            },
            sync_scanner: sync_scanner::config::Config {
                common: common.clone(),
                ..Default::default()
            },
            catalog_projector: catalog_projector::config::Config {
                common: common.clone(),
                ..Default::default()
            },
            serving_deployer: serving_deployer::config::Config {
                common: common.clone(),
                ..Default::default()
            },
            common,
        }
    }
}

pub async fn run() -> anyhow::Result<()> {
    let configs = Configs::load()?;
    let _telemetry = imagelib_platform::telemetry::init("imagelib", &configs.common)?;
    let app = build(configs).await?;
    app.run_until_stopped(imagelib_platform::shutdown::signal())
        .await?;
    Ok(())
}

/// Build the all-in-one application (also used by the end-to-end tests).
pub async fn build(configs: Configs) -> Result<imagelib_platform::Application, StartupError> {
    let common = &configs.common;
    common.validate()?;
    let base = imagelib_platform::runtime::connect(common, "imagelib", "public").await?;
    let infra = |schema: &'static str| {
        let url = common.database_url.clone();
        let bus = base.bus.clone();
        async move {
            let pool = imagelib_platform::db::connect(&url, schema, 10).await?;
            Ok::<_, StartupError>(Infra { bus, pool })
        }
    };
    let (rr_config, ss_config, cp_config, sd_config) = (
        &configs.registry_registry,
        &configs.sync_scanner,
        &configs.catalog_projector,
        &configs.serving_deployer,
    );
    let services = vec![
        registry_registry::startup::service(rr_config, &infra(registry_registry::SCHEMA).await?)
            .await?,
        sync_scanner::startup::service(ss_config, &infra(sync_scanner::SCHEMA).await?).await?,
        catalog_projector::startup::service(cp_config, &infra(catalog_projector::SCHEMA).await?)
            .await?,
        serving_deployer::startup::service(sd_config, &infra(serving_deployer::SCHEMA).await?)
            .await?,
        imagelib_console::service(
            imagelib_console::Console::from_config(common)
                .map_err(|e| StartupError::Other(e.to_string()))?,
        ),
    ];
    let options = HttpOptions {
        max_body_bytes: common.max_body_bytes,
        title: "imagelib".into(),
        ..Default::default()
    };
    imagelib_platform::Application::new(
        common.http_addr.unwrap_or(DEFAULT_HTTP_ADDR),
        services,
        options,
    )
    .await
}
