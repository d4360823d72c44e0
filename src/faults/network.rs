//! The network fault family: the toxics of a step (their vocabulary is experiment data, in
//! [`crate::spec::model`]) applied through the built-in proxy in [`super::proxy`], or through
//! a Toxiproxy server's API ([`super::toxiproxy`]) for a target that names one.

pub use crate::spec::model::{Direction, ToxicKind};

/// The network family: toxics on the built-in proxy of a declared target.
pub struct NetworkFaults;

struct ActiveToxic {
    proxy: super::proxy::ProxyHandle,
    id: u64,
    summary: String,
}

#[async_trait::async_trait]
impl super::ActiveFault for ActiveToxic {
    async fn revert(&self) -> Result<(), super::FaultError> {
        match self.proxy.remove_toxic(self.id) {
            // Already gone (its deadline passed, or reverted before): the goal is met.
            Ok(()) | Err(super::proxy::ProxyError::NoSuchToxic(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn summary(&self) -> String {
        self.summary.clone()
    }
}

#[async_trait::async_trait]
impl super::FaultFamily for NetworkFaults {
    fn name(&self) -> &'static str {
        "network"
    }

    async fn prepare(
        &self,
        step: &crate::spec::model::FaultStep,
        ctx: &super::InjectContext<'_>,
    ) -> Result<serde_json::Value, super::FaultError> {
        // On a Toxiproxy server, what recovery must take back (the toxic's name, or the
        // disable) is persisted before the server is asked.
        if let (Some(t), crate::spec::model::FaultSpec::Network { toxic, .. }) = (
            ctx.targets.config().toxiproxy_target(&step.target),
            &step.fault,
        ) {
            let placed = super::toxiproxy::Placed::new(t, ctx.run_id, &step.name, toxic);
            return serde_json::to_value(placed)
                .map_err(|e| super::FaultError::Other(e.to_string()));
        }
        Ok(serde_json::json!({ "proxy": step.target, "in_process": true }))
    }

    async fn inject(
        &self,
        step: &crate::spec::model::FaultStep,
        ctx: &super::InjectContext<'_>,
        prepared: &serde_json::Value,
    ) -> Result<Box<dyn super::ActiveFault>, super::FaultError> {
        let crate::spec::model::FaultSpec::Network {
            toxic,
            direction,
            toxicity,
        } = &step.fault
        else {
            return Err(super::FaultError::Other(format!(
                "step `{}` is not a network fault",
                step.name
            )));
        };
        if let Some(t) = ctx.targets.config().toxiproxy_target(&step.target) {
            let placed: super::toxiproxy::Placed = serde_json::from_value(prepared.clone())
                .map_err(|e| super::FaultError::Other(e.to_string()))?;
            let fault =
                super::toxiproxy::inject(t, placed, toxic, *direction, *toxicity, ctx.deadline)
                    .await?;
            return Ok(Box::new(fault));
        }
        let proxy = ctx.targets.proxy(&step.target).await?;
        let id = proxy.add_toxic(super::proxy::ToxicRequest {
            label: step.name.clone(),
            kind: toxic.clone(),
            direction: *direction,
            toxicity: *toxicity,
            seed: ctx.seed,
            deadline: ctx.deadline,
        })?;
        let summary = if matches!(toxic, ToxicKind::Down) {
            format!("{} on {}", toxic.summary(), step.target)
        } else if *toxicity < 1.0 {
            format!(
                "{} on {} ({direction}, {:.0}% of connections)",
                toxic.summary(),
                step.target,
                toxicity * 100.0
            )
        } else {
            format!("{} on {} ({direction})", toxic.summary(), step.target)
        };
        Ok(Box::new(ActiveToxic { proxy, id, summary }))
    }

    async fn recover(
        &self,
        record: &crate::store::FaultRecord,
    ) -> Result<String, super::FaultError> {
        if record.detail.get("toxiproxy").is_some() {
            // A Toxiproxy server keeps the toxic after chaosbot died: take it off there.
            return super::toxiproxy::recover(&record.detail).await;
        }
        // The proxy runs inside the chaosbot process: when that process died, its listener,
        // its connections and every toxic on them died too. Nothing is left to undo.
        Ok(format!(
            "toxic on `{}` ended with the process that held it (the proxy is in-process)",
            record.target
        ))
    }
}
