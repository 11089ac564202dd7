//! The log and progress capabilities: always granted. Log volume per step is capped by `limits.log`.

use super::super::bindings::host_api::Level;
use super::super::state::StepState;

pub fn log(s: &mut StepState, level: Level, message: &str) {
    if s.log_bytes >= s.limits.log {
        return;
    }
    s.log_bytes += message.len() as u64;
    if s.log_bytes >= s.limits.log {
        tracing::warn!(step = %s.step_id, "log cap of {} bytes reached; further plugin logs dropped", s.limits.log);
    }
    let (step, plugin) = (s.step_id.as_str(), s.plugin.as_str());
    match level {
        Level::Trace => tracing::trace!(target: "respawn::plugin", step, plugin, "{message}"),
        Level::Debug => tracing::debug!(target: "respawn::plugin", step, plugin, "{message}"),
        Level::Info => tracing::info!(target: "respawn::plugin", step, plugin, "{message}"),
        Level::Warn => tracing::warn!(target: "respawn::plugin", step, plugin, "{message}"),
        Level::Error => tracing::error!(target: "respawn::plugin", step, plugin, "{message}"),
    }
}

pub fn progress(s: &mut StepState, done: u64, total: Option<u64>, message: &str) {
    if let Some(sink) = &s.run.progress {
        sink(&s.step_id, done, total, message);
    }
}
