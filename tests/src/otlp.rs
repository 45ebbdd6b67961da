//! An OTLP/HTTP receiver inside the test process: `POST /v1/metrics` and `/v1/traces` in
//! protobuf, as `opentelemetry-otlp`'s HTTP exporter sends them, decoded with the
//! protocol's own types and kept for assertions. A real collector cannot run here; this
//! speaks its wire protocol.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;

/// The kind of a received metric, as the Prometheus naming rules need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    /// A non-monotonic sum (an up-down counter): a gauge for Prometheus.
    UpDownCounter,
    Gauge,
    Histogram,
    ExponentialHistogram,
    Summary,
}

/// What was received of one metric (by name) over all exports.
#[derive(Debug, Clone)]
pub struct ReceivedMetric {
    pub unit: String,
    pub kind: MetricKind,
    /// Data points over all exports.
    pub points: usize,
    /// Attribute keys seen on its data points.
    pub attributes: std::collections::BTreeSet<String>,
}

/// One received span: name, trace id (hex) and attributes (values in debug form).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Inner {
    spans: Vec<ReceivedSpan>,
    metrics: BTreeMap<String, ReceivedMetric>,
    /// Metric exports received, and those that were not OTLP protobuf.
    metric_exports: usize,
    undecodable: usize,
}

/// A running receiver; `endpoint` is what `OTEL_EXPORTER_OTLP_ENDPOINT` would be.
#[derive(Debug, Clone)]
pub struct OtlpReceiver {
    pub endpoint: String,
    inner: Arc<Mutex<Inner>>,
}

impl OtlpReceiver {
    pub async fn start() -> anyhow::Result<Self> {
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(traces))
            .route("/v1/metrics", axum::routing::post(metrics))
            // Exports of a busy process exceed axum's default 2 MB body limit.
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(OtlpReceiver { endpoint, inner })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A snapshot of the metrics received so far, by name.
    pub fn metrics(&self) -> BTreeMap<String, ReceivedMetric> {
        self.lock().metrics.clone()
    }

    /// Metric exports received so far, and how many of them could not be decoded.
    pub fn metric_exports(&self) -> (usize, usize) {
        let r = self.lock();
        (r.metric_exports, r.undecodable)
    }

    /// A snapshot of the spans received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.clone()
    }
}

fn value_text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

async fn traces(State(r): State<Arc<Mutex<Inner>>>, body: Bytes) -> &'static str {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return "{}";
    };
    let mut r = r.lock().unwrap_or_else(PoisonError::into_inner);
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            for span in ss.spans {
                r.spans.push(ReceivedSpan {
                    name: span.name,
                    trace_id: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), value_text(&kv.value)))
                        .collect(),
                });
            }
        }
    }
    "{}"
}

async fn metrics(State(r): State<Arc<Mutex<Inner>>>, body: Bytes) -> &'static str {
    let mut r = r.lock().unwrap_or_else(PoisonError::into_inner);
    r.metric_exports += 1;
    let Ok(req) = ExportMetricsServiceRequest::decode(body) else {
        r.undecodable += 1;
        return "{}";
    };
    for rm in req.resource_metrics {
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                let (kind, points, keys): (MetricKind, usize, Vec<String>) = match &m.data {
                    Some(Data::Sum(s)) => (
                        if s.is_monotonic {
                            MetricKind::Counter
                        } else {
                            MetricKind::UpDownCounter
                        },
                        s.data_points.len(),
                        s.data_points
                            .iter()
                            .flat_map(|p| p.attributes.iter().map(|a| a.key.clone()))
                            .collect(),
                    ),
                    Some(Data::Gauge(g)) => (
                        MetricKind::Gauge,
                        g.data_points.len(),
                        g.data_points
                            .iter()
                            .flat_map(|p| p.attributes.iter().map(|a| a.key.clone()))
                            .collect(),
                    ),
                    Some(Data::Histogram(h)) => (
                        MetricKind::Histogram,
                        h.data_points.len(),
                        h.data_points
                            .iter()
                            .flat_map(|p| p.attributes.iter().map(|a| a.key.clone()))
                            .collect(),
                    ),
                    Some(Data::ExponentialHistogram(h)) => (
                        MetricKind::ExponentialHistogram,
                        h.data_points.len(),
                        h.data_points
                            .iter()
                            .flat_map(|p| p.attributes.iter().map(|a| a.key.clone()))
                            .collect(),
                    ),
                    Some(Data::Summary(s)) => (
                        MetricKind::Summary,
                        s.data_points.len(),
                        s.data_points
                            .iter()
                            .flat_map(|p| p.attributes.iter().map(|a| a.key.clone()))
                            .collect(),
                    ),
                    None => continue,
                };
                let entry = r
                    .metrics
                    .entry(m.name.clone())
                    .or_insert_with(|| ReceivedMetric {
                        unit: m.unit.clone(),
                        kind,
                        points: 0,
                        attributes: Default::default(),
                    });
                entry.points += points;
                entry.attributes.extend(keys);
                if entry.unit.is_empty() {
                    entry.unit = m.unit.clone();
                }
            }
        }
    }
    "{}"
}

/// The Prometheus series names a metric gets through the OpenTelemetry collector's
/// Prometheus exporter (and `imagelib`'s own `/metrics`), by the specification's rules
/// ("Prometheus and OpenMetrics compatibility"): the name with `.` and other characters
/// outside `[a-zA-Z0-9_:]` as `_`; the unit's Prometheus word appended unless the name
/// already ends with it (`s` → `seconds`, `By` → `bytes`, annotations in braces dropped,
/// `1` → `ratio` for gauges); `_total` for a monotonic sum; a histogram's `_bucket`,
/// `_sum` and `_count` series.
pub fn prometheus_names(name: &str, unit: &str, kind: MetricKind) -> Vec<String> {
    let mut base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let unit_word = match unit {
        "s" => Some("seconds"),
        "ms" => Some("milliseconds"),
        "By" => Some("bytes"),
        "KiBy" => Some("kibibytes"),
        "MiBy" => Some("mebibytes"),
        "%" => Some("percent"),
        "1" if matches!(kind, MetricKind::Gauge | MetricKind::UpDownCounter) => Some("ratio"),
        _ => None,
    };
    if let Some(word) = unit_word
        && !base.ends_with(&format!("_{word}"))
    {
        base = format!("{base}_{word}");
    }
    match kind {
        MetricKind::Counter => {
            if base.ends_with("_total") {
                vec![base]
            } else {
                vec![format!("{base}_total")]
            }
        }
        MetricKind::UpDownCounter | MetricKind::Gauge => vec![base],
        MetricKind::Histogram | MetricKind::ExponentialHistogram | MetricKind::Summary => vec![
            format!("{base}_bucket"),
            format!("{base}_sum"),
            format!("{base}_count"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_follow_the_compatibility_rules() {
        assert_eq!(
            prometheus_names("imagelib.events.processed", "{event}", MetricKind::Counter),
            ["imagelib_events_processed_total"]
        );
        assert_eq!(
            prometheus_names("imagelib.stream.bytes", "By", MetricKind::Gauge),
            ["imagelib_stream_bytes"]
        );
        assert_eq!(
            prometheus_names("imagelib.stream.max_bytes", "By", MetricKind::Gauge),
            ["imagelib_stream_max_bytes"]
        );
        assert_eq!(
            prometheus_names("imagelib.scan.duration", "s", MetricKind::Histogram),
            [
                "imagelib_scan_duration_seconds_bucket",
                "imagelib_scan_duration_seconds_sum",
                "imagelib_scan_duration_seconds_count"
            ]
        );
        assert_eq!(
            prometheus_names("imagelib.scan.jobs.queued", "{job}", MetricKind::Gauge),
            ["imagelib_scan_jobs_queued"]
        );
    }
}
