//! Limit resolution against the local AWS test server over a real socket: Service
//! Quotas applied values, AWS defaults, NoSuchResource and AccessDenied fallbacks,
//! overrides, and keeping the last value when a lookup fails.
//!
//! Needs the project's virtualenv (`scripts/setup.sh`, run by `make test`).

#![allow(clippy::expect_used, clippy::unwrap_used)] // test set-up may fail loudly

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::SystemTime;

use headroom_common::aws::{build_targets, AwsContext};
use headroom_common::config::Config;
use headroom_common::limits::{LimitResolver, LimitSource};
use headroom_common::metrics::Metrics;
use headroom_common::QuotaSpec;

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

    fn post(&self, action: &str, body: &str) -> String {
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
        out
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const fn spec(code: &'static str, builtin: f64, in_sq: bool) -> QuotaSpec {
    QuotaSpec {
        service_code: "ecr",
        quota_code: code,
        quota_name: "Test quota",
        builtin_limit: builtin,
        adjustable: false,
        in_service_quotas: in_sq,
        resource_level: false,
    }
}

const APPLIED: QuotaSpec = spec("L-AAAAAAAA", 10.0, true);
const DEFAULT: QuotaSpec = spec("L-BBBBBBBB", 20.0, true);
const NO_DATA: QuotaSpec = spec("L-CCCCCCCC", 30.0, true);
const DENIED: QuotaSpec = spec("L-DDDDDDDD", 40.0, true);
const OVERRIDDEN: QuotaSpec = spec("L-EEEEEEEE", 50.0, true);
const NOT_LISTED: QuotaSpec = spec("not_in_service_quotas", 60.0, false);
const PER_RESOURCE: QuotaSpec = QuotaSpec {
    resource_level: true,
    ..spec("L-FFFFFFFF", 70.0, true)
};
const QUOTAS: &[QuotaSpec] = &[
    APPLIED,
    DEFAULT,
    NO_DATA,
    DENIED,
    OVERRIDDEN,
    NOT_LISTED,
    PER_RESOURCE,
];

#[tokio::test]
async fn limits_follow_override_applied_default_builtin() {
    let server = TestServer::start();
    let account = "123456789012";
    for (code, applied, default) in [
        ("L-AAAAAAAA", "2000", "1000"),
        ("L-BBBBBBBB", "\"NoSuchResource\"", "1500"),
        ("L-DDDDDDDD", "\"AccessDenied\"", "\"AccessDenied\""),
        ("L-EEEEEEEE", "7", "7"),
    ] {
        server.post(
            "quotas",
            &format!(
                r#"{{"account":"{account}","region":"eu-west-1","service_code":"ecr","quota_code":"{code}","applied":{applied},"default":{default},"adjustable":true}}"#
            ),
        );
    }
    // 150 repositories with their own raised limit: two pages of ListServiceQuotas.
    let resources: Vec<String> = (0..150)
        .map(|i| {
            format!(
                r#""arn:aws:ecr:eu-west-1:{account}:repository/team/app{i}": {}"#,
                1000 + i
            )
        })
        .collect();
    server.post(
        "quotas",
        &format!(
            r#"{{"account":"{account}","region":"eu-west-1","service_code":"ecr","quota_code":"L-FFFFFFFF","applied":500,"default":100,"resources":{{{}}}}}"#,
            resources.join(",")
        ),
    );
    // The standard AWS environment, pointed at the test server. This test binary has
    // one test, so nothing else reads the environment meanwhile.
    std::env::set_var("AWS_ENDPOINT_URL", server.url());
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent");
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    let yaml = format!(
        "accounts:\n  - account_id: \"{account}\"\nregions: [eu-west-1]\naws:\n  max_attempts: 2\n  initial_backoff: 10ms\n"
    );
    let config = Config::parse(
        &yaml,
        &[headroom_common::config::Known::new("test", QUOTAS)],
    )
    .expect("config");
    let metrics = Metrics::new("0", "test").expect("metrics");
    let aws = AwsContext::new(metrics.aws.clone());
    let targets = build_targets(&config, &aws).await.expect("targets");
    assert_eq!(targets.len(), 1);
    let target = targets[0].for_collector(&aws, 100.0, Default::default());
    let overrides = BTreeMap::from([("L-EEEEEEEE".to_string(), 99.0)]);

    let mut resolver = LimitResolver::default();
    let (limits, complete) = resolver.refresh(&target, QUOTAS, &overrides).await;
    assert!(
        complete,
        "NoSuchResource and AccessDenied are answers, not failures"
    );
    let got = |code: &str| {
        let l = limits.quotas[code];
        (l.value, l.source)
    };
    assert_eq!(got("L-AAAAAAAA"), (2000.0, LimitSource::Applied));
    assert!(
        limits.quotas["L-AAAAAAAA"].adjustable,
        "adjustable comes from Service Quotas"
    );
    assert_eq!(got("L-BBBBBBBB"), (1500.0, LimitSource::Default));
    assert_eq!(got("L-CCCCCCCC"), (30.0, LimitSource::Builtin));
    assert_eq!(got("L-DDDDDDDD"), (40.0, LimitSource::Builtin));
    assert_eq!(got("L-EEEEEEEE"), (99.0, LimitSource::Override));
    assert_eq!(got("not_in_service_quotas"), (60.0, LimitSource::Builtin));
    // A repository with its own applied value shows it; the others the quota's.
    let per = |r: &str| {
        let l = limits.get(&PER_RESOURCE, r);
        (l.value, l.source)
    };
    assert_eq!(per("team/app0"), (1000.0, LimitSource::Applied));
    assert_eq!(per("team/app149"), (1149.0, LimitSource::Applied));
    assert_eq!(per("team/other"), (500.0, LimitSource::Applied));
    assert_eq!(limits.resources.len(), 150);

    let text = metrics.render(
        &headroom_common::snapshot::Snapshot::default(),
        SystemTime::now(),
    );
    let count = |op: &str| -> f64 {
        let prefix = format!("aws_quota_exporter_aws_requests_total{{operation=\"{op}\",service_code=\"servicequotas\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0.0, |v| v.parse().expect("number"))
    };
    // Applied asked for the four listed, not overridden quotas; default only where
    // applied had no value (B, C, D).
    assert_eq!(count("GetServiceQuota"), 5.0, "{text}");
    assert_eq!(count("ListServiceQuotas"), 2.0, "{text}");
    assert_eq!(count("GetAWSDefaultServiceQuota"), 3.0, "{text}");

    // A lookup that fails for another reason (throttled past its retries) keeps the
    // last good value instead of dropping to the builtin.
    server.post(
        "faults",
        r#"{"operation":"GetServiceQuota","code":"TooManyRequestsException","status":400}"#,
    );
    let (limits, complete) = resolver.refresh(&target, QUOTAS, &overrides).await;
    assert!(!complete, "a throttled lookup is not an answer");
    assert_eq!(
        (
            limits.quotas["L-AAAAAAAA"].value,
            limits.quotas["L-AAAAAAAA"].source
        ),
        (2000.0, LimitSource::Applied)
    );
    assert_eq!(
        (
            limits.quotas["L-CCCCCCCC"].value,
            limits.quotas["L-CCCCCCCC"].source
        ),
        (30.0, LimitSource::Builtin)
    );
    let text = metrics.render(
        &headroom_common::snapshot::Snapshot::default(),
        SystemTime::now(),
    );
    assert!(
        text.contains("aws_quota_exporter_aws_request_errors_total{error_code=\"TooManyRequestsException\",operation=\"GetServiceQuota\",service_code=\"servicequotas\"} 10"),
        "two attempts for each of five quotas: {text}"
    );
}
