//! The Grafana dashboard has a panel for each metric of DESIGN section 9, and every
//! metric it queries is one imagelib emits (by its Prometheus name).

#[test]
fn every_metric_has_a_panel() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/dashboards/imagelib.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned())
        })
        .collect();
    for metric in [
        "imagelib_scan_duration_seconds",
        "imagelib_registry_requests_total",
        "imagelib_registry_rate_limited_total",
        "imagelib_tags_changes_total",
        "imagelib_projector_lag",
        "imagelib_events_processed_total",
        "http_server_request_duration_seconds",
        "imagelib_auth_failures_total",
        "imagelib_stream_bytes",
        "imagelib_stream_max_bytes",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "no panel for {metric}"
        );
    }
    for p in dash["panels"].as_array().unwrap() {
        assert!(
            p["fieldConfig"]["defaults"]["unit"].is_string(),
            "panel {} has no unit",
            p["title"]
        );
    }
}
