//! Systems Manager Parameter Store: how many standard and advanced parameters an
//! account has in a region, against the 10,000 standard and 100,000 advanced allowed.

use aws_sdk_ssm::types::ParameterTier;
use headroom_common::{
    async_trait, pages, AwsService, ClientParts, CollectError, Collected, Collector, QuotaSpec,
    Target, Usage,
};

/// Service Quotas lists no quota code for the parameter counts (only for the value
/// sizes), so these use our own stable names and the documented defaults; neither is
/// adjustable.
pub const STANDARD: QuotaSpec = QuotaSpec::documented(
    "ssm",
    "standard_parameters",
    "Standard parameters",
    10_000.0,
);
pub const ADVANCED: QuotaSpec = QuotaSpec::documented(
    "ssm",
    "advanced_parameters",
    "Advanced parameters",
    100_000.0,
);

/// DescribeParameters' largest page; AWS rejects more.
pub const PAGE_SIZE: i32 = 50;

/// AWS Systems Manager, for [`Target::client`].
pub struct Ssm;

impl AwsService for Ssm {
    type Client = aws_sdk_ssm::Client;
    const SERVICE_CODE: &'static str = "ssm";
    const ERROR_CODES: &'static [&'static str] = &[
        "InvalidFilterKey",
        "InvalidFilterOption",
        "InvalidFilterValue",
        "ParameterLimitExceeded",
    ];
    fn build(parts: ClientParts) -> Self::Client {
        let config = aws_sdk_ssm::config::Builder::from(&parts.sdk)
            .interceptor(parts.interceptor)
            .http_client(parts.http_client)
            .build();
        aws_sdk_ssm::Client::from_conf(config)
    }
}

#[derive(Debug, Default)]
pub struct ParametersCollector;

#[async_trait]
impl Collector for ParametersCollector {
    fn name(&self) -> &'static str {
        "ssm_parameters"
    }

    fn quotas(&self) -> Vec<QuotaSpec> {
        vec![STANDARD, ADVANCED]
    }

    async fn collect(&self, target: &Target) -> Result<Collected, CollectError> {
        let client: aws_sdk_ssm::Client = target.client::<Ssm>();
        let (standard, advanced) = count_parameters(&client).await?;
        Ok(vec![
            Usage::new(&STANDARD, standard as f64),
            Usage::new(&ADVANCED, advanced as f64),
        ]
        .into())
    }
}

/// (standard, advanced) parameters, counted by tier as the pages of DescribeParameters
/// arrive, keeping no names in memory.
pub async fn count_parameters(client: &aws_sdk_ssm::Client) -> Result<(u64, u64), CollectError> {
    const OP: &str = "DescribeParameters";
    let (mut standard, mut advanced) = (0u64, 0u64);
    pages(
        OP,
        // Only the account's own parameters count against its quota: `Shared` stays
        // unset, so parameters shared with the account are not listed.
        |token| async move {
            client
                .describe_parameters()
                .max_results(PAGE_SIZE)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| CollectError::from_sdk(OP, &e))
        },
        |page| {
            for p in page.parameters() {
                match p.tier() {
                    // Parameters from before tiers existed carry no tier: they are standard.
                    Some(ParameterTier::Standard) | None => standard += 1,
                    Some(ParameterTier::Advanced) => advanced += 1,
                    Some(other) => {
                        return Err(CollectError::malformed(
                            OP,
                            format!("unexpected parameter tier {:?}", other.as_str()),
                        ))
                    }
                }
            }
            Ok(page.next_token)
        },
    )
    .await?;
    Ok((standard, advanced))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use aws_sdk_ssm::operation::describe_parameters::DescribeParametersOutput;
    use aws_sdk_ssm::types::ParameterMetadata;
    use aws_sdk_ssm::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    use super::*;

    fn parameter(tier: Option<ParameterTier>) -> ParameterMetadata {
        ParameterMetadata::builder()
            .name("/p")
            .set_tier(tier)
            .build()
    }

    #[tokio::test]
    async fn counts_by_tier_across_pages_and_an_untiered_parameter_as_standard() {
        let first = mock!(Client::describe_parameters)
            .match_requests(|r| r.next_token().is_none() && r.max_results() == Some(PAGE_SIZE))
            .then_output(|| {
                DescribeParametersOutput::builder()
                    .parameters(parameter(Some(ParameterTier::Standard)))
                    .parameters(parameter(None))
                    .parameters(parameter(Some(ParameterTier::Advanced)))
                    .next_token("page-2")
                    .build()
            });
        // A short, empty page that still carries a token, then the last page.
        let empty = mock!(Client::describe_parameters)
            .match_requests(|r| r.next_token() == Some("page-2"))
            .then_output(|| {
                DescribeParametersOutput::builder()
                    .next_token("page-3")
                    .build()
            });
        let last = mock!(Client::describe_parameters)
            .match_requests(|r| r.next_token() == Some("page-3"))
            .then_output(|| {
                DescribeParametersOutput::builder()
                    .parameters(parameter(Some(ParameterTier::Standard)))
                    .build()
            });
        let client = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&first, &empty, &last]);
        assert_eq!(count_parameters(&client).await.expect("counted"), (3, 1));
        assert_eq!(
            (first.num_calls(), empty.num_calls(), last.num_calls()),
            (1, 1, 1)
        );
    }

    #[tokio::test]
    async fn an_unknown_tier_fails_the_refresh_instead_of_counting_wrong() {
        let page = mock!(Client::describe_parameters).then_output(|| {
            DescribeParametersOutput::builder()
                .parameters(parameter(Some(ParameterTier::from("Premium"))))
                .build()
        });
        let client = mock_client!(aws_sdk_ssm, [&page]);
        let e = count_parameters(&client).await.expect_err("unknown tier");
        assert_eq!(e.code, "malformed_response");
        assert!(e.message.contains("Premium"), "{e}");
    }
}
