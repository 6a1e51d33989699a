//! Member accounts from AWS Organizations: read at start-up and then on an interval,
//! from the management account or a delegated administrator. Each outcome goes to the
//! running configuration, which turns the accounts into targets (an assumed role in
//! each) and keeps the last good list when a discovery fails.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_organizations::types::{AccountState, AccountStatus, ChildType};
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::api::{
    pages, register_error_codes, with_page_cap, AwsService, ClientParts, CollectError,
};
use crate::aws::{self, AwsContext};
use crate::config::{
    partition_of, AccountConfig, AccountId, AccountName, AwsConfig, Config, NonEmpty,
    OrganizationConfig, Region, TagKey,
};
use crate::metrics::DiscoveryGauges;

/// One active member account as Organizations lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub id: String,
    pub name: String,
    /// Its tags, read only when the config selects or labels by tags.
    pub tags: BTreeMap<String, String>,
}

impl Member {
    /// The member as an account of the config: reached through `org`'s role.
    fn account(&self, org: &OrganizationConfig, partition: &str) -> AccountConfig {
        AccountConfig {
            account_id: Some(AccountId(self.id.clone())),
            role_arn: Some(org.role_name.arn(partition, &self.id)),
            external_id: org.external_id.clone(),
            session_name: org.session_name.clone(),
            name: Some(AccountName(self.name.clone())),
            tags: self.tags.clone(),
            ..AccountConfig::default()
        }
    }
}

/// Organizations, which the library calls itself.
struct Organizations;

impl AwsService for Organizations {
    type Client = aws_sdk_organizations::Client;
    const SERVICE_CODE: &'static str = "organizations";
    // What the runbook tells apart: not in an organization, a wrong OU, bad input.
    const ERROR_CODES: &'static [&'static str] = &[
        "AWSOrganizationsNotInUseException",
        "ParentNotFoundException",
        "TargetNotFoundException",
        "InvalidInputException",
    ];
    fn build(parts: ClientParts) -> Self::Client {
        register_error_codes(Self::ERROR_CODES);
        let config = aws_sdk_organizations::config::Builder::from(&parts.sdk)
            .interceptor(parts.interceptor)
            .http_client(parts.http_client)
            .build();
        aws_sdk_organizations::Client::from_conf(config)
    }
}

/// The region whose endpoint serves Organizations in a partition (it is global).
fn home_region(partition: &str) -> &'static str {
    match partition {
        "aws-cn" => "cn-northwest-1",
        "aws-us-gov" => "us-gov-west-1",
        _ => "us-east-1",
    }
}

/// OUs (and roots) read at most, so that a cycle or a server that invents children
/// ends the discovery; AWS allows 2,000 OUs in an organization.
const MAX_PARENTS: usize = 10_000;
/// Tag reads in flight at once (the rate limiter spaces them).
const TAG_READS: usize = 4;
/// After a failed discovery, the next comes this soon (or at the interval if sooner).
const RETRY: Duration = Duration::from_secs(60);

/// What a discovery depends on; a reload that changes none of it keeps the task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub org: OrganizationConfig,
    pub aws: AwsConfig,
    pub regions: Option<NonEmpty<Region>>,
    pub account_tags: Vec<TagKey>,
}

impl Settings {
    pub(crate) fn of(config: &Config) -> Option<Settings> {
        config.organization.as_ref().map(|org| Settings {
            org: org.clone(),
            aws: config.aws.clone(),
            regions: config.regions.clone(),
            account_tags: config.account_tags.clone(),
        })
    }
}

/// The partition the accounts of `config` are in: its first region's.
pub(crate) async fn partition(settings: &Settings) -> Result<&'static str, CollectError> {
    let region = match &settings.regions {
        Some(r) => r.0[0].0.clone(),
        None => {
            let base = aws::base_sdk(&settings.aws).await;
            base.region().map(|r| r.to_string()).ok_or_else(|| {
                CollectError::new(
                    "discovery",
                    "no_region",
                    "no AWS region: list regions in the config file, or set AWS_REGION",
                )
            })?
        }
    };
    Ok(partition_of(&region))
}

/// The accounts of `members`, each reached through the organization's role in the
/// partition of the config's regions.
pub(crate) async fn accounts(
    settings: &Settings,
    members: &[Member],
) -> Result<Vec<AccountConfig>, CollectError> {
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let partition = partition(settings).await?;
    Ok(members
        .iter()
        .map(|m| m.account(&settings.org, partition))
        .collect())
}

/// Reads the organization once: the active accounts `settings` selects, sorted by ID.
pub(crate) async fn discover(
    settings: &Settings,
    aws: &Arc<AwsContext>,
) -> Result<Vec<Member>, CollectError> {
    with_page_cap(settings.aws.max_pages.0, discover_capped(settings, aws)).await
}

async fn discover_capped(
    settings: &Settings,
    aws: &Arc<AwsContext>,
) -> Result<Vec<Member>, CollectError> {
    let org = &settings.org;
    let home = home_region(partition(settings).await?);
    let base = aws::base_sdk(&settings.aws).await;
    let (account, sdk) = match &org.role_arn {
        Some(arn) => (
            arn.account_id().to_string(),
            aws::assumed(aws, &base, home, arn, None, org.session_name.as_ref()),
        ),
        None => ("default".to_string(), aws::in_region(&base, home)),
    };
    let client = Organizations::build(aws.parts(
        sdk,
        &account,
        Organizations::SERVICE_CODE,
        "discovery",
        org.rate_limit.0,
    ));
    let listed = if org.organizational_units.is_empty() {
        list_accounts(&client).await?
    } else {
        let parents = org.organizational_units.iter().map(|p| p.0.clone());
        list_under(&client, parents.collect()).await?
    };
    let excluded: BTreeSet<&str> = org.exclude_accounts.iter().map(|a| a.0.as_str()).collect();
    let mut members: Vec<Member> = listed
        .into_values()
        .filter(|m| !excluded.contains(m.id.as_str()))
        .collect();
    if org.reads_tags(&settings.account_tags) {
        let client = &client;
        let tagged: Vec<(Member, BTreeMap<String, String>)> = stream::iter(members)
            .map(|m| async move { tags(client, &m.id).await.map(|t| (m, t)) })
            .buffered(TAG_READS)
            .try_collect()
            .await?;
        members = tagged
            .into_iter()
            .filter(|(_, t)| {
                org.require_tags
                    .iter()
                    .all(|(k, p)| t.get(&k.0).is_some_and(|v| p.matches(v)))
            })
            .map(|(m, t)| Member { tags: t, ..m })
            .collect();
    }
    Ok(members)
}

/// An account of a listing, if it is active and well formed.
fn member(a: &aws_sdk_organizations::types::Account) -> Option<Member> {
    // `State` replaces `Status` (which has no CLOSED); read it where AWS sends it.
    let active = match (a.state(), a.status()) {
        (Some(state), _) => *state == AccountState::Active,
        (None, Some(status)) => *status == AccountStatus::Active,
        (None, None) => false,
    };
    let id = a.id()?;
    if !active {
        return None;
    }
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
        tracing::warn!(
            account_id = id,
            "Organizations listed a malformed account ID; skipping it"
        );
        return None;
    }
    let name = a
        .name()
        .filter(|n| !n.is_empty() && n.chars().count() <= 128)
        .unwrap_or(id);
    Some(Member {
        id: id.to_string(),
        name: name.to_string(),
        tags: BTreeMap::new(),
    })
}

/// Every account of the organization (`ListAccounts`, pages of up to 20).
async fn list_accounts(
    client: &aws_sdk_organizations::Client,
) -> Result<BTreeMap<String, Member>, CollectError> {
    let mut found = BTreeMap::new();
    pages(
        "ListAccounts",
        |token| async move {
            client
                .list_accounts()
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| CollectError::from_sdk("ListAccounts", &e))
        },
        |page| {
            for m in page.accounts().iter().filter_map(member) {
                found.insert(m.id.clone(), m);
            }
            Ok(page.next_token)
        },
    )
    .await?;
    Ok(found)
}

/// The accounts under `parents`, at any depth (`ListAccountsForParent` and
/// `ListChildren`, pages of up to 20).
async fn list_under(
    client: &aws_sdk_organizations::Client,
    parents: Vec<String>,
) -> Result<BTreeMap<String, Member>, CollectError> {
    let mut found = BTreeMap::new();
    let mut queue: VecDeque<String> = parents.into();
    let mut seen = BTreeSet::new();
    while let Some(parent) = queue.pop_front() {
        if !seen.insert(parent.clone()) {
            continue;
        }
        if seen.len() > MAX_PARENTS {
            return Err(CollectError::malformed(
                "ListChildren",
                format!("more than {MAX_PARENTS} organizational units"),
            ));
        }
        let p = parent.as_str();
        pages(
            "ListAccountsForParent",
            |token| async move {
                client
                    .list_accounts_for_parent()
                    .parent_id(p)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| CollectError::from_sdk("ListAccountsForParent", &e))
            },
            |page| {
                for m in page.accounts().iter().filter_map(member) {
                    found.insert(m.id.clone(), m);
                }
                Ok(page.next_token)
            },
        )
        .await?;
        pages(
            "ListChildren",
            |token| async move {
                client
                    .list_children()
                    .parent_id(p)
                    .child_type(ChildType::OrganizationalUnit)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| CollectError::from_sdk("ListChildren", &e))
            },
            |page| {
                queue.extend(
                    page.children()
                        .iter()
                        .filter_map(|c| c.id().map(String::from)),
                );
                Ok(page.next_token)
            },
        )
        .await?;
    }
    Ok(found)
}

/// An account's tags (`ListTagsForResource`).
async fn tags(
    client: &aws_sdk_organizations::Client,
    account: &str,
) -> Result<BTreeMap<String, String>, CollectError> {
    let mut out = BTreeMap::new();
    pages(
        "ListTagsForResource",
        |token| async move {
            client
                .list_tags_for_resource()
                .resource_id(account)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| CollectError::from_sdk("ListTagsForResource", &e))
        },
        |page| {
            for t in page.tags() {
                out.insert(t.key().to_string(), t.value().to_string());
            }
            Ok(page.next_token)
        },
    )
    .await?;
    Ok(out)
}

/// A discovery's outcome: the accounts, or `None` when it failed (the last good list
/// stays).
pub(crate) type Outcome = Option<Vec<Member>>;

/// Discovers at once and then every interval (sooner again after a failure), sending
/// each outcome to `tx`, until the returned task is aborted.
pub(crate) fn spawn(
    settings: Settings,
    aws: Arc<AwsContext>,
    gauges: DiscoveryGauges,
    tx: mpsc::Sender<Outcome>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let interval = settings.org.discovery_interval.0;
        // Bounded, and never shorter than a large organization's tag reads need.
        let timeout = interval.max(Duration::from_secs(600));
        let mut failing = false;
        loop {
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, discover(&settings, &aws)).await {
                Ok(r) => r,
                Err(_) => Err(CollectError::new(
                    "discovery",
                    "timeout",
                    format!("discovery took longer than {}s", timeout.as_secs()),
                )),
            };
            let took = started.elapsed();
            let next = match result {
                Ok(members) => {
                    gauges.succeeded(members.len(), took, SystemTime::now());
                    if std::mem::take(&mut failing) {
                        tracing::info!("account discovery recovered");
                    }
                    tracing::debug!(
                        accounts = members.len(),
                        seconds = took.as_secs_f64(),
                        "accounts discovered"
                    );
                    if tx.send(Some(members)).await.is_err() {
                        return;
                    }
                    interval
                }
                Err(e) => {
                    gauges.failed(took);
                    tracing::warn!(
                        error_code = e.code, error = %e,
                        "account discovery failed; keeping the last discovered accounts"
                    );
                    failing = true;
                    if tx.send(None).await.is_err() {
                        return;
                    }
                    interval.min(RETRY)
                }
            };
            tokio::time::sleep_until(started + next).await;
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use aws_sdk_organizations::types::Account;

    use super::*;

    fn account(id: &str, state: Option<AccountState>, status: Option<AccountStatus>) -> Account {
        Account::builder()
            .id(id)
            .name("prod-payments")
            .set_state(state)
            .set_status(status)
            .build()
    }

    #[test]
    fn only_active_well_formed_accounts_are_members() {
        let id = "210987654321";
        let active = member(&account(
            id,
            Some(AccountState::Active),
            Some(AccountStatus::Active),
        ));
        assert_eq!(active.expect("active").name, "prod-payments");
        // State wins where AWS sends it: a closed account still says SUSPENDED in Status.
        for state in [
            AccountState::Suspended,
            AccountState::PendingClosure,
            AccountState::Closed,
            AccountState::PendingActivation,
        ] {
            assert_eq!(
                member(&account(
                    id,
                    Some(state.clone()),
                    Some(AccountStatus::Active)
                )),
                None,
                "{state:?}"
            );
        }
        // Only Status (older responses).
        assert!(member(&account(id, None, Some(AccountStatus::Active))).is_some());
        assert!(member(&account(id, None, Some(AccountStatus::Suspended))).is_none());
        assert!(
            member(&account(id, None, None)).is_none(),
            "neither: not known to be active"
        );
        assert!(member(&account("12", Some(AccountState::Active), None)).is_none());
        // No name: the ID.
        let nameless = Account::builder()
            .id(id)
            .state(AccountState::Active)
            .build();
        assert_eq!(member(&nameless).expect("member").name, id);
    }

    #[test]
    fn organizations_is_called_in_its_partition_s_home_region() {
        assert_eq!(home_region("aws"), "us-east-1");
        assert_eq!(home_region("aws-cn"), "cn-northwest-1");
        assert_eq!(home_region("aws-us-gov"), "us-gov-west-1");
    }
}
