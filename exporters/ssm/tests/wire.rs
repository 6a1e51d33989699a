//! The request the SSM collector would send to real AWS, from a client built as
//! production builds it (no endpoint override), recorded instead of sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use headroom_common::testing::RecordingClients;
use headroom_common::{Collector, Target};
use ssm_quota_exporter::ParametersCollector;

#[tokio::test]
async fn describe_parameters_goes_to_the_regional_endpoint_of_the_partition() {
    for (region, host) in [
        ("eu-west-1", "ssm.eu-west-1.amazonaws.com"),
        ("us-east-1", "ssm.us-east-1.amazonaws.com"),
        ("cn-north-1", "ssm.cn-north-1.amazonaws.com.cn"),
        ("us-gov-west-1", "ssm.us-gov-west-1.amazonaws.com"),
    ] {
        let clients = RecordingClients::new(|_| {
            (
                200,
                "application/x-amz-json-1.1",
                b"{\"Parameters\":[]}".to_vec(),
            )
        });
        let target = Target::new("210987654321", region, Arc::new(clients.clone()));
        ParametersCollector.collect(&target).await.expect("collect");
        let sent = clients.requests();
        assert_eq!(sent.len(), 1, "{sent:#?}");
        let r = &sent[0];
        assert_eq!(
            (r.method.as_str(), r.host.as_str(), r.path.as_str()),
            ("POST", host, "/")
        );
        assert_eq!(
            r.header("x-amz-target"),
            Some("AmazonSSM.DescribeParameters")
        );
        assert_eq!(r.signed_region(), Some(region));
        assert!(r
            .header("authorization")
            .unwrap()
            .contains("/ssm/aws4_request"));
    }
}
