//! `--check`: every collector once for every target, with the config's limits, rate
//! limits, retries and thresholds; a table (or JSON) sorted by utilisation, and an exit
//! code a pipeline can stop on. Serves nothing and starts no scheduler.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tokio::time::Instant;

use crate::api::{CollectError, Collector};
use crate::aws::{self, AwsContext};
use crate::config::Config;
use crate::discovery;
use crate::metrics::Metrics;
use crate::scheduler::{self, Job};

/// Exit codes, as monitoring plugins have them (awslimitchecker and Nagios alike).
pub(crate) const OK: u8 = 0;
pub(crate) const WARNING: u8 = 1;
pub(crate) const CRITICAL: u8 = 2;
/// A collection failed, or the check could not run (bad flags or config).
pub(crate) const UNKNOWN: u8 = 3;

/// How the result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

/// One quota (or resource) in the result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Row {
    pub account_id: String,
    pub account_name: String,
    pub region: String,
    pub service_code: String,
    pub quota_code: String,
    pub quota_name: String,
    pub resource: String,
    pub usage: f64,
    pub limit: f64,
    /// usage / limit; none when the limit is 0.
    pub ratio: Option<f64>,
    pub limit_source: &'static str,
    pub adjustable: bool,
    /// The thresholds in force; none means never alert.
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    /// `ok`, `warning` or `critical`.
    pub status: &'static str,
}

/// A (collector, target) whose refresh failed: reported, never read as zero usage.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Failure {
    pub collector: &'static str,
    pub account_id: String,
    pub region: String,
    pub error_code: &'static str,
    pub error: String,
}

/// The whole result (`--output json` prints it as is; `schema` changes only with
/// a breaking change).
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub schema: u32,
    /// The worst status: `ok`, `warning`, `critical`, or `unknown` when a collection
    /// failed and nothing is critical.
    pub status: &'static str,
    pub exit_code: u8,
    pub quotas: Vec<Row>,
    pub failures: Vec<Failure>,
}

/// Runs the check: sets up targets and collects everything once. An error is one the
/// check cannot start with (targets that cannot be set up).
pub(crate) async fn run(
    config: &Config,
    collectors: &[Arc<dyn Collector>],
) -> Result<Report, String> {
    // Counters nobody scrapes: the clients need them.
    let metrics = Metrics::new("", "").map_err(|e| e.to_string())?;
    let aws = AwsContext::new(metrics.aws.clone());
    let discovered = match discovery::Settings::of(config) {
        Some(settings) => {
            let members = discovery::discover(&settings, &aws)
                .await
                .map_err(|e| format!("cannot discover accounts: {e}"))?;
            discovery::accounts(&settings, &members)
                .await
                .map_err(|e| e.to_string())?
        }
        None => Vec::new(),
    };
    let built = aws::build_targets(config, &aws, &discovered)
        .await
        .map_err(|e| e.to_string())?;
    let jobs = scheduler::plan(collectors, &built.targets, config, &aws);
    let mut report = collect_all(jobs).await;
    // The names aws_quota_account_info gives: the config's, else Organizations'.
    for row in &mut report.quotas {
        let named = built.accounts.iter().find(|(id, _)| *id == row.account_id);
        if let Some(name) = named.and_then(|(_, a)| a.name.as_ref()) {
            row.account_name = name.0.clone();
        }
    }
    Ok(report)
}

async fn collect_all(jobs: Vec<Job>) -> Report {
    let total = jobs.len();
    let started = Instant::now();
    let mut pending: FuturesUnordered<_> = jobs.into_iter().map(once).collect();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut done = 0;
    let mut progress = tokio::time::interval_at(
        Instant::now() + Duration::from_secs(5),
        Duration::from_secs(5),
    );
    loop {
        tokio::select! {
            next = pending.next() => match next {
                Some((mut r, f)) => {
                    done += 1;
                    rows.append(&mut r);
                    failures.extend(f);
                }
                None => break,
            },
            _ = progress.tick() => {
                eprintln!(
                    "checking: {done} of {total} collector targets done after {}s",
                    started.elapsed().as_secs()
                );
            }
        }
    }
    report(rows, failures)
}

/// One (collector, target): limits, then usage, as a refresh does them.
async fn once(job: Job) -> (Vec<Row>, Option<Failure>) {
    let entry = job.slot.get();
    let mut resolver = job.resolver();
    let (limits, _) = job.limits(&mut resolver).await;
    let failure = |e: CollectError| Failure {
        collector: job.collector.name(),
        account_id: entry.account_id.clone(),
        region: entry.region.clone(),
        error_code: e.code,
        error: e.to_string(),
    };
    let collected = match job.collect().await {
        Ok(c) => c,
        Err(e) => return (Vec::new(), Some(failure(e))),
    };
    let mut rows = Vec::new();
    for u in &collected.usage {
        let resolved = limits.get(&u.quota, &u.resource, u.reported_limit());
        let ratio = (resolved.value > 0.0).then(|| u.value / resolved.value);
        // The same cardinality control as the exposition.
        if entry.too_quiet(u, resolved.value) {
            continue;
        }
        let t = entry.thresholds.resolve(&u.quota.quota_code, &u.resource);
        let finite = |v: f64| v.is_finite().then_some(v);
        let status = match ratio {
            Some(r) if r >= t.critical => "critical",
            Some(r) if r >= t.warning => "warning",
            _ => "ok",
        };
        rows.push(Row {
            account_id: entry.account_id.clone(),
            // Named in `run`, where the accounts are known.
            account_name: entry.account_id.clone(),
            region: entry.region.clone(),
            service_code: u.quota.service_code.to_string(),
            quota_code: u.quota.quota_code.to_string(),
            quota_name: u.quota.quota_name.to_string(),
            resource: u.resource.clone(),
            usage: u.value,
            limit: resolved.value,
            ratio,
            limit_source: resolved.source.as_str(),
            adjustable: resolved.adjustable,
            warning: finite(t.warning),
            critical: finite(t.critical),
            status,
        });
    }
    (rows, None)
}

/// Sorts the rows (fullest first) and works out the status and exit code: critical
/// beats a failure (which may hide anything), which beats a warning.
pub(crate) fn report(mut quotas: Vec<Row>, mut failures: Vec<Failure>) -> Report {
    quotas.sort_by(|a, b| {
        b.ratio
            .unwrap_or(-1.0)
            .total_cmp(&a.ratio.unwrap_or(-1.0))
            .then_with(|| {
                (&a.account_id, &a.region, &a.quota_code, &a.resource).cmp(&(
                    &b.account_id,
                    &b.region,
                    &b.quota_code,
                    &b.resource,
                ))
            })
    });
    failures.sort_by(|a, b| {
        (a.collector, &a.account_id, &a.region).cmp(&(b.collector, &b.account_id, &b.region))
    });
    let any = |s: &str| quotas.iter().any(|r| r.status == s);
    let (status, exit_code) = if any("critical") {
        ("critical", CRITICAL)
    } else if !failures.is_empty() {
        ("unknown", UNKNOWN)
    } else if any("warning") {
        ("warning", WARNING)
    } else {
        ("ok", OK)
    };
    Report {
        schema: 1,
        status,
        exit_code,
        quotas,
        failures,
    }
}

/// Prints the report to `out`.
pub(crate) fn print(
    report: &Report,
    output: Output,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    match output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut *out, report)?;
            writeln!(out)
        }
        Output::Table => table(report, out),
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn table(report: &Report, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let header = [
        "ACCOUNT", "REGION", "SERVICE", "QUOTA", "NAME", "RESOURCE", "USAGE", "LIMIT", "USED",
        "SOURCE", "STATUS",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_string()).collect()];
    for r in &report.quotas {
        lines.push(vec![
            if r.account_name == r.account_id {
                r.account_id.clone()
            } else {
                format!("{} ({})", r.account_name, r.account_id)
            },
            r.region.clone(),
            r.service_code.clone(),
            r.quota_code.clone(),
            r.quota_name.clone(),
            if r.resource.is_empty() {
                "-".into()
            } else {
                r.resource.clone()
            },
            number(r.usage),
            number(r.limit),
            r.ratio
                .map_or_else(|| "-".into(), |x| format!("{:.1}%", x * 100.0)),
            r.limit_source.to_string(),
            r.status.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    for f in &report.failures {
        writeln!(
            out,
            "FAILED  {} {} {}: {} ({})",
            f.collector, f.account_id, f.region, f.error, f.error_code
        )?;
    }
    writeln!(
        out,
        "{}: {} quotas, {} failed collections",
        report.status.to_uppercase(),
        report.quotas.len(),
        report.failures.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(quota: &str, ratio: Option<f64>, status: &'static str) -> Row {
        Row {
            account_id: "111111111111".into(),
            account_name: "111111111111".into(),
            region: "eu-west-1".into(),
            service_code: "ssm".into(),
            quota_code: quota.into(),
            quota_name: quota.into(),
            resource: String::new(),
            usage: ratio.unwrap_or(0.0) * 100.0,
            limit: if ratio.is_some() { 100.0 } else { 0.0 },
            ratio,
            limit_source: "builtin",
            adjustable: false,
            warning: Some(0.8),
            critical: Some(0.95),
            status,
        }
    }

    fn failure() -> Failure {
        Failure {
            collector: "c",
            account_id: "1".into(),
            region: "r".into(),
            error_code: "AccessDeniedException",
            error: "denied".into(),
        }
    }

    #[test]
    fn the_worst_status_decides_the_exit_code_and_rows_are_fullest_first() {
        let r = report(
            vec![
                row("a", Some(0.5), "ok"),
                row("z", None, "ok"),
                row("b", Some(0.9), "warning"),
            ],
            vec![],
        );
        assert_eq!((r.status, r.exit_code), ("warning", WARNING));
        let order: Vec<&str> = r.quotas.iter().map(|q| q.quota_code.as_str()).collect();
        assert_eq!(order, ["b", "a", "z"]);
        assert_eq!(
            report(vec![row("a", Some(0.5), "ok")], vec![]).exit_code,
            OK
        );
        assert_eq!(
            report(vec![row("b", Some(0.9), "warning")], vec![failure()]).exit_code,
            UNKNOWN
        );
        assert_eq!(
            report(vec![row("c", Some(0.99), "critical")], vec![failure()]).exit_code,
            CRITICAL
        );
    }

    #[test]
    fn the_table_aligns_columns_and_lists_failures() {
        let r = report(
            vec![row("standard", Some(0.853), "warning")],
            vec![failure()],
        );
        let mut out = Vec::new();
        print(&r, Output::Table, &mut out).expect("print");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("ACCOUNT       REGION     SERVICE"),
            "{text}"
        );
        assert!(
            lines[1].contains("85.3%") && lines[1].ends_with("warning"),
            "{text}"
        );
        assert_eq!(lines[2], "FAILED  c 1 r: denied (AccessDeniedException)");
        assert_eq!(lines[3], "UNKNOWN: 1 quotas, 1 failed collections");
    }
}
