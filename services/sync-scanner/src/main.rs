//! The `sync-scanner` binary: configuration in, service running until SIGTERM.

use sync_scanner::config::Config;
use sync_scanner::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    let _telemetry = imagelib_platform::telemetry::init(sync_scanner::NAME, &config.common)?;
    let app = Application::build(config).await?;
    app.run_until_stopped(imagelib_platform::shutdown::signal())
        .await?;
    Ok(())
}
