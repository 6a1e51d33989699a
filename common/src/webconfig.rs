//! `--web.config.file`, in the Prometheus exporter-toolkit format: basic authentication
//! (`basic_auth_users`, bcrypt hashes) and TLS (`tls_server_config`). This module reads
//! and checks the file; `tls` builds the TLS server from the settings. What the toolkit
//! offers and this exporter cannot do is refused by name, never silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file as written; `WebConfig` is what it means.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    #[serde(default)]
    tls_server_config: Option<TlsServerConfigFile>,
    #[serde(default)]
    http_server_config: Option<serde_yaml::Value>,
    #[serde(default)]
    rate_limit: Option<serde_yaml::Value>,
}

/// `tls_server_config` as written, with the toolkit's keys. An empty string is the
/// same as a missing key, as in the toolkit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsServerConfigFile {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
    client_auth_type: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default)]
pub(crate) struct WebConfig {
    basic_auth_users: BTreeMap<String, String>,
    tls: Option<TlsSettings>,
}

/// PEM data for the TLS server: a file (re-read when it changes) or inline text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PemSource {
    File(PathBuf),
    Inline(String),
}

/// Where PEM data comes from, and the key of the web config that said so (for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pem {
    pub(crate) key: &'static str,
    pub(crate) source: PemSource,
}

impl Pem {
    /// The file to watch for changes, if the data is in one.
    pub(crate) fn file(&self) -> Option<&Path> {
        match &self.source {
            PemSource::File(path) => Some(path),
            PemSource::Inline(_) => None,
        }
    }
}

impl std::fmt::Display for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            PemSource::File(path) => write!(f, "tls_server_config.{} {}", self.key, path.display()),
            PemSource::Inline(_) => write!(f, "tls_server_config.{}", self.key),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TlsVersion {
    Tls12,
    Tls13,
}

/// `client_auth_type`, for the values that verify what they accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    /// `NoClientCert`: no client certificate is asked for.
    None,
    /// `VerifyClientCertIfGiven`: a client may go without; one it sends must verify.
    VerifyIfGiven(Pem),
    /// `RequireAndVerifyClientCert`: mutual TLS.
    Require(Pem),
}

/// The TLS key-exchange groups of `curve_preferences`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    X25519,
    P256,
    P384,
}

/// The TLS 1.2 cipher suites (IANA names, as Go and the toolkit spell them) that the TLS
/// library offers: ECDHE with an AEAD. Go's CBC suites are refused.
pub(crate) const TLS12_CIPHER_SUITES: [&str; 6] = [
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// TLS 1.3 suites: accepted in `cipher_suites` and ignored, as in Go, where TLS 1.3
/// suites are not configurable.
const TLS13_CIPHER_SUITES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// `tls_server_config`, checked: what `tls` needs to build the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub(crate) cert: Pem,
    pub(crate) key: Pem,
    pub(crate) client_auth: ClientAuth,
    pub(crate) min_version: TlsVersion,
    pub(crate) max_version: TlsVersion,
    /// TLS 1.2 suites in preference order (names of `TLS12_CIPHER_SUITES`); empty for
    /// the library's defaults.
    pub(crate) cipher_suites: Vec<&'static str>,
    pub(crate) prefer_server_cipher_suites: bool,
    /// In preference order; empty for the library's defaults.
    pub(crate) curve_preferences: Vec<Curve>,
}

impl TlsSettings {
    /// The files the server reads, to re-read them when they change.
    pub(crate) fn files(&self) -> Vec<&Path> {
        let ca = match &self.client_auth {
            ClientAuth::None => None,
            ClientAuth::VerifyIfGiven(ca) | ClientAuth::Require(ca) => Some(ca),
        };
        [Some(&self.cert), Some(&self.key), ca]
            .into_iter()
            .flatten()
            .filter_map(Pem::file)
            .collect()
    }
}

impl WebConfig {
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text =
            crate::config::read_bounded(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Relative file names are relative to the web config file, as in the toolkit.
        let dir = path.parent().unwrap_or(Path::new(""));
        Self::parse(&text, dir).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the file's text; relative file names are taken relative to `dir`.
    pub(crate) fn parse(text: &str, dir: &Path) -> Result<Self, String> {
        let c: WebConfigFile = if text.trim().is_empty() {
            WebConfigFile::default()
        } else {
            crate::config::parse_yaml(text)?
        };
        if c.http_server_config.is_some() {
            return Err("http_server_config: not supported (HTTP/2 is offered over TLS; response headers cannot be set)".into());
        }
        if c.rate_limit.is_some() {
            return Err("rate_limit: not supported".into());
        }
        for (user, hash) in &c.basic_auth_users {
            // The whole hash must parse (version, cost, salt, digest): a value that only
            // starts like one would pass the check and then refuse every login.
            let parsed = hash.parse::<bcrypt::HashParts>();
            let version_ok =
                hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$");
            if !version_ok || parsed.is_err() || hash.len() != 60 {
                return Err(format!(
                    "basic_auth_users.{user}: expected a bcrypt hash ($2y$10$ and 53 more characters, as htpasswd -nbBC 10 writes it)"
                ));
            }
        }
        let tls = match c.tls_server_config {
            Some(t) => tls_settings(t, dir)?,
            None => None,
        };
        Ok(WebConfig {
            basic_auth_users: c.basic_auth_users,
            tls,
        })
    }

    /// The TLS settings; `None` serves plain HTTP.
    pub(crate) fn tls(&self) -> Option<&TlsSettings> {
        self.tls.as_ref()
    }

    /// `basic_auth_users`: bcrypt hash by user name; empty when authentication is off.
    /// `auth` verifies requests against them.
    pub(crate) fn basic_auth_users(&self) -> &BTreeMap<String, String> {
        &self.basic_auth_users
    }
}

/// The user name and password of a `Basic` `Authorization` header; `None` when the
/// header is missing or malformed.
pub(crate) fn basic_credentials(header: Option<&str>) -> Option<(String, String)> {
    let encoded = header?.strip_prefix("Basic ")?;
    let text = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// A key's value, `None` when missing or empty.
fn set(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// One of the inline key and the file key, not both.
fn pem(
    inline_key: &'static str,
    inline: Option<String>,
    file_key: &'static str,
    file: Option<String>,
    dir: &Path,
) -> Result<Option<Pem>, String> {
    match (set(inline), set(file)) {
        (Some(_), Some(_)) => Err(format!(
            "tls_server_config: set {inline_key} or {file_key}, not both"
        )),
        (Some(text), None) => Ok(Some(Pem {
            key: inline_key,
            source: PemSource::Inline(text),
        })),
        (None, Some(file)) => Ok(Some(Pem {
            key: file_key,
            source: PemSource::File(dir.join(file)),
        })),
        (None, None) => Ok(None),
    }
}

fn version(key: &str, value: Option<String>, default: TlsVersion) -> Result<TlsVersion, String> {
    match set(value).as_deref() {
        None => Ok(default),
        Some("TLS12") => Ok(TlsVersion::Tls12),
        Some("TLS13") => Ok(TlsVersion::Tls13),
        Some(v @ ("TLS10" | "TLS11")) => Err(format!(
            "tls_server_config.{key}: {v} is not supported: the TLS library (rustls) speaks TLS 1.2 and 1.3 only; use TLS12 or TLS13"
        )),
        Some(v) => Err(format!(
            "tls_server_config.{key}: unknown TLS version {v:?} (TLS12 or TLS13)"
        )),
    }
}

/// The checked TLS settings; `None` when the section configures no TLS at all (the
/// toolkit then serves plain HTTP too).
fn tls_settings(t: TlsServerConfigFile, dir: &Path) -> Result<Option<TlsSettings>, String> {
    let cert = pem("cert", t.cert, "cert_file", t.cert_file, dir)?;
    let key = pem("key", t.key, "key_file", t.key_file, dir)?;
    let ca = pem(
        "client_ca",
        t.client_ca,
        "client_ca_file",
        t.client_ca_file,
        dir,
    )?;
    let auth = set(t.client_auth_type);
    if cert.is_none() && key.is_none() && ca.is_none() && auth.is_none() {
        let other = t.min_version.is_some()
            || t.max_version.is_some()
            || t.cipher_suites.is_some()
            || t.prefer_server_cipher_suites.is_some()
            || t.curve_preferences.is_some()
            || t.client_allowed_sans.is_some();
        if !other {
            return Ok(None);
        }
    }
    if t.client_allowed_sans.is_some() {
        return Err("tls_server_config.client_allowed_sans: not supported; give the clients a CA of their own (client_ca_file) instead".into());
    }
    let cert = cert.ok_or("tls_server_config: cert_file (or cert) is missing")?;
    let key = key.ok_or("tls_server_config: key_file (or key) is missing")?;
    let client_auth = match (auth.as_deref(), ca) {
        (None | Some("NoClientCert"), None) => ClientAuth::None,
        (None | Some("NoClientCert"), Some(ca)) => {
            return Err(format!(
                "tls_server_config.{}: a client CA is set but client_auth_type is NoClientCert; set client_auth_type: RequireAndVerifyClientCert",
                ca.key
            ))
        }
        (Some(v @ ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert")), None) => {
            return Err(format!(
                "tls_server_config.client_ca_file: missing (or client_ca); client_auth_type {v} verifies client certificates against it"
            ))
        }
        (Some("VerifyClientCertIfGiven"), Some(ca)) => ClientAuth::VerifyIfGiven(ca),
        (Some("RequireAndVerifyClientCert"), Some(ca)) => ClientAuth::Require(ca),
        (Some(v @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert")), _) => {
            return Err(format!(
                "tls_server_config.client_auth_type: {v} is not supported: it accepts client certificates without verifying them; use RequireAndVerifyClientCert with client_ca_file"
            ))
        }
        (Some(v), _) => {
            return Err(format!(
                "tls_server_config.client_auth_type: unknown value {v:?} (NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            ))
        }
    };
    let min_version = version("min_version", t.min_version, TlsVersion::Tls12)?;
    let max_version = version("max_version", t.max_version, TlsVersion::Tls13)?;
    if min_version > max_version {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    let mut cipher_suites = Vec::new();
    for (i, name) in t.cipher_suites.unwrap_or_default().iter().enumerate() {
        if let Some(known) = TLS12_CIPHER_SUITES.iter().find(|s| *s == name) {
            cipher_suites.push(*known);
        } else if !TLS13_CIPHER_SUITES.contains(&name.as_str()) {
            return Err(format!(
                "tls_server_config.cipher_suites[{i}]: {name:?} is not supported; the TLS 1.2 suites are {}",
                TLS12_CIPHER_SUITES.join(", ")
            ));
        }
    }
    let mut curve_preferences = Vec::new();
    for (i, name) in t.curve_preferences.unwrap_or_default().iter().enumerate() {
        curve_preferences.push(match name.as_str() {
            "X25519" => Curve::X25519,
            "CurveP256" => Curve::P256,
            "CurveP384" => Curve::P384,
            "CurveP521" => {
                return Err(format!(
                    "tls_server_config.curve_preferences[{i}]: CurveP521 is not supported by the TLS library; use X25519, CurveP256 or CurveP384"
                ))
            }
            other => {
                return Err(format!(
                    "tls_server_config.curve_preferences[{i}]: unknown curve {other:?} (X25519, CurveP256 or CurveP384)"
                ))
            }
        });
    }
    Ok(Some(TlsSettings {
        cert,
        key,
        client_auth,
        min_version,
        max_version,
        cipher_suites,
        prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
        curve_preferences,
    }))
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

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(text, Path::new("/etc/headroom"))
    }

    fn tls(text: &str) -> TlsSettings {
        parse(text).expect("web config").tls.expect("tls settings")
    }

    #[test]
    fn decodes_base64() {
        assert_eq!(
            base64_decode("YWxpY2U6c2VjcmV0").as_deref(),
            Some(&b"alice:secret"[..])
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert!(base64_decode("!!!!").is_none());
        assert_eq!(
            basic_credentials(Some("Basic YWxpY2U6c2VjcmV0")),
            Some(("alice".into(), "secret".into()))
        );
        assert_eq!(basic_credentials(Some("Bearer YWxpY2U6c2VjcmV0")), None);
        assert_eq!(basic_credentials(Some("Basic YWxpY2U=")), None);
        assert_eq!(basic_credentials(None), None);
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        assert!(parse("basic_auth_users:\n  bob: plain\n")
            .unwrap_err()
            .contains("basic_auth_users.bob"));
        assert!(parse("colour: red\n")
            .unwrap_err()
            .contains("unknown field"));
        assert!(parse("http_server_config:\n  http2: false\n")
            .unwrap_err()
            .starts_with("http_server_config: not supported"));
        assert!(parse("").expect("empty").basic_auth_users().is_empty());
        assert!(parse("").expect("empty").tls().is_none());
    }

    #[test]
    fn tls_defaults_follow_the_toolkit_and_paths_are_relative_to_the_file() {
        let t = tls("tls_server_config:\n  cert_file: tls/tls.crt\n  key_file: /abs/tls.key\n");
        assert_eq!(
            t.cert.source,
            PemSource::File("/etc/headroom/tls/tls.crt".into())
        );
        assert_eq!(t.key.source, PemSource::File("/abs/tls.key".into()));
        assert_eq!(t.client_auth, ClientAuth::None);
        assert_eq!(
            (t.min_version, t.max_version),
            (TlsVersion::Tls12, TlsVersion::Tls13)
        );
        assert!(t.prefer_server_cipher_suites);
        assert!(t.cipher_suites.is_empty() && t.curve_preferences.is_empty());
        assert_eq!(
            t.files(),
            [
                Path::new("/etc/headroom/tls/tls.crt"),
                Path::new("/abs/tls.key")
            ]
        );
        // No TLS key at all: plain HTTP, as in the toolkit.
        assert!(parse("tls_server_config: {}\n")
            .expect("empty")
            .tls()
            .is_none());
        assert!(parse("tls_server_config:\n  cert_file: ''\n")
            .expect("empty")
            .tls()
            .is_none());
    }

    #[test]
    fn mutual_tls_and_the_other_keys() {
        let t = tls(concat!(
            "tls_server_config:\n  cert: inline\n  key: inline\n",
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
            "  min_version: TLS13\n  prefer_server_cipher_suites: false\n",
            "  cipher_suites: [TLS_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n",
            "  curve_preferences: [CurveP384, X25519]\n",
        ));
        let ca = Pem {
            key: "client_ca_file",
            source: PemSource::File("/etc/headroom/ca.crt".into()),
        };
        assert_eq!(t.client_auth, ClientAuth::Require(ca));
        assert_eq!(t.cert.source, PemSource::Inline("inline".into()));
        assert_eq!(t.min_version, TlsVersion::Tls13);
        assert!(!t.prefer_server_cipher_suites);
        assert_eq!(t.cipher_suites, ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]);
        assert_eq!(t.curve_preferences, [Curve::P384, Curve::X25519]);
        assert_eq!(t.files(), [Path::new("/etc/headroom/ca.crt")]);
        let t = tls("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: VerifyClientCertIfGiven\n  client_ca: pem\n");
        assert!(matches!(t.client_auth, ClientAuth::VerifyIfGiven(_)));
    }

    #[test]
    fn tls_errors_name_the_key() {
        let base = "tls_server_config:\n  cert_file: c\n  key_file: k\n";
        let cases = [
            ("  min_version: TLS10\n", "tls_server_config.min_version: TLS10 is not supported"),
            ("  max_version: TLS11\n", "tls_server_config.max_version: TLS11 is not supported"),
            ("  min_version: SSL3\n", "tls_server_config.min_version: unknown TLS version"),
            ("  min_version: TLS13\n  max_version: TLS12\n", "min_version is above max_version"),
            ("  client_auth_type: RequireAnyClientCert\n  client_ca_file: ca\n", "client_auth_type: RequireAnyClientCert is not supported"),
            ("  client_auth_type: RequestClientCert\n", "client_auth_type: RequestClientCert is not supported"),
            ("  client_auth_type: Sometimes\n", "client_auth_type: unknown value"),
            ("  client_auth_type: RequireAndVerifyClientCert\n", "client_ca_file: missing"),
            ("  client_ca_file: ca\n", "tls_server_config.client_ca_file: a client CA is set but client_auth_type is NoClientCert"),
            ("  client_allowed_sans: [a]\n", "tls_server_config.client_allowed_sans: not supported"),
            ("  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n", "tls_server_config.cipher_suites[0]: \"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA\" is not supported"),
            ("  curve_preferences: [X25519, CurveP521]\n", "tls_server_config.curve_preferences[1]: CurveP521 is not supported"),
            ("  cert: inline\n", "set cert or cert_file, not both"),
            ("  colour: red\n", "tls_server_config.colour: unknown field `colour`"),
        ];
        for (extra, want) in cases {
            let err = parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.contains(want), "{extra:?}: {err}");
        }
        let err = parse("tls_server_config:\n  key_file: k\n").unwrap_err();
        assert!(err.contains("cert_file (or cert) is missing"), "{err}");
        let err = parse("tls_server_config:\n  cert_file: c\n").unwrap_err();
        assert!(err.contains("key_file (or key) is missing"), "{err}");
        let err = parse("tls_server_config:\n  min_version: TLS13\n").unwrap_err();
        assert!(err.contains("cert_file (or cert) is missing"), "{err}");
    }

    #[test]
    fn a_value_that_only_looks_like_a_bcrypt_hash_is_refused() {
        let good = bcrypt::hash("secret", 4).expect("hash");
        assert!(parse(&format!("basic_auth_users:\n  alice: '{good}'\n")).is_ok());
        for bad in [
            "$2y$10$short",
            "$2y$xx$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz0",
            "$1$md5crypt",
        ] {
            let e = parse(&format!("basic_auth_users:\n  alice: '{bad}'\n")).expect_err(bad);
            assert!(
                e.contains("basic_auth_users.alice: expected a bcrypt hash"),
                "{bad}: {e}"
            );
        }
        let e = parse("basic_auth_users:\n  alice: x\n  alice: y\n").expect_err("duplicate");
        assert!(e.contains("given twice, at line 2 and line 3"), "{e}");
    }
}
