//! The state capability: a small per-step key-value map, always granted, handed back to the engine after each
//! attempt so it can be journaled and given to the next attempt, resume or destroy.
//!
//! Writes in the plan phase are dropped: plan must have no side effects.

use super::super::state::StepState;
use respawn_journal::EventBody;

/// Bounds that keep the journal small: state records resource ids, not data.
pub const MAX_KEYS: usize = 256;
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

pub fn get(s: &StepState, key: &str) -> Option<String> {
    s.kv.get(key).cloned()
}

pub fn list(s: &StepState) -> Vec<(String, String)> {
    s.kv.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Records a state change in the journal before the plugin goes on, so that what it creates next is findable
/// after a crash. A lost journal traps the plugin: the run is stopping.
pub fn journal(
    s: &StepState,
    key: &str,
    value: Option<&str>,
) -> impl std::future::Future<Output = wasmtime::Result<()>> + Send + 'static {
    // Take what the write needs now: the future must not borrow the (non-Sync) store data across the await.
    let write = s.run.journal.clone().filter(|_| !s.read_only()).map(|j| {
        let event = EventBody::StateWritten {
            step: s.step_id.clone(),
            phase: s.phase,
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

pub fn set(s: &mut StepState, key: String, value: String) -> wasmtime::Result<()> {
    if s.read_only() {
        tracing::warn!(step = %s.step_id, %key, "state write in the plan phase dropped");
        return Ok(());
    }
    if value.len() > MAX_VALUE_BYTES || (!s.kv.contains_key(&key) && s.kv.len() >= MAX_KEYS) {
        // A plugin abusing state is broken: trap rather than silently lose what it tried to record.
        wasmtime::bail!(
            "state limit exceeded ({MAX_KEYS} keys of at most {MAX_VALUE_BYTES} bytes)"
        );
    }
    s.kv.insert(key, value);
    Ok(())
}

pub fn delete(s: &mut StepState, key: &str) -> wasmtime::Result<()> {
    if !s.read_only() {
        s.kv.remove(key);
    }
    Ok(())
}
