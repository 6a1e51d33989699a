//! TLS for the HTTP server, with rustls: the server configuration built from the web
//! config's `tls_server_config`, rebuilt when its certificate, key or client CA files
//! change on disk, and a listener that hands axum only connections whose handshake has
//! finished.
//!
//! Rotation: before a handshake, at most once every [`CHECK_INTERVAL`], the files'
//! modification time, size and inode are compared with those of the last load; on a
//! change the whole server configuration is rebuilt from the files. A change that does
//! not load (a half-written file, a key that does not match its certificate) keeps the
//! last good configuration serving and is logged once; the next change is tried again.
//!
//! Handshakes run in tasks of their own, under [`HANDSHAKE_TIMEOUT`], so a slow or
//! silent client holds neither the accept loop nor a task for long, and a failed
//! handshake only closes that connection. At most [`MAX_HANDSHAKES`] run at once (with
//! [`BUSY_HANDSHAKE_TIMEOUT`] when many do), so silent clients cannot exhaust the file
//! descriptors; `connections` then applies the same limits as to plain HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::webconfig::{ClientAuth, Curve, Pem, PemSource, TlsSettings, TlsVersion};

/// How often, at most, the files are checked for changes.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a client has from connecting to the end of its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further clients wait in the listen queue. With
/// `connections::MAX_CONNECTIONS` this bounds the file descriptors the server uses.
const MAX_HANDSHAKES: usize = 256;
/// Above this many handshakes in progress, new ones get [`BUSY_HANDSHAKE_TIMEOUT`], so
/// that a flood of silent clients turns over quickly.
const BUSY_HANDSHAKES: usize = MAX_HANDSHAKES / 4;
const BUSY_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// The TLS server configuration, kept current with the files it was read from.
#[derive(Debug)]
pub(crate) struct ServerTls {
    settings: TlsSettings,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    config: Arc<ServerConfig>,
    /// The files as they were when `config` was read from them.
    loaded: Fingerprint,
    /// The files as they were when they last failed to load: not tried (or logged)
    /// again until they change.
    failed: Option<Fingerprint>,
    checked: Instant,
}

/// Per file: modification time, size and inode; `None` when it cannot be read.
type Fingerprint = Vec<Option<(SystemTime, u64, u64)>>;

impl ServerTls {
    /// Reads the certificate, key and client CA once; an error names the key and file.
    pub(crate) fn new(settings: TlsSettings) -> Result<Self, String> {
        let loaded = fingerprint(&settings.files());
        let config = build(&settings)?;
        Ok(ServerTls {
            settings,
            state: Mutex::new(State {
                config,
                loaded,
                failed: None,
                checked: Instant::now(),
            }),
        })
    }

    /// The configuration for the next handshake, re-read first if the files changed.
    fn current(&self) -> Arc<ServerConfig> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= CHECK_INTERVAL {
            state.checked = Instant::now();
            let files = self.settings.files();
            let now = fingerprint(&files);
            if now != state.loaded && state.failed.as_ref() != Some(&now) {
                match build(&self.settings) {
                    Ok(config) => {
                        tracing::info!(files = %display_files(&files), "TLS certificate reloaded");
                        state.config = config;
                        state.loaded = now;
                        state.failed = None;
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot reload TLS certificate; serving the last good one");
                        state.failed = Some(now);
                    }
                }
            }
        }
        state.config.clone()
    }
}

fn fingerprint(files: &[&Path]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f).ok().map(|m| {
                #[cfg(unix)]
                let inode = std::os::unix::fs::MetadataExt::ino(&m);
                #[cfg(not(unix))]
                let inode = 0;
                (
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    inode,
                )
            })
        })
        .collect()
}

fn display_files(files: &[&Path]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn read(pem: &Pem) -> Result<Vec<u8>, String> {
    match &pem.source {
        PemSource::File(path) => {
            std::fs::read(path).map_err(|e| format!("{pem}: cannot read: {e}"))
        }
        PemSource::Inline(text) => Ok(text.clone().into_bytes()),
    }
}

fn certificates(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(&read(pem)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{pem}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{pem}: no certificate (PEM \"BEGIN CERTIFICATE\") found"
        ));
    }
    Ok(certs)
}

fn private_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(&read(pem)?)
        .map_err(|e| format!("{pem}: no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"))
}

fn client_roots(pem: &Pem) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem)? {
        roots
            .add(cert)
            .map_err(|e| format!("{pem}: not a CA certificate: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// The aws-lc-rs provider, narrowed to `cipher_suites` and `curve_preferences`.
fn provider(settings: &TlsSettings) -> CryptoProvider {
    let mut provider = aws_lc_rs::default_provider();
    if !settings.cipher_suites.is_empty() {
        // TLS 1.3 suites stay as they are (Go does not configure them either); the
        // TLS 1.2 suites are the listed ones, in the listed order.
        let (tls13, tls12): (Vec<_>, Vec<_>) = aws_lc_rs::ALL_CIPHER_SUITES
            .iter()
            .partition(|s| s.version() == &rustls::version::TLS13);
        provider.cipher_suites = tls13
            .into_iter()
            .copied()
            .chain(settings.cipher_suites.iter().filter_map(|name| {
                tls12
                    .iter()
                    .find(|s| s.suite().as_str() == Some(*name))
                    .map(|s| **s)
            }))
            .collect();
    }
    if !settings.curve_preferences.is_empty() {
        provider.kx_groups = settings
            .curve_preferences
            .iter()
            .map(|c| -> &'static dyn SupportedKxGroup {
                match c {
                    Curve::X25519 => aws_lc_rs::kx_group::X25519,
                    Curve::P256 => aws_lc_rs::kx_group::SECP256R1,
                    Curve::P384 => aws_lc_rs::kx_group::SECP384R1,
                }
            })
            .collect();
    }
    provider
}

/// The whole server configuration, read from the settings' files (or inline PEM).
fn build(settings: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let certs = certificates(&settings.cert)?;
    let key = private_key(&settings.key)?;
    let provider = Arc::new(provider(settings));
    let versions: &[&'static SupportedProtocolVersion] =
        match (settings.min_version, settings.max_version) {
            (TlsVersion::Tls12, TlsVersion::Tls12) => &[&rustls::version::TLS12],
            (TlsVersion::Tls13, _) => &[&rustls::version::TLS13],
            (TlsVersion::Tls12, TlsVersion::Tls13) => {
                &[&rustls::version::TLS13, &rustls::version::TLS12]
            }
        };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match &settings.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::VerifyIfGiven(ca) | ClientAuth::Require(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(client_roots(ca)?, provider.clone());
            let verifier = if matches!(settings.client_auth, ClientAuth::VerifyIfGiven(_)) {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("{ca}: cannot verify clients with it: {e}"))?,
            )
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{}, {}: the private key does not belong to the certificate",
            settings.cert, settings.key
        ),
        e => format!("{}, {}: {e}", settings.cert, settings.key),
    })?;
    config.ignore_client_order = settings.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener whose connections axum sees only once their TLS handshake is done.
/// Handshakes run concurrently in their own tasks; dropping the listener (at shutdown)
/// ends those still running.
#[derive(Debug)]
pub(crate) struct TlsListener {
    tcp: TcpListener,
    tls: Arc<ServerTls>,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, tls: ServerTls) -> Self {
        TlsListener {
            tcp,
            tls: Arc::new(tls),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_HANDSHAKES => match accepted {
                    Ok((stream, peer)) => {
                        let timeout = if self.handshakes.len() >= BUSY_HANDSHAKES {
                            BUSY_HANDSHAKE_TIMEOUT
                        } else {
                            HANDSHAKE_TIMEOUT
                        };
                        self.handshakes.spawn(handshake(self.tls.clone(), stream, peer, timeout));
                    }
                    Err(e) => accept_error(e).await,
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// As axum's own listener: errors of one connection are skipped, others (running out
/// of file descriptors) pause accepting for a second rather than spin.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection's handshake; `None` (connection closed) when it fails or times out.
async fn handshake(
    tls: Arc<ServerTls>,
    stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
    let attempt = async move {
        let mut stream = stream;
        if !starts_with_tls(&mut stream).await? {
            return Err("not a TLS handshake".to_string());
        }
        TlsAcceptor::from(tls.current())
            .accept(stream)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(stream)) => Some((stream, peer)),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Whether the client's first byte starts a TLS handshake record. A client that speaks
/// plain HTTP gets a 400 that says why, as Go's servers answer, instead of a reset.
async fn starts_with_tls(stream: &mut TcpStream) -> Result<bool, String> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("closed before the handshake".into());
    }
    // 22: the TLS record type "handshake".
    if first[0] == 22 {
        return Ok(true);
    }
    if first[0].is_ascii_uppercase() {
        let _ = stream
            .write_all(
                b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
            )
            .await;
        let _ = stream.shutdown().await;
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn every_named_tls12_suite_is_offered_by_the_provider() {
        for name in crate::webconfig::TLS12_CIPHER_SUITES {
            assert!(
                aws_lc_rs::ALL_CIPHER_SUITES
                    .iter()
                    .any(|s| s.suite().as_str() == Some(name)),
                "{name}"
            );
        }
    }

    fn settings(dir: &Path, extra: &str) -> Result<TlsSettings, String> {
        let web = crate::webconfig::WebConfig::parse(
            &format!("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n{extra}"),
            dir,
        )?;
        Ok(web.tls().expect("tls").clone())
    }

    #[test]
    fn a_missing_or_bad_file_is_named() {
        let dir = std::env::temp_dir().join(format!("headroom-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let err = ServerTls::new(settings(&dir, "").expect("settings")).unwrap_err();
        assert!(
            err.contains(&format!(
                "tls_server_config.cert_file {}",
                dir.join("tls.crt").display()
            )) && err.contains("cannot read"),
            "{err}"
        );
        std::fs::write(dir.join("tls.crt"), "not pem").expect("write");
        let err = ServerTls::new(settings(&dir, "").expect("settings")).unwrap_err();
        assert!(err.contains("no certificate"), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn the_provider_follows_the_settings() {
        let dir = PathBuf::from("/nonexistent");
        let s = settings(
            &dir,
            "  cipher_suites: [TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [CurveP384]\n",
        )
        .expect("settings");
        let p = provider(&s);
        let names: Vec<_> = p
            .cipher_suites
            .iter()
            .filter_map(|s| s.suite().as_str())
            .collect();
        assert_eq!(
            names,
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            ]
        );
        assert_eq!(p.kx_groups.len(), 1);
        assert_eq!(p.kx_groups[0].name(), aws_lc_rs::kx_group::SECP384R1.name());
    }
}
