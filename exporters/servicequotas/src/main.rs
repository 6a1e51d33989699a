use std::process::ExitCode;
use std::sync::Arc;

use headroom_common::ExporterInfo;
use servicequotas_exporter::MeteredQuotas;

fn main() -> ExitCode {
    headroom_common::main(
        ExporterInfo {
            name: "servicequotas_exporter",
            about: "Prometheus exporter for every AWS quota Service Quotas meters",
            default_listen_address: ":9813",
        },
        vec![
            Arc::new(MeteredQuotas::regional()),
            Arc::new(MeteredQuotas::global()),
        ],
    )
}
