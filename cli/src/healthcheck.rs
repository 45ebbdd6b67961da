//! `imagelib healthcheck`: the container healthcheck of every imagelib image.
//!
//! The runtime images are distroless (no shell, no curl), so the probe is the `imagelib`
//! binary itself: a `GET` of the readiness endpoint, exit 0 on a 2xx answer and 1 on
//! anything else, including no answer within the timeout.

use std::time::Duration;

/// Where to probe.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// The URL to probe; by default `/readyz` on the port of IMAGELIB_HTTP_ADDR (8080
    /// when unset), on 127.0.0.1.
    #[arg(long, env = "IMAGELIB_HEALTHCHECK_URL")]
    pub url: Option<String>,
    /// Seconds before the probe counts as failed.
    #[arg(long = "probe-timeout", default_value_t = 5, value_name = "SECONDS")]
    pub probe_timeout: u64,
}

/// `/readyz` on 127.0.0.1 at the port of `http_addr` (`IMAGELIB_HTTP_ADDR`), 8080 without one.
pub fn default_url(http_addr: Option<&str>) -> String {
    let port = http_addr
        .and_then(|a| a.trim().rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(8080);
    format!("http://127.0.0.1:{port}/readyz")
}

pub async fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    let url = args
        .url
        .unwrap_or_else(|| default_url(std::env::var("IMAGELIB_HTTP_ADDR").ok().as_deref()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.probe_timeout.max(1)))
        .build()?;
    let res = http
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("unhealthy: {url}: {e}"))?;
    let status = res.status();
    if !status.is_success() {
        anyhow::bail!("unhealthy: {url} answered {status}");
    }
    println!("healthy: {url} answered {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_url_follows_the_listen_port() {
        assert_eq!(default_url(None), "http://127.0.0.1:8080/readyz");
        assert_eq!(
            default_url(Some("0.0.0.0:8081")),
            "http://127.0.0.1:8081/readyz"
        );
        assert_eq!(
            default_url(Some("[::]:9000")),
            "http://127.0.0.1:9000/readyz"
        );
        assert_eq!(
            default_url(Some("nonsense")),
            "http://127.0.0.1:8080/readyz"
        );
    }
}
