//! The requests the S3 collectors would send to real AWS, from clients built as
//! production builds them (no endpoint override), recorded instead of sent: host, path,
//! signing region and the headers that matter, in several regions and partitions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use headroom_common::testing::{dns_suffix, Recorded, RecordingClients};
use headroom_common::{Collector, Scope, Target};
use s3_quota_exporter::{AccessPointsCollector, BucketsCollector, DirectoryBucketsCollector};

const ACCOUNT: &str = "210987654321";

fn answer(r: &Recorded) -> (u16, &'static str, Vec<u8>) {
    let body = if r.path.starts_with("/v20180820/accesspoint") {
        "<ListAccessPointsResult><AccessPointList></AccessPointList></ListAccessPointsResult>"
    } else if r.host.starts_with("s3express-control.") {
        "<ListAllMyDirectoryBucketsResult><Buckets></Buckets></ListAllMyDirectoryBucketsResult>"
    } else {
        "<ListAllMyBucketsResult><Buckets></Buckets></ListAllMyBucketsResult>"
    };
    (200, "application/xml", body.as_bytes().to_vec())
}

/// The one request `collector` sends for a target in `region` (its scope decides the
/// region its clients call, as the scheduler does).
async fn request(collector: &dyn Collector, region: &str) -> Recorded {
    let clients = RecordingClients::new(answer);
    let region = match collector.scope() {
        Scope::Regional => region.to_string(),
        global => global.client_region(region).to_string(),
    };
    let target = Target::new(ACCOUNT, region, Arc::new(clients.clone()));
    collector.collect(&target).await.expect("collect");
    let mut sent = clients.requests();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    sent.remove(0)
}

#[tokio::test]
async fn list_buckets_goes_to_s3_of_the_partition_s_home_region() {
    for (region, home) in [
        ("eu-west-1", "us-east-1"),
        ("ap-southeast-2", "us-east-1"),
        ("cn-northwest-1", "cn-north-1"),
        ("us-gov-east-1", "us-gov-west-1"),
    ] {
        let r = request(&BucketsCollector, region).await;
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.host,
            format!("s3.{home}.{}", dns_suffix(home)),
            "{region}: {r:#?}"
        );
        assert_eq!(r.path, "/");
        assert!(r.uri.contains("max-buckets=10000"), "{}", r.uri);
        assert_eq!(r.signed_region(), Some(home), "{region}");
        assert!(r
            .header("authorization")
            .unwrap()
            .contains("/s3/aws4_request"));
    }
}

#[tokio::test]
async fn list_directory_buckets_goes_to_the_regional_s3express_control_endpoint() {
    for region in ["eu-west-1", "us-east-1"] {
        let r = request(&DirectoryBucketsCollector, region).await;
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.host,
            format!("s3express-control.{region}.amazonaws.com"),
            "{r:#?}"
        );
        assert_eq!(r.path, "/");
        assert!(r.uri.contains("max-directory-buckets=1000"), "{}", r.uri);
        assert_eq!(r.signed_region(), Some(region));
        assert!(r
            .header("authorization")
            .unwrap()
            .contains("/s3express/aws4_request"));
    }
}

#[tokio::test]
async fn list_access_points_names_the_account_in_host_and_header() {
    for region in ["eu-west-1", "us-east-1", "cn-north-1", "us-gov-west-1"] {
        let r = request(&AccessPointsCollector, region).await;
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.host,
            format!("{ACCOUNT}.s3-control.{region}.{}", dns_suffix(region)),
            "{r:#?}"
        );
        assert_eq!(r.path, "/v20180820/accesspoint");
        assert_eq!(r.header("x-amz-account-id"), Some(ACCOUNT));
        assert!(r.uri.contains("maxResults=1000"), "{}", r.uri);
        assert_eq!(r.signed_region(), Some(region));
        assert!(r
            .header("authorization")
            .unwrap()
            .contains("/s3/aws4_request"));
    }
}
