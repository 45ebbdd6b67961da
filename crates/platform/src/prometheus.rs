//! The optional Prometheus endpoint (`IMAGELIB_METRICS_ADDR`): `/metrics` in the text
//! exposition format, for teams that scrape instead of running an OpenTelemetry collector.
//!
//! It reads the same instruments OTLP exports (a second reader on the one meter provider)
//! and names the series exactly as the collector's Prometheus exporter does with the
//! compose stack's settings (deploy/otel/collector.yaml: unit and `_total` suffixes,
//! resource attributes as labels), so the shipped dashboard and alert rules work against
//! either path. `opentelemetry-prometheus` was not used: it doubles a unit the name
//! already carries (`imagelib_stream_bytes_bytes`), which the collector does not.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};

/// A pull reader shared between the meter provider and the `/metrics` handler.
#[derive(Debug, Clone)]
pub struct PrometheusReader(Arc<ManualReader>);

impl Default for PrometheusReader {
    fn default() -> Self {
        PrometheusReader(Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        ))
    }
}

impl MetricReader for PrometheusReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

impl PrometheusReader {
    /// Everything recorded so far, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut rm = ResourceMetrics::default();
        if let Err(e) = self.0.collect(&mut rm) {
            tracing::warn!(error = %e, "metrics collection for /metrics failed");
        }
        encode(&rm)
    }
}

/// Serve `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, reader: PrometheusReader) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let reader = reader.clone();
            async move {
                let body = tokio::task::spawn_blocking(move || reader.render())
                    .await
                    .unwrap_or_default();
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the /metrics listener stopped");
    }
}

/// How a metric appears to Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Default)]
struct Family {
    kind: Option<Kind>,
    help: String,
    lines: Vec<String>,
}

/// The text exposition of `rm`: one family per name (scopes merged), sorted by name.
pub fn encode(rm: &ResourceMetrics) -> String {
    let resource: Vec<(String, String)> = rm
        .resource()
        .iter()
        .map(|(k, v)| (label_name(k.as_str()), value_str(v)))
        .collect();
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for scope in rm.scope_metrics() {
        for metric in scope.metrics() {
            add_metric(&mut families, metric, &resource);
        }
    }
    let mut out = String::new();
    for (name, family) in families {
        let Some(kind) = family.kind else { continue };
        if !family.help.is_empty() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
        }
        let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
        for line in family.lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

fn add_metric(
    families: &mut BTreeMap<String, Family>,
    metric: &Metric,
    resource: &[(String, String)],
) {
    match metric.data() {
        AggregatedMetrics::F64(d) => add_data(families, metric, d, resource, |v| v),
        AggregatedMetrics::U64(d) => add_data(families, metric, d, resource, |v| v as f64),
        AggregatedMetrics::I64(d) => add_data(families, metric, d, resource, |v| v as f64),
    }
}

fn add_data<T: Copy>(
    families: &mut BTreeMap<String, Family>,
    metric: &Metric,
    data: &MetricData<T>,
    resource: &[(String, String)],
    to_f64: impl Fn(T) -> f64,
) {
    let (kind, monotonic) = match data {
        MetricData::Gauge(_) => (Kind::Gauge, false),
        MetricData::Sum(s) if s.is_monotonic() => (Kind::Counter, true),
        MetricData::Sum(_) => (Kind::Gauge, false),
        MetricData::Histogram(_) => (Kind::Histogram, false),
        // Not used by imagelib; the collector would drop it too without native histograms.
        MetricData::ExponentialHistogram(_) => return,
    };
    let name = metric_name(
        metric.name(),
        metric.unit(),
        monotonic,
        matches!(data, MetricData::Gauge(_)),
    );
    let family = families.entry(name.clone()).or_default();
    if family.kind.is_some_and(|k| k != kind) {
        tracing::warn!(metric = %name, "two instruments of different kinds share a Prometheus name; the second is left out");
        return;
    }
    family.kind = Some(kind);
    if family.help.is_empty() {
        family.help = metric.description().to_owned();
    }
    let labels = |attrs: &mut dyn Iterator<Item = &KeyValue>| -> Vec<(String, String)> {
        let mut l: BTreeMap<String, String> = resource.iter().cloned().collect();
        for kv in attrs {
            l.insert(label_name(kv.key.as_str()), value_str(&kv.value));
        }
        l.into_iter().collect()
    };
    match data {
        MetricData::Gauge(g) => {
            for dp in g.data_points() {
                let l = labels(&mut dp.attributes());
                family
                    .lines
                    .push(sample(&name, &l, None, to_f64(dp.value())));
            }
        }
        MetricData::Sum(s) => {
            for dp in s.data_points() {
                let l = labels(&mut dp.attributes());
                family
                    .lines
                    .push(sample(&name, &l, None, to_f64(dp.value())));
            }
        }
        MetricData::Histogram(h) => {
            for dp in h.data_points() {
                let l = labels(&mut dp.attributes());
                let mut cumulative = 0u64;
                let bucket = format!("{name}_bucket");
                for (bound, count) in dp.bounds().zip(dp.bucket_counts()) {
                    cumulative += count;
                    family.lines.push(sample(
                        &bucket,
                        &l,
                        Some(&format_f64(bound)),
                        cumulative as f64,
                    ));
                }
                family
                    .lines
                    .push(sample(&bucket, &l, Some("+Inf"), dp.count() as f64));
                family
                    .lines
                    .push(sample(&format!("{name}_sum"), &l, None, to_f64(dp.sum())));
                family.lines.push(sample(
                    &format!("{name}_count"),
                    &l,
                    None,
                    dp.count() as f64,
                ));
            }
        }
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn sample(name: &str, labels: &[(String, String)], le: Option<&str>, value: f64) -> String {
    let mut s = String::from(name);
    if !labels.is_empty() || le.is_some() {
        s.push('{');
        let mut first = true;
        let le = le.map(|le| ("le".to_owned(), le.to_owned()));
        for (k, v) in labels.iter().chain(le.iter()) {
            if !first {
                s.push(',');
            }
            first = false;
            let _ = write!(s, "{k}=\"{}\"", escape_label_value(v));
        }
        s.push('}');
    }
    s.push(' ');
    s.push_str(&format_f64(value));
    s
}

/// The name the collector's Prometheus exporter gives an OTLP metric (its
/// `normalizeName`): the name's alphanumeric runs joined by `_`, the unit appended unless
/// already there (`s` → `seconds`, `By` → `bytes`, `{…}` annotations dropped, `a/b` →
/// `a_per_b`), `total` last for counters, `ratio` for gauges of unit `1`.
pub fn metric_name(name: &str, unit: &str, monotonic_sum: bool, gauge: bool) -> String {
    let mut tokens: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim(), Some(p.trim())),
        None => (unit.trim(), None),
    };
    let annotation = |u: &str| u.contains('{') || u.contains('}');
    if !main.is_empty() && main != "1" && !annotation(main) {
        let prom = clean(unit_word(main));
        if !prom.is_empty() && !tokens.contains(&prom) {
            tokens.push(prom);
        }
    }
    if let Some(per) = per.filter(|p| !p.is_empty() && !annotation(p)) {
        let prom = clean(per_unit_word(per));
        if !prom.is_empty() && !tokens.contains(&prom) {
            tokens.push("per".into());
            tokens.push(prom);
        }
    }
    if monotonic_sum {
        tokens.retain(|t| t != "total");
        tokens.push("total".into());
    }
    if gauge && unit == "1" {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".into());
    }
    let joined = tokens.join("_");
    if joined.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{joined}")
    } else {
        joined
    }
}

fn clean(s: &str) -> String {
    s.chars().filter(char::is_ascii_alphanumeric).collect()
}

fn unit_word(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        other => other,
    }
}

fn per_unit_word(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// Attribute keys as label names: every character outside `[A-Za-z0-9_]` becomes `_`,
/// and a leading digit gets `key_` (as the collector does).
fn label_name(key: &str) -> String {
    let s: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("key_{s}")
    } else {
        s
    }
}

fn value_str(v: &Value) -> String {
    v.as_str().into_owned()
}

fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    #[test]
    fn names_follow_the_collector() {
        assert_eq!(
            metric_name("http.server.request.duration", "s", false, false),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            metric_name("imagelib.events.processed", "{event}", true, false),
            "imagelib_events_processed_total"
        );
        assert_eq!(
            metric_name("imagelib.stream.bytes", "By", false, true),
            "imagelib_stream_bytes"
        );
        assert_eq!(
            metric_name("imagelib.projector.lag", "{event}", false, true),
            "imagelib_projector_lag"
        );
        assert_eq!(
            metric_name("imagelib.requests.total", "1", true, false),
            "imagelib_requests_total"
        );
        assert_eq!(
            metric_name("cpu.utilization", "1", false, true),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            metric_name("net.rate", "By/s", false, true),
            "net_rate_bytes_per_second"
        );
    }

    #[test]
    fn a_provider_renders_counters_gauges_and_histograms() {
        let reader = PrometheusReader::default();
        let provider = SdkMeterProvider::builder()
            .with_resource(
                opentelemetry_sdk::Resource::builder_empty()
                    .with_service_name("svc")
                    .build(),
            )
            .with_reader(reader.clone())
            .build();
        let meter = provider.meter("imagelib");
        meter
            .u64_counter("imagelib.events.processed")
            .with_unit("{event}")
            .with_description("Events handled")
            .build()
            .add(3, &[KeyValue::new("outcome", "ok\"quoted")]);
        let h = meter
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_boundaries(vec![0.1, 1.0])
            .build();
        h.record(0.05, &[KeyValue::new("http.route", "/v1/x")]);
        h.record(0.5, &[KeyValue::new("http.route", "/v1/x")]);
        meter
            .i64_up_down_counter("imagelib.scan.jobs.running")
            .with_unit("{job}")
            .build()
            .add(-1, &[]);
        let text = reader.render();
        assert!(
            text.contains("# TYPE imagelib_events_processed_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP imagelib_events_processed_total Events handled"),
            "{text}"
        );
        assert!(
            text.contains(
                "imagelib_events_processed_total{outcome=\"ok\\\"quoted\",service_name=\"svc\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE http_server_request_duration_seconds histogram"),
            "{text}"
        );
        for line in [
            "http_server_request_duration_seconds_bucket{http_route=\"/v1/x\",service_name=\"svc\",le=\"0.1\"} 1",
            "http_server_request_duration_seconds_bucket{http_route=\"/v1/x\",service_name=\"svc\",le=\"1\"} 2",
            "http_server_request_duration_seconds_bucket{http_route=\"/v1/x\",service_name=\"svc\",le=\"+Inf\"} 2",
            "http_server_request_duration_seconds_sum{http_route=\"/v1/x\",service_name=\"svc\"} 0.55",
            "http_server_request_duration_seconds_count{http_route=\"/v1/x\",service_name=\"svc\"} 2",
            "# TYPE imagelib_scan_jobs_running gauge",
            "imagelib_scan_jobs_running{service_name=\"svc\"} -1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
