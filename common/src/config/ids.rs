//! Identifiers in the config file: account IDs, role ARNs, regions, session names.
//! Each is validated while it is parsed, so the parser's error names the key.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Deserializes a string and validates it with `check`, which returns the message.
pub(super) fn checked_string<'de, D: Deserializer<'de>>(
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
        pub(crate) struct $name(pub(crate) String);
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
validated_string!(
    /// A name out of a collector's short list (a usage source): 1 to 32 lowercase
    /// letters, digits or underscores; which names a collector takes is checked
    /// against the collector.
    SourceName,
    check_source_name
);
validated_string!(
    /// An STS external ID.
    ExternalId,
    check_external_id
);

validated_string!(
    /// The name of the role to assume in every discovered account, with its path if it
    /// has one (`headroom-reader`, `ops/headroom-reader`).
    RoleName,
    check_role_name
);
validated_string!(
    /// An AWS Organizations root (`r-…`) or organizational unit (`ou-…-…`) ID.
    ParentId,
    check_parent_id
);
validated_string!(
    /// An AWS tag key (1 to 128 characters), whose value becomes a label.
    TagKey,
    check_tag_key
);
validated_string!(
    /// A display name for an account: 1 to 128 printable characters.
    AccountName,
    check_account_name
);

impl RoleName {
    /// The role's ARN in `account` of `partition`.
    pub(crate) fn arn(&self, partition: &str, account: &str) -> RoleArn {
        RoleArn(format!("arn:{partition}:iam::{account}:role/{}", self.0))
    }
}

impl TagKey {
    /// The label that carries this tag's value: `tag_` and the key, every character
    /// that a label name may not hold replaced by `_` (`cost-center`: `tag_cost_center`).
    pub(crate) fn label(&self) -> String {
        let mut out = String::from("tag_");
        out.extend(
            self.0
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
        out
    }
}

impl RoleArn {
    /// The account ID inside the ARN (validated at parse time).
    pub(crate) fn account_id(&self) -> &str {
        self.0.split(':').nth(4).unwrap_or_default()
    }

    /// The partition inside the ARN (validated at parse time).
    pub(crate) fn partition(&self) -> &str {
        self.0.split(':').nth(1).unwrap_or_default()
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
    // IAM allows ARNs up to 2,048 characters.
    if s.len() > 2048 {
        return Err(format!(
            "malformed role ARN: {} characters, at most 2048",
            s.len()
        ));
    }
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
    // IAM: a role name of 1 to 64 characters, under a path of at most 512.
    let (path, role) = name.rsplit_once('/').unwrap_or(("", name));
    if role.len() > 64 {
        return bad("the role name is longer than 64 characters");
    }
    if path.len() + 2 > 512 {
        return bad("the role path is longer than 512 characters");
    }
    Ok(())
}

fn check_role_name(s: &str) -> Result<(), String> {
    // The same rules as the resource of a role ARN, in an ARN of a valid account.
    check_role_arn(&format!("arn:aws:iam::000000000000:role/{s}"))
        .map_err(|_| {
            let shown: String = s.chars().take(80).collect();
            format!("invalid role name {shown:?}: letters, digits and +=,.@_-, at most 64, optionally under a path (ops/headroom)")
        })
        .and_then(|()| {
            if s.starts_with('/') {
                Err("invalid role name: write the path without a leading /".into())
            } else {
                Ok(())
            }
        })
}

fn check_parent_id(s: &str) -> Result<(), String> {
    let lower_alnum = |p: &str, min: usize| {
        (min..=32).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let ok = match s.split('-').collect::<Vec<_>>()[..] {
        ["r", root] => lower_alnum(root, 4),
        ["ou", root, unit] => lower_alnum(root, 4) && lower_alnum(unit, 8),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        let shown: String = s.chars().take(80).collect();
        Err(format!(
            "invalid organizational unit {shown:?}: expected an OU ID (ou-ab12-cdef3456) or a root ID (r-ab12)"
        ))
    }
}

fn check_tag_key(s: &str) -> Result<(), String> {
    if (1..=128).contains(&s.chars().count()) && !s.starts_with("aws:") {
        Ok(())
    } else {
        let shown: String = s.chars().take(80).collect();
        Err(format!(
            "invalid tag key {shown:?}: 1 to 128 characters, not starting with aws:"
        ))
    }
}

fn check_account_name(s: &str) -> Result<(), String> {
    if (1..=128).contains(&s.chars().count()) && !s.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(format!(
            "invalid account name: {} characters, expected 1 to 128 printable ones",
            s.chars().count()
        ))
    }
}

/// An STS external ID: 2 to 1,224 of `[\w+=,.@:/-]`, as AssumeRole accepts.
fn check_external_id(s: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c);
    if !(2..=1224).contains(&s.len()) {
        return Err(format!(
            "invalid external ID: {} characters, expected 2 to 1224",
            s.len()
        ));
    }
    if !s.chars().all(ok) {
        return Err("invalid external ID: only letters, digits and _+=,.@:/- are allowed".into());
    }
    Ok(())
}

fn check_region(s: &str) -> Result<(), String> {
    // The longest region names are under 20 characters.
    if s.len() > 32 {
        return Err(format!(
            "invalid region: {} characters, expected a name such as eu-west-1",
            s.len()
        ));
    }
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

fn check_source_name(s: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if (1..=32).contains(&s.len()) && s.chars().all(ok) {
        Ok(())
    } else {
        let shown: String = s.chars().take(40).collect();
        Err(format!(
            "invalid name {shown:?}: 1 to 32 lowercase letters, digits or underscores"
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
