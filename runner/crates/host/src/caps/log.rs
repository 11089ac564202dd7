//! The log and progress capabilities: always granted. Log volume per attempt is capped by `limits.log`.

use respawn_engine::StepCall;
use wasmtime_wasi::WasiCtxBuilder;

use super::super::bindings::abi::log::{self as api, Level};
use super::super::context::{ProgressSink, RunResources, StepContext};
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
}

/// What the log interface touches of an attempt.
pub struct LogView<'a> {
    pub ctx: &'a mut StepContext,
    pub sent: &'a mut LogStep,
    pub progress: &'a Option<ProgressSink>,
}

linked_through!(LogView, api);

impl api::Host for LogView<'_> {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let cap = self.ctx.limits.log;
        if self.sent.bytes >= cap {
            return Ok(());
        }
        self.sent.bytes += message.len() as u64;
        let (step, plugin) = (self.ctx.step_id.as_str(), self.ctx.plugin.as_str());
        if self.sent.bytes >= cap {
            tracing::warn!(
                step,
                "log cap of {cap} bytes reached; further plugin logs dropped"
            );
        }
        match level {
            Level::Trace => tracing::trace!(target: "respawn::plugin", step, plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "respawn::plugin", step, plugin, "{message}"),
            Level::Info => tracing::info!(target: "respawn::plugin", step, plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "respawn::plugin", step, plugin, "{message}"),
            Level::Error => tracing::error!(target: "respawn::plugin", step, plugin, "{message}"),
        }
        Ok(())
    }

    async fn progress(
        &mut self,
        done: u64,
        total: Option<u64>,
        message: String,
    ) -> wasmtime::Result<()> {
        if let Some(sink) = self.progress {
            sink(&self.ctx.step_id, done, total, &message);
        }
        Ok(())
    }
}
