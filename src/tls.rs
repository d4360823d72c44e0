//! TLS for the HTTP endpoints chaosbot talks to (probes, rollback calls, the load attack):
//! per-endpoint options, the rustls client configuration built from them (checked up front),
//! and the user-facing explanation of a failed handshake.
//!
//! The crypto provider is always rustls' `ring` (passed explicitly, so the process-wide
//! default other dependencies may or may not install does not matter). Trust comes from the
//! platform's roots, or only from `ca_file` when it is set (as curl's `--cacert`).

use std::collections::HashMap;
use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use serde::{Deserialize, Serialize};

/// TLS settings of one HTTP endpoint. All optional: the default verifies the server against
/// the platform's roots under the URL's host name. The operator writes them on the endpoint
/// (`[[targets.http]]`); a resolved experiment carries them with each URL it calls, so a run
/// uses the settings it was checked with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsOptions {
    /// PEM file with one or more CA certificates; when set, the only roots trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to servers that ask for one (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// Name sent as SNI and verified in the certificate instead of the URL's host (for URLs
    /// that hold an IP address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Accepts any server certificate. Only ever on when written explicitly.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

impl TlsOptions {
    pub fn is_default(&self) -> bool {
        *self == TlsOptions::default()
    }
}

/// Why TLS options cannot be used, each naming the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("`{key}` {}: cannot read it: {source}; point `{key}` at an existing PEM file", .path.display())]
    Unreadable {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{key}` {}: no PEM {what} in it{why}; `{key}` must be a PEM file (-----BEGIN {marker}-----)", .path.display())]
    NotPem {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
        marker: &'static str,
        why: String,
    },
    #[error("`ca_file` {}: certificate {index} cannot be used as a CA: {why}", .path.display())]
    BadCa {
        path: PathBuf,
        index: usize,
        why: String,
    },
    #[error(
        "`{set}` is set without `{missing}`; a client certificate needs both `client_cert` and `client_key`"
    )]
    HalfClientAuth {
        set: &'static str,
        missing: &'static str,
    },
    #[error("`client_key` {} does not match the certificate in `client_cert` {}; set the key that belongs to that certificate", .key.display(), .cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("`client_key` {}: not a usable private key: {why}", .path.display())]
    BadKey { path: PathBuf, why: String },
    #[error("`server_name` `{0}` is not a DNS name or an IP address")]
    BadServerName(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The one crypto provider used for every TLS connection chaosbot opens as a client.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// The platform's roots, read once per process (reading them walks /etc/ssl).
fn native_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "some platform root certificates could not be read");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            // Plain http still works; https fails its handshake with "not trusted".
            tracing::warn!("no platform root certificates found; https endpoints need `ca_file`");
        }
        if ignored > 0 {
            tracing::debug!(added, ignored, "platform root certificates skipped");
        }
        Arc::new(roots)
    }))
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Unreadable {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let not_pem = |why: String| TlsError::NotPem {
        key,
        path: path.to_path_buf(),
        what: "certificate",
        marker: "CERTIFICATE",
        why,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(format!(" ({e})")))?;
    if certs.is_empty() {
        return Err(not_pem(String::new()));
    }
    Ok(certs)
}

fn roots(opts: &TlsOptions) -> Result<Arc<RootCertStore>, TlsError> {
    let Some(path) = &opts.ca_file else {
        return Ok(native_roots());
    };
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs("ca_file", path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.clone(),
            index: i + 1,
            why: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// Like [`client_config`], built once per distinct options in this process. Probes and
/// rollbacks ask for it on every sample: without this each sample would read the PEM files
/// again (and log the insecure warning again). Sharing one config also shares its session
/// cache, so later connections resume. Only successes are kept.
pub fn shared_client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    static BUILT: OnceLock<Mutex<HashMap<TlsOptions, Arc<ClientConfig>>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let lock = || built.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(config) = lock().get(opts) {
        return Ok(Arc::clone(config));
    }
    let config = client_config(opts)?;
    lock().insert(opts.clone(), Arc::clone(&config));
    Ok(config)
}

/// Builds the client configuration of an endpoint, reading and checking every file it names.
/// Connections that share the returned config share its session cache (resumption).
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    if let Some(name) = &opts.server_name {
        server_name(opts, name)?;
    }
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = if opts.insecure_skip_verify {
        tracing::warn!(
            "insecure_skip_verify is set: server certificates are not verified; anyone on the path can impersonate the server"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerify(provider())))
    } else {
        builder.with_root_certificates(roots(opts)?)
    };
    let config = match (&opts.client_cert, &opts.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => {
            return Err(TlsError::HalfClientAuth {
                set: "client_cert",
                missing: "client_key",
            });
        }
        (None, Some(_)) => {
            return Err(TlsError::HalfClientAuth {
                set: "client_key",
                missing: "client_cert",
            });
        }
        (Some(cert_path), Some(key_path)) => {
            let chain = certs("client_cert", cert_path)?;
            let pem = read("client_key", key_path)?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NotPem {
                key: "client_key",
                path: key_path.clone(),
                what: "private key",
                marker: "PRIVATE KEY",
                why: format!(" ({e})"),
            })?;
            // rustls compares the key's public half with the certificate's.
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                        cert: cert_path.clone(),
                        key: key_path.clone(),
                    },
                    other => TlsError::BadKey {
                        path: key_path.clone(),
                        why: other.to_string(),
                    },
                })?
        }
    };
    Ok(Arc::new(config))
}

/// Checks the options as [`client_config`] would use them, for validation.
pub fn check(opts: &TlsOptions) -> Result<(), TlsError> {
    client_config(opts).map(drop)
}

/// The name to send and verify for `host` (the URL's host): `server_name` when set.
pub fn server_name(opts: &TlsOptions, host: &str) -> Result<ServerName<'static>, TlsError> {
    let name = opts.server_name.as_deref().unwrap_or(host);
    // URL hosts write IPv6 addresses in brackets.
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|_| TlsError::BadServerName(name.to_string()))
}

/// Accepts any certificate but still checks the handshake signatures (so the connection is
/// at least with whoever holds the presented certificate's key).
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls error somewhere in `err`'s chain. `io::Error` hides what it wraps from
/// `source()`, so its inner error is looked at too.
pub fn find_rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            let inner: &(dyn StdError + 'static) = inner;
            if let Some(r) = find_rustls_error(inner) {
                return Some(r);
            }
        }
        cur = e.source();
    }
    None
}

/// The user-facing message for a failed TLS connection to `host` (the name verified), when
/// `err`'s chain holds a rustls error; `None` otherwise.
pub fn explain(err: &(dyn StdError + 'static), host: &str) -> Option<String> {
    find_rustls_error(err).map(|e| explain_rustls(e, host))
}

/// The user-facing message for a rustls error on a connection to `host`.
pub fn explain_rustls(err: &rustls::Error, host: &str) -> String {
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(c) => explain_certificate(c, host),
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            format!("{host} requires a client certificate; set `client_cert` and `client_key`")
        }
        E::AlertReceived(
            a @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied),
        ) => format!(
            "{host} refused our client certificate ({a:?}); set `client_cert` and `client_key` to a certificate the server trusts"
        ),
        E::AlertReceived(AlertDescription::HandshakeFailure) => format!(
            "TLS handshake with {host} failed (the server may require a client certificate: set `client_cert` and `client_key`, or it supports no protocol version or cipher we do)"
        ),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            format!("{host} did not answer TLS; if it serves plain HTTP, use an http:// URL")
        }
        E::PeerIncompatible(why) => format!(
            "TLS with {host} failed: the server supports no protocol version or cipher we do ({why:?})"
        ),
        other => format!("TLS with {host} failed: {other}"),
    }
}

fn when(t: &UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || "at an unreadable time".into(),
            |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

fn explain_certificate(err: &CertificateError, host: &str) -> String {
    use CertificateError as C;
    let skip = "(or, for a test service only, set `insecure_skip_verify = true`)";
    match err {
        C::UnknownIssuer | C::BadSignature => format!(
            "the certificate of {host} is not trusted: it is self-signed or signed by an unknown CA; set `ca_file` to the CA that signed it {skip}"
        ),
        C::ExpiredContext { not_after, .. } => format!(
            "the certificate of {host} expired on {}; renew it on the server {skip}",
            when(not_after)
        ),
        C::Expired => {
            format!("the certificate of {host} has expired; renew it on the server {skip}")
        }
        C::NotValidYetContext { not_before, .. } => format!(
            "the certificate of {host} is not valid before {}; check the server's and this machine's clocks",
            when(not_before)
        ),
        C::NotValidYet => format!(
            "the certificate of {host} is not valid yet; check the server's and this machine's clocks"
        ),
        C::NotValidForNameContext {
            expected,
            presented,
        } => {
            let names = if presented.is_empty() {
                "no name".to_string()
            } else {
                presented
                    .iter()
                    .map(|p| bare_name(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "the certificate of {host} is valid for {names}, not {}; set `server_name` to one of its names (or fix the URL's host)",
                expected.to_str()
            )
        }
        C::NotValidForName => format!(
            "the certificate of {host} is not valid for {host}; set `server_name` to a name it holds (or fix the URL's host)"
        ),
        C::Revoked => format!("the certificate of {host} has been revoked"),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            format!("the certificate of {host} is not meant for TLS servers (extended key usage)")
        }
        other => format!("the certificate of {host} was refused: {other:?}"),
    }
}

/// `DnsName("a.test")` (how webpki lists a certificate's names) as `a.test`.
fn bare_name(presented: &str) -> &str {
    match presented.split_once('(') {
        Some((kind, rest)) if kind.chars().all(char::is_alphanumeric) => rest
            .strip_suffix(')')
            .map_or(presented, |inner| inner.trim_matches('"')),
        _ => presented,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_client_auth_and_missing_files_name_the_key() {
        let opts = TlsOptions {
            client_cert: Some("/nonexistent/cert.pem".into()),
            insecure_skip_verify: true,
            ..TlsOptions::default()
        };
        let e = client_config(&opts).unwrap_err().to_string();
        assert!(
            e.contains("`client_cert` is set without `client_key`"),
            "{e}"
        );

        let opts = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let e = client_config(&opts).unwrap_err().to_string();
        assert!(
            e.contains("`ca_file` /nonexistent/ca.pem: cannot read it"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_server_name_is_refused() {
        let opts = TlsOptions {
            server_name: Some("not a name".into()),
            insecure_skip_verify: true,
            ..TlsOptions::default()
        };
        let e = client_config(&opts).unwrap_err().to_string();
        assert!(e.contains("`server_name` `not a name`"), "{e}");
        assert!(server_name(&TlsOptions::default(), "[::1]").is_ok());
    }

    #[test]
    fn errors_are_found_behind_io_errors() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::other(inner);
        let msg = explain(&io, "svc").unwrap_or_default();
        assert!(
            msg.contains("not trusted") && msg.contains("set `ca_file`"),
            "{msg}"
        );
        assert!(explain(&std::io::Error::other("plain"), "svc").is_none());
    }

    #[test]
    fn options_parse_from_toml_and_refuse_typos() {
        let o: TlsOptions =
            toml::from_str("ca_file = \"ca.pem\"\nserver_name = \"svc.test\"").unwrap();
        assert_eq!(o.ca_file.as_deref(), Some(Path::new("ca.pem")));
        assert!(!o.insecure_skip_verify);
        assert!(toml::from_str::<TlsOptions>("ca_flie = \"ca.pem\"").is_err());
    }

    #[test]
    fn presented_names_are_shown_bare() {
        assert_eq!(bare_name("DnsName(\"a.test\")"), "a.test");
        assert_eq!(bare_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(bare_name("a.test"), "a.test");
    }
}
