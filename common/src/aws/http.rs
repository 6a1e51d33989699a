//! The HTTP client under every AWS client: the SDK's usual HTTPS client, behind the
//! rate limiter of the client's account, region and service.

use std::sync::Arc;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use super::counting::SendProbe;
use crate::ratelimit::RateLimiter;

/// The SDK's usual HTTPS client (hyper 1 with rustls), made here so that every client
/// can be wrapped with the rate limiter.
pub(super) fn default_http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https()
}

/// Waits for the rate limiter before every attempt (retries included).
#[derive(Debug)]
pub(super) struct RateLimitedHttpClient {
    pub(super) inner: SharedHttpClient,
    pub(super) limiter: Arc<RateLimiter>,
}

impl HttpClient for RateLimitedHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(RateLimitedConnector {
            inner: self.inner.http_connector(settings, components),
            limiter: self.limiter.clone(),
        })
    }
}

#[derive(Debug)]
struct RateLimitedConnector {
    inner: SharedHttpConnector,
    limiter: Arc<RateLimiter>,
}

impl HttpConnector for RateLimitedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        let limiter = self.limiter.clone();
        HttpConnectorFuture::new(async move {
            limiter.acquire().await;
            if let Some(probe) = request.extension::<SendProbe>() {
                probe.mark_sent();
            }
            inner.call(request).await
        })
    }
}
