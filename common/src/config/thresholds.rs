//! Alert thresholds per quota, account and resource: the config's `alert_thresholds`,
//! and the resolution the exporter exports as `aws_quota_alert_threshold_ratio`
//! wherever it differs from the rules' defaults.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::pattern::Pattern;
use super::values::Ratio;
use crate::api::QuotaSpec;

/// The rules' default warning threshold (alerts/headroom.rules.yml).
pub(crate) const DEFAULT_WARNING: f64 = 0.80;
/// The rules' default critical threshold.
pub(crate) const DEFAULT_CRITICAL: f64 = 0.95;
/// "Never alert", as exported: above any ratio a quota can reach.
pub(crate) const NEVER: f64 = f64::INFINITY;

/// A quota's thresholds: `warning` and `critical` ratios, or `never: true` (a key left
/// out keeps the less specific level's value); then for resources by pattern (the
/// first pattern that matches a resource's name applies).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct QuotaThresholds {
    pub warning: Option<Ratio>,
    pub critical: Option<Ratio>,
    /// Never alert on this quota: both thresholds set to never.
    pub never: bool,
    pub resources: Vec<ResourceThresholds>,
}

/// Thresholds for the resources whose names match a pattern.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourceThresholds {
    #[serde(rename = "match")]
    pub pattern: Pattern,
    #[serde(default)]
    pub warning: Option<Ratio>,
    #[serde(default)]
    pub critical: Option<Ratio>,
    #[serde(default)]
    pub never: bool,
}

/// `alert_thresholds` of a collector or an account, by quota code.
pub(crate) type ThresholdMap = BTreeMap<String, QuotaThresholds>;

/// The thresholds in force for one quota (and resource).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Resolved {
    pub warning: f64,
    pub critical: f64,
}

impl Default for Resolved {
    fn default() -> Self {
        Resolved {
            warning: DEFAULT_WARNING,
            critical: DEFAULT_CRITICAL,
        }
    }
}

impl Resolved {
    fn apply(&mut self, warning: Option<Ratio>, critical: Option<Ratio>, never: bool) {
        if never {
            self.warning = NEVER;
            self.critical = NEVER;
        }
        if let Some(w) = warning {
            self.warning = w.0;
        }
        if let Some(c) = critical {
            self.critical = c.0;
        }
    }

    /// The severities whose threshold is not the default, with their values.
    pub(crate) fn differing(&self) -> impl Iterator<Item = (&'static str, f64)> {
        [
            ("warning", self.warning, DEFAULT_WARNING),
            ("critical", self.critical, DEFAULT_CRITICAL),
        ]
        .into_iter()
        .filter(|(_, v, d)| v != d)
        .map(|(s, v, _)| (s, v))
    }
}

/// The thresholds of one collector in one account: the collector's, then the account's
/// over them; most specific wins (collector quota < account quota < collector resource
/// pattern < account resource pattern).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Policy {
    collector: ThresholdMap,
    account: ThresholdMap,
}

impl Policy {
    pub(crate) fn new(collector: &ThresholdMap, account: &ThresholdMap) -> Self {
        Policy {
            collector: collector.clone(),
            account: account.clone(),
        }
    }

    /// True when nothing differs from the defaults anywhere.
    pub(crate) fn is_default(&self) -> bool {
        self.collector.is_empty() && self.account.is_empty()
    }

    pub(crate) fn resolve(&self, quota_code: &str, resource: &str) -> Resolved {
        let mut r = Resolved::default();
        let levels = [self.collector.get(quota_code), self.account.get(quota_code)];
        for q in levels.iter().flatten() {
            r.apply(q.warning, q.critical, q.never);
        }
        if !resource.is_empty() {
            for q in levels.iter().flatten() {
                if let Some(rule) = q.resources.iter().find(|x| x.pattern.matches(resource)) {
                    r.apply(rule.warning, rule.critical, rule.never);
                }
            }
        }
        r
    }
}

/// Checks `alert_thresholds` at `key` against the quotas it may name, and against the
/// less specific level (`under`, the collector's, for an account's): a warning above
/// its critical, a quota code nobody counts, a pattern on a quota without resources, or
/// a pattern that an earlier one leaves nothing to match.
pub(crate) fn check(
    key: &str,
    map: &ThresholdMap,
    under: Option<&ThresholdMap>,
    specs: &[QuotaSpec],
    // Any quota code is accepted (a collector discovers its quotas): such quotas have
    // no resources.
    open: bool,
) -> Result<(), String> {
    for (code, q) in map {
        let here = format!("{key}.{code}");
        let spec = specs.iter().find(|s| s.quota_code == code.as_str());
        if spec.is_none() && !open {
            let known: Vec<&str> = specs.iter().map(|s| s.quota_code.as_ref()).collect();
            return Err(format!(
                "{here}: unknown quota code, expected one of: {}",
                known.join(", ")
            ));
        }
        if q.never && (q.warning.is_some() || q.critical.is_some()) {
            return Err(format!(
                "{here}.never: never alerting leaves no use for warning or critical; set one or the other"
            ));
        }
        if !q.resources.is_empty() && !spec.is_some_and(|s| s.resource_level) {
            return Err(format!(
                "{here}.resources: {code} is a quota per account or region, with no resources for a pattern to match"
            ));
        }
        let base = under.and_then(|u| u.get(code));
        let mut quota = Resolved::default();
        for b in base.iter() {
            quota.apply(b.warning, b.critical, b.never);
        }
        quota.apply(q.warning, q.critical, q.never);
        ordered(&here, quota)?;
        for (i, rule) in q.resources.iter().enumerate() {
            let at = format!("{here}.resources[{i}]");
            let l = rule;
            if l.never && (l.warning.is_some() || l.critical.is_some()) {
                return Err(format!(
                    "{at}.never: never alerting leaves no use for warning or critical; set one or the other"
                ));
            }
            if let Some(j) = q.resources[..i]
                .iter()
                .position(|earlier| covers(&earlier.pattern, &rule.pattern))
            {
                return Err(format!(
                    "{at}.match: {:?} can never match: resources[{j}] ({:?}) comes first and matches every name it would",
                    rule.pattern.0, q.resources[j].pattern.0
                ));
            }
            let mut r = quota;
            r.apply(l.warning, l.critical, l.never);
            ordered(&at, r)?;
        }
    }
    // The collector's resource patterns under an account's quota-level values.
    if let Some(under) = under {
        for (code, q) in map {
            for (i, rule) in under
                .get(code)
                .into_iter()
                .flat_map(|u| u.resources.iter())
                .enumerate()
            {
                let mut r = Resolved::default();
                for level in [under.get(code), Some(q)].into_iter().flatten() {
                    r.apply(level.warning, level.critical, level.never);
                }
                r.apply(rule.warning, rule.critical, rule.never);
                ordered(
                    &format!("{key}.{code} (with the collector's resources[{i}])"),
                    r,
                )?;
            }
        }
    }
    Ok(())
}

/// A warning must not be above its critical (never is above everything).
fn ordered(key: &str, r: Resolved) -> Result<(), String> {
    if r.warning > r.critical {
        let show = |v: f64| {
            if v == NEVER {
                "never".to_string()
            } else {
                v.to_string()
            }
        };
        return Err(format!(
            "{key}: the warning threshold ({}) is above the critical one ({}); a warning must come first",
            show(r.warning),
            show(r.critical)
        ));
    }
    Ok(())
}

/// Whether `earlier` matches every name `later` can match: the same pattern, or one
/// that is only `*`s.
fn covers(earlier: &Pattern, later: &Pattern) -> bool {
    earlier == later || earlier.0.chars().all(|c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(yaml: &str) -> ThresholdMap {
        serde_yaml::from_str(yaml).expect("thresholds")
    }

    const SPECS: &[QuotaSpec] = &[
        QuotaSpec::documented("ssm", "standard", "Standard", 10.0),
        QuotaSpec::service_quota("ecr", "L-IMG", "Images", 10.0).per_resource(),
    ];

    #[test]
    fn the_most_specific_level_wins_key_by_key() {
        let collector = map(
            "standard: {warning: 0.7}\nL-IMG:\n  critical: 0.99\n  resources:\n    - {match: 'team-a/*', warning: 0.9}\n    - {match: '*', never: true}\n",
        );
        let account = map("standard: {critical: 0.85}\nL-IMG: {warning: 0.5}\n");
        let p = Policy::new(&collector, &account);
        assert_eq!(
            p.resolve("standard", ""),
            Resolved {
                warning: 0.7,
                critical: 0.85
            }
        );
        assert_eq!(p.resolve("other", ""), Resolved::default());
        // Account quota level over the collector's, then the resource pattern over both.
        assert_eq!(
            p.resolve("L-IMG", ""),
            Resolved {
                warning: 0.5,
                critical: 0.99
            }
        );
        assert_eq!(
            p.resolve("L-IMG", "team-a/app"),
            Resolved {
                warning: 0.9,
                critical: 0.99
            }
        );
        assert_eq!(
            p.resolve("L-IMG", "sandbox/x"),
            Resolved {
                warning: NEVER,
                critical: NEVER
            }
        );
        let only_collector = Policy::new(&collector, &ThresholdMap::new());
        assert_eq!(
            only_collector
                .resolve("standard", "")
                .differing()
                .collect::<Vec<_>>(),
            vec![("warning", 0.7)]
        );
        assert_eq!(
            Policy::default()
                .resolve("standard", "")
                .differing()
                .count(),
            0
        );
    }

    #[test]
    fn check_refuses_what_cannot_work() {
        let err = |yaml: &str| check("t", &map(yaml), None, SPECS, false).expect_err(yaml);
        assert!(err("standard: {warning: 0.9, critical: 0.8}")
            .contains("t.standard: the warning threshold (0.9) is above the critical one (0.8)"));
        // Against the default critical of 0.95.
        assert!(err("standard: {warning: 0.97}").contains("above the critical one (0.95)"));
        assert!(err("nope: {warning: 0.5}")
            .contains("t.nope: unknown quota code, expected one of: standard, L-IMG"));
        assert!(err("standard: {resources: [{match: 'x*', warning: 0.5}]}")
            .contains("t.standard.resources: standard is a quota per account or region"));
        assert!(err(
            "L-IMG: {resources: [{match: '**', never: true}, {match: 'a*', warning: 0.5}]}"
        )
        .contains("t.L-IMG.resources[1].match: \"a*\" can never match: resources[0]"));
        assert!(err(
            "L-IMG: {resources: [{match: 'a*', warning: 0.5}, {match: 'a*', warning: 0.6}]}"
        )
        .contains("resources[1].match"));
        assert!(err("standard: {never: true, warning: 0.5}").contains("t.standard.never"));
        assert!(err("L-IMG: {resources: [{match: 'a', warning: 0.99}]}")
            .contains("t.L-IMG.resources[0]: the warning threshold (0.99)"));
        // An account's value against the collector's.
        let collector = map("standard: {critical: 0.6}");
        let e = check(
            "a",
            &map("standard: {warning: 0.7}"),
            Some(&collector),
            SPECS,
            false,
        )
        .expect_err("above");
        assert!(
            e.contains("a.standard: the warning threshold (0.7) is above the critical one (0.6)"),
            "{e}"
        );
        assert!(check("t", &map("standard: {never: true}\nL-IMG: {warning: 0.5, resources: [{match: 'a*', critical: 0.7}, {match: '*', never: true}]}"), None, SPECS, false).is_ok());
        // A collector that discovers its quotas may name any code, without resources.
        assert!(check("t", &map("L-ANY: {warning: 0.5}"), None, SPECS, true).is_ok());
        assert!(check(
            "t",
            &map("L-ANY: {resources: [{match: 'a', warning: 0.5}]}"),
            None,
            SPECS,
            true
        )
        .is_err());
        // Out-of-range ratios are refused by the parser, naming the value.
        let bad: Result<ThresholdMap, _> = serde_yaml::from_str("standard: {warning: 1.5}");
        assert!(bad
            .expect_err("ratio")
            .to_string()
            .contains("invalid ratio 1.5"));
    }
}
