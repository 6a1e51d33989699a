use std::process::ExitCode;

use headroom_common::ExporterInfo;

fn main() -> ExitCode {
    headroom_common::main(
        ExporterInfo {
            name: "ecr_quota_exporter",
            about: "Prometheus exporter for Amazon ECR quotas",
            default_listen_address: ":9811",
        },
        ecr_quota_exporter::collectors(),
    )
}
