//! The controller's client ([`AgentClient`]) against the real agent over mutual TLS: the CA,
//! the client certificate and `server_name` from an `[[agents]]` entry, and what each
//! misconfiguration becomes.

use std::path::Path;

use chaosbot::agent::AgentError;
use chaosbot::agent::AgentLink;
use chaosbot::agent::client::AgentClient;
use chaosbot::config::{AgentEntry, Secret};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::rig::{SECRET, Site, Via, free_port, spawn};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn make_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

fn leaf(
    ca: &Ca,
    dir: &Path,
    stem: &str,
    names: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, stem);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (c, k) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}-key.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[tokio::test]
async fn the_client_speaks_mutual_tls_with_server_name_and_maps_refusals() {
    let site = Site::new().await;
    let dir = site.path();
    let server_ca = make_ca("agents ca");
    let client_ca = make_ca("clients ca");
    std::fs::write(dir.join("agents-ca.pem"), &server_ca.pem).unwrap();
    std::fs::write(dir.join("clients-ca.pem"), &client_ca.pem).unwrap();
    let (cert, key) = leaf(&server_ca, dir, "agent", &["agent.test"]);
    let (ccert, ckey) = leaf(&client_ca, dir, "controller", &["controller.test"]);
    let addr = free_port();
    let d = dir.display();
    let cfg = dir.join("tls.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"web-1\"\nlisten = \"{addr}\"\nsecret = \"{SECRET}\"\nstate_dir = \"{d}/state\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{d}/clients-ca.pem\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let opts = chaosbot::tls::TlsOptions {
        ca_file: Some(dir.join("agents-ca.pem")),
        client_cert: Some(ccert.clone()),
        client_key: Some(ckey.clone()),
        server_name: Some("agent.test".into()),
        insecure_skip_verify: false,
    };
    let agent = spawn(
        &["agent", "--config", cfg.to_str().unwrap()],
        dir,
        Via::Tls {
            addr,
            config: chaosbot::tls::client_config(&opts).unwrap(),
        },
        Some(SECRET),
    );
    agent.ready().await;
    let entry = AgentEntry {
        name: "web-1".into(),
        url: format!("https://{addr}"),
        secret: Some(Secret(SECRET.into())),
        secret_file: None,
        ca_file: Some(dir.join("agents-ca.pem")),
        client_cert: Some(ccert.clone()),
        client_key: Some(ckey.clone()),
        server_name: Some("agent.test".into()),
    };
    entry.validate().unwrap();
    let hello = AgentClient::from_entry(&entry)
        .unwrap()
        .hello()
        .await
        .unwrap();
    assert_eq!(hello.agent, "web-1");

    let wrong = AgentEntry {
        secret: Some(Secret("not-the-secret".into())),
        ..entry.clone()
    };
    let err = AgentClient::from_entry(&wrong)
        .unwrap()
        .hello()
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Unauthenticated { .. }), "{err}");

    // Without a client certificate the handshake is refused: nothing is served.
    let bare = AgentEntry {
        client_cert: None,
        client_key: None,
        ..entry.clone()
    };
    let err = AgentClient::from_entry(&bare)
        .unwrap()
        .hello()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::Unreachable { .. } | AgentError::Garbage { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("web-1"), "{err}");

    // A certificate for another name: the client refuses the agent.
    let other = AgentEntry {
        server_name: Some("someone-else.test".into()),
        ..entry
    };
    let err = AgentClient::from_entry(&other)
        .unwrap()
        .hello()
        .await
        .unwrap_err();
    assert!(err.is_unreachable(), "{err}");
}
