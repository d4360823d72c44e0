//! A raw client of the agent API (protocol.rs) over HTTPS, written against the wire contract
//! rather than the controller's client: tests send what a stale or unauthenticated caller would.
//!
//! The agent bench includes this file too.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use chaosbot::agent::protocol::{
    Applied, Apply, ErrorBody, FaultList, Hello, PROTOCOL_HEADER, PROTOCOL_VERSION, Renew, Renewed,
    Revert, Reverted,
};
use chaosbot::tls::TlsOptions;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A refusal (or a failure to reach the agent: status 0).
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub body: Option<ErrorBody>,
    pub text: String,
}

impl Refusal {
    pub fn code(&self) -> &str {
        self.body.as_ref().map(|b| b.code.as_str()).unwrap_or("")
    }
}

pub struct AgentApi {
    pub base: String,
    client: reqwest::Client,
    secret: Option<String>,
}

impl AgentApi {
    /// A client of the agent at `base` (`https://10.203.n.2:port`) trusting `ca_file`, sending
    /// `secret` as the bearer token when given.
    pub fn new(base: &str, ca_file: &Path, secret: Option<&str>) -> AgentApi {
        let tls = chaosbot::tls::client_config(&TlsOptions {
            ca_file: Some(ca_file.to_path_buf()),
            ..TlsOptions::default()
        })
        .expect("client TLS config from the test CA");
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("reqwest client");
        AgentApi {
            base: base.trim_end_matches('/').to_string(),
            client,
            secret: secret.map(str::to_string),
        }
    }

    /// The same agent with other credentials.
    pub fn with_secret(&self, secret: Option<&str>) -> AgentApi {
        AgentApi {
            base: self.base.clone(),
            client: self.client.clone(),
            secret: secret.map(str::to_string),
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, Refusal> {
        let mut req = req.header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string());
        if let Some(s) = &self.secret {
            req = req.bearer_auth(s);
        }
        let resp = req.send().await.map_err(|e| Refusal {
            status: 0,
            body: None,
            text: format!("{e:?}"),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            serde_json::from_str(&text).map_err(|e| Refusal {
                status,
                body: None,
                text: format!("answer does not parse ({e}): {text}"),
            })
        } else {
            Err(Refusal {
                status,
                body: serde_json::from_str(&text).ok(),
                text,
            })
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Refusal> {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Refusal> {
        let body = serde_json::to_vec(body).expect("request body serializes");
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(req).await
    }

    pub async fn hello(&self) -> Result<Hello, Refusal> {
        self.get("/v1/hello").await
    }

    pub async fn faults(&self) -> Result<FaultList, Refusal> {
        self.get("/v1/faults").await
    }

    pub async fn apply(&self, req: &Apply) -> Result<Applied, Refusal> {
        self.post("/v1/faults", req).await
    }

    pub async fn renew(&self, req: &Renew) -> Result<Renewed, Refusal> {
        self.post("/v1/leases", req).await
    }

    pub async fn revert(&self, fault_id: &str, req: &Revert) -> Result<Reverted, Refusal> {
        self.post(&format!("/v1/faults/{fault_id}/revert"), req)
            .await
    }
}
