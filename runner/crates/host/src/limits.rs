//! Per-step limits and their defaults.

use wasmtime::ResourceLimiter;

use respawn_workflow::Limits;

/// Linear-memory cap of a step when `limits.memory` is unset.
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// Cap on a step's JSON outputs when `limits.output` is unset.
pub const DEFAULT_OUTPUT: u64 = 1 << 20;
/// Cap on captured stdout and stderr (each) of an executed program, and on a step's log volume, when
/// `limits.log` is unset.
pub const DEFAULT_LOG: u64 = 1 << 20;

/// Limits of one step with defaults applied.
#[derive(Debug, Clone, Copy)]
pub struct StepLimits {
    pub memory: u64,
    pub output: u64,
    pub log: u64,
}

impl StepLimits {
    pub fn from(limits: &Limits) -> StepLimits {
        StepLimits {
            memory: limits
                .memory
                .unwrap_or(DEFAULT_MEMORY)
                .min(super::wasm_engine::MAX_STEP_MEMORY),
            output: limits.output.unwrap_or(DEFAULT_OUTPUT),
            log: limits.log.unwrap_or(DEFAULT_LOG),
        }
    }
}

/// Raised (as a trap) when a plugin grows memory past its cap, so it is reported as out-of-memory rather than
/// as the abort a failed `memory.grow` would cause inside the guest.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: wanted {desired} bytes, limit {limit}")]
pub struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

pub struct MemoryLimiter {
    pub limit: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(MemoryLimitExceeded {
                desired,
                limit: self.limit,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
