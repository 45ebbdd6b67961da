//! The client's metrics, recorded in the request path where each request is sent (not
//! derived from scan reports afterwards), so every user of the client — scans, credential
//! validation — is counted. Attributes stay bounded: the registry's id (or its host), the
//! method and the status; never a repository or a tag.
//!
//! Names follow the HTTP client semantic conventions where one exists
//! (`http.client.request.duration`, `http.request.method`, `http.response.status_code`,
//! `server.address`, `error.type`); the counters the dashboard and alerts read are
//! imagelib's own.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};

struct Instruments {
    requests: Counter<u64>,
    duration: Histogram<f64>,
    rate_limited: Counter<u64>,
    retry_after: Histogram<f64>,
}

fn instruments() -> &'static Instruments {
    static I: OnceLock<Instruments> = OnceLock::new();
    I.get_or_init(|| {
        let meter = opentelemetry::global::meter("imagelib");
        Instruments {
            requests: meter
                .u64_counter("imagelib.registry.requests")
                .with_unit("{request}")
                .with_description(
                    "Registry API requests sent (token requests, redirects and retries \
                     included), by registry, method and status",
                )
                .build(),
            duration: meter
                .f64_histogram("http.client.request.duration")
                .with_unit("s")
                .with_description("Duration of registry API requests, until the body is read")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                ])
                .build(),
            rate_limited: meter
                .u64_counter("imagelib.registry.rate_limited")
                .with_unit("{response}")
                .with_description(
                    "Answers telling the client to wait: 429, or 503 with Retry-After",
                )
                .build(),
            retry_after: meter
                .f64_histogram("imagelib.registry.retry_after")
                .with_unit("s")
                .with_description(
                    "Waits a registry imposed (Retry-After, or the backoff for a 429 without it)",
                )
                .with_boundaries(vec![
                    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
                ])
                .build(),
        }
    })
}

/// The answers that ask a client to wait (`429`, and `503` with Retry-After).
const RATE_LIMIT_STATUSES: [u16; 2] = [429, 503];

/// Who a request went to: the registry's id when the client was given one, and its host.
#[derive(Debug, Clone, Default)]
pub(crate) struct Target {
    attrs: Vec<KeyValue>,
}

impl Target {
    pub(crate) fn new(registry_id: Option<&str>, host: &str) -> Self {
        let mut attrs = vec![KeyValue::new("server.address", host.to_owned())];
        if let Some(id) = registry_id {
            attrs.push(KeyValue::new("imagelib.registry.id", id.to_owned()));
        }
        let target = Target { attrs };
        target.zero_rate_limited();
        target
    }

    /// Starts the registry's rate-limit series at zero when its client is built, so "no
    /// 429 from this registry" is a value a dashboard and an alert can read, not a missing
    /// series (OpenTelemetry exports a series only once something was recorded on it).
    /// Adding zero counts nothing; the label set is the one a real 429 or 503 uses.
    fn zero_rate_limited(&self) {
        let i = instruments();
        for status in RATE_LIMIT_STATUSES {
            i.rate_limited.add(
                0,
                &self.with([KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                )]),
            );
        }
    }

    fn with(&self, extra: impl IntoIterator<Item = KeyValue>) -> Vec<KeyValue> {
        self.attrs.iter().cloned().chain(extra).collect()
    }

    /// One request that got an answer, or (`status` none) failed with `error`.
    pub(crate) fn request(
        &self,
        method: &reqwest::Method,
        status: Option<u16>,
        error: Option<&'static str>,
        elapsed: Duration,
    ) {
        let method: &'static str = match method.as_str() {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "POST" => "POST",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            _ => "_OTHER",
        };
        let mut extra = vec![KeyValue::new("http.request.method", method)];
        if let Some(status) = status {
            extra.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if let Some(error) = error {
            extra.push(KeyValue::new("error.type", error));
        }
        let attrs = self.with(extra);
        let i = instruments();
        i.requests.add(1, &attrs);
        i.duration.record(elapsed.as_secs_f64(), &attrs);
    }

    /// An answer asking to wait, and the wait it asked for.
    pub(crate) fn rate_limited(&self, status: u16, wait: Duration) {
        let attrs = self.with([KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        )]);
        let i = instruments();
        i.rate_limited.add(1, &attrs);
        i.retry_after.record(wait.as_secs_f64(), &self.attrs);
    }
}
