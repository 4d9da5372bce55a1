//! Prometheus's HTTP API: instant queries for the alerts gate and analysis.

use std::time::Duration;

/// Run an instant query: every series' value (a scalar is one value; a
/// query that matches nothing gives none). The error says why the server
/// could not be asked or what it answered.
pub async fn instant_query(
    http: &reqwest::Client,
    base: &str,
    expr: &str,
    timeout: Duration,
) -> Result<Vec<f64>, String> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let resp = http
        .get(&url)
        .query(&[("query", expr)])
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot reach Prometheus at {}: {}",
                copilot_db::redact_url(base),
                crate::gates::http::describe(e)
            )
        })?;
    let status = resp.status();
    let doc: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() || doc["status"] != "success" {
        let why = doc["error"].as_str().unwrap_or("no error given");
        return Err(format!("Prometheus answered {status} to `{expr}`: {why}"));
    }
    let values: Vec<f64> = match doc["data"]["resultType"].as_str() {
        Some("scalar") => doc["data"]["result"][1]
            .as_str()
            .and_then(copilot_core::promql::parse_float)
            .into_iter()
            .collect(),
        _ => doc["data"]["result"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| {
                        r["value"][1]
                            .as_str()
                            .and_then(copilot_core::promql::parse_float)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    Ok(values)
}
