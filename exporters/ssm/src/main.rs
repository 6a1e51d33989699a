use std::process::ExitCode;
use std::sync::Arc;

use headroom_common::ExporterInfo;
use ssm_quota_exporter::ParametersCollector;

fn main() -> ExitCode {
    headroom_common::main(
        ExporterInfo {
            name: "ssm_quota_exporter",
            about: "Prometheus exporter for AWS Systems Manager Parameter Store quotas",
            default_listen_address: ":9810",
        },
        vec![Arc::new(ParametersCollector)],
    )
}
