//! Limit resolution: `override` (config), `service` (reported by the service's own API
//! with the usage), `applied` (Service Quotas), `default` (Service Quotas AWS default),
//! `builtin` (compiled in); the first that has a value wins. Service Quotas is read in
//! bulk, with the paged list calls of each service, so the cost is per service, not
//! per quota.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use aws_sdk_servicequotas::types::{AppliedLevelEnum, QuotaContextScope, ServiceQuota};

use crate::api::{pages, CollectError, LimitFrom, QuotaSpec, ServiceQuotas, Target};

/// The largest page of ListServiceQuotas and ListAWSDefaultServiceQuotas.
pub(crate) const PAGE_SIZE: i32 = 100;

/// Where a limit value came from; the `limit_source` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum LimitSource {
    Override,
    Service,
    Applied,
    Default,
    Builtin,
}

impl LimitSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LimitSource::Override => "override",
            LimitSource::Service => "service",
            LimitSource::Applied => "applied",
            LimitSource::Default => "default",
            LimitSource::Builtin => "builtin",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ResolvedLimit {
    pub value: f64,
    pub source: LimitSource,
    pub adjustable: bool,
}

/// What Service Quotas gave for one quota.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lookup {
    /// A value, and whether AWS says the quota is adjustable.
    Found {
        value: f64,
        adjustable: Option<bool>,
    },
    /// No value here (not listed, NoSuchResource, AccessDenied): the next source.
    Missing(&'static str),
    /// Anything else (throttled after retries, 5xx, timeout): keep what we had.
    Failed(CollectError),
    /// Not asked (the quota is not in Service Quotas, or a source before it won).
    NotAsked,
}

/// Decides one quota's limit from what each source gave. `previous` is used when a
/// lookup failed for a reason that says nothing about the quota.
pub(crate) fn decide(
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

/// The limits in force for one target: per quota code, and per resource where Service
/// Quotas holds a value applied to one resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Limits {
    pub quotas: HashMap<String, ResolvedLimit>,
    /// Quota code -> resource name -> limit.
    pub resources: HashMap<String, HashMap<String, ResolvedLimit>>,
}

impl Limits {
    /// The limit for one usage sample: an override wins over everything; then the
    /// limit the collector reported with the usage (and where it came from); then a
    /// value applied to this resource; then the quota's own.
    pub(crate) fn get(
        &self,
        spec: &QuotaSpec,
        resource: &str,
        reported: Option<(f64, LimitFrom)>,
    ) -> ResolvedLimit {
        let quota = self.quotas.get(spec.quota_code.as_ref()).copied();
        if let Some(q) = quota.filter(|q| q.source == LimitSource::Override) {
            // Whether AWS lets it be raised is the quota's, whatever the value in force.
            return ResolvedLimit {
                adjustable: spec.adjustable,
                ..q
            };
        }
        if let Some((value, from)) = reported {
            return ResolvedLimit {
                value,
                source: match from {
                    LimitFrom::Service => LimitSource::Service,
                    LimitFrom::Applied => LimitSource::Applied,
                    LimitFrom::Default => LimitSource::Default,
                },
                adjustable: spec.adjustable,
            };
        }
        if !resource.is_empty() {
            let per = self.resources.get(spec.quota_code.as_ref());
            if let Some(r) = per.and_then(|m| m.get(resource)) {
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
pub(crate) fn resource_of_arn(arn: &str) -> Option<String> {
    let resource = arn.splitn(6, ':').nth(5)?;
    let name = resource.split_once('/').map_or(resource, |(_, n)| n);
    (!name.is_empty()).then(|| name.to_string())
}

/// What one service's listing gave: values by quota code, and per resource.
#[derive(Debug, Default)]
struct Listing {
    quotas: HashMap<String, (f64, bool)>,
    resources: HashMap<String, HashMap<String, ResolvedLimit>>,
}

const LIST_APPLIED: &str = "ListServiceQuotas";
const LIST_DEFAULTS: &str = "ListAWSDefaultServiceQuotas";

/// Service Quotas listings shared by the limit resolvers of every collector, per
/// account, region, service and list call, so that collectors of one service in one
/// account and region list its quotas once. A listing is reused while it is younger
/// than the asking resolver's `max_age` (and, for the applied values, holds the
/// per-resource values when they are wanted); a failed listing is never reused. One
/// resolver lists while the others that need the same listing wait for it.
#[derive(Debug, Default)]
pub(crate) struct SharedListings {
    slots: std::sync::Mutex<HashMap<ListingKey, Slot>>,
    /// Services some collector reads per-resource values of: every resolver lists
    /// their applied values at every level, so that whichever lists first serves all
    /// (and the number of calls does not depend on which starts first).
    resource_services: BTreeSet<String>,
}

/// Account, region, service code and list call.
type ListingKey = (String, String, String, &'static str);

/// One listing's last good result: when, whether it holds per-resource values, what.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, bool, Arc<Listing>)>>>;

impl SharedListings {
    /// Listings for collectors with these quotas.
    pub(crate) fn for_quotas<'a>(quotas: impl IntoIterator<Item = &'a QuotaSpec>) -> Self {
        SharedListings {
            resource_services: quotas
                .into_iter()
                .filter(|q| q.in_service_quotas && q.resource_level)
                .map(|q| q.service_code.to_string())
                .collect(),
            ..SharedListings::default()
        }
    }

    async fn get(
        &self,
        target: &Target,
        client: &aws_sdk_servicequotas::Client,
        op: &'static str,
        service: &str,
        per_resource: bool,
        max_age: Duration,
    ) -> Result<Arc<Listing>, Lookup> {
        let slot = {
            let mut slots = match self.slots.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let key = (
                target.account_id.clone(),
                target.region.clone(),
                service.to_string(),
                op,
            );
            slots.entry(key).or_default().clone()
        };
        let per_resource =
            per_resource || (op == LIST_APPLIED && self.resource_services.contains(service));
        let mut last = slot.lock().await;
        if let Some((at, with_resources, listing)) = last.as_ref() {
            if at.elapsed() < max_age && (*with_resources || !per_resource) {
                return Ok(listing.clone());
            }
        }
        let listing = Arc::new(list(client, op, service, per_resource).await?);
        *last = Some((Instant::now(), per_resource, listing.clone()));
        Ok(listing)
    }
}

/// Resolves the limits of a collector's quotas for one target, keeping state between
/// refreshes (the last values, and which fallbacks were already logged).
#[derive(Debug, Default)]
pub(crate) struct LimitResolver {
    current: Limits,
    logged: HashSet<(String, &'static str, &'static str)>,
    shared: Arc<SharedListings>,
    /// How old a listing made for another collector may be and still serve this one.
    max_age: Duration,
}

impl LimitResolver {
    /// A resolver that reuses the listings of `shared` younger than `max_age`.
    pub(crate) fn new(shared: Arc<SharedListings>, max_age: Duration) -> Self {
        LimitResolver {
            shared,
            max_age,
            ..LimitResolver::default()
        }
    }

    pub(crate) fn current(&self) -> &Limits {
        &self.current
    }

    /// Looks up every quota's limit, a service at a time, and returns the new set, and
    /// whether every lookup gave an answer (a failed one should be tried again soon,
    /// not in an hour). Per service it costs the pages of ListServiceQuotas (100
    /// quotas a page; every level when a quota has per-resource values), and the pages
    /// of ListAWSDefaultServiceQuotas only when some quota had no applied value.
    pub(crate) async fn refresh(
        &mut self,
        target: &Target,
        quotas: &[QuotaSpec],
        overrides: &BTreeMap<String, f64>,
    ) -> (Limits, bool) {
        let asked =
            |s: &&QuotaSpec| s.in_service_quotas && !overrides.contains_key(s.quota_code.as_ref());
        let services: BTreeSet<&str> = quotas
            .iter()
            .filter(asked)
            .map(|s| s.service_code.as_ref())
            .collect();
        let mut complete = true;
        let mut applied: HashMap<&str, Result<Arc<Listing>, Lookup>> = HashMap::new();
        let mut defaults: HashMap<&str, Result<Arc<Listing>, Lookup>> = HashMap::new();
        let shared = self.shared.clone();
        // No client (and no call) for collectors whose quotas Service Quotas does not know.
        let client = match services.is_empty() {
            true => None,
            false => Some(target.client::<ServiceQuotas>()),
        };
        for (service, client) in services.into_iter().zip(client.iter().cycle()) {
            let wanted: Vec<&QuotaSpec> = quotas
                .iter()
                .filter(asked)
                .filter(|s| s.service_code == service)
                .collect();
            let per_resource = wanted.iter().any(|s| s.resource_level);
            let a = shared
                .get(
                    target,
                    client,
                    LIST_APPLIED,
                    service,
                    per_resource,
                    self.max_age,
                )
                .await;
            self.log_listing(target, service, LIST_APPLIED, &a);
            let missing_some = match &a {
                Ok(l) => wanted
                    .iter()
                    .any(|s| !l.quotas.contains_key(s.quota_code.as_ref())),
                Err(Lookup::Missing(_)) => true,
                Err(_) => false,
            };
            if missing_some {
                let d = shared
                    .get(target, client, LIST_DEFAULTS, service, false, self.max_age)
                    .await;
                self.log_listing(target, service, LIST_DEFAULTS, &d);
                complete &= !matches!(d, Err(Lookup::Failed(_)));
                defaults.insert(service, d);
            }
            complete &= !matches!(a, Err(Lookup::Failed(_)));
            applied.insert(service, a);
        }
        for spec in quotas {
            let code = spec.quota_code.as_ref();
            let override_value = overrides.get(code).copied();
            let service = spec.service_code.as_ref();
            let value_in = |listings: &HashMap<&str, Result<Arc<Listing>, Lookup>>| match listings
                .get(service)
            {
                _ if override_value.is_some() || !spec.in_service_quotas => Lookup::NotAsked,
                None => Lookup::NotAsked,
                Some(Ok(l)) => match l.quotas.get(code) {
                    Some(&(value, adjustable)) => Lookup::Found {
                        value,
                        adjustable: Some(adjustable),
                    },
                    None => Lookup::Missing("not_listed"),
                },
                Some(Err(lookup)) => lookup.clone(),
            };
            let (a, d) = (value_in(&applied), value_in(&defaults));
            let previous = self.current.quotas.get(code).copied();
            let resolved = decide(spec, override_value, &a, &d, previous);
            if resolved.source == LimitSource::Builtin && matches!(a, Lookup::Missing(_)) {
                self.log_builtin(target, spec);
            }
            self.current.quotas.insert(code.to_string(), resolved);
            if spec.resource_level && override_value.is_none() {
                match applied.get(service) {
                    Some(Ok(l)) => {
                        let found = l.resources.get(code).cloned().unwrap_or_default();
                        self.current.resources.insert(code.to_string(), found);
                    }
                    // No resource-level values here: only the quota's own value applies.
                    Some(Err(Lookup::Missing(_))) => {
                        self.current.resources.remove(code);
                    }
                    // Failed: keep the last values.
                    _ => {}
                }
            }
        }
        // Overrides of quotas a collector finds at run time, which are not in `quotas`.
        for (code, value) in overrides {
            if !quotas.iter().any(|s| s.quota_code == code.as_str()) {
                self.current.quotas.insert(
                    code.clone(),
                    ResolvedLimit {
                        value: *value,
                        source: LimitSource::Override,
                        adjustable: false,
                    },
                );
            }
        }
        (self.current.clone(), complete)
    }

    fn log_listing(
        &mut self,
        target: &Target,
        service: &str,
        op: &'static str,
        r: &Result<Arc<Listing>, Lookup>,
    ) {
        // Once per service, operation and error code, not at every limits refresh.
        let code = match r {
            Err(Lookup::Missing(code)) => *code,
            Err(Lookup::Failed(e)) => e.code,
            _ => return,
        };
        if !self.logged.insert((service.to_string(), op, code)) {
            return;
        }
        match r {
            Err(Lookup::Failed(e)) => tracing::warn!(
                account_id = %target.account_id, aws_region = %target.region,
                service_code = service, error = %e,
                "Service Quotas lookup failed; keeping the last known limits"
            ),
            _ => tracing::info!(
                account_id = %target.account_id, aws_region = %target.region,
                service_code = service, operation = op, error_code = code,
                "Service Quotas has no values here; falling back to the next limit source"
            ),
        }
    }

    fn log_builtin(&mut self, target: &Target, spec: &QuotaSpec) {
        if self
            .logged
            .insert((spec.quota_code.to_string(), "builtin", "not_listed"))
        {
            tracing::info!(
                account_id = %target.account_id, aws_region = %target.region,
                service_code = %spec.service_code, quota_code = %spec.quota_code,
                "Service Quotas has no value for this quota here; using the built-in limit"
            );
        }
    }
}

/// One service's quotas from one of the two list calls, every page of it. Resource
/// values (the quota applied to one resource) are read from the applied listing when
/// `per_resource`.
async fn list(
    client: &aws_sdk_servicequotas::Client,
    op: &'static str,
    service: &str,
    per_resource: bool,
) -> Result<Listing, Lookup> {
    let mut listing = Listing::default();
    let mut read = |quotas: Vec<ServiceQuota>, next: Option<String>| {
        for q in quotas {
            listing.add(q);
        }
        Ok(next)
    };
    let result = if op == LIST_APPLIED {
        let level = if per_resource {
            AppliedLevelEnum::All
        } else {
            AppliedLevelEnum::Account
        };
        pages(
            op,
            |token| {
                let level = level.clone();
                async move {
                    client
                        .list_service_quotas()
                        .service_code(service)
                        .quota_applied_at_level(level)
                        .max_results(PAGE_SIZE)
                        .set_next_token(token)
                        .send()
                        .await
                        .map_err(|e| CollectError::from_sdk(op, &e))
                }
            },
            |page| read(page.quotas.unwrap_or_default(), page.next_token),
        )
        .await
    } else {
        pages(
            op,
            |token| async move {
                client
                    .list_aws_default_service_quotas()
                    .service_code(service)
                    .max_results(PAGE_SIZE)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| CollectError::from_sdk(op, &e))
            },
            |page| read(page.quotas.unwrap_or_default(), page.next_token),
        )
        .await
    };
    match result {
        Ok(()) => Ok(listing),
        Err(e) => Err(match e.code {
            "NoSuchResourceException"
            | "AccessDeniedException"
            | "AccessDenied"
            | "IllegalArgumentException" => Lookup::Missing(e.code),
            _ => Lookup::Failed(e),
        }),
    }
}

impl Listing {
    fn add(&mut self, q: ServiceQuota) {
        let (Some(code), Some(value)) = (q.quota_code(), q.value()) else {
            return;
        };
        if !(value.is_finite() && value >= 0.0) {
            return;
        }
        let resource_arn = q
            .quota_context()
            .filter(|c| c.context_scope() == Some(&QuotaContextScope::Resource))
            .and_then(|c| c.context_id());
        match resource_arn {
            Some(arn) => {
                if let Some(resource) = resource_of_arn(arn) {
                    let limit = ResolvedLimit {
                        value,
                        source: LimitSource::Applied,
                        adjustable: q.adjustable(),
                    };
                    self.resources
                        .entry(code.to_string())
                        .or_default()
                        .insert(resource, limit);
                }
            }
            None => {
                self.quotas
                    .insert(code.to_string(), (value, q.adjustable()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: QuotaSpec = QuotaSpec::service_quota("ssm", "L-1", "q", 10.0);

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
        let per = SPEC.per_resource();
        let mut limits = Limits::default();
        assert_eq!(limits.get(&per, "repo", None).source, LimitSource::Builtin);
        limits.quotas.insert(
            "L-1".into(),
            ResolvedLimit {
                value: 100.0,
                source: LimitSource::Applied,
                adjustable: true,
            },
        );
        limits.resources.entry("L-1".into()).or_default().insert(
            "repo".into(),
            ResolvedLimit {
                value: 250.0,
                source: LimitSource::Applied,
                adjustable: true,
            },
        );
        assert_eq!(limits.get(&per, "repo", None).value, 250.0);
        assert_eq!(limits.get(&per, "other", None).value, 100.0);
        assert_eq!(limits.get(&per, "", None).value, 100.0);
        // A limit the service reported with the usage wins over Service Quotas ...
        let service = limits.get(&per, "repo", Some((300.0, LimitFrom::Service)));
        assert_eq!(
            (service.value, service.source),
            (300.0, LimitSource::Service)
        );
        // ... and so does a Service Quotas value the collector read itself, labelled
        // with where it came from.
        for (from, source) in [
            (LimitFrom::Applied, LimitSource::Applied),
            (LimitFrom::Default, LimitSource::Default),
        ] {
            let read = limits.get(&per, "repo", Some((40.0, from)));
            assert_eq!((read.value, read.source), (40.0, source));
        }
        limits.quotas.insert(
            "L-1".into(),
            ResolvedLimit {
                value: 5.0,
                source: LimitSource::Override,
                adjustable: true,
            },
        );
        assert_eq!(limits.get(&per, "repo", None).value, 5.0);
        // ... but not over an override.
        assert_eq!(
            limits
                .get(&per, "repo", Some((300.0, LimitFrom::Service)))
                .value,
            5.0
        );
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
