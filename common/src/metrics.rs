//! The only module that knows the metrics library and the exposition format: request
//! counters, build info, each snapshot entry's sample lines (rendered when the entry
//! is published), and a scrape, which writes those lines out as they are, gzipped when
//! asked.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::{format_duration, AccountConfig, TagKey};
use crate::snapshot::{Entry, Pieces, Snapshot};

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

/// Whether the last configuration (re)load worked, and when one last did, as Prometheus
/// itself reports it.
#[derive(Debug, Clone)]
pub(crate) struct ReloadGauges {
    successful: IntGauge,
    success_timestamp: Gauge,
}

impl ReloadGauges {
    pub(crate) fn succeeded(&self, at: SystemTime) {
        self.successful.set(1);
        self.success_timestamp.set(
            at.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
    }

    pub(crate) fn failed(&self) {
        self.successful.set(0);
    }
}

/// How account discovery went: only present while the config has `organization`.
#[derive(Debug, Clone)]
pub(crate) struct DiscoveryGauges {
    success: GaugeVec,
    accounts: GaugeVec,
    duration: GaugeVec,
    last_success: GaugeVec,
}

impl DiscoveryGauges {
    pub(crate) fn succeeded(&self, accounts: usize, took: Duration, at: SystemTime) {
        self.success.with_label_values(&[] as &[&str]).set(1.0);
        self.accounts
            .with_label_values(&[] as &[&str])
            .set(accounts as f64);
        self.duration
            .with_label_values(&[] as &[&str])
            .set(took.as_secs_f64());
        self.last_success.with_label_values(&[] as &[&str]).set(
            at.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
    }

    /// A failed discovery: the account count and last success stay as they were.
    pub(crate) fn failed(&self, took: Duration) {
        self.success.with_label_values(&[] as &[&str]).set(0.0);
        self.duration
            .with_label_values(&[] as &[&str])
            .set(took.as_secs_f64());
    }

    /// Discovery is off: its series go.
    pub(crate) fn clear(&self) {
        for g in [
            &self.success,
            &self.accounts,
            &self.duration,
            &self.last_success,
        ] {
            g.reset();
        }
    }
}

/// The process's own metrics registry, and the last gzipped snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    pub aws: AwsCallCounters,
    pub reload: ReloadGauges,
    pub discovery: DiscoveryGauges,
    gzipped: Arc<Mutex<Option<Gzipped>>>,
}

/// The snapshot's part of a scrape, compressed, and what it was made from.
#[derive(Debug)]
struct Gzipped {
    /// The snapshot's generation and which entries were fresh.
    key: (u64, Vec<bool>),
    part: Arc<Deflated>,
}

/// A raw deflate stream that ends the whole body (its last block is final), with the
/// CRC-32 and length of what it holds.
#[derive(Debug)]
struct Deflated {
    data: Bytes,
    crc: crc32fast::Hasher,
    len: u64,
}

/// What a scrape sends: the body in pieces (shared with the snapshot, not copied), and
/// whether it is gzipped.
#[derive(Debug)]
pub(crate) struct Exposition {
    pub chunks: Vec<Bytes>,
    pub gzip: bool,
}

impl Exposition {
    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
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
        let successful = IntGauge::new(
            "aws_quota_exporter_config_last_reload_successful",
            "Whether the last configuration load (at start-up, SIGHUP or POST /-/reload) succeeded.",
        )?;
        let success_timestamp = Gauge::new(
            "aws_quota_exporter_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully, in seconds since the epoch.",
        )?;
        registry.register(Box::new(successful.clone()))?;
        registry.register(Box::new(success_timestamp.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(build_info))?;
        let unlabelled = |name: &str, help: &str| -> Result<GaugeVec, prometheus::Error> {
            let g = GaugeVec::new(Opts::new(name, help), &[])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let discovery = DiscoveryGauges {
            success: unlabelled(
                "aws_quota_exporter_discovery_success",
                "Whether the last discovery of accounts with AWS Organizations succeeded (a failed one keeps the last discovered accounts).",
            )?,
            accounts: unlabelled(
                "aws_quota_exporter_discovery_accounts",
                "Accounts the last successful discovery found and selected.",
            )?,
            duration: unlabelled(
                "aws_quota_exporter_discovery_duration_seconds",
                "How long the last discovery of accounts took.",
            )?,
            last_success: unlabelled(
                "aws_quota_exporter_discovery_last_success_timestamp_seconds",
                "When the last successful discovery of accounts finished, in Unix time.",
            )?,
        };
        Ok(Metrics {
            registry,
            aws: AwsCallCounters { requests, errors },
            reload: ReloadGauges {
                successful,
                success_timestamp,
            },
            discovery,
            gzipped: Arc::new(Mutex::new(None)),
        })
    }

    /// A scrape: the process's own metrics (a few dozen lines, encoded now), then the
    /// snapshot's families, each a HELP and TYPE line and the lines every entry
    /// rendered when it was published; an entry's samples are left out once they are
    /// older than its maximum staleness. Calls no AWS API. Gzipped, the snapshot's part
    /// is compressed once and reused until an entry is published or goes stale.
    pub(crate) fn scrape(&self, snapshot: &Snapshot, now: SystemTime, gzip: bool) -> Exposition {
        let own = self.own_text();
        let generation = snapshot.generation();
        let entries = snapshot.all();
        let fresh: Vec<bool> = entries.iter().map(|e| e.is_fresh(now)).collect();
        if !gzip {
            let mut chunks = vec![own];
            chunks.extend(snapshot_chunks(&entries, &fresh, &snapshot.accounts()));
            return Exposition { chunks, gzip };
        }
        let part = {
            let mut cached = match self.gzipped.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let key = (generation, fresh);
            match cached.as_ref() {
                Some(c) if c.key == key => c.part.clone(),
                _ => {
                    let part = Arc::new(deflate_final(&snapshot_chunks(
                        &entries,
                        &key.1,
                        &snapshot.accounts(),
                    )));
                    *cached = Some(Gzipped {
                        key,
                        part: part.clone(),
                    });
                    part
                }
            }
        };
        Exposition {
            chunks: gzip_member(&own, &part),
            gzip,
        }
    }

    /// The whole exposition as text (for tests).
    #[cfg(test)]
    pub(crate) fn render(&self, snapshot: &Snapshot, now: SystemTime) -> String {
        let body = self.scrape(snapshot, now, false);
        body.chunks
            .iter()
            .map(|c| String::from_utf8_lossy(c))
            .collect()
    }

    fn own_text(&self) -> Bytes {
        let mut families = self.registry.gather();
        families.retain(|f| !f.get_metric().is_empty());
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        Bytes::from(buf)
    }
}

const ACCOUNT_INFO: &str = "aws_quota_account_info";

/// The `aws_quota_account_info` lines of `accounts`: the name (the ID when there is
/// none) and the selected tags, each as its `tag_` label (left out where the account
/// has no such tag).
pub(crate) fn account_info(accounts: &[(String, AccountConfig)], tag_keys: &[TagKey]) -> Bytes {
    let labels: Vec<String> = tag_keys.iter().map(TagKey::label).collect();
    let mut out = String::new();
    for (id, account) in accounts {
        let name = account.name.as_ref().map_or(id.as_str(), |n| n.0.as_str());
        let mut l = vec![("account_id", id.as_str()), ("account_name", name)];
        for (key, label) in tag_keys.iter().zip(&labels) {
            if let Some(v) = account.tags.get(&key.0).filter(|v| !v.is_empty()) {
                l.push((label.as_str(), v.as_str()));
            }
        }
        sample(&mut out, ACCOUNT_INFO, &l, 1.0);
    }
    Bytes::from(out)
}

/// One entry's sample lines, per family: rendered when the entry is published, so that
/// a scrape only copies them. Per-resource usage below the entry's minimum ratio is
/// left out here.
pub(crate) fn pieces(e: &Entry) -> Pieces {
    let (mut usage, mut limit, mut info) = (String::new(), String::new(), String::new());
    let mut thresholds = String::new();
    for u in e.usage.iter() {
        let spec = &u.quota;
        let resolved = e.limits.get(spec, &u.resource, u.reported_limit());
        if e.too_quiet(u, resolved.value) {
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
        sample(&mut usage, "aws_quota_usage", &base, u.value);
        sample(&mut limit, "aws_quota_limit", &base, resolved.value);
        let mut with_info = base.to_vec();
        with_info.push(("limit_source", resolved.source.as_str()));
        with_info.push((
            "adjustable",
            if resolved.adjustable { "true" } else { "false" },
        ));
        sample(&mut info, "aws_quota_info", &with_info, 1.0);
        // Only thresholds that differ from the rules' defaults are exported.
        if !e.thresholds.is_default() {
            let t = e.thresholds.resolve(&spec.quota_code, &u.resource);
            for (severity, value) in t.differing() {
                let mut with_severity = base.to_vec();
                with_severity.push(("severity", severity));
                sample(&mut thresholds, THRESHOLD, &with_severity, value);
            }
        }
    }
    let mut facts: Vec<(&'static str, &'static str, String)> = Vec::new();
    for fact in e.facts.iter() {
        let i = match facts.iter().position(|(n, _, _)| *n == fact.name) {
            Some(i) => i,
            None => {
                facts.push((fact.name, fact.help, String::new()));
                facts.len() - 1
            }
        };
        let labels = [
            ("account_id", e.account_id.as_str()),
            ("aws_region", e.region.as_str()),
            ("service_code", fact.service_code),
            ("resource", fact.resource.as_str()),
        ];
        sample(&mut facts[i].2, fact.name, &labels, fact.value);
    }
    let (mut success, mut duration, mut last_success) =
        (String::new(), String::new(), String::new());
    if e.attempted {
        let l = [
            ("collector", e.collector),
            ("account_id", e.account_id.as_str()),
            ("aws_region", e.region.as_str()),
        ];
        sample(&mut success, SUCCESS, &l, if e.success { 1.0 } else { 0.0 });
        sample(&mut duration, DURATION, &l, e.last_duration.as_secs_f64());
        if let Some(t) = e.last_success {
            let secs = t
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            sample(&mut last_success, LAST_SUCCESS, &l, secs);
        }
    }
    Pieces {
        usage: usage.into(),
        limit: limit.into(),
        info: info.into(),
        thresholds: thresholds.into(),
        facts: facts
            .into_iter()
            .map(|(n, h, text)| (n, h, Bytes::from(text)))
            .collect(),
        success: success.into(),
        duration: duration.into(),
        last_success: last_success.into(),
    }
}

const SUCCESS: &str = "aws_quota_exporter_collector_success";
const THRESHOLD: &str = "aws_quota_alert_threshold_ratio";
const DURATION: &str = "aws_quota_exporter_collector_duration_seconds";
const LAST_SUCCESS: &str = "aws_quota_exporter_collector_last_success_timestamp_seconds";

/// One sample line, exactly as the metrics library's text encoder writes it.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    for (i, (k, v)) in labels.iter().enumerate() {
        out.push(if i == 0 { '{' } else { ',' });
        out.push_str(k);
        out.push_str("=\"");
        escape(out, v, true);
        out.push('"');
    }
    if !labels.is_empty() {
        out.push('}');
    }
    if value.is_infinite() {
        out.push_str(if value > 0.0 { " +Inf" } else { " -Inf" });
    } else {
        let _ = write!(out, " {value}");
    }
    out.push('\n');
}

/// The text format's escaping: `\\`, `\n`, and `\"` in label values.
fn escape(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// The snapshot's families in name order, each its HELP and TYPE lines and the pieces
/// of every entry (data only from fresh entries); families without a sample are left
/// out.
fn snapshot_chunks(entries: &[Arc<Entry>], fresh: &[bool], accounts: &Bytes) -> Vec<Bytes> {
    // Shortest first, by duration (not by text, where "10m" sorts before "5m").
    let intervals: BTreeSet<Duration> = entries.iter().map(|e| e.refresh_interval).collect();
    let every = intervals
        .into_iter()
        .map(format_duration)
        .collect::<Vec<_>>()
        .join(" or ");
    let cached = format!("Refreshed in the background every {every}; a scrape never calls AWS.");
    type Pick = fn(&Pieces) -> &Bytes;
    let all =
        |pick: Pick| -> Vec<Bytes> { entries.iter().map(|e| pick(&e.pieces).clone()).collect() };
    let fresh_only = |pick: Pick| -> Vec<Bytes> {
        entries
            .iter()
            .zip(fresh)
            .filter(|(_, f)| **f)
            .map(|(e, _)| pick(&e.pieces).clone())
            .collect()
    };
    let mut families: Vec<(String, String, Vec<Bytes>)> = vec![
        (
            ACCOUNT_INFO.into(),
            "Always 1, one per account; its name (from AWS Organizations or the config, else the ID) and the account tags the config selects, as tag_<key> labels. Join on account_id to show names.".into(),
            vec![accounts.clone()],
        ),
        (
            "aws_quota_usage".into(),
            format!("Current usage of an AWS quota. {cached}"),
            fresh_only(|p| &p.usage),
        ),
        (
            "aws_quota_limit".into(),
            format!("Current limit of an AWS quota. {cached}"),
            fresh_only(|p| &p.limit),
        ),
        (
            "aws_quota_info".into(),
            format!("Always 1; where the limit came from (override, service, applied, default, builtin) and whether it is adjustable. {cached}"),
            fresh_only(|p| &p.info),
        ),
        (
            THRESHOLD.into(),
            format!("Alert threshold of a quota as a ratio of its limit, by severity, where the config sets one other than the rules' defaults (warning 0.8, critical 0.95); +Inf: never alert. {cached}"),
            fresh_only(|p| &p.thresholds),
        ),
        (
            SUCCESS.into(),
            "Whether the last background refresh of a collector for an account and region succeeded.".into(),
            all(|p| &p.success),
        ),
        (
            DURATION.into(),
            "How long the last background refresh of a collector took.".into(),
            all(|p| &p.duration),
        ),
        (
            LAST_SUCCESS.into(),
            "When the last successful background refresh of a collector finished, in Unix time.".into(),
            all(|p| &p.last_success),
        ),
    ];
    // Facts, one family per name, the help of its first appearance.
    for (e, _) in entries.iter().zip(fresh).filter(|(_, f)| **f) {
        for (name, help, lines) in &e.pieces.facts {
            match families.iter_mut().find(|(n, _, _)| n == name) {
                Some(f) => f.2.push(lines.clone()),
                None => families.push((
                    (*name).into(),
                    format!("{help} {cached}"),
                    vec![lines.clone()],
                )),
            }
        }
    }
    families.sort_by(|a, b| a.0.cmp(&b.0));
    let mut chunks = Vec::new();
    for (name, help, pieces) in families {
        if pieces.iter().all(Bytes::is_empty) {
            continue;
        }
        let mut header = format!("# HELP {name} ");
        escape(&mut header, &help, false);
        let _ = write!(header, "\n# TYPE {name} gauge\n");
        chunks.push(Bytes::from(header));
        chunks.extend(pieces.into_iter().filter(|p| !p.is_empty()));
    }
    chunks
}

/// How hard the snapshot's part is compressed (once per change; 6 is zlib's default).
const LEVEL: u32 = 6;

/// `chunks` as one raw deflate stream whose last block is final.
fn deflate_final(chunks: &[Bytes]) -> Deflated {
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let mut z = DeflateEncoder::new(
        Vec::with_capacity(total / 8 + 1024),
        Compression::new(LEVEL),
    );
    for chunk in chunks {
        crc.update(chunk);
        len += chunk.len() as u64;
        // Writing to a Vec cannot fail.
        let _ = z.write_all(chunk);
    }
    let data = z.finish().unwrap_or_default();
    Deflated {
        data: data.into(),
        crc,
        len,
    }
}

/// One gzip member (RFC 1952): the header, `own` compressed now and flushed to a byte
/// boundary without ending the stream (a sync flush), the snapshot's part as it was
/// compressed, and the trailer with the CRC-32 and length of both together.
fn gzip_member(own: &[u8], part: &Deflated) -> Vec<Bytes> {
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut first = Vec::with_capacity(own.len() / 2 + 64);
    first.extend_from_slice(&HEADER);
    let mut z = DeflateEncoder::new(first, Compression::new(LEVEL));
    let _ = z.write_all(own);
    let _ = z.flush();
    // Taken before the encoder is dropped, which would end the stream.
    let first = std::mem::take(z.get_mut());
    let mut crc = crc32fast::Hasher::new();
    crc.update(own);
    crc.combine(&part.crc);
    let len = own.len() as u64 + part.len;
    let mut trailer = Vec::with_capacity(8);
    trailer.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE is the length modulo 2^32.
    trailer.extend_from_slice(&((len & 0xffff_ffff) as u32).to_le_bytes());
    vec![first.into(), part.data.clone(), trailer.into()]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use std::io::Read;

    use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

    use super::*;
    use crate::api::{Fact, QuotaSpec, Usage};
    use crate::limits::{LimitSource, ResolvedLimit};

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

    /// Today's render path before pre-rendering, kept as the reference the new one must
    /// equal, byte for byte.
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
        let cached =
            format!("Refreshed in the background every {every}; a scrape never calls AWS.");
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
            "When the last successful background refresh of a collector finished, in Unix time."
                .into(),
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
                let resolved = e.limits.get(spec, &u.resource, u.reported_limit());
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

    /// Today's whole render path: the registry and the reference families, sorted.
    fn reference(metrics: &Metrics, snapshot: &Snapshot, now: SystemTime) -> String {
        // The process's own families (sorted by the registry), then the snapshot's.
        let mut families = metrics.registry.gather();
        let mut data = snapshot_families(snapshot, now);
        data.sort_by(|a, b| a.name().cmp(b.name()));
        families.extend(data);
        families.retain(|f| !f.get_metric().is_empty());
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut buf)
            .expect("encode");
        String::from_utf8(buf).expect("utf-8")
    }

    const QUOTA: QuotaSpec =
        QuotaSpec::service_quota("ecr", "L-1", "Images \"per\" repo\\sitory", 100.0)
            .adjustable()
            .per_resource();
    const OTHER: QuotaSpec = QuotaSpec::documented("ssm", "things", "Things", 10.0);

    fn entry(collector: &'static str, region: &str, interval: u64) -> Entry {
        Entry::new(
            collector,
            "111111111111".into(),
            region.into(),
            Duration::from_secs(interval),
            Duration::from_secs(1800),
        )
    }

    fn published(mut e: Entry) -> Entry {
        e.pieces = Arc::new(pieces(&e));
        e
    }

    /// Entries of every kind: fresh with per-resource usage (one filtered by ratio, one
    /// with a service limit, escaped label values), facts of two names, a stale one, a
    /// failed one, one never refreshed.
    fn snapshot(now: SystemTime) -> Snapshot {
        let mut a = entry("ecr_images", "eu-west-1", 600);
        a.attempted = true;
        a.success = true;
        a.last_duration = Duration::from_millis(1234);
        a.last_success = Some(now - Duration::from_secs(30));
        a.min_usage_ratio = 0.05;
        a.usage = Arc::new(vec![
            Usage::of_resource(&QUOTA, "team/app", 95.0),
            Usage::of_resource(&QUOTA, "quiet", 1.0),
            Usage::of_resource(&QUOTA, "line\nbreak \"q\" back\\slash", 50.0),
            Usage::of_resource(&QUOTA, "reported", 7.0).with_service_limit(8.0),
        ]);
        let mut limits = crate::limits::Limits::default();
        limits.quotas.insert(
            "L-1".into(),
            ResolvedLimit {
                value: 100.0,
                source: LimitSource::Applied,
                adjustable: true,
            },
        );
        a.limits = Arc::new(limits);
        let fact = |name: &'static str, resource: &str, value| Fact {
            name,
            help: "A fact.",
            service_code: "ecr",
            resource: resource.into(),
            value,
        };
        a.facts = Arc::new(vec![
            fact("aws_quota_zz_fact", "x", 1.0),
            fact("aws_quota_lifecycle_policy_present", "team/app", 0.0),
            fact("aws_quota_zz_fact", "y", 2.0),
        ]);
        let mut stale = entry("ssm_parameters", "us-east-1", 300);
        stale.attempted = true;
        stale.success = false;
        stale.last_success = Some(now - Duration::from_secs(3600));
        stale.usage = Arc::new(vec![Usage::new(&OTHER, 3.0)]);
        stale.facts = Arc::new(vec![fact(
            "aws_quota_lifecycle_policy_present",
            "gone",
            1.0,
        )]);
        let mut b = entry("ssm_parameters", "eu-west-1", 300);
        b.attempted = true;
        b.success = true;
        b.last_success = Some(now);
        b.usage = Arc::new(vec![Usage::new(&OTHER, 0.5)]);
        let mut failed = entry("ssm_parameters", "ap-south-1", 300);
        failed.attempted = true;
        let never = entry("ssm_parameters", "sa-east-1", 300);
        Snapshot::new(
            [a, stale, b, failed, never]
                .into_iter()
                .map(published)
                .collect(),
        )
    }

    #[test]
    fn pre_rendered_lines_equal_the_metrics_library_byte_for_byte() {
        let now = SystemTime::now();
        let metrics = Metrics::new("1.2.3", "abc").expect("metrics");
        metrics.aws.request("ecr", "ListImages");
        metrics
            .aws
            .error("ecr", "ListImages", "ThrottlingException");
        let snapshot = snapshot(now);
        let got = metrics.render(&snapshot, now);
        assert_eq!(got, reference(&metrics, &snapshot, now));
        // The filters did something: the quiet repository is out, the stale entry's
        // samples are out, the service limit and the escaping are in.
        assert!(!got.contains("resource=\"quiet\""), "{got}");
        assert!(!got.contains("us-east-1\",service_code=\"ssm\""), "{got}");
        assert!(got.contains("limit_source=\"service\""), "{got}");
        assert!(
            got.contains(r#"resource="line\nbreak \"q\" back\\slash""#),
            "{got}"
        );
        assert!(got.contains("aws_quota_zz_fact{"), "{got}");
        // Nothing but the reference for an empty snapshot either.
        let empty = Snapshot::default();
        assert_eq!(
            metrics.render(&empty, now),
            reference(&metrics, &empty, now)
        );
    }

    #[test]
    fn account_info_names_each_account_once_with_its_selected_tags() {
        use crate::config::{AccountName, TagKey};
        let now = SystemTime::now();
        let metrics = Metrics::new("1.2.3", "abc").expect("metrics");
        let named = AccountConfig {
            name: Some(AccountName("prod \"payments\"".into())),
            tags: [
                ("team", "payments"),
                ("cost-center", "cc-1"),
                ("other", "x"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..AccountConfig::default()
        };
        let accounts = vec![
            ("111111111111".to_string(), named),
            ("222222222222".to_string(), AccountConfig::default()),
        ];
        let keys = [TagKey("team".into()), TagKey("cost-center".into())];
        let snapshot = snapshot(now);
        snapshot.set_accounts(account_info(&accounts, &keys));
        let got = metrics.render(&snapshot, now);
        let lines: Vec<&str> = got
            .lines()
            .filter(|l| l.starts_with("aws_quota_account_info"))
            .collect();
        assert_eq!(
            lines,
            [
                r#"aws_quota_account_info{account_id="111111111111",account_name="prod \"payments\"",tag_team="payments",tag_cost_center="cc-1"} 1"#,
                r#"aws_quota_account_info{account_id="222222222222",account_name="222222222222"} 1"#,
            ]
        );
        assert_eq!(
            got.matches("# TYPE aws_quota_account_info gauge").count(),
            1
        );
        // The gzipped scrape is rebuilt when the accounts change.
        let before = gunzip(&metrics.scrape(&snapshot, now, true));
        assert!(before.contains("tag_team=\"payments\""));
        snapshot.set_accounts(account_info(&accounts[1..], &keys));
        let after = gunzip(&metrics.scrape(&snapshot, now, true));
        assert!(!after.contains("111111111111\",account_name"), "{after}");
    }

    fn gunzip(body: &Exposition) -> String {
        let bytes: Vec<u8> = body.chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut out = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut out)
            .expect("a valid gzip member");
        out
    }

    #[test]
    fn gzip_is_the_same_text_and_reuses_the_snapshot_part_until_it_changes() {
        let now = SystemTime::now();
        let metrics = Metrics::new("1.2.3", "abc").expect("metrics");
        let snapshot = snapshot(now);
        let plain = metrics.render(&snapshot, now);
        let first = metrics.scrape(&snapshot, now, true);
        assert!(first.gzip);
        assert_eq!(gunzip(&first), plain);
        // The request counters change between scrapes; the snapshot part is reused.
        metrics.aws.request("ssm", "DescribeParameters");
        let second = metrics.scrape(&snapshot, now, true);
        assert_eq!(gunzip(&second), metrics.render(&snapshot, now));
        assert_eq!(
            first.chunks[1].as_ptr(),
            second.chunks[1].as_ptr(),
            "reused"
        );
        // A publication makes a new one.
        let mut e = (*snapshot.get(2).expect("entry")).clone();
        e.usage = Arc::new(vec![Usage::new(&OTHER, 9.0)]);
        snapshot.publish_at(2, published(e));
        let third = metrics.scrape(&snapshot, now, true);
        assert_ne!(second.chunks[1].as_ptr(), third.chunks[1].as_ptr());
        let text = gunzip(&third);
        assert!(
            text.contains("quota_code=\"things\",quota_name=\"Things\",resource=\"\"} 9\n"),
            "{text}"
        );
        // So does an entry going stale.
        let later = now + Duration::from_secs(1790);
        let fourth = metrics.scrape(&snapshot, later, true);
        assert_eq!(gunzip(&fourth), metrics.render(&snapshot, later));
        assert!(!gunzip(&fourth).contains("team/app\"} 95"));
    }

    #[test]
    fn thresholds_other_than_the_defaults_are_exported_per_severity() {
        let now = SystemTime::now();
        let mut a = entry("ecr_images", "eu-west-1", 600);
        a.attempted = true;
        a.success = true;
        a.last_success = Some(now);
        a.usage = Arc::new(vec![
            Usage::of_resource(&QUOTA, "team/app", 95.0),
            Usage::of_resource(&QUOTA, "sandbox/x", 5.0),
            Usage::of_resource(&QUOTA, "other", 5.0),
        ]);
        let collector: crate::config::ThresholdMap = serde_yaml::from_str(
            "L-1:\n  warning: 0.7\n  resources:\n    - {match: 'sandbox/*', never: true}\n",
        )
        .expect("thresholds");
        a.thresholds = Arc::new(crate::config::Policy::new(&collector, &Default::default()));
        a.pieces = Arc::new(pieces(&a));
        let text = Metrics::new("1", "r")
            .expect("metrics")
            .render(&Snapshot::new(vec![a.clone()]), now);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("aws_quota_alert_threshold_ratio{"))
            .collect();
        let labels = |resource: &str, severity: &str| {
            format!("aws_quota_alert_threshold_ratio{{account_id=\"111111111111\",aws_region=\"eu-west-1\",service_code=\"ecr\",quota_code=\"L-1\",quota_name=\"Images \\\"per\\\" repo\\\\sitory\",resource=\"{resource}\",severity=\"{severity}\"}}")
        };
        assert_eq!(
            lines,
            vec![
                format!("{} 0.7", labels("team/app", "warning")),
                format!("{} +Inf", labels("sandbox/x", "warning")),
                format!("{} +Inf", labels("sandbox/x", "critical")),
                format!("{} 0.7", labels("other", "warning")),
            ]
        );
        assert!(
            text.contains("# TYPE aws_quota_alert_threshold_ratio gauge"),
            "{text}"
        );
        // Nothing at all without thresholds in the config.
        a.thresholds = Arc::default();
        a.pieces = Arc::new(pieces(&a));
        let plain = Metrics::new("1", "r")
            .expect("metrics")
            .render(&Snapshot::new(vec![a]), now);
        assert!(
            !plain.contains("aws_quota_alert_threshold_ratio"),
            "{plain}"
        );
    }
}
