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

/// Resolves the limits of a collector's quotas for one target, keeping state between
/// refreshes (the last values, and which fallbacks were already logged).
#[derive(Debug, Default)]
pub struct LimitResolver {
    current: HashMap<&'static str, ResolvedLimit>,
    logged: HashSet<(&'static str, &'static str, &'static str)>,
}

impl LimitResolver {
    pub fn current(&self) -> &HashMap<&'static str, ResolvedLimit> {
        &self.current
    }

    /// Fetches every quota's limit and returns the new set, and whether every lookup
    /// gave an answer (a failed one should be tried again soon, not in an hour).
    pub async fn refresh(
        &mut self,
        target: &Target,
        quotas: &[QuotaSpec],
        overrides: &BTreeMap<String, f64>,
    ) -> (HashMap<&'static str, ResolvedLimit>, bool) {
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
            let previous = self.current.get(spec.quota_code).copied();
            let resolved = decide(spec, override_value, &applied, &default, previous);
            self.current.insert(spec.quota_code, resolved);
        }
        (self.current.clone(), complete)
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
                "NoSuchResourceException" | "AccessDeniedException" | "AccessDenied" => {
                    Lookup::Missing(e.code)
                }
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
