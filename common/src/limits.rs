//! Limit resolution: `override` (config), `applied` (Service Quotas), `default`
//! (Service Quotas AWS default), `builtin` (compiled in), first that has a value wins.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_servicequotas::error::ProvideErrorMetadata;

use crate::aws::Target;
use crate::collector::{CollectError, QuotaSpec};

/// Where a limit value came from; the `limit_source` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitSource {
    Override,
    Applied,
    Default,
    Builtin,
}

impl LimitSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitSource::Override => "override",
            LimitSource::Applied => "applied",
            LimitSource::Default => "default",
            LimitSource::Builtin => "builtin",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResolvedLimit {
    pub value: f64,
    pub source: LimitSource,
    pub adjustable: bool,
}

/// What one Service Quotas lookup gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// A value, and whether AWS says the quota is adjustable.
    Found {
        value: f64,
        adjustable: Option<bool>,
    },
    /// NoSuchResource or AccessDenied: fall through to the next source.
    Missing(&'static str),
    /// Anything else (throttled after retries, 5xx, timeout): keep what we had.
    Failed(CollectError),
    /// Not asked (the quota is not in Service Quotas, or a source before it won).
    NotAsked,
}

/// Decides one quota's limit from what each source gave. `previous` is used when a
/// lookup failed for a reason that says nothing about the quota.
pub fn decide(
    spec: &QuotaSpec,
    override_value: Option<f64>,
    applied: &Lookup,
    default: &Lookup,
    previous: Option<ResolvedLimit>,
) -> ResolvedLimit {
    let make = |value, source, adjustable: Option<bool>| ResolvedLimit {
        value,
        source,
        adjustable: adjustable.unwrap_or(spec.adjustable),
    };
    if let Some(v) = override_value {
        return make(v, LimitSource::Override, None);
    }
    for (lookup, source) in [
        (applied, LimitSource::Applied),
        (default, LimitSource::Default),
    ] {
        match lookup {
            Lookup::Found { value, adjustable } => return make(*value, source, *adjustable),
            Lookup::Failed(_) => {
                if let Some(p) = previous.filter(|p| p.source != LimitSource::Override) {
                    return p;
                }
            }
            Lookup::Missing(_) | Lookup::NotAsked => {}
        }
    }
    make(spec.builtin_limit, LimitSource::Builtin, None)
}

/// The limits in force for one target: per quota, and per resource where Service
/// Quotas holds a value applied to one resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    pub quotas: HashMap<&'static str, ResolvedLimit>,
    pub resources: HashMap<(&'static str, String), ResolvedLimit>,
}

impl Limits {
    /// The limit for one usage sample: an override wins over everything; then a value
    /// applied to this resource; then the quota's own.
    pub fn get(&self, spec: &QuotaSpec, resource: &str) -> ResolvedLimit {
        let quota = self.quotas.get(spec.quota_code).copied();
        if let Some(q) = quota.filter(|q| q.source == LimitSource::Override) {
            return q;
        }
        if !resource.is_empty() {
            if let Some(r) = self.resources.get(&(spec.quota_code, resource.to_string())) {
                return *r;
            }
        }
        quota.unwrap_or(ResolvedLimit {
            value: spec.builtin_limit,
            source: LimitSource::Builtin,
            adjustable: spec.adjustable,
        })
    }
}

/// The resource name in an ARN: `arn:aws:ecr:eu-west-1:1:repository/team/app` gives
/// `team/app` (the part after the resource type).
pub fn resource_of_arn(arn: &str) -> Option<String> {
    let resource = arn.splitn(6, ':').nth(5)?;
    let name = resource.split_once('/').map_or(resource, |(_, n)| n);
    (!name.is_empty()).then(|| name.to_string())
}

/// Resolves the limits of a collector's quotas for one target, keeping state between
/// refreshes (the last values, and which fallbacks were already logged).
#[derive(Debug, Default)]
pub struct LimitResolver {
    current: Limits,
    logged: HashSet<(&'static str, &'static str, &'static str)>,
}

impl LimitResolver {
    pub fn current(&self) -> &Limits {
        &self.current
    }

    /// Fetches every quota's limit and returns the new set, and whether every lookup
    /// gave an answer (a failed one should be tried again soon, not in an hour).
    pub async fn refresh(
        &mut self,
        target: &Target,
        quotas: &[QuotaSpec],
        overrides: &BTreeMap<String, f64>,
    ) -> (Limits, bool) {
        let client: aws_sdk_servicequotas::Client = target.client();
        let mut complete = true;
        for spec in quotas {
            let override_value = overrides.get(spec.quota_code).copied();
            let asks = override_value.is_none() && spec.in_service_quotas;
            let applied = if asks {
                let r = client
                    .get_service_quota()
                    .service_code(spec.service_code)
                    .quota_code(spec.quota_code)
                    .send()
                    .await;
                lookup("GetServiceQuota", r.map(|o| o.quota))
            } else {
                Lookup::NotAsked
            };
            let default = if asks && matches!(applied, Lookup::Missing(_)) {
                let r = client
                    .get_aws_default_service_quota()
                    .service_code(spec.service_code)
                    .quota_code(spec.quota_code)
                    .send()
                    .await;
                lookup("GetAWSDefaultServiceQuota", r.map(|o| o.quota))
            } else {
                Lookup::NotAsked
            };
            for (op, l) in [
                ("GetServiceQuota", &applied),
                ("GetAWSDefaultServiceQuota", &default),
            ] {
                self.log_once(target, spec, op, l);
            }
            complete &=
                !matches!(applied, Lookup::Failed(_)) && !matches!(default, Lookup::Failed(_));
            let previous = self.current.quotas.get(spec.quota_code).copied();
            let resolved = decide(spec, override_value, &applied, &default, previous);
            self.current.quotas.insert(spec.quota_code, resolved);
            if asks && spec.resource_level {
                complete &= self.refresh_resources(&client, target, spec).await;
            }
        }
        (self.current.clone(), complete)
    }

    /// Values applied to single resources (ListServiceQuotas at the RESOURCE level).
    /// Returns false when the lookup failed and the last values were kept.
    async fn refresh_resources(
        &mut self,
        client: &aws_sdk_servicequotas::Client,
        target: &Target,
        spec: &QuotaSpec,
    ) -> bool {
        const OP: &str = "ListServiceQuotas";
        let mut found = HashMap::new();
        let mut token: Option<String> = None;
        // A bound far above any account, so a server that keeps returning tokens stops.
        for _ in 0..1000 {
            let page = client
                .list_service_quotas()
                .service_code(spec.service_code)
                .quota_code(spec.quota_code)
                .quota_applied_at_level(aws_sdk_servicequotas::types::AppliedLevelEnum::Resource)
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let lookup = lookup::<_, _>(
                        OP,
                        Err::<Option<aws_sdk_servicequotas::types::ServiceQuota>, _>(e),
                    );
                    self.log_once(target, spec, OP, &lookup);
                    return match lookup {
                        // No resource-level values here: only the quota's own value applies.
                        Lookup::Missing(_) => {
                            self.current
                                .resources
                                .retain(|(code, _), _| *code != spec.quota_code);
                            true
                        }
                        _ => false,
                    };
                }
            };
            for q in page.quotas() {
                let Some(ctx) = q.quota_context() else {
                    continue;
                };
                let (Some(arn), Some(value)) = (ctx.context_id(), q.value()) else {
                    continue;
                };
                let Some(resource) = resource_of_arn(arn) else {
                    continue;
                };
                if value.is_finite() && value >= 0.0 {
                    let limit = ResolvedLimit {
                        value,
                        source: LimitSource::Applied,
                        adjustable: q.adjustable(),
                    };
                    found.insert((spec.quota_code, resource), limit);
                }
            }
            match page.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => {
                    self.current
                        .resources
                        .retain(|(code, _), _| *code != spec.quota_code);
                    self.current.resources.extend(found);
                    return true;
                }
            }
        }
        false
    }

    fn log_once(&mut self, target: &Target, spec: &QuotaSpec, op: &'static str, l: &Lookup) {
        match l {
            Lookup::Missing(code) => {
                if self.logged.insert((spec.quota_code, op, code)) {
                    tracing::info!(
                        account_id = %target.account_id, aws_region = %target.region,
                        quota_code = spec.quota_code, operation = op, error_code = code,
                        "Service Quotas has no value here; falling back to the next limit source"
                    );
                }
            }
            Lookup::Failed(e) => {
                if self.logged.insert((spec.quota_code, op, e.code)) {
                    tracing::warn!(
                        account_id = %target.account_id, aws_region = %target.region,
                        quota_code = spec.quota_code, error = %e,
                        "Service Quotas lookup failed; keeping the last known limit"
                    );
                }
            }
            Lookup::Found { .. } | Lookup::NotAsked => {}
        }
    }
}

fn lookup<E, R>(
    op: &str,
    result: Result<
        Option<aws_sdk_servicequotas::types::ServiceQuota>,
        aws_smithy_runtime_api::client::result::SdkError<E, R>,
    >,
) -> Lookup
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(Some(q)) => match q.value {
            Some(v) if v.is_finite() && v >= 0.0 => Lookup::Found {
                value: v,
                adjustable: Some(q.adjustable),
            },
            _ => Lookup::Failed(CollectError::malformed(op, "the quota has no usable Value")),
        },
        Ok(None) => Lookup::Failed(CollectError::malformed(op, "no Quota in the response")),
        Err(e) => {
            let e = CollectError::from_sdk(op, &e);
            match e.code {
                "NoSuchResourceException"
                | "AccessDeniedException"
                | "AccessDenied"
                | "IllegalArgumentException" => Lookup::Missing(e.code),
                _ => Lookup::Failed(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: QuotaSpec = QuotaSpec {
        service_code: "ssm",
        quota_code: "L-1",
        quota_name: "q",
        builtin_limit: 10.0,
        adjustable: false,
        in_service_quotas: true,
        resource_level: false,
    };

    fn found(v: f64) -> Lookup {
        Lookup::Found {
            value: v,
            adjustable: Some(true),
        }
    }

    fn failed() -> Lookup {
        Lookup::Failed(CollectError::malformed("x", "y"))
    }

    #[test]
    fn precedence() {
        let d = |o, a: &Lookup, df: &Lookup, p| {
            let r = decide(&SPEC, o, a, df, p);
            (r.value, r.source)
        };
        let missing = Lookup::Missing("NoSuchResourceException");
        assert_eq!(
            d(Some(5.0), &found(7.0), &found(8.0), None),
            (5.0, LimitSource::Override)
        );
        assert_eq!(
            d(None, &found(7.0), &found(8.0), None),
            (7.0, LimitSource::Applied)
        );
        assert_eq!(
            d(None, &missing, &found(8.0), None),
            (8.0, LimitSource::Default)
        );
        assert_eq!(
            d(None, &missing, &missing, None),
            (10.0, LimitSource::Builtin)
        );
        assert_eq!(
            d(None, &Lookup::NotAsked, &Lookup::NotAsked, None),
            (10.0, LimitSource::Builtin)
        );
        // A failed lookup keeps the last good value; with none, the builtin.
        let prev = ResolvedLimit {
            value: 7.0,
            source: LimitSource::Applied,
            adjustable: true,
        };
        assert_eq!(
            d(None, &failed(), &Lookup::NotAsked, Some(prev)),
            (7.0, LimitSource::Applied)
        );
        assert_eq!(
            d(None, &failed(), &Lookup::NotAsked, None),
            (10.0, LimitSource::Builtin)
        );
        // A removed override is not kept as "previous".
        let old = ResolvedLimit {
            value: 1.0,
            source: LimitSource::Override,
            adjustable: false,
        };
        assert_eq!(
            d(None, &failed(), &Lookup::NotAsked, Some(old)),
            (10.0, LimitSource::Builtin)
        );
    }

    #[test]
    fn resource_values_sit_between_override_and_the_quota() {
        let per = QuotaSpec {
            resource_level: true,
            ..SPEC
        };
        let mut limits = Limits::default();
        assert_eq!(limits.get(&per, "repo").source, LimitSource::Builtin);
        limits.quotas.insert(
            "L-1",
            ResolvedLimit {
                value: 100.0,
                source: LimitSource::Applied,
                adjustable: true,
            },
        );
        limits.resources.insert(
            ("L-1", "repo".into()),
            ResolvedLimit {
                value: 250.0,
                source: LimitSource::Applied,
                adjustable: true,
            },
        );
        assert_eq!(limits.get(&per, "repo").value, 250.0);
        assert_eq!(limits.get(&per, "other").value, 100.0);
        assert_eq!(limits.get(&per, "").value, 100.0);
        limits.quotas.insert(
            "L-1",
            ResolvedLimit {
                value: 5.0,
                source: LimitSource::Override,
                adjustable: true,
            },
        );
        assert_eq!(limits.get(&per, "repo").value, 5.0);
    }

    #[test]
    fn resource_names_come_from_arns() {
        assert_eq!(
            resource_of_arn("arn:aws:ecr:eu-west-1:123456789012:repository/team/app").as_deref(),
            Some("team/app")
        );
        assert_eq!(
            resource_of_arn("arn:aws:s3:::bucket").as_deref(),
            Some("bucket")
        );
        assert_eq!(resource_of_arn("not an arn"), None);
        assert_eq!(resource_of_arn("arn:aws:ecr:r:1:repository/"), None);
    }

    #[test]
    fn adjustable_comes_from_aws_when_it_answers() {
        assert!(decide(&SPEC, None, &found(1.0), &Lookup::NotAsked, None).adjustable);
        assert!(
            !decide(
                &SPEC,
                None,
                &Lookup::Missing("AccessDeniedException"),
                &Lookup::Missing("AccessDeniedException"),
                None
            )
            .adjustable
        );
    }
}
