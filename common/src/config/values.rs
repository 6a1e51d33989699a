//! Values in the config file: durations, rates, limits, ratios and bounded counts.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A list that must hold at least one item.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NonEmpty<T>(pub Vec<T>);

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
pub(crate) struct Dur(pub Duration);

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

/// The longest duration any setting takes: past it, adding to a clock overflows
/// somewhere, and no interval or timeout of ours needs more.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses `1h30m`, `5m`, `90s`, `250ms`; the result must be positive.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
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
    if total > MAX_DURATION {
        return Err(format!(
            "invalid duration {s:?}: at most {} (30 days)",
            format_duration(MAX_DURATION)
        ));
    }
    Ok(total)
}

/// Formats a duration the way the config file writes it (`5m`, `1h30m`, `250ms`).
pub(crate) fn format_duration(d: Duration) -> String {
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
pub(crate) struct Rate(pub f64);

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
pub(crate) struct LimitValue(pub f64);

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

/// A ratio from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub(crate) struct Ratio(pub f64);

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
pub(crate) struct Concurrency(pub usize);

/// A whole number in `lo..=hi`, else "invalid {what} {v}: expected {lo} to {hi}".
fn bounded<'de, D, T>(d: D, lo: T, hi: T, what: &str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + PartialOrd + std::fmt::Display,
{
    let v = T::deserialize(d)?;
    if lo <= v && v <= hi {
        Ok(v)
    } else {
        Err(de::Error::custom(format!(
            "invalid {what} {v}: expected {lo} to {hi}"
        )))
    }
}

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bounded(d, 1, 64, "concurrency").map(Concurrency)
    }
}

/// Attempts per request: 1 to 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempts(pub u32);

impl<'de> Deserialize<'de> for Attempts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bounded(d, 1, 20, "attempt count").map(Attempts)
    }
}

/// Pages per listing at most (`aws.max_pages`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PageCap(pub usize);

impl<'de> Deserialize<'de> for PageCap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bounded(d, 1, 1_000_000, "page cap").map(PageCap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
