//! Logs, traces and metrics (DESIGN section 9).
//!
//! Logs are structured JSON through `tracing`. Every span is also an OpenTelemetry span, so
//! W3C trace context flows through HTTP (`traceparent` in, spans as children) and through
//! NATS (the events crate reads and sets it via the installed propagator), and one trace
//! spans an HTTP command, the events it causes and every consumer that handles them. Spans
//! and metrics are exported over OTLP/HTTP when the standard `OTEL_EXPORTER_OTLP_*`
//! variables name an endpoint; without them the context still propagates, nothing is sent.
//! An `https://` collector is verified against `OTEL_EXPORTER_OTLP_CERTIFICATE` (or the
//! `_TRACES_`/`_METRICS_` variant) when one is given, as the other OpenTelemetry SDKs do,
//! else against the platform's roots. `IMAGELIB_METRICS_ADDR` adds a Prometheus
//! `/metrics` endpoint reading the same instruments ([`crate::prometheus`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{CommonConfig, LogFormat};
use crate::prometheus::PrometheusReader;

/// Why telemetry could not be set up as configured (the process should not start).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP CA certificate {path}: {source}")]
    Certificate {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("OTLP HTTP client: {0}")]
    Client(String),
    #[error("IMAGELIB_METRICS_ADDR {addr}: {source}")]
    MetricsListener {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("IMAGELIB_METRICS_ADDR needs a Tokio runtime")]
    NoRuntime,
}

/// Where telemetry goes; `from_env` reads the standard OpenTelemetry variables.
#[derive(Debug, Clone, Default)]
pub struct OtelSettings {
    pub service_name: String,
    /// The OTLP/HTTP endpoint base (`http://collector:4318`); no export when `None`.
    pub endpoint: Option<String>,
    pub metric_interval: Option<Duration>,
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`: PEM CA certificate(s) that alone are trusted for
    /// an `https://` collector.
    pub certificate: Option<PathBuf>,
    /// `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`: the same for traces, over `certificate`.
    pub traces_certificate: Option<PathBuf>,
    /// `OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE`: the same for metrics, over `certificate`.
    pub metrics_certificate: Option<PathBuf>,
    /// `IMAGELIB_METRICS_ADDR` (from the configuration, not read here): where `/metrics`
    /// listens; port 0 picks one ([`Telemetry::metrics_addr`]).
    pub metrics_addr: Option<SocketAddr>,
}

impl OtelSettings {
    pub fn from_env(default_service: &str) -> Self {
        let disabled =
            std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok())
            .filter(|e| !e.is_empty() && !disabled);
        OtelSettings {
            service_name: std::env::var("OTEL_SERVICE_NAME")
                .unwrap_or_else(|_| default_service.to_owned()),
            endpoint,
            metric_interval: std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis),
            certificate: path_var("OTEL_EXPORTER_OTLP_CERTIFICATE"),
            traces_certificate: path_var("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"),
            metrics_certificate: path_var("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE"),
            metrics_addr: None,
        }
    }
}

fn path_var(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Flushes spans and metrics when dropped (at the end of `main`).
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    metrics_addr: Option<SocketAddr>,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
}

impl Telemetry {
    /// Where `/metrics` listens, when `IMAGELIB_METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn shutdown(&mut self) {
        if let Some(task) = self.metrics_task.take() {
            task.abort();
        }
        if let Some(t) = self.tracer.take() {
            let _ = t.force_flush();
            let _ = t.shutdown();
        }
        if let Some(m) = self.meter.take() {
            let _ = m.force_flush();
            let _ = m.shutdown();
        }
    }

    /// Export what is buffered now (tests, before asserting on a receiver).
    pub fn flush(&self) {
        if let Some(t) = &self.tracer {
            let _ = t.force_flush();
        }
        if let Some(m) = &self.meter {
            let _ = m.force_flush();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

static INSTALLED: OnceLock<()> = OnceLock::new();

/// Install logging, tracing and metrics for `service`: OTLP from the standard
/// environment, the log format and `/metrics` from the configuration.
pub fn init(service: &str, common: &CommonConfig) -> Result<Telemetry, TelemetryError> {
    let settings = OtelSettings {
        metrics_addr: common.metrics_addr,
        ..OtelSettings::from_env(service)
    };
    init_with(settings, common.log_format)
}

/// The blocking client the OTLP exporters send with (they run on threads of their own,
/// outside any async runtime): rustls, trusting only `ca` when given.
fn otlp_client(ca: Option<&Path>) -> Result<reqwest::blocking::Client, TelemetryError> {
    let certs = match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| TelemetryError::Certificate {
                path: path.to_owned(),
                source: Box::new(e),
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                TelemetryError::Certificate {
                    path: path.to_owned(),
                    source: Box::new(e),
                }
            })?;
            if certs.is_empty() {
                return Err(TelemetryError::Certificate {
                    path: path.to_owned(),
                    source: "no PEM certificate in the file".into(),
                });
            }
            Some(certs)
        }
        None => None,
    };
    let timeout = std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(10));
    // reqwest's blocking client owns a runtime; build it off the caller's runtime thread.
    std::thread::spawn(move || {
        let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
        if let Some(certs) = certs {
            builder = builder.tls_certs_only(certs);
        }
        builder.build()
    })
    .join()
    .map_err(|_| TelemetryError::Client("the client builder panicked".into()))?
    .map_err(|e| TelemetryError::Client(e.to_string()))
}

/// Install with explicit settings; only the first call in a process takes effect.
pub fn init_with(settings: OtelSettings, format: LogFormat) -> Result<Telemetry, TelemetryError> {
    if INSTALLED.set(()).is_err() {
        return Ok(Telemetry::default());
    }
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut meter_builder = SdkMeterProvider::builder().with_resource(resource);
    let mut has_reader = false;
    if let Some(endpoint) = &settings.endpoint {
        let base = endpoint.trim_end_matches('/');
        let traces_ca = settings
            .traces_certificate
            .as_deref()
            .or(settings.certificate.as_deref());
        let metrics_ca = settings
            .metrics_certificate
            .as_deref()
            .or(settings.certificate.as_deref());
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(otlp_client(traces_ca)?)
            .with_endpoint(format!("{base}/v1/traces"))
            .build()
        {
            Ok(exporter) => tracer_builder = tracer_builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("imagelib: OTLP trace exporter: {e}"),
        }
        match opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(otlp_client(metrics_ca)?)
            .with_endpoint(format!("{base}/v1/metrics"))
            .build()
        {
            Ok(exporter) => {
                let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(exporter)
                    .with_interval(settings.metric_interval.unwrap_or(Duration::from_secs(30)))
                    .build();
                meter_builder = meter_builder.with_reader(reader);
                has_reader = true;
            }
            Err(e) => eprintln!("imagelib: OTLP metric exporter: {e}"),
        }
    }
    let mut metrics_addr = None;
    let mut metrics_task = None;
    if let Some(addr) = settings.metrics_addr {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| TelemetryError::MetricsListener { addr, source })?;
        metrics_addr = Some(
            listener
                .local_addr()
                .map_err(|source| TelemetryError::MetricsListener { addr, source })?,
        );
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|source| TelemetryError::MetricsListener { addr, source })?
        };
        let reader = PrometheusReader::default();
        meter_builder = meter_builder.with_reader(reader.clone());
        has_reader = true;
        metrics_task = Some(runtime.spawn(crate::prometheus::serve(listener, reader)));
    }
    let meter = has_reader.then(|| {
        let provider = meter_builder.build();
        opentelemetry::global::set_meter_provider(provider.clone());
        provider
    });
    let tracer_provider = tracer_builder.build();
    let tracer = tracer_provider.tracer("imagelib");
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    imagelib_events::trace::install(imagelib_events::trace::Propagator {
        current: current_traceparent,
        set_parent,
    });

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // No busy and idle times on spans, and no OpenTelemetry context made current on each
    // entry: both cost locks and clock reads each time a span's future is polled (a tenth
    // of a catalog read's CPU). Span start and end say how long each took, and the trace
    // context is read from the `tracing` span itself (`current_traceparent`).
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_context_activation(false);
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer()).try_init(),
    };
    if result.is_ok() {
        tracing::info!(service = %settings.service_name, otlp = ?settings.endpoint, metrics = ?metrics_addr, "telemetry initialised");
    }
    Ok(Telemetry {
        tracer: Some(tracer_provider),
        meter,
        metrics_addr,
        metrics_task,
    })
}

fn current_traceparent() -> Option<imagelib_events::TraceParent> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| imagelib_events::TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        parent_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    })
}

fn set_parent(span: &tracing::Span, tp: &imagelib_events::TraceParent) {
    let sc = SpanContext::new(
        TraceId::from_bytes(tp.trace_id),
        SpanId::from_bytes(tp.parent_id),
        TraceFlags::new(tp.flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(Context::new().with_remote_span_context(sc));
}

/// The meter every imagelib instrument comes from.
pub fn meter() -> opentelemetry::metrics::Meter {
    opentelemetry::global::meter("imagelib")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_ca_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = otlp_client(Some(&missing)).unwrap_err();
        assert!(
            matches!(&err, TelemetryError::Certificate { path, .. } if path == &missing),
            "{err}"
        );
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        let err = otlp_client(Some(&not_pem)).unwrap_err();
        assert!(err.to_string().contains("not.pem"), "{err}");
    }

    #[test]
    fn without_a_ca_the_client_builds() {
        assert!(otlp_client(None).is_ok());
    }
}
