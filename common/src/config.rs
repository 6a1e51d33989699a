//! The YAML configuration file: targets (accounts and regions) and per-collector
//! settings. Values are validated while they are parsed, so the parser's error names
//! the key and the line; checks that need the whole file name the key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::collector::QuotaSpec;

/// A configuration error: which file, and what is wrong (the message names the key).
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
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
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The 12-digit account ID; default: from the role ARN, else STS GetCallerIdentity.
    #[serde(default)]
    pub account_id: Option<AccountId>,
    /// A role to assume in the account; default: use the base credentials as they are.
    #[serde(default)]
    pub role_arn: Option<RoleArn>,
    #[serde(default)]
    pub external_id: Option<NonEmptyString>,
    #[serde(default)]
    pub session_name: Option<SessionName>,
    /// Limit overrides for this account only, by quota code; they win over the
    /// collector-wide ones.
    #[serde(default)]
    pub limit_overrides: BTreeMap<String, LimitValue>,
}

/// One collector's settings as the file writes them: a key left out takes the
/// collector's own default (see [`Known::defaults`]).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorEntry {
    pub enabled: Option<bool>,
    pub refresh_interval: Option<Dur>,
    pub limits_refresh_interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub max_staleness: Option<Dur>,
    pub rate_limit: Option<Rate>,
    pub limit_overrides: BTreeMap<String, LimitValue>,
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
    pub min_usage_ratio: Option<Ratio>,
    pub concurrency: Option<Concurrency>,
}

impl CollectorEntry {
    /// These settings over `defaults`.
    fn over(&self, defaults: &CollectorConfig) -> CollectorConfig {
        let d = defaults.clone();
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
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            min_usage_ratio: self.min_usage_ratio.unwrap_or(d.min_usage_ratio),
            concurrency: self.concurrency.unwrap_or(d.concurrency),
        }
    }
}

/// One collector's settings, its defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorConfig {
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
    /// Per-resource collectors: only resources whose name matches one of these
    /// patterns (`*` any run of characters, `?` one); empty means all.
    pub include: Vec<Pattern>,
    /// Per-resource collectors: skip resources whose name matches one of these.
    pub exclude: Vec<Pattern>,
    /// Per-resource quotas: series below this usage ratio are not exported.
    pub min_usage_ratio: Ratio,
    /// Per-resource collectors: how many resources are counted at once.
    pub concurrency: Concurrency,
}

/// The library's defaults; a collector may change some (see `Collector::defaults`).
impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            enabled: None,
            refresh_interval: Dur(Duration::from_secs(300)),
            limits_refresh_interval: Dur(Duration::from_secs(3600)),
            timeout: Dur(Duration::from_secs(120)),
            max_staleness: Dur(Duration::from_secs(1800)),
            rate_limit: Rate(5.0),
            limit_overrides: BTreeMap::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            min_usage_ratio: Ratio(0.0),
            concurrency: Concurrency(4),
        }
    }
}

/// What the config needs to know of one collector of the exporter.
#[derive(Debug, Clone)]
pub struct Known<'a> {
    pub name: &'a str,
    pub quotas: &'a [QuotaSpec],
    /// The settings a key left out of the file takes.
    pub defaults: CollectorConfig,
}

impl<'a> Known<'a> {
    /// A collector with the library's default settings.
    pub fn new(name: &'a str, quotas: &'a [QuotaSpec]) -> Self {
        Known {
            name,
            quotas,
            defaults: CollectorConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// Attempts per request, the first included (retries on throttling and 5xx).
    pub max_attempts: Attempts,
    /// The first retry's backoff; later ones grow exponentially, with jitter.
    pub initial_backoff: Dur,
    /// One attempt's time limit.
    pub attempt_timeout: Dur,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            max_attempts: Attempts(5),
            initial_backoff: Dur(Duration::from_secs(1)),
            attempt_timeout: Dur(Duration::from_secs(30)),
        }
    }
}

impl Config {
    /// Reads and validates a file against the collectors of one exporter.
    pub fn load(path: &Path, known: &[Known<'_>]) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            file: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Config::parse(&text, known).map_err(err)
    }

    /// Parses and validates YAML text; the error message names the key.
    /// An empty text gives every default.
    pub fn parse(text: &str, known: &[Known<'_>]) -> Result<Config, String> {
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

    fn validate(&self, known: &[Known<'_>]) -> Result<(), String> {
        for (name, entry) in &self.collectors {
            let Some(k) = known.iter().find(|k| k.name == name) else {
                let names: Vec<&str> = known.iter().map(|k| k.name).collect();
                return Err(format!(
                    "collectors.{name}: unknown collector, expected one of: {}",
                    names.join(", ")
                ));
            };
            let (c, specs) = (entry.over(&k.defaults), k.quotas);
            let key = format!("collectors.{name}");
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
            check_overrides(&format!("{key}.limit_overrides"), &c.limit_overrides, specs)?;
        }
        let all_specs: Vec<QuotaSpec> = known
            .iter()
            .flat_map(|k| k.quotas.iter().copied())
            .collect();
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
            check_overrides(
                &format!("{key}.limit_overrides"),
                &a.limit_overrides,
                &all_specs,
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
        Ok(())
    }

    /// The settings of one collector, its defaults filled in.
    pub fn collector(&self, name: &str) -> CollectorConfig {
        self.resolved.get(name).cloned().unwrap_or_default()
    }
}

/// Deserializes YAML, naming the full key path of an error (serde_yaml alone names the
/// enclosing map, not the key) and the line where the parser gives one.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // serde_yaml may prefix its own (shorter) path; keep one, the full one.
        let inner = match inner.split_once(": ") {
            Some((prefix, rest)) if !prefix.contains(' ') && path.starts_with(prefix) => {
                rest.to_string()
            }
            _ => inner,
        };
        if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

fn check_overrides(
    key: &str,
    overrides: &BTreeMap<String, LimitValue>,
    specs: &[QuotaSpec],
) -> Result<(), String> {
    for code in overrides.keys() {
        if !specs.iter().any(|s| s.quota_code == code) {
            let known: Vec<&str> = specs.iter().map(|s| s.quota_code).collect();
            return Err(format!(
                "{key}.{code}: unknown quota code, expected one of: {}",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// Deserializes a string and validates it with `check`, which returns the message.
fn checked_string<'de, D: Deserializer<'de>>(
    d: D,
    check: fn(&str) -> Result<(), String>,
) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check(&s).map_err(de::Error::custom)?;
    Ok(s)
}

macro_rules! validated_string {
    ($(#[$m:meta])* $name:ident, $check:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub String);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                checked_string(d, $check).map($name)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_string!(
    /// A 12-digit AWS account ID, written as a string (quote it in YAML).
    AccountId,
    check_account_id
);
validated_string!(
    /// An IAM role ARN: `arn:<partition>:iam::<12 digits>:role/<path and name>`.
    RoleArn,
    check_role_arn
);
validated_string!(
    /// An AWS region name such as `eu-west-1`.
    Region,
    check_region
);
validated_string!(
    /// An STS role session name: 2 to 64 of `[\w+=,.@-]`.
    SessionName,
    check_session_name
);
validated_string!(NonEmptyString, |s: &str| if s.is_empty() {
    Err("must not be empty".to_string())
} else {
    Ok(())
});

impl RoleArn {
    /// The account ID inside the ARN (validated at parse time).
    pub fn account_id(&self) -> &str {
        self.0.split(':').nth(4).unwrap_or_default()
    }
}

fn check_account_id(s: &str) -> Result<(), String> {
    if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("invalid account ID {s:?}: expected 12 digits"))
    }
}

fn check_role_arn(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("malformed role ARN {s:?}: {why}"));
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return bad("expected arn:<partition>:iam::<account-id>:role/<name>");
    }
    if !matches!(
        parts[1],
        "aws" | "aws-cn" | "aws-us-gov" | "aws-iso" | "aws-iso-b"
    ) {
        return bad("unknown partition");
    }
    if parts[2] != "iam" || !parts[3].is_empty() {
        return bad("expected the iam service and an empty region");
    }
    if check_account_id(parts[4]).is_err() {
        return bad("the account ID must be 12 digits");
    }
    let Some(name) = parts[5].strip_prefix("role/") else {
        return bad("the resource must start with role/");
    };
    let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c);
    if name.is_empty() || name.ends_with('/') || !name.chars().all(ok) {
        return bad("invalid role name");
    }
    Ok(())
}

fn check_region(s: &str) -> Result<(), String> {
    // Letters-and-dashes groups ending in a number: us-east-1, us-gov-west-1, eu-central-2.
    let parts: Vec<&str> = s.split('-').collect();
    let ok = parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid region {s:?}: expected a name such as eu-west-1"
        ))
    }
}

fn check_session_name(s: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if (2..=64).contains(&s.len()) && s.chars().all(ok) {
        Ok(())
    } else {
        Err(format!(
            "invalid session name {s:?}: 2 to 64 letters, digits or +=,.@_-"
        ))
    }
}

/// A list that must hold at least one item.
#[derive(Debug, Clone, PartialEq)]
pub struct NonEmpty<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<T>::deserialize(d)?;
        if v.is_empty() {
            return Err(de::Error::custom(
                "must list at least one item (leave the key out for the default)",
            ));
        }
        Ok(NonEmpty(v))
    }
}

/// A duration written as `90s`, `5m`, `1h30m` or `250ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// Parses `1h30m`, `5m`, `90s`, `250ms`; the result must be positive.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration {s:?}: expected a number with a unit (ms, s, m, h), such as 5m or 1h30m")
    };
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(d);
    }
    if total.is_zero() {
        return Err(format!("invalid duration {s:?}: must be more than zero"));
    }
    Ok(total)
}

/// Formats a duration the way the config file writes it (`5m`, `1h30m`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Requests per second, more than zero.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Rate(pub f64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_finite() && v > 0.0 {
            Ok(Rate(v))
        } else {
            Err(de::Error::custom(format!(
                "invalid rate {v}: expected requests per second, more than zero"
            )))
        }
    }
}

/// A limit value: a finite number, zero or more.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct LimitValue(pub f64);

impl<'de> Deserialize<'de> for LimitValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_finite() && v >= 0.0 {
            Ok(LimitValue(v))
        } else {
            Err(de::Error::custom(format!(
                "invalid limit {v}: expected a number, zero or more"
            )))
        }
    }
}

/// A name pattern: `*` matches any run of characters, `?` one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(pub String);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| {
            if s.is_empty() {
                Err("a pattern must not be empty".into())
            } else {
                Ok(())
            }
        })
        .map(Pattern)
    }
}

impl Pattern {
    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes())
    }
}

/// Iterative wildcard match with backtracking to the last `*`: linear in practice.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A ratio from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Ratio(pub f64);

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if (0.0..=1.0).contains(&v) {
            Ok(Ratio(v))
        } else {
            Err(de::Error::custom(format!(
                "invalid ratio {v}: expected 0 to 1, such as 0.5"
            )))
        }
    }
}

/// Resources counted at once: 1 to 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency(pub usize);

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = usize::deserialize(d)?;
        if (1..=64).contains(&v) {
            Ok(Concurrency(v))
        } else {
            Err(de::Error::custom(format!(
                "invalid concurrency {v}: expected 1 to 64"
            )))
        }
    }
}

/// Attempts per request: 1 to 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts(pub u32);

impl<'de> Deserialize<'de> for Attempts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if (1..=20).contains(&v) {
            Ok(Attempts(v))
        } else {
            Err(de::Error::custom(format!(
                "invalid attempt count {v}: expected 1 to 20"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[QuotaSpec] = &[QuotaSpec {
        service_code: "ssm",
        quota_code: "L-TEST",
        quota_name: "Test quota",
        builtin_limit: 10.0,
        adjustable: false,
        in_service_quotas: true,
        resource_level: false,
    }];
    fn q() -> Vec<Known<'static>> {
        vec![Known::new("things", SPECS)]
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
            ("accounts:\n  - account_id: \"222222222222\"\n  - role_arn: arn:aws:iam::222222222222:role/x\n", "accounts[1]", "listed twice"),
            ("accounts:\n  - {}\n  - {}\n", "accounts[1]", "listed twice"),
            ("collectors:\n  things:\n    rate_limit: 0.01\n", "collectors.things.rate_limit", "attempt_timeout"),
            ("- just\n- a list\n", "", "invalid type"),
        ];
        for (yaml, key, what) in cases {
            let e = err(yaml);
            assert!(e.contains(key), "{yaml:?}: {e:?} should name {key:?}");
            assert!(e.contains(what), "{yaml:?}: {e:?} should say {what:?}");
        }
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
        slow.defaults.refresh_interval = Dur(Duration::from_secs(600));
        slow.defaults.timeout = Dur(Duration::from_secs(300));
        slow.defaults.rate_limit = Rate(20.0);
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
    fn patterns() {
        let p = |s: &str| Pattern(s.to_string());
        assert!(p("team-*").matches("team-a"));
        assert!(p("team-*").matches("team-"));
        assert!(!p("team-*").matches("other"));
        assert!(p("*/cache").matches("a/b/cache"));
        assert!(p("a?c").matches("abc") && !p("a?c").matches("abbc"));
        assert!(p("*a*b*").matches("xxaxxbxx") && !p("*a*b*").matches("xxbxxaxx"));
        assert!(p("exact").matches("exact") && !p("exact").matches("exact2"));
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
    fn durations_round_trip() {
        for (s, d) in [("5m", 300), ("1h30m", 5400), ("90s", 90), ("2h", 7200)] {
            assert_eq!(parse_duration(s), Ok(Duration::from_secs(d)));
            assert_eq!(
                parse_duration(&format_duration(Duration::from_secs(d))),
                Ok(Duration::from_secs(d))
            );
        }
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        for bad in ["", "5", "m", "5 minutes", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
