//! TLS material for an agent on a test host, made with rcgen (as tests/faults/https.rs does):
//! a CA, the agent's certificate for its IP address, a client CA and client certificate for
//! mTLS, and a shared secret, written as files into a temporary directory.
//!
//! The agent bench includes this file too.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

pub fn make_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("CA key");
    let pem = params.self_signed(&key).expect("CA certificate").pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// A leaf certificate for `names` (DNS names or IP addresses) signed by `ca`:
/// (certificate PEM, key PEM).
pub fn leaf(ca: &Ca, names: &[String]) -> (String, String) {
    let mut params = CertificateParams::new(names.to_vec()).expect("leaf parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, "chaosbot agent test");
    let key = KeyPair::generate().expect("leaf key");
    let cert = params
        .signed_by(&key, &ca.issuer)
        .expect("leaf certificate");
    (cert.pem(), key.serialize_pem())
}

/// Files for one agent at `ip` and the controllers that talk to it.
pub struct AgentTls {
    pub dir: tempfile::TempDir,
    /// The CA that signed the agent's certificate (the controller's `ca_file`).
    pub ca_file: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA of client certificates (the agent's `client_ca`).
    pub client_ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub secret: String,
    /// The secret, in a file (mode 0600).
    pub secret_file: PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write TLS material");
    path
}

impl AgentTls {
    pub fn new(ip: Ipv4Addr) -> AgentTls {
        let dir = tempfile::tempdir().expect("tempdir for TLS material");
        let ca = make_ca("chaosbot test agents CA");
        let (cert, key) = leaf(&ca, &[ip.to_string(), "agent.test".to_string()]);
        let clients = make_ca("chaosbot test clients CA");
        let (ccert, ckey) = leaf(&clients, &["controller.test".to_string()]);
        let secret = format!("s3cret-{}-{}", std::process::id(), ip);
        let secret_file = write(dir.path(), "agent.secret", &secret);
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600));
        }
        AgentTls {
            ca_file: write(dir.path(), "agents-ca.pem", &ca.pem),
            cert: write(dir.path(), "agent.pem", &cert),
            key: write(dir.path(), "agent-key.pem", &key),
            client_ca: write(dir.path(), "clients-ca.pem", &clients.pem),
            client_cert: write(dir.path(), "client.pem", &ccert),
            client_key: write(dir.path(), "client-key.pem", &ckey),
            secret,
            secret_file,
            dir,
        }
    }
}
