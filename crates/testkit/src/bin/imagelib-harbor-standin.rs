//! `imagelib-harbor-standin <state-file>`: the quickstart's stand-in for Harbor
//! ([`imagelib_testkit::standin`]), for `scripts/run` only. There is no Harbor to install
//! without the internet, and the demo shows a second registry type next to the plain Docker
//! Registry. Writes `{"harbor", "registry", "project", "robot", "secret"}` to the state
//! file (mode 0600) once it serves, and runs until killed.

use anyhow::Context as _;
use imagelib_testkit::standin::{HarborStandin, PROJECT, ROBOT};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let state_file = std::env::args()
        .nth(1)
        .context("usage: imagelib-harbor-standin <state-file>")?;
    let standin = HarborStandin::start()
        .await
        .context("starting docker-registry (deploy/local/up.sh installs it)")?;
    write_private(&state_file, &serde_json::to_vec_pretty(&standin.state())?)?;
    println!(
        "Harbor stand-in on http://{} (project `{PROJECT}`, robot `{ROBOT}`), its registry on {}",
        standin.harbor.host(),
        standin.registry.host()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn write_private(path: &str, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {path}"))?;
    f.write_all(bytes)?;
    Ok(())
}
