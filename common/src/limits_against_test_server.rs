//! Limit resolution against the local AWS test server over a real socket: applied
//! values, AWS defaults, values applied to single resources, fallbacks when a listing
//! is denied, overrides, keeping the last value when a listing fails, and the cost in
//! calls: per service, not per quota.
//!
//! Needs the project's virtualenv (`scripts/setup.sh`, run by `make test`).

#![allow(clippy::expect_used, clippy::unwrap_used)] // test set-up may fail loudly

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::SystemTime;

use crate::api::{QuotaSpec, Target};
use crate::aws::{local_target, AwsContext};
use crate::limits::{LimitResolver, LimitSource, Limits, SharedListings};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

struct TestServer {
    child: Child,
    addr: String,
}

impl TestServer {
    fn start() -> TestServer {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = std::env::var("HEADROOM_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(".venv/bin/python"));
        let mut child = Command::new(&python)
            .args(["-m", "testserver.headroom_aws", "--port", "0"])
            .current_dir(&root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the test server with {python:?} (run scripts/setup.sh): {e}")
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("READY line");
        let url = line
            .strip_prefix("READY ")
            .expect("READY")
            .trim()
            .to_string();
        TestServer {
            child,
            addr: url.trim_start_matches("http://").to_string(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn post(&self, action: &str, body: &str) {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        write!(
            s,
            "POST /_headroom/{action} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        assert!(
            out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
            "{out}"
        );
    }

    fn quota(&self, service: &str, code: &str, fields: &str) {
        self.post(
            "quotas",
            &format!(
                r#"{{"account":"{ACCOUNT}","region":"eu-west-1","service_code":"{service}","quota_code":"{code}",{fields}}}"#
            ),
        );
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ACCOUNT: &str = "123456789012";

const fn spec(code: &'static str, builtin: f64) -> QuotaSpec {
    QuotaSpec::service_quota("ecr", code, "Test quota", builtin)
}

const APPLIED: QuotaSpec = spec("L-AAAAAAAA", 10.0);
const DEFAULT: QuotaSpec = spec("L-BBBBBBBB", 20.0);
const NO_DATA: QuotaSpec = spec("L-CCCCCCCC", 30.0);
const OVERRIDDEN: QuotaSpec = spec("L-EEEEEEEE", 50.0);
const NOT_LISTED: QuotaSpec = QuotaSpec::documented("ecr", "not_in_service_quotas", "Ours", 60.0);
const PER_RESOURCE: QuotaSpec = spec("L-FFFFFFFF", 70.0).per_resource();
const OTHER_SERVICE: QuotaSpec = QuotaSpec::service_quota("s3", "L-GGGGGGGG", "Other", 80.0);

fn quotas() -> Vec<QuotaSpec> {
    vec![
        APPLIED,
        DEFAULT,
        NO_DATA,
        OVERRIDDEN,
        NOT_LISTED,
        PER_RESOURCE,
        OTHER_SERVICE,
    ]
}

fn got(limits: &Limits, code: &str) -> (f64, LimitSource) {
    let l = limits.quotas[code];
    (l.value, l.source)
}

/// Requests of one Service Quotas operation, from the exporter's own counters.
fn counted(metrics: &Metrics, op: &str) -> f64 {
    let text = metrics.render(&Snapshot::default(), SystemTime::now());
    let prefix = format!(
        "aws_quota_exporter_aws_requests_total{{operation=\"{op}\",service_code=\"servicequotas\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.parse().expect("number"))
}

#[tokio::test]
async fn limits_follow_override_applied_default_builtin_a_service_at_a_time() {
    let server = TestServer::start();
    server.quota(
        "ecr",
        "L-AAAAAAAA",
        r#""applied":2000,"default":1000,"adjustable":true"#,
    );
    server.quota(
        "ecr",
        "L-BBBBBBBB",
        r#""applied":"NoSuchResource","default":1500"#,
    );
    server.quota("ecr", "L-EEEEEEEE", r#""applied":7,"default":7"#);
    server.quota("s3", "L-GGGGGGGG", r#""applied":42,"default":40"#);
    // 150 repositories with their own raised limit: with the account-level values,
    // two pages of ListServiceQuotas at the ALL level.
    let resources: Vec<String> = (0..150)
        .map(|i| {
            format!(
                r#""arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/team/app{i}": {}"#,
                1000 + i
            )
        })
        .collect();
    server.quota(
        "ecr",
        "L-FFFFFFFF",
        &format!(
            r#""applied":500,"default":100,"resources":{{{}}}"#,
            resources.join(",")
        ),
    );
    let metrics = Metrics::new("0", "test").expect("metrics");
    let aws = AwsContext::new(metrics.aws.clone());
    let target = local_target(&aws, &server.url(), ACCOUNT, "eu-west-1").await;
    let overrides = BTreeMap::from([("L-EEEEEEEE".to_string(), 99.0)]);
    let quotas = quotas();

    let mut resolver = LimitResolver::default();
    let (limits, complete) = resolver.refresh(&target, &quotas, &overrides).await;
    assert!(
        complete,
        "a quota that is not listed is an answer, not a failure"
    );
    assert_eq!(got(&limits, "L-AAAAAAAA"), (2000.0, LimitSource::Applied));
    assert!(
        limits.quotas["L-AAAAAAAA"].adjustable,
        "adjustable comes from Service Quotas"
    );
    assert_eq!(got(&limits, "L-BBBBBBBB"), (1500.0, LimitSource::Default));
    assert_eq!(got(&limits, "L-CCCCCCCC"), (30.0, LimitSource::Builtin));
    assert_eq!(got(&limits, "L-EEEEEEEE"), (99.0, LimitSource::Override));
    assert_eq!(
        got(&limits, "not_in_service_quotas"),
        (60.0, LimitSource::Builtin)
    );
    assert_eq!(got(&limits, "L-GGGGGGGG"), (42.0, LimitSource::Applied));
    // A repository with its own applied value shows it; the others the quota's.
    let per = |r: &str| {
        let l = limits.get(&PER_RESOURCE, r, None);
        (l.value, l.source)
    };
    assert_eq!(per("team/app0"), (1000.0, LimitSource::Applied));
    assert_eq!(per("team/app149"), (1149.0, LimitSource::Applied));
    assert_eq!(per("team/other"), (500.0, LimitSource::Applied));
    assert_eq!(limits.resources["L-FFFFFFFF"].len(), 150);
    // Seven quotas of two services cost four calls: ECR's applied values (153 rows,
    // two pages), ECR's defaults (one page, since two quotas had no applied value),
    // and S3's applied values (one page; every S3 quota had one, so no defaults).
    assert_eq!(counted(&metrics, "ListServiceQuotas"), 3.0);
    assert_eq!(counted(&metrics, "ListAWSDefaultServiceQuotas"), 1.0);
    assert_eq!(counted(&metrics, "GetServiceQuota"), 0.0);

    // A listing that fails for another reason (throttled past its retries) keeps the
    // last good values instead of dropping to the builtin, and the resource values.
    server.post(
        "faults",
        r#"{"operation":"ListServiceQuotas","code":"TooManyRequestsException","status":400}"#,
    );
    let (limits, complete) = resolver.refresh(&target, &quotas, &overrides).await;
    assert!(!complete, "a throttled listing is not an answer");
    assert_eq!(got(&limits, "L-AAAAAAAA"), (2000.0, LimitSource::Applied));
    assert_eq!(got(&limits, "L-GGGGGGGG"), (42.0, LimitSource::Applied));
    assert_eq!(got(&limits, "L-CCCCCCCC"), (30.0, LimitSource::Builtin));
    assert_eq!(limits.resources["L-FFFFFFFF"].len(), 150);
    assert_eq!(
        counted(&metrics, "ListServiceQuotas"),
        3.0 + 2.0 * 2.0,
        "two attempts per service"
    );
    server.post("reset", "{}");
}

/// A test server with an account-level ECR quota and a per-resource one (9 for
/// repository `a`), and a target on it.
async fn with_two_ecr_quotas() -> (TestServer, Metrics, Target) {
    let server = TestServer::start();
    server.quota("ecr", "L-AAAAAAAA", r#""applied":2000,"default":1000"#);
    server.quota(
        "ecr",
        "L-FFFFFFFF",
        &format!(r#""applied":500,"default":100,"resources":{{"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/a":9}}"#),
    );
    let metrics = Metrics::new("0", "test").expect("metrics");
    let aws = AwsContext::new(metrics.aws.clone());
    let target = local_target(&aws, &server.url(), ACCOUNT, "eu-west-1").await;
    (server, metrics, target)
}

#[tokio::test]
async fn a_denied_listing_falls_back_to_the_next_source() {
    let (server, _metrics, target) = with_two_ecr_quotas().await;
    let quotas = [APPLIED, PER_RESOURCE];
    let mut resolver = LimitResolver::default();
    let (limits, _) = resolver.refresh(&target, &quotas, &BTreeMap::new()).await;
    assert_eq!(limits.get(&PER_RESOURCE, "a", None).value, 9.0);

    // Without servicequotas:ListServiceQuotas: the AWS defaults, and no resource values.
    server.post(
        "faults",
        r#"{"operation":"ListServiceQuotas","code":"AccessDeniedException","status":400}"#,
    );
    let (limits, complete) = resolver.refresh(&target, &quotas, &BTreeMap::new()).await;
    assert!(complete, "a denial is an answer");
    assert_eq!(got(&limits, "L-AAAAAAAA"), (1000.0, LimitSource::Default));
    let per = limits.get(&PER_RESOURCE, "a", None);
    assert_eq!((per.value, per.source), (100.0, LimitSource::Default));

    // Without either: the built-in values.
    server.post(
        "faults",
        r#"{"operation":"ListAWSDefaultServiceQuotas","code":"AccessDeniedException","status":400}"#,
    );
    let (limits, complete) = resolver.refresh(&target, &quotas, &BTreeMap::new()).await;
    assert!(complete);
    assert_eq!(got(&limits, "L-AAAAAAAA"), (10.0, LimitSource::Builtin));
    assert_eq!(got(&limits, "L-FFFFFFFF"), (70.0, LimitSource::Builtin));
}

#[tokio::test]
async fn collectors_of_one_service_share_its_listings() {
    let (_server, metrics, target) = with_two_ecr_quotas().await;
    let shared = std::sync::Arc::new(SharedListings::default());
    let hour = std::time::Duration::from_secs(3600);
    let mut images = LimitResolver::new(shared.clone(), hour);
    let mut repositories = LimitResolver::new(shared.clone(), hour);
    let none = BTreeMap::new();
    // The per-resource collector lists every level; the account-level one reuses it.
    let (limits, _) = images.refresh(&target, &[PER_RESOURCE], &none).await;
    assert_eq!(limits.get(&PER_RESOURCE, "a", None).value, 9.0);
    assert_eq!(counted(&metrics, "ListServiceQuotas"), 1.0);
    let (limits, _) = repositories.refresh(&target, &[APPLIED], &none).await;
    assert_eq!(got(&limits, "L-AAAAAAAA"), (2000.0, LimitSource::Applied));
    assert_eq!(counted(&metrics, "ListServiceQuotas"), 1.0, "reused");
    // An account-level listing does not serve a per-resource quota.
    let fresh = std::sync::Arc::new(SharedListings::default());
    let mut account_first = LimitResolver::new(fresh.clone(), hour);
    let mut then_resources = LimitResolver::new(fresh, hour);
    account_first.refresh(&target, &[APPLIED], &none).await;
    let (limits, _) = then_resources
        .refresh(&target, &[PER_RESOURCE], &none)
        .await;
    assert_eq!(limits.get(&PER_RESOURCE, "a", None).value, 9.0);
    assert_eq!(counted(&metrics, "ListServiceQuotas"), 3.0);
    // Knowing up front that a collector wants per-resource values, the account-level
    // one lists every level too: one listing whichever starts first.
    let known = std::sync::Arc::new(SharedListings::for_quotas(&[APPLIED, PER_RESOURCE]));
    let mut account_first = LimitResolver::new(known.clone(), hour);
    let mut then_resources = LimitResolver::new(known, hour);
    account_first.refresh(&target, &[APPLIED], &none).await;
    let (limits, _) = then_resources
        .refresh(&target, &[PER_RESOURCE], &none)
        .await;
    assert_eq!(limits.get(&PER_RESOURCE, "a", None).value, 9.0);
    assert_eq!(
        counted(&metrics, "ListServiceQuotas"),
        4.0,
        "one more listing, not two"
    );
    // Past its maximum age a listing is made anew.
    let mut impatient = LimitResolver::new(shared, std::time::Duration::ZERO);
    impatient.refresh(&target, &[APPLIED], &none).await;
    assert_eq!(counted(&metrics, "ListServiceQuotas"), 5.0);
}

#[tokio::test]
async fn a_failing_listing_keeps_the_last_values_per_resource_too() {
    let (server, _metrics, target) = with_two_ecr_quotas().await;
    let quotas = [APPLIED, PER_RESOURCE];
    let mut resolver = LimitResolver::default();
    let (_, complete) = resolver.refresh(&target, &quotas, &BTreeMap::new()).await;
    assert!(complete);

    // ListServiceQuotas fails on every attempt (not a denial: no answer at all). The
    // last known values stay, the repository's own one included, and the lookup is
    // incomplete, to be tried again soon.
    server.post(
        "faults",
        r#"{"operation":"ListServiceQuotas","code":"ServiceUnavailableException","status":503}"#,
    );
    let (limits, complete) = resolver.refresh(&target, &quotas, &BTreeMap::new()).await;
    assert!(!complete, "a lookup with no answer is incomplete");
    assert_eq!(got(&limits, "L-AAAAAAAA"), (2000.0, LimitSource::Applied));
    let per = limits.get(&PER_RESOURCE, "a", None);
    assert_eq!((per.value, per.source), (9.0, LimitSource::Applied));
    let other = limits.get(&PER_RESOURCE, "b", None);
    assert_eq!((other.value, other.source), (500.0, LimitSource::Applied));
}
