//! The requests the Service Quotas collectors would send to real AWS, from clients
//! built as production builds them (no endpoint override), recorded instead of sent:
//! the report's calls, the CloudWatch source's, and the global quotas' home region in
//! each partition.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use headroom_common::testing::{dns_suffix, Recorded, RecordingClients};
use headroom_common::{Collector, Target};
use servicequotas_exporter::MeteredQuotas;

fn answer(r: &Recorded) -> (u16, &'static str, Vec<u8>) {
    let json = "application/x-amz-json-1.1";
    let body: &[u8] = match r.header("x-amz-target").unwrap_or_default() {
        "ServiceQuotasV20190624.StartQuotaUtilizationReport" => br#"{"ReportId":"r-1","Status":"PENDING"}"#,
        "ServiceQuotasV20190624.GetQuotaUtilizationReport" => br#"{"ReportId":"r-1","Status":"COMPLETED","Quotas":[]}"#,
        "ServiceQuotasV20190624.ListServices" => br#"{"Services":[{"ServiceCode":"ec2"}]}"#,
        "ServiceQuotasV20190624.ListAWSDefaultServiceQuotas" => {
            br#"{"Quotas":[{"ServiceCode":"ec2","QuotaCode":"L-1216C47A","QuotaName":"vCPUs","Value":5,"UsageMetric":{"MetricNamespace":"AWS/Usage","MetricName":"ResourceCount","MetricDimensions":{"Service":"EC2","Type":"Resource","Resource":"vCPU","Class":"Standard/OnDemand"},"MetricStatisticRecommendation":"Maximum"}}]}"#
        }
        "ServiceQuotasV20190624.ListServiceQuotas" => br#"{"Quotas":[]}"#,
        // GetMetricData (Smithy RPC v2 CBOR): an empty map, no results.
        _ => return (200, "application/cbor", vec![0xa0]),
    };
    (200, json, body.to_vec())
}

async fn sent(collector: &dyn Collector, region: &str, source: &str) -> Vec<Recorded> {
    let clients = RecordingClients::new(answer);
    let region = collector.scope().client_region(region).to_string();
    let target =
        Target::new("210987654321", region, Arc::new(clients.clone())).with_usage_source(source);
    collector.collect(&target).await.expect("collect");
    clients.requests()
}

#[tokio::test]
async fn the_report_is_read_in_the_target_s_region_and_global_quotas_in_the_partition_s_home() {
    for (region, home) in [
        ("eu-west-1", "us-east-1"),
        ("cn-northwest-1", "cn-north-1"),
        ("us-gov-east-1", "us-gov-west-1"),
    ] {
        for (collector, expect) in [
            (MeteredQuotas::regional(), region),
            (MeteredQuotas::global(), home),
        ] {
            let requests = sent(&collector, region, "report").await;
            let ops: Vec<&str> = requests
                .iter()
                .filter_map(|r| r.header("x-amz-target"))
                .collect();
            assert_eq!(
                ops,
                [
                    "ServiceQuotasV20190624.StartQuotaUtilizationReport",
                    "ServiceQuotasV20190624.GetQuotaUtilizationReport"
                ]
            );
            for r in &requests {
                assert_eq!(
                    r.host,
                    format!("servicequotas.{expect}.{}", dns_suffix(expect)),
                    "{r:#?}"
                );
                assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
                assert_eq!(r.signed_region(), Some(expect));
                assert!(r
                    .header("authorization")
                    .unwrap()
                    .contains("/servicequotas/aws4_request"));
            }
        }
    }
}

#[tokio::test]
async fn the_cloudwatch_source_lists_service_quotas_and_asks_cloudwatch_in_cbor() {
    for region in ["eu-west-1", "cn-north-1", "us-gov-west-1"] {
        let requests = sent(&MeteredQuotas::regional(), region, "cloudwatch").await;
        let gmd: Vec<&Recorded> = requests
            .iter()
            .filter(|r| r.host.starts_with("monitoring."))
            .collect();
        assert_eq!(gmd.len(), 1, "{requests:#?}");
        let r = gmd[0];
        assert_eq!(
            r.host,
            format!("monitoring.{region}.{}", dns_suffix(region))
        );
        assert_eq!(
            r.path,
            "/service/GraniteServiceVersion20100801/operation/GetMetricData"
        );
        assert_eq!(r.header("smithy-protocol"), Some("rpc-v2-cbor"));
        assert_eq!(r.signed_region(), Some(region));
        assert!(r
            .header("authorization")
            .unwrap()
            .contains("/monitoring/aws4_request"));
        let lists: Vec<&str> = requests
            .iter()
            .filter_map(|r| r.header("x-amz-target"))
            .collect();
        assert_eq!(
            lists,
            [
                "ServiceQuotasV20190624.ListServices",
                "ServiceQuotasV20190624.ListAWSDefaultServiceQuotas",
                "ServiceQuotasV20190624.ListServiceQuotas"
            ]
        );
    }
}
