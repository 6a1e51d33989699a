//! The second usage source: each quota's usage metric (the `UsageMetric` Service Quotas
//! lists with it, in CloudWatch's `AWS/Usage` namespace) read with CloudWatch
//! `GetMetricData`, up to 500 metrics a call.
//!
//! Which quotas have a usage metric, and their applied and default values, changes
//! rarely: that catalogue is read from Service Quotas (`ListServices`, then per service
//! `ListAWSDefaultServiceQuotas`, and `ListServiceQuotas` where a quota has a metric)
//! and kept for the target's `limits_refresh_interval`. Each refresh then costs
//! `ceil(metered quotas / 500)` GetMetricData calls, and CloudWatch bills every metric
//! requested.
//!
//! Usage metrics are published every minute, sometimes minutes late. A refresh asks for
//! the last [`LOOK_BACK`] in one-minute periods, ending at the last whole minute, and
//! takes each metric's newest datapoint: a metric published late is read at its last
//! value, never as 0; a metric with no datapoint in that window is left out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use aws_sdk_servicequotas::types::{PeriodUnit, ServiceQuota};
use headroom_common::{
    pages, AwsService, ClientParts, CollectError, LimitFrom, PerTarget, QuotaSpec, ServiceQuotas,
    Target, Usage,
};

/// CloudWatch, whose every request the library counts and rate-limits.
pub struct CloudWatch;

impl AwsService for CloudWatch {
    type Client = aws_sdk_cloudwatch::Client;
    const SERVICE_CODE: &'static str = "cloudwatch";
    const ERROR_CODES: &'static [&'static str] = &["InvalidNextToken", "InvalidParameterValue"];
    fn build(parts: ClientParts) -> Self::Client {
        let config = aws_sdk_cloudwatch::config::Builder::from(&parts.sdk)
            .interceptor(parts.interceptor)
            .http_client(parts.http_client)
            .build();
        aws_sdk_cloudwatch::Client::from_conf(config)
    }
}

/// The most queries one GetMetricData call takes.
pub const QUERIES_PER_CALL: usize = 500;
/// The largest page of the Service Quotas list calls.
pub const LIST_PAGE: i32 = 100;
/// How far back a refresh looks for a metric's newest datapoint.
pub const LOOK_BACK: Duration = Duration::from_secs(3600);
/// The period of the usage metrics (published every minute), and of the queries.
pub const PERIOD_SECONDS: i32 = 60;

/// A quota with a usage metric, as the catalogue holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct MeteredQuota {
    pub service_code: String,
    pub quota_code: String,
    pub quota_name: String,
    pub adjustable: bool,
    /// The applied value, else the default, and which it is.
    pub limit: Option<(f64, LimitFrom)>,
    pub namespace: String,
    pub metric_name: String,
    /// Sorted by name, so that a query names exactly the metric's dimensions.
    pub dimensions: Vec<(String, String)>,
    /// `Maximum` or `Sum`, as Service Quotas recommends.
    pub statistic: String,
    /// The quota's period in seconds (a rate quota, "per second"), if it has one.
    pub period_seconds: Option<f64>,
}

impl MeteredQuota {
    /// The usage this quota's newest datapoint means: the metric's value, or for a
    /// summed metric of a rate quota, the minute's sum scaled to the quota's period
    /// (a per-second quota: the sum over the minute / 60), rounded to 4 decimals.
    pub fn usage_of(&self, value: f64) -> f64 {
        match self.period_seconds {
            Some(p) if self.statistic == "Sum" && p > 0.0 => {
                (value * p / f64::from(PERIOD_SECONDS) * 10_000.0).round() / 10_000.0
            }
            _ => value,
        }
    }
}

/// The catalogues of one collector, per account and region.
#[derive(Debug, Default)]
pub struct Catalogues {
    by_target: PerTarget<Vec<MeteredQuota>>,
}

impl Catalogues {
    /// The target's catalogue, read again when older than its limits refresh interval.
    /// `services` chooses the services to list when they are known up front (global
    /// quotas); otherwise every service `ListServices` names is listed. A failed read
    /// keeps nothing: the next refresh tries again.
    pub async fn get(
        &self,
        target: &Target,
        services: Option<&[&str]>,
    ) -> Result<Arc<Vec<MeteredQuota>>, CollectError> {
        self.by_target
            .get(target, target.limits_refresh_interval(), || async {
                read_catalogue(&target.client::<ServiceQuotas>(), services).await
            })
            .await
    }
}

/// Reads which quotas have a usage metric, with their values.
pub async fn read_catalogue(
    client: &aws_sdk_servicequotas::Client,
    services: Option<&[&str]>,
) -> Result<Vec<MeteredQuota>, CollectError> {
    let services: Vec<String> = match services {
        Some(s) => s.iter().map(|s| s.to_string()).collect(),
        None => list_services(client).await?,
    };
    let mut out = Vec::new();
    for service in services {
        let defaults = match list_quotas(client, &service, true).await {
            Ok(q) => q,
            // A service Service Quotas does not hold here: nothing to read.
            Err(e) if e.is("NoSuchResourceException") => continue,
            Err(e) => return Err(e),
        };
        let mut metered: Vec<MeteredQuota> = defaults.iter().filter_map(metered_quota).collect();
        if metered.is_empty() {
            continue;
        }
        // Applied values, only for services with a metered quota. A quota whose
        // applied value is not available is not listed: its default is in force.
        let applied: HashMap<String, f64> = match list_quotas(client, &service, false).await {
            Ok(q) => q
                .iter()
                .filter_map(|q| Some((q.quota_code()?.to_string(), finite(q.value()?)?)))
                .collect(),
            Err(e) if e.is("NoSuchResourceException") => HashMap::new(),
            Err(e) => return Err(e),
        };
        for m in &mut metered {
            if let Some(&v) = applied.get(&m.quota_code) {
                m.limit = Some((v, LimitFrom::Applied));
            }
        }
        out.extend(metered);
    }
    Ok(out)
}

fn finite(v: f64) -> Option<f64> {
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// A quota of the default listing with a usage metric, its default as the limit.
fn metered_quota(q: &ServiceQuota) -> Option<MeteredQuota> {
    let metric = q.usage_metric()?;
    let namespace = metric.metric_namespace().filter(|s| !s.is_empty())?;
    let metric_name = metric.metric_name().filter(|s| !s.is_empty())?;
    let dimensions: BTreeMap<String, String> = metric
        .metric_dimensions()
        .map(|d| d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let period_seconds = q.period().and_then(|p| {
        let value = f64::from(p.period_value()?);
        let unit = match p.period_unit()? {
            PeriodUnit::Microsecond => 1e-6,
            PeriodUnit::Millisecond => 1e-3,
            PeriodUnit::Second => 1.0,
            PeriodUnit::Minute => 60.0,
            PeriodUnit::Hour => 3_600.0,
            PeriodUnit::Day => 86_400.0,
            PeriodUnit::Week => 604_800.0,
            _ => return None,
        };
        Some(value * unit).filter(|s| *s > 0.0)
    });
    Some(MeteredQuota {
        service_code: q.service_code()?.to_string(),
        quota_code: q.quota_code()?.to_string(),
        quota_name: q.quota_name().or(q.quota_code())?.to_string(),
        adjustable: q.adjustable(),
        limit: q.value().and_then(finite).map(|v| (v, LimitFrom::Default)),
        namespace: namespace.to_string(),
        metric_name: metric_name.to_string(),
        dimensions: dimensions.into_iter().collect(),
        statistic: match metric.metric_statistic_recommendation() {
            Some("Sum") => "Sum".to_string(),
            _ => "Maximum".to_string(),
        },
        period_seconds,
    })
}

async fn list_services(
    client: &aws_sdk_servicequotas::Client,
) -> Result<Vec<String>, CollectError> {
    const OP: &str = "ListServices";
    let mut out = Vec::new();
    pages(
        OP,
        |token| async move {
            client
                .list_services()
                .max_results(LIST_PAGE)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| CollectError::from_sdk(OP, &e))
        },
        |page| {
            out.extend(
                page.services()
                    .iter()
                    .filter_map(|s| s.service_code().map(str::to_string)),
            );
            Ok(page.next_token().map(str::to_string))
        },
    )
    .await?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// Every quota of a service: its AWS defaults, or its applied values.
async fn list_quotas(
    client: &aws_sdk_servicequotas::Client,
    service: &str,
    defaults: bool,
) -> Result<Vec<ServiceQuota>, CollectError> {
    let op = if defaults {
        "ListAWSDefaultServiceQuotas"
    } else {
        "ListServiceQuotas"
    };
    let mut out = Vec::new();
    pages(
        op,
        |token| async move {
            let sent = if defaults {
                client
                    .list_aws_default_service_quotas()
                    .service_code(service)
                    .max_results(LIST_PAGE)
                    .set_next_token(token)
                    .send()
                    .await
                    .map(|o| (o.quotas.unwrap_or_default(), o.next_token))
                    .map_err(|e| CollectError::from_sdk(op, &e))
            } else {
                client
                    .list_service_quotas()
                    .service_code(service)
                    .max_results(LIST_PAGE)
                    .set_next_token(token)
                    .send()
                    .await
                    .map(|o| (o.quotas.unwrap_or_default(), o.next_token))
                    .map_err(|e| CollectError::from_sdk(op, &e))
            };
            sent
        },
        |(quotas, next)| {
            out.extend(quotas);
            Ok(next)
        },
    )
    .await?;
    Ok(out)
}

/// The usage of every quota of `quotas`, read with GetMetricData in calls of up to 500
/// queries: each metric's newest datapoint of the look-back window. Quotas without a
/// datapoint there are left out.
pub async fn read_usage(
    client: &aws_sdk_cloudwatch::Client,
    quotas: &[&MeteredQuota],
    now: SystemTime,
) -> Result<Vec<Usage>, CollectError> {
    const OP: &str = "GetMetricData";
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let end = now - now % 60;
    let start = end.saturating_sub(LOOK_BACK.as_secs());
    let mut out = Vec::new();
    for batch in quotas.chunks(QUERIES_PER_CALL) {
        let queries: Vec<MetricDataQuery> =
            batch.iter().enumerate().map(|(i, q)| query(i, q)).collect();
        // Query index -> (timestamp, value) of its newest datapoint.
        let mut newest: HashMap<usize, (i64, f64)> = HashMap::new();
        pages(
            OP,
            |token| {
                let queries = queries.clone();
                async move {
                    client
                        .get_metric_data()
                        .set_metric_data_queries(Some(queries))
                        .start_time(aws_smithy_types::DateTime::from_secs(start as i64))
                        .end_time(aws_smithy_types::DateTime::from_secs(end as i64))
                        .scan_by(ScanBy::TimestampDescending)
                        .set_next_token(token)
                        .send()
                        .await
                        .map_err(|e| CollectError::from_sdk(OP, &e))
                }
            },
            |page| {
                for result in page.metric_data_results() {
                    let Some(i) = result
                        .id()
                        .and_then(|id| id.strip_prefix('q'))
                        .and_then(|n| n.parse::<usize>().ok())
                        .filter(|i| *i < batch.len())
                    else {
                        return Err(CollectError::malformed(
                            OP,
                            format!("a result for an unknown query {:?}", result.id()),
                        ));
                    };
                    let (times, values) = (result.timestamps(), result.values());
                    if times.len() != values.len() {
                        return Err(CollectError::malformed(
                            OP,
                            "a result with more timestamps than values, or fewer",
                        ));
                    }
                    for (t, v) in times.iter().zip(values) {
                        if !v.is_finite() {
                            continue;
                        }
                        let t = t.secs();
                        let e = newest.entry(i).or_insert((t, *v));
                        if t > e.0 {
                            *e = (t, *v);
                        }
                    }
                }
                Ok(page.next_token().map(str::to_string))
            },
        )
        .await?;
        for (i, q) in batch.iter().enumerate() {
            let Some(&(_, value)) = newest.get(&i) else {
                continue;
            };
            let mut spec = QuotaSpec::discovered(
                q.service_code.as_str(),
                q.quota_code.as_str(),
                q.quota_name.as_str(),
                q.limit.map_or(0.0, |(v, _)| v),
            );
            spec.adjustable = q.adjustable;
            let usage = Usage::new(&spec, q.usage_of(value));
            out.push(match q.limit {
                Some((v, from)) => usage.with_limit(v, from),
                None => usage,
            });
        }
    }
    Ok(out)
}

fn query(i: usize, q: &MeteredQuota) -> MetricDataQuery {
    let dimensions = q
        .dimensions
        .iter()
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect();
    let metric = Metric::builder()
        .namespace(&q.namespace)
        .metric_name(&q.metric_name)
        .set_dimensions(Some(dimensions))
        .build();
    let stat = MetricStat::builder()
        .metric(metric)
        .period(PERIOD_SECONDS)
        .stat(&q.statistic)
        .build();
    MetricDataQuery::builder()
        .id(format!("q{i}"))
        .metric_stat(stat)
        .return_data(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(statistic: &str, period_seconds: Option<f64>) -> MeteredQuota {
        MeteredQuota {
            service_code: "ec2".into(),
            quota_code: "L-1".into(),
            quota_name: "Q".into(),
            adjustable: true,
            limit: Some((10.0, LimitFrom::Default)),
            namespace: "AWS/Usage".into(),
            metric_name: "CallCount".into(),
            dimensions: vec![],
            statistic: statistic.into(),
            period_seconds,
        }
    }

    #[test]
    fn a_summed_rate_is_scaled_to_the_quota_period() {
        // 1,200 calls in the minute against a per-second quota: 20 per second.
        assert_eq!(quota("Sum", Some(1.0)).usage_of(1_200.0), 20.0);
        // Per hour: the minute's rate times 60.
        assert_eq!(quota("Sum", Some(3_600.0)).usage_of(5.0), 300.0);
        // A count is its value, period or not.
        assert_eq!(quota("Maximum", Some(1.0)).usage_of(7.0), 7.0);
        assert_eq!(quota("Sum", None).usage_of(7.0), 7.0);
        assert_eq!(quota("Sum", Some(1.0)).usage_of(1.0), 0.0167);
    }
}
