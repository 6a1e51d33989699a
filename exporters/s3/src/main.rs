use std::process::ExitCode;
use std::sync::Arc;

use headroom_common::ExporterInfo;
use s3_quota_exporter::{AccessPointsCollector, BucketsCollector, DirectoryBucketsCollector};

fn main() -> ExitCode {
    headroom_common::main(
        ExporterInfo {
            name: "s3_quota_exporter",
            about: "Prometheus exporter for Amazon S3 quotas",
            default_listen_address: ":9812",
        },
        vec![
            Arc::new(BucketsCollector),
            Arc::new(DirectoryBucketsCollector),
            Arc::new(AccessPointsCollector),
        ],
    )
}
