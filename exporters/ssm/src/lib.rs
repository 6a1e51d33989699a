//! Systems Manager Parameter Store: how many standard and advanced parameters an
//! account has in a region, against the 10,000 standard and 100,000 advanced allowed.

use aws_sdk_ssm::types::ParameterTier;
use headroom_common::{async_trait, CollectError, Collected, Collector, QuotaSpec, Target, Usage};

/// Service Quotas lists no quota code for the parameter counts (only for the value
/// sizes), so these use our own stable names and the documented defaults; neither is
/// adjustable.
pub const STANDARD: QuotaSpec = QuotaSpec {
    service_code: "ssm",
    quota_code: "standard_parameters",
    quota_name: "Standard parameters",
    builtin_limit: 10_000.0,
    adjustable: false,
    in_service_quotas: false,
    resource_level: false,
};

pub const ADVANCED: QuotaSpec = QuotaSpec {
    service_code: "ssm",
    quota_code: "advanced_parameters",
    quota_name: "Advanced parameters",
    builtin_limit: 100_000.0,
    adjustable: false,
    in_service_quotas: false,
    resource_level: false,
};

const QUOTAS: &[QuotaSpec] = &[STANDARD, ADVANCED];

/// DescribeParameters' largest page; AWS rejects more.
pub const PAGE_SIZE: i32 = 50;

/// A bound on pages per refresh, far above any real account (100,000 advanced plus
/// 10,000 standard parameters is 2,200 full pages), so a server that keeps returning
/// tokens cannot keep a refresh going forever.
const MAX_PAGES: usize = 20_000;

#[derive(Debug, Default)]
pub struct ParametersCollector;

#[async_trait]
impl Collector for ParametersCollector {
    fn name(&self) -> &'static str {
        "ssm_parameters"
    }

    fn quotas(&self) -> &'static [QuotaSpec] {
        QUOTAS
    }

    async fn collect(&self, target: &Target) -> Result<Collected, CollectError> {
        const OP: &str = "DescribeParameters";
        let client: aws_sdk_ssm::Client = target.client();
        let (mut standard, mut advanced) = (0u64, 0u64);
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            // Only the account's own parameters count against its quota: `Shared` stays
            // unset, so parameters shared with the account are not listed.
            let page = client
                .describe_parameters()
                .max_results(PAGE_SIZE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| CollectError::from_sdk(OP, &e))?;
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
            // Pages may be short, even empty, and still carry a token.
            match page.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => {
                    return Ok(vec![
                        Usage::new(&STANDARD, standard as f64),
                        Usage::new(&ADVANCED, advanced as f64),
                    ]
                    .into())
                }
            }
        }
        Err(CollectError::malformed(
            OP,
            format!("still paging after {MAX_PAGES} pages"),
        ))
    }
}
