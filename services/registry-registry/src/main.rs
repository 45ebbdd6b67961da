//! The `registry-registry` binary: configuration in, service running until SIGTERM.

use registry_registry::config::Config;
use registry_registry::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    let _telemetry = imagelib_platform::telemetry::init(registry_registry::NAME, &config.common)?;
    let app = Application::build(config).await?;
    app.run_until_stopped(imagelib_platform::shutdown::signal())
        .await?;
    Ok(())
}
