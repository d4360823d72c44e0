//! The controller's client ([`AgentClient`]) against the real agent over mutual TLS: the CA,
//! the client certificate and `server_name` from an `[[agents]]` entry, and what each
//! misconfiguration becomes.

use chaosbot::agent::AgentError;
use chaosbot::agent::AgentLink;
use chaosbot::agent::client::AgentClient;
use chaosbot::config::{AgentEntry, Secret};

use crate::rig::{SECRET, Site, Via, free_port, leaf, make_ca, spawn};

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

#[tokio::test]
async fn agent_status_says_when_an_unreachable_agent_was_last_heard_from() {
    use chaosbot::engine::agents::AgentRouter;
    use std::sync::Arc;

    let site = Site::new().await;
    let agent = site.agent().await;
    let link: Arc<dyn AgentLink> =
        Arc::new(AgentClient::unix("web-1", site.socket(), Some(SECRET.to_string())).unwrap());
    let never: Arc<dyn AgentLink> =
        Arc::new(AgentClient::unix("local", site.path().join("nobody.sock"), None).unwrap());
    let router = AgentRouter::with_links(Arc::new(Default::default()), never, vec![link]);

    let first = router.status().await;
    let web = first.iter().find(|s| s.name == "web-1").unwrap();
    assert!(web.reachable, "{web:?}");
    // The agent goes away: its status says why, and when this process last heard from it.
    drop(agent);
    let later = router.status().await;
    let web = later.iter().find(|s| s.name == "web-1").unwrap();
    assert!(!web.reachable);
    let last = web.last_contact_ms.expect("a last contact");
    assert!(last <= chaosbot::run::now_ms());
    let line = &web.lines(chaosbot::run::now_ms())[0];
    assert!(line.contains("last contact: 0s ago"), "{line}");
    // One never reached has none.
    let local = later.iter().find(|s| s.name == "local").unwrap();
    assert_eq!(local.last_contact_ms, None, "{local:?}");
    assert!(
        local.lines(chaosbot::run::now_ms())[0].contains("none since this process started"),
        "{:?}",
        local.lines(0)
    );
}
