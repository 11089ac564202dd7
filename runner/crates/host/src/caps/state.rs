//! The state capability: a small per-step key-value map, always granted, handed back to the engine after each
//! attempt so it can be journaled and given to the next attempt, resume or destroy. Its bounds are
//! `respawn_sandbox::state`'s.
//!
//! Writes in the plan phase are dropped: plan must have no side effects.

use std::collections::BTreeMap;

use respawn_engine::StepCall;
use respawn_journal::EventBody;
use wasmtime_wasi::WasiCtxBuilder;

use super::super::bindings::abi::state as api;
use super::super::context::{RunResources, StepContext};
use super::Capability;

pub struct State;

impl Capability for State {
    type Run = ();

    fn configure(_: &RunResources) {}

    /// The step's map, as earlier attempts and phases left it.
    type Step = BTreeMap<String, String>;

    fn prepare(
        call: &StepCall,
        _: &RunResources,
        _: &mut WasiCtxBuilder,
    ) -> std::io::Result<BTreeMap<String, String>> {
        Ok(call.state.clone())
    }
}

/// What the state interface touches of an attempt.
pub struct StateView<'a> {
    pub ctx: &'a mut StepContext,
    pub map: &'a mut BTreeMap<String, String>,
}

linked_through!(StateView, api);

impl api::Host for StateView<'_> {
    async fn fencing_token(&mut self) -> wasmtime::Result<u64> {
        Ok(self.ctx.run.journal.as_ref().map_or(0, |j| j.epoch()))
    }

    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.map.get(&key).cloned())
    }

    async fn set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        if self.ctx.read_only() {
            tracing::warn!(step = %self.ctx.step_id, %key, "state write in the plan phase dropped");
            return Ok(());
        }
        // A plugin abusing state is broken: trap rather than silently lose what it tried to record.
        respawn_sandbox::state::check_set(self.map, &key, &value)?;
        self.map.insert(key.clone(), value.clone());
        journal(self.ctx, &key, Some(&value)).await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        if self.ctx.read_only() {
            return Ok(());
        }
        self.map.remove(&key);
        journal(self.ctx, &key, None).await
    }

    async fn list(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// Records a state change in the journal before the plugin goes on, so that what it creates next is findable
/// after a crash. A lost journal traps the plugin: the run is stopping.
fn journal(
    ctx: &StepContext,
    key: &str,
    value: Option<&str>,
) -> impl std::future::Future<Output = wasmtime::Result<()>> + Send + 'static {
    // Take what the write needs now: the future must not borrow the attempt's state across the await.
    let write = ctx.run.journal.clone().map(|j| {
        let event = EventBody::StateWritten {
            step: ctx.step_id.clone(),
            phase: ctx.phase,
            key: key.to_string(),
            value: value.map(str::to_string),
        };
        (j, event)
    });
    async move {
        let Some((journal, event)) = write else {
            return Ok(());
        };
        journal
            .append(event)
            .await
            .map(|_| ())
            .map_err(|e| wasmtime::format_err!("{e}"))
    }
}
