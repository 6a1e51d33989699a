use std::process::ExitCode;
use std::sync::Arc;

use ecr_quota_exporter::{ImagesCollector, LifecyclePoliciesCollector, RepositoriesCollector};
use headroom_common::ExporterInfo;

fn main() -> ExitCode {
    headroom_common::main(
        ExporterInfo {
            name: "ecr_quota_exporter",
            about: "Prometheus exporter for Amazon ECR quotas",
            default_listen_address: ":9811",
        },
        vec![
            Arc::new(RepositoriesCollector),
            Arc::new(ImagesCollector),
            Arc::new(LifecyclePoliciesCollector),
        ],
    )
}
