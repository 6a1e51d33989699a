//! Credentials: STS AssumeRole for an account reached through a role, and STS
//! GetCallerIdentity for the default credentials' account.

use std::time::{Duration, SystemTime};

use aws_config::identity::IdentityCache;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials};
use aws_credential_types::Credentials;

use crate::api::{AwsService, ClientParts, CollectError};

/// STS, which the library calls itself.
pub(super) struct Sts;

impl AwsService for Sts {
    type Client = aws_sdk_sts::Client;
    const SERVICE_CODE: &'static str = "sts";
    fn build(parts: ClientParts) -> Self::Client {
        let config = aws_sdk_sts::config::Builder::from(&parts.sdk)
            .interceptor(parts.interceptor)
            .http_client(parts.http_client)
            .build();
        aws_sdk_sts::Client::from_conf(config)
    }
}

/// Credentials from STS AssumeRole through a counted, rate-limited client. The
/// identity cache in front of it asks again before they expire.
#[derive(Debug)]
pub(super) struct AssumeRoleCredentials {
    pub(super) sts: aws_sdk_sts::Client,
    pub(super) role_arn: String,
    pub(super) external_id: Option<String>,
    pub(super) session_name: String,
}

impl AssumeRoleCredentials {
    async fn assume(&self) -> Result<Credentials, CredentialsError> {
        let out = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .set_external_id(self.external_id.clone())
            .send()
            .await
            .map_err(|e| {
                let e = CollectError::from_sdk("AssumeRole", &e);
                CredentialsError::provider_error(format!("assuming {}: {e}", self.role_arn))
            })?;
        let c = out.credentials.ok_or_else(|| {
            CredentialsError::provider_error("AssumeRole returned no credentials")
        })?;
        let expiry = SystemTime::try_from(c.expiration).ok();
        Ok(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            expiry,
            "headroom-assume-role",
        ))
    }
}

impl ProvideCredentials for AssumeRoleCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.assume())
    }
}

/// Refreshes credentials five minutes before they expire.
pub(super) fn identity_cache() -> aws_smithy_runtime_api::client::identity::SharedIdentityCache {
    IdentityCache::lazy()
        .buffer_time(Duration::from_secs(300))
        .build()
}

/// The account of the default credentials.
pub(super) async fn caller_account(sts: &aws_sdk_sts::Client) -> Result<String, CollectError> {
    let out = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| CollectError::from_sdk("GetCallerIdentity", &e))?;
    out.account
        .ok_or_else(|| CollectError::malformed("GetCallerIdentity", "no Account in the response"))
}
