//! The YAML configuration file: targets (accounts and regions) and per-collector
//! settings. Values are validated while they are parsed, so the parser's error names
//! the key and the line; checks that need the whole file name the key.

mod ids;
mod pattern;
mod thresholds;
mod values;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::api::{Collector, Defaults, QuotaSpec};

pub(crate) use ids::{
    AccountId, AccountName, ExternalId, ParentId, Region, RoleArn, RoleName, SessionName,
    SourceName, TagKey,
};
pub(crate) use pattern::Pattern;
pub(crate) use thresholds::{Policy, ThresholdMap};
pub(crate) use values::{
    format_duration, Attempts, Concurrency, Dur, LimitValue, NonEmpty, PageCap, Rate, Ratio,
};
pub(crate) use yaml::{parse_yaml, read_bounded};

/// A configuration error: which file, and what is wrong (the message names the key).
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub(crate) struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Accounts to cover; default: one account, the default credential chain.
    #[serde(default)]
    pub accounts: Option<NonEmpty<AccountConfig>>,
    /// Regions to cover in every account; default: the default region chain.
    #[serde(default)]
    pub regions: Option<NonEmpty<Region>>,
    /// Settings per collector, keyed by collector name, as the file writes them.
    #[serde(default)]
    pub collectors: BTreeMap<String, CollectorEntry>,
    /// Every known collector's settings, defaults filled in (after parsing).
    #[serde(skip)]
    resolved: BTreeMap<String, CollectorConfig>,
    /// How AWS calls are retried and timed out.
    #[serde(default)]
    pub aws: AwsConfig,
    /// Member accounts discovered with AWS Organizations, besides (or instead of) the
    /// listed ones.
    #[serde(default)]
    pub organization: Option<OrganizationConfig>,
    /// Account tags shown as labels of `aws_quota_account_info` (`team`: `tag_team`).
    #[serde(default)]
    pub account_tags: Vec<TagKey>,
}

/// At most this many account tags become labels: every series of
/// `aws_quota_account_info` carries each of them.
pub(crate) const MAX_ACCOUNT_TAGS: usize = 10;

/// Discovery of member accounts with AWS Organizations, from the management account or
/// a delegated administrator.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrganizationConfig {
    /// The role assumed in every discovered account.
    pub role_name: RoleName,
    #[serde(default)]
    pub external_id: Option<ExternalId>,
    #[serde(default)]
    pub session_name: Option<SessionName>,
    /// Only the accounts under these OUs or roots, at any depth; default: every account
    /// of the organization.
    #[serde(default)]
    pub organizational_units: Vec<ParentId>,
    /// Never these accounts.
    #[serde(default)]
    pub exclude_accounts: Vec<AccountId>,
    /// Only accounts with every one of these tags, by key, with a value that matches
    /// the pattern (`*` any value).
    #[serde(default)]
    pub require_tags: BTreeMap<TagKey, Pattern>,
    /// How often the organization is read again.
    #[serde(default = "OrganizationConfig::default_interval")]
    pub discovery_interval: Dur,
    /// A role to assume for the Organizations calls (in the management account or a
    /// delegated administrator); default: the base credentials.
    #[serde(default)]
    pub role_arn: Option<RoleArn>,
    /// Organizations requests per second.
    #[serde(default = "OrganizationConfig::default_rate")]
    pub rate_limit: Rate,
}

impl OrganizationConfig {
    fn default_interval() -> Dur {
        Dur(Duration::from_secs(3600))
    }

    fn default_rate() -> Rate {
        Rate(5.0)
    }

    /// Whether discovery reads each account's tags (to select accounts or label them).
    pub(crate) fn reads_tags(&self, account_tags: &[TagKey]) -> bool {
        !self.require_tags.is_empty() || !account_tags.is_empty()
    }
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountConfig {
    /// The 12-digit account ID; default: from the role ARN, else STS GetCallerIdentity.
    #[serde(default)]
    pub account_id: Option<AccountId>,
    /// A role to assume in the account; default: use the base credentials as they are.
    #[serde(default)]
    pub role_arn: Option<RoleArn>,
    #[serde(default)]
    pub external_id: Option<ExternalId>,
    #[serde(default)]
    pub session_name: Option<SessionName>,
    /// Limit overrides for this account only, by quota code; they win over the
    /// collector-wide ones.
    #[serde(default)]
    pub limit_overrides: BTreeMap<String, LimitValue>,
    /// Alert thresholds for this account only, by quota code; they win over the
    /// collector-wide ones.
    #[serde(default)]
    pub alert_thresholds: ThresholdMap,
    /// Where every collector with a choice reads this account's usage from; wins over
    /// the collector's own `usage_source`.
    #[serde(default)]
    pub usage_source: Option<SourceName>,
    /// The account's name on `aws_quota_account_info`; default: from Organizations
    /// when discovered, else the ID.
    #[serde(default)]
    pub name: Option<AccountName>,
    /// The account's tags, for the labels `account_tags` selects.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl AccountConfig {
    /// What a refresh of the account depends on: its name and tags only label it.
    pub(crate) fn for_refresh(&self) -> AccountConfig {
        AccountConfig {
            name: None,
            tags: BTreeMap::new(),
            ..self.clone()
        }
    }
}

/// One collector's settings as the file writes them: a key left out takes the
/// collector's own default (see [`Known::defaults`]). The per-resource keys are
/// `Option`s so that a collector that counts no resources can refuse them when set.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CollectorEntry {
    pub enabled: Option<bool>,
    pub refresh_interval: Option<Dur>,
    pub limits_refresh_interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub max_staleness: Option<Dur>,
    pub rate_limit: Option<Rate>,
    pub limit_overrides: BTreeMap<String, LimitValue>,
    pub alert_thresholds: ThresholdMap,
    pub include: Option<Vec<Pattern>>,
    pub exclude: Option<Vec<Pattern>>,
    pub min_usage_ratio: Option<Ratio>,
    pub concurrency: Option<Concurrency>,
    pub services: Option<Selection>,
    pub quotas: Option<Selection>,
    pub usage_source: Option<SourceName>,
}

/// Which discovered quotas a collector reports: by service code or by quota code.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Selection {
    /// Only these (patterns, `*` and `?`); empty means all.
    pub include: Vec<Pattern>,
    /// Never these.
    pub exclude: Vec<Pattern>,
}

impl Selection {
    pub(crate) fn wants(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(name)))
            && !self.exclude.iter().any(|p| p.matches(name))
    }
}

impl CollectorEntry {
    /// These settings over `defaults`.
    fn over(&self, defaults: &Defaults) -> CollectorConfig {
        let d = CollectorConfig::from(*defaults);
        CollectorConfig {
            enabled: self.enabled.or(d.enabled),
            refresh_interval: self.refresh_interval.unwrap_or(d.refresh_interval),
            limits_refresh_interval: self
                .limits_refresh_interval
                .unwrap_or(d.limits_refresh_interval),
            timeout: self.timeout.unwrap_or(d.timeout),
            max_staleness: self.max_staleness.unwrap_or(d.max_staleness),
            rate_limit: self.rate_limit.unwrap_or(d.rate_limit),
            limit_overrides: self.limit_overrides.clone(),
            alert_thresholds: self.alert_thresholds.clone(),
            include: self.include.clone().unwrap_or_default(),
            exclude: self.exclude.clone().unwrap_or_default(),
            min_usage_ratio: self.min_usage_ratio.unwrap_or(d.min_usage_ratio),
            concurrency: self.concurrency.unwrap_or(d.concurrency),
            services: self.services.clone().unwrap_or_default(),
            quotas: self.quotas.clone().unwrap_or_default(),
            usage_source: self.usage_source.as_ref().map(|s| s.0.clone()),
        }
    }

    /// The per-resource keys this entry sets, by name.
    fn resource_keys(&self) -> Vec<&'static str> {
        [
            ("include", self.include.is_some()),
            ("exclude", self.exclude.is_some()),
            ("min_usage_ratio", self.min_usage_ratio.is_some()),
            ("concurrency", self.concurrency.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }
}

/// One collector's settings, its defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CollectorConfig {
    /// Run this collector; default: yes, except for optional ones.
    pub enabled: Option<bool>,
    pub refresh_interval: Dur,
    pub limits_refresh_interval: Dur,
    pub timeout: Dur,
    pub max_staleness: Dur,
    /// AWS API requests per second, shared per account, region and service.
    pub rate_limit: Rate,
    /// Limit overrides by quota code, for every account.
    pub limit_overrides: BTreeMap<String, LimitValue>,
    /// Alert thresholds by quota code, for every account.
    pub alert_thresholds: ThresholdMap,
    /// Per-resource collectors: only resources whose name matches one of these
    /// patterns (`*` any run of characters, `?` one); empty means all.
    pub include: Vec<Pattern>,
    /// Per-resource collectors: skip resources whose name matches one of these.
    pub exclude: Vec<Pattern>,
    /// Per-resource quotas: series below this usage ratio are not exported.
    pub min_usage_ratio: Ratio,
    /// Per-resource collectors: how many resources are counted at once.
    pub concurrency: Concurrency,
    /// Collectors that discover quotas: which services and quota codes they report.
    pub services: Selection,
    pub quotas: Selection,
    /// Collectors with a choice of usage source: the one set for every account (an
    /// account's own wins); `None`, the collector's default.
    pub usage_source: Option<String>,
}

/// A collector's defaults (see `Collector::defaults`), nothing set by the file.
impl From<Defaults> for CollectorConfig {
    fn from(d: Defaults) -> Self {
        CollectorConfig {
            enabled: None,
            refresh_interval: Dur(d.refresh_interval),
            limits_refresh_interval: Dur(d.limits_refresh_interval),
            timeout: Dur(d.timeout),
            max_staleness: Dur(d.max_staleness),
            rate_limit: Rate(d.rate_limit),
            limit_overrides: BTreeMap::new(),
            alert_thresholds: ThresholdMap::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            min_usage_ratio: Ratio(d.min_usage_ratio),
            concurrency: Concurrency(d.concurrency),
            services: Selection::default(),
            quotas: Selection::default(),
            usage_source: None,
        }
    }
}

/// The library's defaults.
impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig::from(Defaults::LIBRARY)
    }
}

/// What the config needs to know of one collector of the exporter.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub name: &'static str,
    pub quotas: Vec<QuotaSpec>,
    /// The settings a key left out of the file takes.
    pub defaults: Defaults,
    /// Whether the per-resource keys apply.
    pub per_resource: bool,
    /// Whether it discovers its quotas (filters apply; any quota code may be named).
    pub discovers: bool,
    /// The usage sources `usage_source` may name; empty, no choice.
    pub usage_sources: &'static [&'static str],
}

impl Known {
    /// A collector with the library's default settings, counting no single resources.
    #[cfg(test)]
    pub(crate) fn new(name: &'static str, quotas: &[QuotaSpec]) -> Self {
        Known {
            name,
            quotas: quotas.to_vec(),
            defaults: Defaults::LIBRARY,
            per_resource: false,
            discovers: false,
            usage_sources: &[],
        }
    }

    /// What the config needs to know of `collector`.
    pub(crate) fn of(collector: &dyn Collector) -> Self {
        Known {
            name: collector.name(),
            quotas: collector.quotas(),
            defaults: collector.defaults(),
            per_resource: collector.per_resource(),
            discovers: collector.discovers_quotas(),
            usage_sources: collector.usage_sources(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AwsConfig {
    /// Attempts per request, the first included (retries on throttling and 5xx).
    pub max_attempts: Attempts,
    /// The first retry's backoff; later ones grow exponentially, with jitter.
    pub initial_backoff: Dur,
    /// One attempt's time limit.
    pub attempt_timeout: Dur,
    /// Pages per listing at most: a listing still handing out tokens after that many
    /// pages fails the refresh instead of running on.
    pub max_pages: PageCap,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            max_attempts: Attempts(5),
            initial_backoff: Dur(Duration::from_secs(1)),
            attempt_timeout: Dur(Duration::from_secs(30)),
            max_pages: PageCap(crate::api::MAX_PAGES),
        }
    }
}

impl Config {
    /// Reads and validates a file against the collectors of one exporter.
    pub(crate) fn load(path: &Path, known: &[Known]) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            file: path.to_path_buf(),
            message,
        };
        let text = read_bounded(path).map_err(err)?;
        Config::parse(&text, known).map_err(err)
    }

    /// Parses and validates YAML text; the error message names the key.
    /// An empty text gives every default.
    pub(crate) fn parse(text: &str, known: &[Known]) -> Result<Config, String> {
        let mut config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            parse_yaml(text)?
        };
        config.validate(known)?;
        config.resolved = known
            .iter()
            .map(|k| {
                let entry = config.collectors.get(k.name).cloned().unwrap_or_default();
                (k.name.to_string(), entry.over(&k.defaults))
            })
            .collect();
        Ok(config)
    }

    fn validate(&self, known: &[Known]) -> Result<(), String> {
        for (name, entry) in &self.collectors {
            let Some(k) = known.iter().find(|k| k.name == name) else {
                let names: Vec<&str> = known.iter().map(|k| k.name).collect();
                return Err(format!(
                    "collectors.{name}: unknown collector, expected one of: {}",
                    names.join(", ")
                ));
            };
            let (c, specs) = (entry.over(&k.defaults), &k.quotas);
            let key = format!("collectors.{name}");
            // Settings belong to the collector that uses them.
            let resource_keys: Vec<&str> = entry
                .resource_keys()
                .into_iter()
                .filter(|k2| !(k.discovers && *k2 == "min_usage_ratio"))
                .collect();
            if let (false, Some(first)) = (k.per_resource, resource_keys.first()) {
                return Err(format!(
                    "{key}.{first}: {name} counts no single resources, so it takes no {first} (only per-resource collectors do)"
                ));
            }
            for (set, filter) in [
                (entry.services.is_some(), "services"),
                (entry.quotas.is_some(), "quotas"),
            ] {
                if set && !k.discovers {
                    return Err(format!(
                        "{key}.{filter}: {name} reports a fixed list of quotas, so it takes no {filter} filter (only collectors that discover quotas do)"
                    ));
                }
            }
            if let Some(source) = &entry.usage_source {
                check_usage_source(&format!("{key}.usage_source"), &source.0, k)?;
            }
            // A value left out is the collector's default: say so, so that the user
            // knows which key to add.
            let shown = |set: bool, d: &Dur| {
                if set {
                    d.to_string()
                } else {
                    format!("{d} (the collector's default)")
                }
            };
            let interval = shown(entry.refresh_interval.is_some(), &c.refresh_interval);
            if c.timeout.0 > c.refresh_interval.0 {
                return Err(format!(
                    "{key}.timeout: {} is longer than refresh_interval ({interval})",
                    shown(entry.timeout.is_some(), &c.timeout)
                ));
            }
            if c.max_staleness.0 < c.refresh_interval.0 {
                return Err(format!(
                    "{key}.max_staleness: {} is shorter than refresh_interval ({interval}), so every sample would be dropped",
                    shown(entry.max_staleness.is_some(), &c.max_staleness)
                ));
            }
            let slowest_wait = 1.0 / c.rate_limit.0;
            if slowest_wait >= self.aws.attempt_timeout.0.as_secs_f64() {
                return Err(format!(
                    "{key}.rate_limit: at {} requests per second a request may wait {slowest_wait:.0}s for its turn, longer than aws.attempt_timeout ({})",
                    c.rate_limit.0, self.aws.attempt_timeout
                ));
            }
            // A collector that discovers its quotas may be given any quota code.
            if !k.discovers {
                check_overrides(&format!("{key}.limit_overrides"), &c.limit_overrides, specs)?;
            }
            thresholds::check(
                &format!("{key}.alert_thresholds"),
                &c.alert_thresholds,
                None,
                specs,
                k.discovers,
            )?;
        }
        // Every collector's thresholds, under which an account's apply.
        let collector_thresholds: ThresholdMap = self
            .collectors
            .values()
            .flat_map(|e| e.alert_thresholds.clone())
            .collect();
        let all_specs: Vec<QuotaSpec> = known.iter().flat_map(|k| k.quotas.clone()).collect();
        let open = known.iter().any(|k| k.discovers);
        let mut seen = BTreeSet::new();
        for (i, a) in self.accounts.iter().flat_map(|a| a.0.iter()).enumerate() {
            let key = format!("accounts[{i}]");
            if let (Some(id), Some(arn)) = (&a.account_id, &a.role_arn) {
                if id.0 != arn.account_id() {
                    return Err(format!(
                        "{key}.account_id: {} does not match the account of role_arn ({})",
                        id.0,
                        arn.account_id()
                    ));
                }
            }
            if a.role_arn.is_none() && (a.external_id.is_some() || a.session_name.is_some()) {
                return Err(format!("{key}: external_id and session_name need role_arn"));
            }
            // The same account twice (by ID, or by a role in it) would export every
            // series twice. The default credentials' account is only known at start-up.
            let id = a
                .account_id
                .as_ref()
                .map(|x| x.0.clone())
                .or_else(|| a.role_arn.as_ref().map(|r| r.account_id().to_string()))
                .unwrap_or_default();
            if !seen.insert(id.clone()) {
                let which = if id.is_empty() {
                    "the default credentials' account".to_string()
                } else {
                    format!("account {id}")
                };
                return Err(format!("{key}: {which} is listed twice"));
            }
            if let Some(source) = &a.usage_source {
                let key = format!("{key}.usage_source");
                let choosers: Vec<&Known> = known
                    .iter()
                    .filter(|k| !k.usage_sources.is_empty())
                    .collect();
                if choosers.is_empty() {
                    return Err(format!(
                        "{key}: no collector of this exporter has a choice of usage source"
                    ));
                }
                for k in choosers {
                    check_usage_source(&key, &source.0, k)?;
                }
            }
            if !open {
                check_overrides(
                    &format!("{key}.limit_overrides"),
                    &a.limit_overrides,
                    &all_specs,
                )?;
            }
            thresholds::check(
                &format!("{key}.alert_thresholds"),
                &a.alert_thresholds,
                Some(&collector_thresholds),
                &all_specs,
                open,
            )?;
        }
        if let Some(regions) = &self.regions {
            let mut seen = BTreeSet::new();
            for (i, r) in regions.0.iter().enumerate() {
                if !seen.insert(&r.0) {
                    return Err(format!("regions[{i}]: {} is listed twice", r.0));
                }
            }
        }
        self.validate_accounts_labels()?;
        if let Some(org) = &self.organization {
            self.validate_organization(org)?;
        }
        Ok(())
    }

    fn validate_accounts_labels(&self) -> Result<(), String> {
        if self.account_tags.len() > MAX_ACCOUNT_TAGS {
            return Err(format!(
                "account_tags: {} tags, at most {MAX_ACCOUNT_TAGS} (each is a label of every account's series)",
                self.account_tags.len()
            ));
        }
        let mut labels = BTreeMap::new();
        for (i, key) in self.account_tags.iter().enumerate() {
            if let Some(first) = labels.insert(key.label(), i) {
                return Err(format!(
                    "account_tags[{i}]: {:?} gives the label {}, as account_tags[{first}] does",
                    key.0,
                    key.label()
                ));
            }
        }
        Ok(())
    }

    fn validate_organization(&self, org: &OrganizationConfig) -> Result<(), String> {
        let slowest_wait = 1.0 / org.rate_limit.0;
        if slowest_wait >= self.aws.attempt_timeout.0.as_secs_f64() {
            return Err(format!(
                "organization.rate_limit: at {} requests per second a request may wait {slowest_wait:.0}s for its turn, longer than aws.attempt_timeout ({})",
                org.rate_limit.0, self.aws.attempt_timeout
            ));
        }
        for (key, list) in [
            (
                "organizational_units",
                org.organizational_units
                    .iter()
                    .map(|p| &p.0)
                    .collect::<Vec<_>>(),
            ),
            (
                "exclude_accounts",
                org.exclude_accounts.iter().map(|a| &a.0).collect(),
            ),
        ] {
            let mut seen = BTreeSet::new();
            for (i, v) in list.into_iter().enumerate() {
                if !seen.insert(v) {
                    return Err(format!("organization.{key}[{i}]: {v} is listed twice"));
                }
            }
        }
        // The partition of the discovered accounts' roles is the regions'; a role for
        // the Organizations calls in another one could never reach them.
        if let (Some(arn), Some(regions)) = (&org.role_arn, &self.regions) {
            let partition = partition_of(&regions.0[0].0);
            if arn.partition() != partition {
                return Err(format!(
                    "organization.role_arn: {} is in partition {}, the regions are in {partition}",
                    arn.0,
                    arn.partition()
                ));
            }
        }
        Ok(())
    }

    /// The settings of one collector, its defaults filled in.
    pub(crate) fn collector(&self, name: &str) -> CollectorConfig {
        self.resolved.get(name).cloned().unwrap_or_default()
    }
}

/// The AWS partition of a region: `aws-cn` for China, `aws-us-gov` for GovCloud,
/// `aws` otherwise.
pub(crate) fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// A usage source the collector offers.
fn check_usage_source(key: &str, source: &str, k: &Known) -> Result<(), String> {
    if k.usage_sources.is_empty() {
        return Err(format!(
            "{key}: {} has no choice of usage source, so it takes no usage_source",
            k.name
        ));
    }
    if !k.usage_sources.contains(&source) {
        return Err(format!(
            "{key}: unknown usage source {source:?} for {}, expected one of: {}",
            k.name,
            k.usage_sources.join(", ")
        ));
    }
    Ok(())
}

fn check_overrides(
    key: &str,
    overrides: &BTreeMap<String, LimitValue>,
    specs: &[QuotaSpec],
) -> Result<(), String> {
    for code in overrides.keys() {
        if !specs.iter().any(|s| s.quota_code == code.as_str()) {
            let known: Vec<&str> = specs.iter().map(|s| s.quota_code.as_ref()).collect();
            return Err(format!(
                "{key}.{code}: unknown quota code, expected one of: {}",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[QuotaSpec] = &[QuotaSpec::service_quota(
        "ssm",
        "L-TEST",
        "Test quota",
        10.0,
    )];
    fn q() -> Vec<Known> {
        let mut things = Known::new("things", SPECS);
        things.per_resource = true;
        vec![things, Known::new("plain", SPECS)]
    }

    fn err(yaml: &str) -> String {
        Config::parse(yaml, &q()).expect_err("config should be rejected")
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", &q()).expect("empty config is valid");
        assert!(c.accounts.is_none());
        assert_eq!(
            c.collector("things").refresh_interval.0,
            Duration::from_secs(300)
        );
        assert_eq!(
            c.collector("things").limits_refresh_interval.0,
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn full_file_parses() {
        let c = Config::parse(
            r#"
accounts:
  - account_id: "111111111111"
  - role_arn: arn:aws:iam::222222222222:role/path/headroom
    external_id: xyz
    session_name: headroom
    limit_overrides: {L-TEST: 5}
regions: [eu-west-1, us-gov-west-1]
collectors:
  things:
    refresh_interval: 1m
    limits_refresh_interval: 2h
    timeout: 30s
    max_staleness: 1h30m
    rate_limit: 2.5
    limit_overrides:
      L-TEST: 20
aws:
  max_attempts: 3
  initial_backoff: 100ms
"#,
            &q(),
        )
        .expect("valid config");
        let accounts = c.accounts.clone().expect("accounts").0;
        assert_eq!(
            accounts[1].role_arn.as_ref().map(|a| a.account_id()),
            Some("222222222222")
        );
        let t = c.collectors["things"].clone();
        assert_eq!(t.max_staleness, Some(Dur(Duration::from_secs(5400))));
        assert_eq!(c.collector("things").rate_limit, Rate(2.5));
        assert_eq!(c.aws.initial_backoff.0, Duration::from_millis(100));
    }

    #[test]
    fn bad_input_names_the_key() {
        let cases = [
            ("regions: []\n", "regions", "at least one"),
            ("regions: [eu_west_1]\n", "regions[0]", "invalid region"),
            ("acounts: []\n", "acounts", "unknown field"),
            ("accounts:\n  - role_arn: arn:aws:iam::12:role/x\n", "accounts[0].role_arn", "malformed role ARN"),
            ("accounts:\n  - role_arn: arn:aws:s3:::bucket\n", "accounts[0].role_arn", "malformed role ARN"),
            ("accounts:\n  - account_id: \"12345\"\n", "accounts[0].account_id", "12 digits"),
            ("accounts:\n  - colour: red\n", "accounts[0]", "unknown field `colour`"),
            ("collectors:\n  things:\n    refresh_interval: soon\n", "collectors.things.refresh_interval", "invalid duration"),
            ("collectors:\n  things:\n    refresh_interval: 0s\n", "collectors.things.refresh_interval", "more than zero"),
            ("collectors:\n  things:\n    rate_limit: -1\n", "collectors.things.rate_limit", "invalid rate"),
            ("collectors:\n  things:\n    rate_limit: fast\n", "collectors.things.rate_limit", "invalid type"),
            ("collectors:\n  thing:\n    rate_limit: 1\n", "collectors.thing", "unknown collector"),
            ("collectors:\n  things:\n    limit_overrides: {L-NOPE: 3}\n", "collectors.things.limit_overrides.L-NOPE", "unknown quota code"),
            ("collectors:\n  things:\n    timeout: 10m\n", "collectors.things.timeout", "longer than refresh_interval"),
            ("collectors:\n  things:\n    max_staleness: 1m\n", "collectors.things.max_staleness", "shorter than refresh_interval"),
            ("accounts:\n  - account_id: \"111111111111\"\n    role_arn: arn:aws:iam::222222222222:role/x\n", "accounts[0].account_id", "does not match"),
            ("accounts:\n  - external_id: abc\n", "accounts[0]", "need role_arn"),
            ("regions: [eu-west-1, eu-west-1]\n", "regions[1]", "listed twice"),
            ("aws:\n  max_attempts: 0\n", "aws.max_attempts", "1 to 20"),
            ("aws:\n  max_pages: 0\n", "aws.max_pages", "1 to 1000000"),
            ("accounts:\n  - account_id: \"222222222222\"\n  - role_arn: arn:aws:iam::222222222222:role/x\n", "accounts[1]", "listed twice"),
            ("accounts:\n  - {}\n  - {}\n", "accounts[1]", "listed twice"),
            ("collectors:\n  things:\n    rate_limit: 0.01\n", "collectors.things.rate_limit", "attempt_timeout"),
            ("- just\n- a list\n", "", "invalid type"),
            // Values that would overflow a clock later, or are not what AWS accepts.
            ("collectors:\n  things:\n    limits_refresh_interval: 99999999999999999h\n", "collectors.things.limits_refresh_interval", "at most 720h"),
            ("aws:\n  attempt_timeout: 5124095576030431h\n", "aws.attempt_timeout", "at most 720h"),
            ("accounts:\n  - role_arn: arn:aws:iam::222222222222:role/x\n    external_id: a\n", "accounts[0].external_id", "2 to 1224"),
            ("accounts:\n  - role_arn: arn:aws:iam::222222222222:role/x\n    external_id: \"a b\"\n", "accounts[0].external_id", "only letters"),
            ("regions: [eu-west-1, [1]]\n", "regions[1]", "expected a string"),
            ("collectors:\n  things:\n    include: [1, 2]\n", "collectors.things.include[0]", "expected a string"),
            ("regions: !evil [eu-west-1]\n", "regions", "YAML tags"),
            ("collectors:\n  things: {}\n  things: {}\n", "collectors.things", "given twice, at line 2 and line 3"),
            ("accounts:\n  - limit_overrides:\n      L-TEST: 1\n      L-TEST: 2\n", "accounts[0].limit_overrides.L-TEST", "given twice"),
        ];
        for (yaml, key, what) in cases {
            let e = err(yaml);
            assert!(e.contains(key), "{yaml:?}: {e:?} should name {key:?}");
            assert!(e.contains(what), "{yaml:?}: {e:?} should say {what:?}");
        }
    }

    #[test]
    fn huge_values_are_refused_without_being_repeated() {
        let huge = "a".repeat(500_000);
        for (yaml, key) in [
            (format!("regions: [eu-{huge}-1]\n"), "regions[0]"),
            (format!("accounts:\n  - role_arn: arn:aws:iam::222222222222:role/x\n    external_id: {huge}\n"), "accounts[0].external_id"),
            (format!("accounts:\n  - role_arn: arn:aws:iam::222222222222:role/{huge}\n"), "accounts[0].role_arn"),
        ] {
            let e = err(&yaml);
            assert!(e.contains(key) && e.len() < 1000, "{key}: {} bytes: {}", e.len(), &e[..e.len().min(300)]);
        }
        let e = err(
            "accounts:\n  - role_arn: arn:aws:iam::222222222222:role/path/"
                .to_string()
                .as_str()
                .to_owned()
                .as_str(),
        );
        assert!(!e.is_empty());
        let long_name = format!(
            "accounts:\n  - role_arn: arn:aws:iam::222222222222:role/{}\n",
            "r".repeat(65)
        );
        assert!(err(&long_name).contains("longer than 64"));
    }

    /// A fixed corpus of valid files, mutated by a seeded generator: every result is a
    /// config or an error of bounded length, never a panic.
    #[test]
    fn mutated_files_give_a_config_or_a_short_error() {
        let corpus = [
            include_str!("../../../examples/demo.yml"),
            "accounts:\n  - {}\n  - role_arn: arn:aws:iam::222222222222:role/x\n    external_id: abc\n    limit_overrides: {L-TEST: 5}\nregions: [eu-west-1, us-east-1]\ncollectors:\n  things:\n    refresh_interval: 1m\n    include: [\"a-*\"]\n    min_usage_ratio: 0.5\naws:\n  max_attempts: 3\n",
        ];
        let pieces = [
            "\u{0}",
            "[",
            "{",
            "]",
            ":",
            "- ",
            "!tag ",
            "\n  ",
            "'",
            "\"",
            "99999999999999999999h",
            "&a",
            "*a",
            "\t",
            "#",
            "\u{7}",
            "\u{feff}",
            "é",
            "- - -\n",
        ];
        let mut rng = fastrand::Rng::with_seed(0x6865_6164);
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..3_000 {
            let base = corpus[round % corpus.len()];
            let mut text: Vec<char> = base.chars().collect();
            for _ in 0..rng.usize(1..6) {
                let at = rng.usize(0..=text.len());
                match rng.u8(0..4) {
                    0 if !text.is_empty() => {
                        text.remove(at.min(text.len() - 1));
                    }
                    1 => {
                        let piece = pieces[rng.usize(0..pieces.len())];
                        for (i, c) in piece.chars().enumerate() {
                            text.insert(at + i, c);
                        }
                    }
                    2 => {
                        let c = char::from_u32(rng.u32(0..0x80)).unwrap_or('x');
                        text.insert(at, c);
                    }
                    _ => {
                        // A line again, somewhere else (duplicate keys).
                        let s: String = text.iter().collect();
                        let lines: Vec<&str> = s.lines().collect();
                        let line = lines[rng.usize(0..lines.len())].to_string();
                        let mut out = s.clone();
                        out.push('\n');
                        out.push_str(&line);
                        text = out.chars().collect();
                    }
                }
            }
            let text: String = text.into_iter().collect();
            match Config::parse(&text, &q()) {
                Ok(_) => accepted += 1,
                Err(e) => {
                    refused += 1;
                    assert!(!e.is_empty() && e.chars().count() <= 420, "{text:?}: {e}");
                }
            }
        }
        assert!(
            accepted > 100 && refused > 1_000,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn parser_errors_give_the_line() {
        // serde_yaml places a custom error at the start of the enclosing collection.
        let e = err("collectors:\n  things:\n    timeout: soon\n");
        assert!(
            e.contains("collectors.things.timeout") && e.contains("line 3"),
            "{e}"
        );
    }

    #[test]
    fn a_collector_s_own_defaults_fill_what_the_file_leaves_out() {
        let mut slow = Known::new("slow", SPECS);
        slow.defaults.refresh_interval = Duration::from_secs(600);
        slow.defaults.timeout = Duration::from_secs(300);
        slow.defaults.rate_limit = 20.0;
        let known = [Known::new("things", SPECS), slow];
        let c = Config::parse("collectors:\n  slow:\n    rate_limit: 7\n", &known).expect("valid");
        let s = c.collector("slow");
        assert_eq!(s.rate_limit, Rate(7.0), "the file wins");
        assert_eq!(
            s.refresh_interval.0,
            Duration::from_secs(600),
            "the collector's default"
        );
        assert_eq!(s.timeout.0, Duration::from_secs(300));
        assert_eq!(s.concurrency, Concurrency(4), "the library's default");
        assert_eq!(c.collector("things").rate_limit, Rate(5.0));
        let c = Config::parse("", &known).expect("valid");
        assert_eq!(c.collector("slow").rate_limit, Rate(20.0));
        // A shorter interval than the collector's default timeout names both.
        let e = Config::parse("collectors:\n  slow:\n    refresh_interval: 2m\n", &known)
            .expect_err("timeout longer than interval");
        assert!(
            e.contains("collectors.slow.timeout: 5m (the collector's default) is longer than refresh_interval (2m)"),
            "{e}"
        );
    }

    #[test]
    fn resource_settings_are_checked() {
        let c = Config::parse("collectors:\n  things:\n    include: [\"a-*\"]\n    min_usage_ratio: 0.5\n    concurrency: 8\n", &q())
            .expect("valid");
        assert_eq!(c.collector("things").concurrency, Concurrency(8));
        for (yaml, key) in [
            (
                "collectors:\n  things:\n    min_usage_ratio: 2\n",
                "collectors.things.min_usage_ratio",
            ),
            (
                "collectors:\n  things:\n    concurrency: 0\n",
                "collectors.things.concurrency",
            ),
            (
                "collectors:\n  things:\n    exclude: [\"\"]\n",
                "collectors.things.exclude[0]",
            ),
        ] {
            assert!(err(yaml).contains(key), "{yaml}: {}", err(yaml));
        }
    }

    #[test]
    fn per_resource_keys_belong_to_per_resource_collectors() {
        for key in [
            "include: [\"a\"]",
            "exclude: []",
            "min_usage_ratio: 0.5",
            "concurrency: 2",
        ] {
            let name = key.split(':').next().unwrap_or_default();
            let e = err(&format!("collectors:\n  plain:\n    {key}\n"));
            assert!(
                e.contains(&format!("collectors.plain.{name}"))
                    && e.contains("counts no single resources"),
                "{key}: {e}"
            );
        }
        assert!(Config::parse("collectors:\n  plain:\n    rate_limit: 2\n", &q()).is_ok());
    }

    #[test]
    fn usage_source_is_one_the_collector_offers() {
        let mut all = q();
        let mut metered = Known::new("metered", &[]);
        metered.discovers = true;
        metered.usage_sources = &["report", "cloudwatch"];
        all.push(metered);
        let parse = |yaml: &str| Config::parse(yaml, &all);
        let c = parse(
            "accounts:\n  - account_id: \"111111111111\"\n    usage_source: cloudwatch\ncollectors:\n  metered:\n    usage_source: report\n",
        )
        .expect("valid");
        assert_eq!(
            c.collector("metered").usage_source.as_deref(),
            Some("report")
        );
        let accounts = c.accounts.expect("accounts").0;
        assert_eq!(
            accounts[0].usage_source.as_ref().map(|s| s.0.as_str()),
            Some("cloudwatch")
        );
        assert_eq!(
            parse("").expect("valid").collector("metered").usage_source,
            None
        );
        for (yaml, key, what) in [
            (
                "collectors:\n  metered:\n    usage_source: carrier_pigeon\n",
                "collectors.metered.usage_source",
                "expected one of: report, cloudwatch",
            ),
            (
                "collectors:\n  plain:\n    usage_source: report\n",
                "collectors.plain.usage_source",
                "plain has no choice of usage source",
            ),
            (
                "accounts:\n  - usage_source: xray\n",
                "accounts[0].usage_source",
                "expected one of: report, cloudwatch",
            ),
            (
                "collectors:\n  metered:\n    usage_source: CloudWatch\n",
                "collectors.metered.usage_source",
                "lowercase",
            ),
        ] {
            let e = parse(yaml).expect_err(yaml);
            assert!(e.contains(key) && e.contains(what), "{yaml}: {e}");
        }
        // An exporter whose collectors have no choice refuses the account key.
        let e = err("accounts:\n  - usage_source: report\n");
        assert!(
            e.contains("accounts[0].usage_source") && e.contains("no collector of this exporter"),
            "{e}"
        );
    }

    #[test]
    fn organization_discovery_is_configured_and_checked() {
        let c = Config::parse(
            r#"
organization:
  role_name: ops/headroom-reader
  external_id: ext-123
  organizational_units: [r-ab12, ou-ab12-cdef3456]
  exclude_accounts: ["111111111111"]
  require_tags: {env: "prod*"}
  discovery_interval: 30m
  role_arn: arn:aws:iam::999999999999:role/org-reader
account_tags: [team, cost-center]
accounts:
  - account_id: "222222222222"
    name: prod-payments
    tags: {team: payments}
regions: [eu-west-1]
"#,
            &q(),
        )
        .expect("valid");
        let org = c.organization.clone().expect("organization");
        assert_eq!(org.discovery_interval.0, Duration::from_secs(1800));
        assert_eq!(org.rate_limit, Rate(5.0), "the default");
        assert_eq!(
            org.role_name.arn("aws-cn", "333333333333").0,
            "arn:aws-cn:iam::333333333333:role/ops/headroom-reader"
        );
        assert!(org.reads_tags(&[]));
        let labels: Vec<String> = c.account_tags.iter().map(TagKey::label).collect();
        assert_eq!(labels, ["tag_team", "tag_cost_center"]);
        let accounts = c.accounts.clone().expect("accounts").0;
        assert_eq!(
            accounts[0].name.as_ref().map(|n| n.0.as_str()),
            Some("prod-payments")
        );
        assert_eq!(
            accounts[0].for_refresh().name,
            None,
            "a name does not restart refreshes"
        );
        let minimal = Config::parse("organization:\n  role_name: r\n", &q()).expect("valid");
        let org = minimal.organization.expect("organization");
        assert_eq!(org.discovery_interval.0, Duration::from_secs(3600));
        assert!(!org.reads_tags(&[]));

        let too_many: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
        for (yaml, key, what) in [
            ("organization: {}\n".to_string(), "organization", "missing field `role_name`"),
            ("organization:\n  role_name: \"/r\"\n".into(), "organization.role_name", "leading /"),
            ("organization:\n  role_name: \"a b\"\n".into(), "organization.role_name", "invalid role name"),
            ("organization:\n  role_name: r\n  organizational_units: [ou-12]\n".into(), "organization.organizational_units[0]", "expected an OU ID"),
            ("organization:\n  role_name: r\n  exclude_accounts: [\"1\"]\n".into(), "organization.exclude_accounts[0]", "12 digits"),
            ("organization:\n  role_name: r\n  exclude_accounts: [\"111111111111\", \"111111111111\"]\n".into(), "organization.exclude_accounts[1]", "listed twice"),
            ("organization:\n  role_name: r\n  colour: red\n".into(), "organization", "unknown field `colour`"),
            ("organization:\n  role_name: r\n  discovery_interval: 0s\n".into(), "organization.discovery_interval", "more than zero"),
            ("organization:\n  role_name: r\n  rate_limit: 0.01\n".into(), "organization.rate_limit", "attempt_timeout"),
            ("organization:\n  role_name: r\n  require_tags: {\"aws:x\": a}\n".into(), "organization.require_tags", "not starting with aws:"),
            ("organization:\n  role_name: r\n  role_arn: arn:aws:iam::999999999999:role/x\nregions: [cn-north-1]\n".into(), "organization.role_arn", "partition aws, the regions are in aws-cn"),
            (format!("account_tags: [{}]\n", too_many.join(", ")), "account_tags", "at most 10"),
            ("account_tags: [cost-center, cost_center]\n".into(), "account_tags[1]", "tag_cost_center"),
            ("accounts:\n  - name: \"\"\n".into(), "accounts[0].name", "1 to 128"),
        ] {
            let e = err(&yaml);
            assert!(e.contains(key) && e.contains(what), "{yaml:?}: {e}");
        }
    }

    #[test]
    fn quota_filters_belong_to_collectors_that_discover_quotas() {
        let mut all = q();
        let mut found = Known::new("found", &[]);
        found.discovers = true;
        all.push(found);
        let parse = |yaml: &str| Config::parse(yaml, &all);
        for key in ["services", "quotas"] {
            let e = parse(&format!(
                "collectors:\n  plain:\n    {key}: {{include: [ec2]}}\n"
            ))
            .expect_err(key);
            assert!(
                e.contains(&format!("collectors.plain.{key}"))
                    && e.contains("fixed list of quotas"),
                "{e}"
            );
        }
        let c = parse(
            "collectors:\n  found:\n    services: {include: [ec2, 'elastic*'], exclude: [elasticache]}\n    quotas: {exclude: [L-1]}\n    min_usage_ratio: 0.1\n    limit_overrides: {L-ANY: 5}\n    alert_thresholds: {L-ANY: {warning: 0.5}}\n",
        )
        .expect("valid");
        let f = c.collector("found");
        assert!(f.services.wants("ec2") && f.services.wants("elasticloadbalancing"));
        assert!(!f.services.wants("elasticache") && !f.services.wants("lambda"));
        assert!(!f.quotas.wants("L-1") && f.quotas.wants("L-2"));
        // Still no per-resource keys for it.
        assert!(parse("collectors:\n  found:\n    concurrency: 2\n").is_err());
    }
}
