//! The only module that knows the metrics library: request counters, build info, and
//! rendering the snapshot in the Prometheus text format.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::config::format_duration;
use crate::snapshot::Snapshot;

/// Counters of AWS API requests and errors, by service and operation.
#[derive(Debug, Clone)]
pub(crate) struct AwsCallCounters {
    requests: IntCounterVec,
    errors: IntCounterVec,
}

impl AwsCallCounters {
    pub(crate) fn request(&self, service_code: &str, operation: &str) {
        self.requests
            .with_label_values(&[service_code, operation])
            .inc();
    }

    pub(crate) fn error(&self, service_code: &str, operation: &str, error_code: &str) {
        self.errors
            .with_label_values(&[service_code, operation, error_code])
            .inc();
    }
}

/// The process's own metrics registry.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    pub aws: AwsCallCounters,
}

impl Metrics {
    pub(crate) fn new(version: &str, revision: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "aws_quota_exporter_aws_requests_total",
                "AWS API requests sent, retries included, by service and operation.",
            ),
            &["service_code", "operation"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "aws_quota_exporter_aws_request_errors_total",
                "AWS API requests that failed, by service, operation and AWS error code (or timeout, io, dispatch).",
            ),
            &["service_code", "operation", "error_code"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "aws_quota_exporter_build_info",
                "Always 1; labels say which build of the exporter is running.",
            ),
            &["version", "revision"],
        )?;
        build_info.with_label_values(&[version, revision]).set(1);
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(build_info))?;
        Ok(Metrics {
            registry,
            aws: AwsCallCounters { requests, errors },
        })
    }

    /// Renders the snapshot and the process's own metrics. Calls no AWS API.
    pub(crate) fn render(&self, snapshot: &Snapshot, now: SystemTime) -> String {
        let mut families = self.registry.gather();
        families.extend(snapshot_families(snapshot, now));
        families.retain(|f| !f.get_metric().is_empty());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

fn family(name: &str, help: String) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help);
    f.set_field_type(MetricType::GAUGE);
    f
}

fn gauge(labels: &[(&str, &str)], value: f64) -> Metric {
    let pairs = labels
        .iter()
        .map(|(k, v)| {
            let mut p = LabelPair::default();
            p.set_name((*k).to_string());
            p.set_value((*v).to_string());
            p
        })
        .collect();
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_gauge(g);
    m.set_label(pairs);
    m
}

fn snapshot_families(snapshot: &Snapshot, now: SystemTime) -> Vec<MetricFamily> {
    let entries = snapshot.all();
    // Shortest first, by duration (not by text, where "10m" sorts before "5m").
    let intervals: BTreeSet<std::time::Duration> =
        entries.iter().map(|e| e.refresh_interval).collect();
    let every = intervals
        .into_iter()
        .map(format_duration)
        .collect::<Vec<_>>()
        .join(" or ");
    let cached = format!("Refreshed in the background every {every}; a scrape never calls AWS.");
    let mut usage = family(
        "aws_quota_usage",
        format!("Current usage of an AWS quota. {cached}"),
    );
    let mut limit = family(
        "aws_quota_limit",
        format!("Current limit of an AWS quota. {cached}"),
    );
    let mut info = family(
        "aws_quota_info",
        format!("Always 1; where the limit came from (override, service, applied, default, builtin) and whether it is adjustable. {cached}"),
    );
    let mut success = family(
        "aws_quota_exporter_collector_success",
        "Whether the last background refresh of a collector for an account and region succeeded."
            .into(),
    );
    let mut duration = family(
        "aws_quota_exporter_collector_duration_seconds",
        "How long the last background refresh of a collector took.".into(),
    );
    let mut last = family(
        "aws_quota_exporter_collector_last_success_timestamp_seconds",
        "When the last successful background refresh of a collector finished, in Unix time.".into(),
    );
    let (mut usages, mut limits, mut infos) = (Vec::new(), Vec::new(), Vec::new());
    // Facts, one family per name, in name order.
    let mut facts: std::collections::BTreeMap<&'static str, MetricFamily> =
        std::collections::BTreeMap::new();
    let (mut successes, mut durations, mut lasts) = (Vec::new(), Vec::new(), Vec::new());
    for e in &entries {
        if e.attempted {
            let l = [
                ("collector", e.collector),
                ("account_id", e.account_id.as_str()),
                ("aws_region", e.region.as_str()),
            ];
            successes.push(gauge(&l, if e.success { 1.0 } else { 0.0 }));
            durations.push(gauge(&l, e.last_duration.as_secs_f64()));
            if let Some(t) = e.last_success {
                let secs = t
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                lasts.push(gauge(&l, secs));
            }
        }
        for fact in e.fresh_facts(now) {
            let f = facts
                .entry(fact.name)
                .or_insert_with(|| family(fact.name, format!("{} {cached}", fact.help)));
            let labels = [
                ("account_id", e.account_id.as_str()),
                ("aws_region", e.region.as_str()),
                ("service_code", fact.service_code),
                ("resource", fact.resource.as_str()),
            ];
            f.mut_metric().push(gauge(&labels, fact.value));
        }
        for u in e.fresh_usage(now) {
            let spec = &u.quota;
            let resolved = e.limits.get(spec, &u.resource, u.limit);
            // Cardinality control: quiet resources of a per-resource quota stay out.
            if !u.resource.is_empty()
                && e.min_usage_ratio > 0.0
                && resolved.value > 0.0
                && u.value / resolved.value < e.min_usage_ratio
            {
                continue;
            }
            let base = [
                ("account_id", e.account_id.as_str()),
                ("aws_region", e.region.as_str()),
                ("service_code", spec.service_code.as_ref()),
                ("quota_code", spec.quota_code.as_ref()),
                ("quota_name", spec.quota_name.as_ref()),
                ("resource", u.resource.as_str()),
            ];
            usages.push(gauge(&base, u.value));
            limits.push(gauge(&base, resolved.value));
            let mut with_info = base.to_vec();
            with_info.push(("limit_source", resolved.source.as_str()));
            with_info.push((
                "adjustable",
                if resolved.adjustable { "true" } else { "false" },
            ));
            infos.push(gauge(&with_info, 1.0));
        }
    }
    for (f, m) in [
        (&mut usage, usages),
        (&mut limit, limits),
        (&mut info, infos),
        (&mut success, successes),
        (&mut duration, durations),
        (&mut last, lasts),
    ] {
        f.set_metric(m);
    }
    let mut out = vec![usage, limit, info, success, duration, last];
    out.extend(facts.into_values());
    out
}
