//! The requests the ECR collectors would send to real AWS, from clients built as
//! production builds them (no endpoint override), recorded instead of sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use headroom_common::testing::{Recorded, RecordingClients};
use headroom_common::Target;

fn answer(r: &Recorded) -> (u16, &'static str, Vec<u8>) {
    let body: &[u8] = match r.header("x-amz-target") {
        Some("AmazonEC2ContainerRegistry_V20150921.DescribeRepositories") => {
            br#"{"repositories":[{"repositoryName":"team/app","repositoryArn":"arn:aws:ecr:r:210987654321:repository/team/app"}]}"#
        }
        Some("AmazonEC2ContainerRegistry_V20150921.GetLifecyclePolicy") => {
            br#"{"repositoryName":"team/app","lifecyclePolicyText":"{}"}"#
        }
        _ => br#"{"imageIds":[]}"#,
    };
    (200, "application/x-amz-json-1.1", body.to_vec())
}

#[tokio::test]
async fn every_ecr_call_goes_to_the_regional_api_endpoint_of_the_partition() {
    for (region, host) in [
        ("eu-west-1", "api.ecr.eu-west-1.amazonaws.com"),
        ("us-east-1", "api.ecr.us-east-1.amazonaws.com"),
        ("cn-north-1", "api.ecr.cn-north-1.amazonaws.com.cn"),
        ("us-gov-west-1", "api.ecr.us-gov-west-1.amazonaws.com"),
    ] {
        let clients = RecordingClients::new(answer);
        let target = Target::new("210987654321", region, Arc::new(clients.clone()));
        for c in ecr_quota_exporter::collectors() {
            c.collect(&target).await.expect("collect");
        }
        let sent = clients.requests();
        let targets: Vec<&str> = sent
            .iter()
            .filter_map(|r| r.header("x-amz-target"))
            .collect();
        // The listing is shared; ListImages and GetLifecyclePolicy per repository.
        assert!(targets.contains(&"AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"));
        assert!(targets.contains(&"AmazonEC2ContainerRegistry_V20150921.ListImages"));
        assert!(
            targets.contains(&"AmazonEC2ContainerRegistry_V20150921.GetLifecyclePolicy"),
            "{targets:?}"
        );
        for r in &sent {
            assert_eq!(
                (r.method.as_str(), r.host.as_str(), r.path.as_str()),
                ("POST", host, "/"),
                "{r:#?}"
            );
            assert_eq!(r.signed_region(), Some(region));
            assert!(r
                .header("authorization")
                .unwrap()
                .contains("/ecr/aws4_request"));
        }
    }
}
