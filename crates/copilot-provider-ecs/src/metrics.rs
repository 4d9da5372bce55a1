//! CloudWatch as an analysis source: the ALB's metrics of one colour's
//! target group (`AWS/ApplicationELB`, dimensions `LoadBalancer` and
//! `TargetGroup`), read with `GetMetricData` over the metric's window.
//!
//! - `error_rate` is `HTTPCode_Target_5XX_Count` / `RequestCount`, both summed;
//! - `p50_latency`, `p95_latency`, `p99_latency` are `TargetResponseTime` at
//!   that percentile (the worst period of the window);
//!
//! each resting on the window's `RequestCount`, which `min_samples` holds
//! against. Two plain queries rather than metric math: the division is
//! done here, where a window without requests is said as no data.

use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric as CwMetric, MetricDataQuery, MetricStat};

use super::client::EcsProvider;
use copilot_core::model::Metric;
use copilot_core::provider::{ProviderError, Slot};

const NAMESPACE: &str = "AWS/ApplicationELB";

fn query(id: &str, name: &str, stat: &str, period: i32, dims: &[Dimension]) -> MetricDataQuery {
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(
                    CwMetric::builder()
                        .namespace(NAMESPACE)
                        .metric_name(name)
                        .set_dimensions(Some(dims.to_vec()))
                        .build(),
                )
                .period(period)
                .stat(stat)
                .build(),
        )
        .return_data(true)
        .build()
}

/// `metric` of `slot` over `window` up to now.
pub async fn read(
    p: &EcsProvider,
    slot: Slot,
    metric: &Metric,
    window: Duration,
) -> Result<Option<(f64, f64)>, ProviderError> {
    let (cw, target_group, load_balancer) = p.metric_scope(slot).await?;
    let dims = [
        Dimension::builder()
            .name("LoadBalancer")
            .value(load_balancer)
            .build(),
        Dimension::builder()
            .name("TargetGroup")
            .value(target_group)
            .build(),
    ];
    // Standard-resolution periods are whole minutes.
    let period = window.as_secs().div_ceil(60).max(1) * 60;
    let end = SystemTime::now();
    let start = end - Duration::from_secs(period);
    let value_query = match metric.name.as_str() {
        "error_rate" => query(
            "value",
            "HTTPCode_Target_5XX_Count",
            "Sum",
            period as i32,
            &dims,
        ),
        name => {
            let stat = name.trim_end_matches("_latency");
            query("value", "TargetResponseTime", stat, period as i32, &dims)
        }
    };
    let out = cw
        .get_metric_data()
        .start_time(DateTime::from(start))
        .end_time(DateTime::from(end))
        .metric_data_queries(value_query)
        .metric_data_queries(query(
            "requests",
            "RequestCount",
            "Sum",
            period as i32,
            &dims,
        ))
        .send()
        .await
        .map_err(|e| copilot_aws::error(format!("read {} from CloudWatch", metric.name), e))?;
    let values = |id: &str| -> Vec<f64> {
        out.metric_data_results()
            .iter()
            .filter(|r| r.id() == Some(id))
            .flat_map(|r| r.values().iter().copied())
            .collect()
    };
    let requests: f64 = values("requests").iter().sum();
    if requests <= 0.0 {
        return Ok(None);
    }
    let value = values("value");
    Ok(match metric.name.as_str() {
        "error_rate" => Some((value.iter().sum::<f64>() / requests, requests)),
        _ => value
            .into_iter()
            .reduce(f64::max)
            .map(|worst| (worst, requests)),
    })
}
