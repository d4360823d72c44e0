//! `[server]`: what `chaosbot serve` shows outside Slack, the live run pages
//! (`/runs/<id>`), and how their links are signed.

use std::time::Duration;

use serde::Deserialize;

use super::Secret;

/// The run pages' settings. Without `public_url` the parent message carries no link (the
/// pages are still served, to whoever holds a link made by `chaosbot page-link`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Base URL people reach `chaosbot serve` at, like `https://chaosbot.example.com`; links
    /// to run pages start with it. Env: CHAOSBOT_PUBLIC_URL.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Key of the links' HMAC. Every replica behind one address needs the same one. When
    /// unset, a key derived from the Slack signing secret (which replicas share) is used.
    /// Env: CHAOSBOT_PAGE_SECRET.
    #[serde(default)]
    pub page_secret: Option<Secret>,
    /// How long a run page link in the parent message works, from the run's submission.
    #[serde(default = "default_link_ttl", with = "crate::config::duration_serde")]
    pub link_ttl: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            public_url: None,
            page_secret: None,
            link_ttl: default_link_ttl(),
        }
    }
}

fn default_link_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

impl ServerConfig {
    /// The base URL without a trailing `/`, checked: `Err` says what is wrong with it.
    pub fn base_url(&self) -> Result<Option<String>, String> {
        let Some(raw) = self.public_url.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let url = url::Url::parse(raw).map_err(|e| {
            format!(
                "server.public_url `{raw}` is not a URL ({e}); write where people reach chaosbot serve, like https://chaosbot.example.com"
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!(
                "server.public_url `{raw}` must be an http:// or https:// address with a host, like https://chaosbot.example.com"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "server.public_url `{raw}` must not carry a query or fragment; links add their own"
            ));
        }
        Ok(Some(raw.trim_end_matches('/').to_string()))
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        self.base_url()?;
        if self.link_ttl.is_zero() {
            return Err("server.link_ttl must be above zero (e.g. \"7d\")".into());
        }
        if self
            .page_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < 16)
        {
            return Err(
                "server.page_secret is shorter than 16 characters; use a long random value (e.g. `openssl rand -hex 32`)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_is_checked_and_trimmed() {
        let mut s = ServerConfig {
            public_url: Some("https://chaos.example.com/".into()),
            ..ServerConfig::default()
        };
        assert_eq!(
            s.base_url().unwrap().as_deref(),
            Some("https://chaos.example.com")
        );
        s.public_url = Some("ftp://x".into());
        assert!(s.base_url().unwrap_err().contains("http://"));
        s.public_url = Some("https://x/?a=1".into());
        assert!(s.base_url().unwrap_err().contains("query"));
    }
}
