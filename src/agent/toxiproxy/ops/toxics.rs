//! The toxic routes: list, read, add, update, remove, and `/reset`.

use std::collections::HashSet;
use std::time::Instant;

use axum::http::StatusCode;
use serde_json::Value;
use tracing::warn;

use super::super::model::{
    ApiError, ToxicInput, ToxicJson, attributes_of, is_toxic_type, kind_from, parse_stream,
};
use super::{LISTENER_PATIENCE, Toxiproxy, audit_toxic, internal, toxic_error, toxic_json};
use crate::faults::proxy::{ProxyError, ProxyHandle, ToxicInfo, ToxicRequest};
use crate::spec::model::ToxicKind;

impl Toxiproxy {
    /// `/reset`: every toxic made here goes (downs too, so proxies are enabled again).
    pub async fn reset(&self) -> Result<(), ApiError> {
        let mut st = self.state.lock().await;
        for (name, ids) in st.toxics.drain() {
            let Ok(h) = self.core.targets().proxy(&name).await else {
                continue;
            };
            for id in ids.keys() {
                match h.remove_toxic(*id) {
                    Ok(()) | Err(ProxyError::NoSuchToxic(_)) => {}
                    Err(e) => return Err(toxic_error(e)),
                }
            }
            let down = h.toxics().iter().any(|t| t.kind == ToxicKind::Down);
            if !down && !h.wait_listening(true, LISTENER_PATIENCE).await {
                warn!(proxy = %name, "the proxy's listener did not open again within 2s");
            }
        }
        warn!(target: "chaosbot::audit", "toxics reset through the Toxiproxy API");
        Ok(())
    }

    pub async fn toxics(&self, proxy: &str) -> Result<Vec<ToxicJson>, ApiError> {
        Ok(self.show(proxy).await?.toxics)
    }

    pub async fn toxic(&self, proxy: &str, toxic: &str) -> Result<ToxicJson, ApiError> {
        self.toxics(proxy)
            .await?
            .into_iter()
            .find(|t| t.name == toxic)
            .ok_or_else(ApiError::toxic_not_found)
    }

    pub async fn add_toxic(&self, proxy: &str, input: ToxicInput) -> Result<ToxicJson, ApiError> {
        let mut st = self.state.lock().await;
        let h = self.handle(proxy).await?;
        let stream = input.stream.unwrap_or_else(|| "downstream".into());
        let direction = parse_stream(&stream)?;
        let kind_name = input.kind.unwrap_or_default();
        let name = input
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{kind_name}_{stream}"));
        // The type before the name and the attributes, in Toxiproxy's order.
        if !is_toxic_type(&kind_name) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid toxic type"));
        }
        if named(&h, &name).is_some() {
            return Err(ApiError::new(StatusCode::CONFLICT, "toxic already exists"));
        }
        let kind = kind_from(&kind_name, &input.attributes.unwrap_or_default())?;
        let req = ToxicRequest {
            label: name,
            kind,
            direction,
            toxicity: input.toxicity.unwrap_or(1.0),
            seed: input.seed.unwrap_or_else(rand::random),
            deadline: Instant::now() + self.deadline,
        };
        let id = h.add_toxic(req.clone()).map_err(toxic_error)?;
        audit_toxic(h.name(), "toxic added", &req, self.deadline);
        let live: HashSet<u64> = h.toxics().iter().map(|t| t.id).collect();
        let ids = st.toxics.entry(h.name().to_string()).or_default();
        // Forget the toxics that reached their deadline meanwhile.
        ids.retain(|id, _| live.contains(id));
        ids.insert(id, req.seed);
        Ok(toxic_json(&info(id, &req)))
    }

    /// A partial update: the attributes and toxicity left out keep their values. The new
    /// version goes in before the old one goes, so traffic never sees the toxic missing.
    pub async fn update_toxic(
        &self,
        proxy: &str,
        toxic: &str,
        input: ToxicInput,
    ) -> Result<ToxicJson, ApiError> {
        let mut st = self.state.lock().await;
        let h = self.handle(proxy).await?;
        let old = named(&h, toxic).ok_or_else(ApiError::toxic_not_found)?;
        let ids = st.toxics.entry(h.name().to_string()).or_default();
        let Some(seed) = ids.get(&old.id).copied() else {
            return Err(held_by_run(toxic));
        };
        let Value::Object(mut attrs) = attributes_of(&old.kind) else {
            return Err(internal("a toxic's attributes are not an object"));
        };
        attrs.extend(input.attributes.unwrap_or_default());
        let req = ToxicRequest {
            label: old.label.clone(),
            kind: kind_from(old.kind.name(), &attrs)?,
            direction: old.direction,
            toxicity: input.toxicity.unwrap_or(old.toxicity),
            seed: input.seed.unwrap_or(seed),
            deadline: Instant::now() + self.deadline,
        };
        let id = h.add_toxic(req.clone()).map_err(toxic_error)?;
        ids.insert(id, req.seed);
        ids.remove(&old.id);
        match h.remove_toxic(old.id) {
            Ok(()) | Err(ProxyError::NoSuchToxic(_)) => {}
            Err(e) => return Err(toxic_error(e)),
        }
        audit_toxic(h.name(), "toxic updated", &req, self.deadline);
        Ok(toxic_json(&info(id, &req)))
    }

    pub async fn remove_toxic(&self, proxy: &str, toxic: &str) -> Result<(), ApiError> {
        let mut st = self.state.lock().await;
        let h = self.handle(proxy).await?;
        let old = named(&h, toxic).ok_or_else(ApiError::toxic_not_found)?;
        let ids = st.toxics.entry(h.name().to_string()).or_default();
        if ids.remove(&old.id).is_none() {
            return Err(held_by_run(toxic));
        }
        match h.remove_toxic(old.id) {
            Ok(()) | Err(ProxyError::NoSuchToxic(_)) => {}
            Err(e) => return Err(toxic_error(e)),
        }
        warn!(target: "chaosbot::audit", proxy = %h.name(), toxic, "toxic removed through the Toxiproxy API");
        Ok(())
    }
}

/// The toxic of that name on the proxy (not a `down`: Toxiproxy shows it as `enabled`).
fn named(h: &ProxyHandle, name: &str) -> Option<ToxicInfo> {
    h.toxics()
        .into_iter()
        .find(|t| t.label == name && t.kind != ToxicKind::Down)
}

fn held_by_run(toxic: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "toxic `{toxic}` belongs to a chaosbot run (held under its lease); it goes when the run reverts it or at its deadline. Abort the run to remove it now"
        ),
    )
}

fn info(id: u64, req: &ToxicRequest) -> ToxicInfo {
    ToxicInfo {
        id,
        label: req.label.clone(),
        kind: req.kind.clone(),
        direction: req.direction,
        toxicity: req.toxicity,
        deadline: req.deadline,
    }
}
