//! The `serving-deployer` binary: configuration in, service running until SIGTERM.

use serving_deployer::config::Config;
use serving_deployer::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    let _telemetry = imagelib_platform::telemetry::init(serving_deployer::NAME, &config.common)?;
    let app = Application::build(config).await?;
    app.run_until_stopped(imagelib_platform::shutdown::signal())
        .await?;
    Ok(())
}
