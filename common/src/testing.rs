//! For exporters' tests (feature `test-util`): clients built as production builds them,
//! with no endpoint override, whose requests are recorded and answered by the test
//! instead of being sent, so a test can assert the method, host, path and headers an
//! exporter would send to real AWS in any region and partition.

use std::fmt;
use std::sync::{Arc, Mutex};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use aws_types::region::Region;
use aws_types::SdkConfig;

use crate::api::{ClientParts, ClientSource};

/// One request a client would have sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: String,
    /// The whole URI: scheme, host, path and query.
    pub uri: String,
    pub host: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    /// The value of a header, if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The region the request is signed for (SigV4's credential scope).
    pub fn signed_region(&self) -> Option<&str> {
        let auth = self.header("authorization")?;
        let scope = auth.split("Credential=").nth(1)?;
        scope.split('/').nth(2)
    }
}

/// The DNS suffix of AWS endpoints in `region`'s partition.
pub fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

/// What answers a recorded request: its status, content type and body.
pub type Answer = dyn Fn(&Recorded) -> (u16, &'static str, Vec<u8>) + Send + Sync;

/// A [`ClientSource`] whose clients are built from a production-like SDK configuration
/// (the region, static credentials, no endpoint override) and record every request.
#[derive(Clone)]
pub struct RecordingClients {
    requests: Arc<Mutex<Vec<Recorded>>>,
    answer: Arc<Answer>,
}

impl fmt::Debug for RecordingClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingClients").finish_non_exhaustive()
    }
}

impl RecordingClients {
    pub fn new(
        answer: impl Fn(&Recorded) -> (u16, &'static str, Vec<u8>) + Send + Sync + 'static,
    ) -> Self {
        RecordingClients {
            requests: Arc::new(Mutex::new(Vec::new())),
            answer: Arc::new(answer),
        }
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        match self.requests.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

#[derive(Debug)]
struct NoOp;

impl Intercept for NoOp {
    fn name(&self) -> &'static str {
        "headroom-test-no-op"
    }
    fn read_before_transmit(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        Ok(())
    }
}

impl ClientSource for RecordingClients {
    fn parts(&self, _service_code: &'static str, region: &str) -> ClientParts {
        let (requests, answer) = (self.requests.clone(), self.answer.clone());
        let http_client = aws_smithy_http_client::test_util::infallible_client_fn(move |req| {
            let uri = req.uri();
            let recorded = Recorded {
                method: req.method().to_string(),
                uri: uri.to_string(),
                host: uri.host().unwrap_or_default().to_string(),
                path: uri.path().to_string(),
                headers: req
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_ascii_lowercase(),
                            v.to_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
            };
            let (status, content_type, body) = answer(&recorded);
            match requests.lock() {
                Ok(mut g) => g.push(recorded),
                Err(p) => p.into_inner().push(recorded),
            }
            let mut response = http::Response::builder()
                .status(status)
                .header("content-type", content_type);
            if content_type == "application/cbor" {
                // Smithy RPC v2 CBOR (CloudWatch) names its protocol in every response.
                response = response.header("smithy-protocol", "rpc-v2-cbor");
            }
            response
                .body(SdkBody::from(body))
                .unwrap_or_else(|_| http::Response::new(SdkBody::empty()))
        });
        let sdk = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDTEST",
                "secret",
                None,
                None,
                "headroom-test",
            )))
            .http_client(http_client)
            .sleep_impl(
                aws_smithy_async::rt::sleep::default_async_sleep().unwrap_or_else(|| {
                    aws_smithy_async::rt::sleep::SharedAsyncSleep::new(
                        aws_smithy_async::rt::sleep::TokioSleep::new(),
                    )
                }),
            )
            .time_source(aws_smithy_async::time::SharedTimeSource::default())
            .build();
        ClientParts {
            http_client: sdk
                .http_client()
                .unwrap_or_else(|| unreachable!("set above")),
            sdk,
            interceptor: SharedInterceptor::new(NoOp),
        }
    }
}
