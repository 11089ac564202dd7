//! The log and progress capabilities: always granted. Log volume per attempt is capped by `limits.log`.

use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::WasiCtxBuilder;

use respawn_engine::StepCall;

use super::super::bindings::abi::log::{self as api, Level};
use super::super::state::{ProgressSink, RunResources, StepState};
use super::Capability;

pub struct Log;

/// Bytes of log messages the attempt has sent so far.
#[derive(Default)]
pub struct LogStep {
    pub bytes: u64,
}

impl Capability for Log {
    /// Where progress reports go, if anywhere.
    type Run = Option<ProgressSink>;

    fn configure(run: &RunResources) -> Option<ProgressSink> {
        run.progress.clone()
    }

    type Step = LogStep;

    fn prepare(_: &StepCall, _: &RunResources, _: &mut WasiCtxBuilder) -> std::io::Result<LogStep> {
        Ok(LogStep::default())
    }

    fn link(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
        api::add_to_linker::<StepState, HasSelf<StepState>>(linker, |s| s)
    }
}

impl api::Host for StepState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        log(self, level, &message);
        Ok(())
    }

    async fn progress(
        &mut self,
        done: u64,
        total: Option<u64>,
        message: String,
    ) -> wasmtime::Result<()> {
        if let Some(sink) = &self.run_caps.log {
            sink(&self.step_id, done, total, &message);
        }
        Ok(())
    }
}

fn log(s: &mut StepState, level: Level, message: &str) {
    let cap = s.limits.log;
    let sent = &mut s.caps.log.bytes;
    if *sent >= cap {
        return;
    }
    *sent += message.len() as u64;
    if *sent >= cap {
        tracing::warn!(step = %s.step_id, "log cap of {cap} bytes reached; further plugin logs dropped");
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
