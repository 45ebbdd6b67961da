//! Logs, traces and metrics (DESIGN section 9).
//!
//! Logs are structured JSON through `tracing`. Every span is also an OpenTelemetry span, so
//! W3C trace context flows through HTTP (`traceparent` in, spans as children) and through
//! NATS (the events crate reads and sets it via the installed propagator), and one trace
//! spans an HTTP command, the events it causes and every consumer that handles them. Spans
//! and metrics are exported over OTLP/HTTP when the standard `OTEL_EXPORTER_OTLP_*`
//! variables name an endpoint; without them the context still propagates, nothing is sent.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Where telemetry goes; `from_env` reads the standard OpenTelemetry variables.
#[derive(Debug, Clone, Default)]
pub struct OtelSettings {
    pub service_name: String,
    /// The OTLP/HTTP endpoint base (`http://collector:4318`); no export when `None`.
    pub endpoint: Option<String>,
    pub metric_interval: Option<Duration>,
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
        }
    }
}

/// Flushes spans and metrics when dropped (at the end of `main`).
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    pub fn shutdown(&mut self) {
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

/// Install logging, tracing and metrics for `service` from the environment.
pub fn init(service: &str, format: LogFormat) -> Telemetry {
    init_with(OtelSettings::from_env(service), format)
}

/// Install with explicit settings; only the first call in a process takes effect.
pub fn init_with(settings: OtelSettings, format: LogFormat) -> Telemetry {
    if INSTALLED.set(()).is_err() {
        return Telemetry::default();
    }
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut meter = None;
    if let Some(endpoint) = &settings.endpoint {
        let base = endpoint.trim_end_matches('/');
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{base}/v1/traces"))
            .build()
        {
            Ok(exporter) => tracer_builder = tracer_builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("imagelib: OTLP trace exporter: {e}"),
        }
        match opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_endpoint(format!("{base}/v1/metrics"))
            .build()
        {
            Ok(exporter) => {
                let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(exporter)
                    .with_interval(settings.metric_interval.unwrap_or(Duration::from_secs(30)))
                    .build();
                let provider = SdkMeterProvider::builder()
                    .with_resource(resource)
                    .with_reader(reader)
                    .build();
                opentelemetry::global::set_meter_provider(provider.clone());
                meter = Some(provider);
            }
            Err(e) => eprintln!("imagelib: OTLP metric exporter: {e}"),
        }
    }
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
    let otel_layer = tracing_opentelemetry::layer().with_tracer(tracer);
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
        tracing::info!(service = %settings.service_name, otlp = ?settings.endpoint, "telemetry initialised");
    }
    Telemetry {
        tracer: Some(tracer_provider),
        meter,
    }
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
