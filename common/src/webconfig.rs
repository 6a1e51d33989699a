//! `--web.config.file`, in the Prometheus exporter-toolkit format. Basic
//! authentication (`basic_auth_users`, bcrypt hashes) is supported; TLS is refused with
//! a clear message rather than silently served in plain text.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebConfig {
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    #[serde(default)]
    tls_server_config: Option<serde_yaml::Value>,
    #[serde(default)]
    http_server_config: Option<serde_yaml::Value>,
}

impl WebConfig {
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let c: WebConfig = if text.trim().is_empty() {
            WebConfig::default()
        } else {
            crate::config::parse_yaml(text)?
        };
        if c.tls_server_config.is_some() {
            return Err("tls_server_config: TLS is not supported yet; terminate TLS in front of the exporter (a sidecar or the service mesh)".into());
        }
        if c.http_server_config.is_some() {
            return Err("http_server_config: not supported".into());
        }
        for (user, hash) in &c.basic_auth_users {
            if !(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$")) {
                return Err(format!(
                    "basic_auth_users.{user}: expected a bcrypt hash ($2y$...)"
                ));
            }
        }
        Ok(c)
    }

    /// Whether a request with this `Authorization` header may pass.
    pub(crate) fn authorized(&self, header: Option<&str>) -> bool {
        if self.basic_auth_users.is_empty() {
            return true;
        }
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Some(decoded) = base64_decode(encoded.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = text.split_once(':') else {
            return false;
        };
        self.basic_auth_users
            .get(user)
            .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false))
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(
            base64_decode("YWxpY2U6c2VjcmV0").as_deref(),
            Some(&b"alice:secret"[..])
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert!(base64_decode("!!!!").is_none());
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        assert!(WebConfig::parse("tls_server_config:\n  cert_file: x\n")
            .unwrap_err()
            .contains("tls_server_config"));
        assert!(WebConfig::parse("basic_auth_users:\n  bob: plain\n")
            .unwrap_err()
            .contains("basic_auth_users.bob"));
        assert!(WebConfig::parse("colour: red\n")
            .unwrap_err()
            .contains("unknown field"));
        assert!(WebConfig::parse("").expect("empty").authorized(None));
    }
}
