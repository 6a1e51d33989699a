//! Resource name patterns: `*` matches any run of characters, `?` one character.

use serde::{Deserialize, Deserializer};

use super::ids::checked_string;

/// A name pattern: `*` matches any run of characters, `?` one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern(pub String);

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
    pub(crate) fn matches(&self, name: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
