//! Every quota AWS meters, with its usage, from the Service Quotas quota utilization
//! report: `StartQuotaUtilizationReport`, then `GetQuotaUtilizationReport` until the
//! report is complete, in pages of up to 1,000 rows. One report per account and region
//! gives every metered quota's utilization with its applied value, in a handful of
//! free calls.
//!
//! Usage is utilization × applied value / 100, rounded to 4 decimal places: the report
//! carries utilization as a percentage, so multiplying back leaves floating-point
//! noise (4.999999999 for 5); no quota counts finer than that. The applied value is the
//! limit the service reported (`limit_source="service"`).
//!
//! Global quotas (IAM, Organizations, …) are managed in one region; a second collector
//! reads them there once per account, as `aws_region="global"`, and the regional one
//! leaves them out.
//!
//! Where the report is not wanted (config `usage_source: cloudwatch`, per collector or
//! per account), usage comes from each quota's CloudWatch usage metric instead
//! ([`cloudwatch`]).

pub mod cloudwatch;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_servicequotas::types::{QuotaUtilizationInfo, ReportStatus};
use headroom_common::{
    pages, CollectError, Collected, Collector, Defaults, QuotaSpec, Scope, ServiceQuotas, Target,
    Usage,
};

use crate::cloudwatch::{read_usage, Catalogues, CloudWatch};

/// The usage sources `usage_source` takes: the report (the default) or CloudWatch.
pub const USAGE_SOURCES: &[&str] = &["report", "cloudwatch"];

/// Services whose quotas hold per account across regions (Service Quotas marks them
/// `GlobalQuota` and lists them only in [`GLOBAL_HOME_REGION`]), exported once per
/// account. The report itself does not say which rows are global.
pub const GLOBAL_SERVICES: &[&str] = &[
    "iam",
    "organizations",
    "route53",
    "cloudfront",
    "globalaccelerator",
];

/// Single global quotas of otherwise regional services: S3 general purpose buckets.
pub const GLOBAL_QUOTAS: &[(&str, &str)] = &[("s3", "L-DC2B2D3D")];

/// Where Service Quotas manages global quotas (commercial partition).
pub const GLOBAL_HOME_REGION: &str = "us-east-1";

/// The largest page of GetQuotaUtilizationReport.
pub const REPORT_PAGE: i32 = 1_000;

/// How long to wait between polls of a report still being generated: the first wait,
/// doubled each time up to the last.
const FIRST_POLL: Duration = Duration::from_millis(200);
const LAST_POLL: Duration = Duration::from_secs(5);

/// Defaults: a report takes seconds to minutes to generate, and utilization moves
/// slowly; one every 10 minutes costs nothing and keeps within the staleness. Quotas
/// under 1% used are not exported: no alert threshold is that low, and in an account
/// most metered quotas (request rates above all) sit there, so they would multiply
/// the series without telling anyone anything (`min_usage_ratio: 0` exports them).
const DEFAULTS: Defaults = Defaults {
    refresh_interval: Duration::from_secs(600),
    timeout: Duration::from_secs(300),
    max_staleness: Duration::from_secs(1800),
    min_usage_ratio: DEFAULT_MIN_USAGE_RATIO,
    ..Defaults::LIBRARY
};

/// The default `min_usage_ratio` of both collectors.
pub const DEFAULT_MIN_USAGE_RATIO: f64 = 0.01;

/// Every metered quota of an account: per region with global quotas left out, or the
/// global quotas alone, once per account in their home region.
#[derive(Debug)]
pub struct MeteredQuotas {
    global: bool,
    /// For the CloudWatch source: which quotas have usage metrics, per target.
    catalogues: Catalogues,
}

impl MeteredQuotas {
    /// The `servicequotas` collector: each region's quotas.
    pub fn regional() -> Self {
        MeteredQuotas {
            global: false,
            catalogues: Catalogues::default(),
        }
    }
    /// The `servicequotas_global` collector: global quotas, `aws_region="global"`.
    pub fn global() -> Self {
        MeteredQuotas {
            global: true,
            catalogues: Catalogues::default(),
        }
    }
}

/// The services that hold global quotas: all that the global collector lists.
fn global_services() -> Vec<&'static str> {
    let mut s: Vec<&str> = GLOBAL_SERVICES.to_vec();
    s.extend(GLOBAL_QUOTAS.iter().map(|(service, _)| *service));
    s.sort_unstable();
    s.dedup();
    s
}

#[async_trait]
impl Collector for MeteredQuotas {
    fn name(&self) -> &'static str {
        if self.global {
            "servicequotas_global"
        } else {
            "servicequotas"
        }
    }
    fn quotas(&self) -> Vec<QuotaSpec> {
        Vec::new()
    }
    fn discovers_quotas(&self) -> bool {
        true
    }
    fn defaults(&self) -> Defaults {
        DEFAULTS
    }
    fn usage_sources(&self) -> &'static [&'static str] {
        USAGE_SOURCES
    }
    fn scope(&self) -> Scope {
        if self.global {
            Scope::Global {
                home_region: GLOBAL_HOME_REGION,
            }
        } else {
            Scope::Regional
        }
    }
    async fn collect(&self, target: &Target) -> Result<Collected, CollectError> {
        let global = self.global;
        if target.usage_source() == "cloudwatch" {
            let services = global.then(global_services);
            let catalogue = self.catalogues.get(target, services.as_deref()).await?;
            let wanted: Vec<_> = catalogue
                .iter()
                .filter(|q| {
                    is_global(&q.service_code, &q.quota_code) == global
                        && target.wants_quota(&q.service_code, &q.quota_code)
                })
                .collect();
            let client = target.client::<CloudWatch>();
            return Ok(read_usage(&client, &wanted, SystemTime::now())
                .await?
                .into());
        }
        let rows = report(&target.client::<ServiceQuotas>()).await?;
        Ok(usage(target, rows, |service, code| {
            is_global(service, code) == global
        })
        .into())
    }
}

fn is_global(service_code: &str, quota_code: &str) -> bool {
    GLOBAL_SERVICES.contains(&service_code) || GLOBAL_QUOTAS.contains(&(service_code, quota_code))
}

/// The report's rows the target wants, as usage with the applied value as limit.
fn usage(
    target: &Target,
    rows: Vec<QuotaUtilizationInfo>,
    keep: impl Fn(&str, &str) -> bool,
) -> Vec<Usage> {
    rows.into_iter()
        .filter_map(|row| {
            let service = row.service_code()?;
            let code = row.quota_code()?;
            if !keep(service, code) || !target.wants_quota(service, code) {
                return None;
            }
            let applied = row.applied_value().or(row.default_value())?;
            let utilization = row.utilization()?;
            if !applied.is_finite() || !utilization.is_finite() || applied < 0.0 {
                return None;
            }
            let mut spec =
                QuotaSpec::discovered(service, code, row.quota_name().unwrap_or(code), applied);
            spec.adjustable = row.adjustable();
            Some(Usage::new(&spec, usage_of(utilization, applied)).with_service_limit(applied))
        })
        .collect()
}

/// Usage from a utilization percentage and the applied value, rounded to 4 decimals.
pub fn usage_of(utilization: f64, applied: f64) -> f64 {
    (utilization * applied / 100.0 * 10_000.0).round() / 10_000.0
}

/// Starts a report, waits until it is complete, and reads every row. A failed report,
/// an unknown status or a malformed answer is an error; a report that stays pending is
/// ended by the refresh timeout.
pub async fn report(
    client: &aws_sdk_servicequotas::Client,
) -> Result<Vec<QuotaUtilizationInfo>, CollectError> {
    const START: &str = "StartQuotaUtilizationReport";
    const GET: &str = "GetQuotaUtilizationReport";
    let started = client
        .start_quota_utilization_report()
        .send()
        .await
        .map_err(|e| CollectError::from_sdk(START, &e))?;
    let id = started
        .report_id()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| CollectError::malformed(START, "no ReportId"))?
        .to_string();
    let mut wait = FIRST_POLL;
    let first = loop {
        let page = client
            .get_quota_utilization_report()
            .report_id(&id)
            .max_results(REPORT_PAGE)
            .send()
            .await
            .map_err(|e| CollectError::from_sdk(GET, &e))?;
        match page.status() {
            Some(ReportStatus::Completed) => break page,
            Some(ReportStatus::Pending | ReportStatus::InProgress) => {}
            Some(ReportStatus::Failed) => {
                return Err(CollectError::new(
                    GET,
                    "report_failed",
                    format!(
                        "report {id} failed: {} {}",
                        page.error_code().unwrap_or("(no code)"),
                        page.error_message().unwrap_or("")
                    ),
                ))
            }
            other => {
                return Err(CollectError::malformed(
                    GET,
                    format!("report {id} has status {other:?}"),
                ))
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(LAST_POLL);
    };
    // The poll that saw the report complete is its first page.
    let mut first = Some(first);
    let mut rows = Vec::new();
    pages(
        GET,
        |token| {
            let id = id.clone();
            let ready = if token.is_none() { first.take() } else { None };
            async move {
                if let Some(page) = ready {
                    return Ok(page);
                }
                client
                    .get_quota_utilization_report()
                    .report_id(id)
                    .max_results(REPORT_PAGE)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| CollectError::from_sdk(GET, &e))
            }
        },
        |page| {
            if page.status() != Some(&ReportStatus::Completed) {
                return Err(CollectError::malformed(
                    GET,
                    "a completed report answered a page that is not complete",
                ));
            }
            let next = page.next_token().map(str::to_string);
            rows.extend(page.quotas.unwrap_or_default());
            Ok(next)
        },
    )
    .await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_rounded_to_four_decimals() {
        assert_eq!(usage_of(33.333333333333336, 15.0), 5.0);
        assert_eq!(usage_of(49.99999999999999, 10.0), 5.0);
        assert_eq!(usage_of(12.5, 3.0), 0.375);
        assert_eq!(usage_of(0.0, 100.0), 0.0);
        assert_eq!(usage_of(150.0, 20.0), 30.0);
    }
}

#[cfg(test)]
mod mocked {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use aws_sdk_servicequotas::operation::get_quota_utilization_report::GetQuotaUtilizationReportOutput;
    use aws_sdk_servicequotas::operation::start_quota_utilization_report::StartQuotaUtilizationReportOutput;
    use aws_sdk_servicequotas::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    use super::*;

    fn row(code: &str) -> QuotaUtilizationInfo {
        QuotaUtilizationInfo::builder()
            .service_code("ec2")
            .quota_code(code)
            .utilization(50.0)
            .applied_value(10.0)
            .adjustable(true)
            .build()
    }

    fn started() -> aws_smithy_mocks::Rule {
        mock!(Client::start_quota_utilization_report).then_output(|| {
            StartQuotaUtilizationReportOutput::builder()
                .report_id("r-1")
                .status(ReportStatus::Pending)
                .build()
        })
    }

    fn page(status: ReportStatus, rows: &[&str], next: Option<&str>) -> aws_smithy_mocks::Rule {
        let rows: Vec<QuotaUtilizationInfo> = rows.iter().map(|c| row(c)).collect();
        let next = next.map(String::from);
        mock!(Client::get_quota_utilization_report)
            .match_requests(|r| {
                r.report_id() == Some("r-1") && r.max_results() == Some(REPORT_PAGE)
            })
            .then_output(move || {
                GetQuotaUtilizationReportOutput::builder()
                    .report_id("r-1")
                    .status(status.clone())
                    .set_quotas(Some(rows.clone()))
                    .set_next_token(next.clone())
                    .build()
            })
    }

    #[tokio::test(start_paused = true)]
    async fn polls_until_complete_and_reads_every_page_from_the_completed_poll() {
        let start = started();
        let pending = page(ReportStatus::Pending, &[], None);
        let running = page(ReportStatus::InProgress, &[], None);
        let first = page(ReportStatus::Completed, &["L-1", "L-2"], Some("t2"));
        let second = page(ReportStatus::Completed, &["L-3"], None);
        let client = mock_client!(
            aws_sdk_servicequotas,
            RuleMode::Sequential,
            [&start, &pending, &running, &first, &second]
        );
        let rows = report(&client).await.expect("report");
        let codes: Vec<&str> = rows.iter().filter_map(|r| r.quota_code()).collect();
        assert_eq!(codes, ["L-1", "L-2", "L-3"]);
        // Start, two polls, the completed first page, the second page.
        assert_eq!(start.num_calls(), 1);
        assert_eq!(pending.num_calls() + running.num_calls(), 2);
        assert_eq!(first.num_calls() + second.num_calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_report_is_an_error_with_its_code() {
        let start = started();
        let failed = mock!(Client::get_quota_utilization_report).then_output(|| {
            GetQuotaUtilizationReportOutput::builder()
                .report_id("r-1")
                .status(ReportStatus::Failed)
                .error_code("InternalError")
                .error_message("try later")
                .build()
        });
        let client = mock_client!(
            aws_sdk_servicequotas,
            RuleMode::Sequential,
            [&start, &failed]
        );
        let e = report(&client).await.expect_err("failed");
        assert_eq!(e.code, "report_failed");
        assert!(e.message.contains("InternalError try later"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_status_or_no_report_id_is_malformed() {
        let start = started();
        let odd = mock!(Client::get_quota_utilization_report).then_output(|| {
            GetQuotaUtilizationReportOutput::builder()
                .report_id("r-1")
                .status(ReportStatus::from("ARCHIVED"))
                .build()
        });
        let client = mock_client!(aws_sdk_servicequotas, RuleMode::Sequential, [&start, &odd]);
        assert_eq!(
            report(&client).await.expect_err("odd").code,
            "malformed_response"
        );
        let no_id = mock!(Client::start_quota_utilization_report)
            .then_output(|| StartQuotaUtilizationReportOutput::builder().build());
        let client = mock_client!(aws_sdk_servicequotas, [&no_id]);
        assert_eq!(
            report(&client).await.expect_err("no id").code,
            "malformed_response"
        );
    }
}
