//! A step's limits with the defaults of `respawn_sandbox::limits` applied, and the memory limiter that enforces
//! them.

use respawn_sandbox::limits::{
    DEFAULT_STEP_HTTP_RESPONSE, DEFAULT_STEP_LOG, DEFAULT_STEP_MEMORY, DEFAULT_STEP_OUTPUT,
    MAX_STEP_HTTP_RESPONSE, MAX_STEP_MEMORY, MAX_TABLE_ELEMENTS,
};
use respawn_workflow::Limits;
use wasmtime::ResourceLimiter;

/// Limits of one step with defaults applied.
#[derive(Debug, Clone, Copy)]
pub struct StepLimits {
    pub memory: u64,
    pub output: u64,
    pub log: u64,
    /// Largest HTTP response body the plugin may receive.
    pub http_response: u64,
}

impl StepLimits {
    pub fn from(limits: &Limits) -> StepLimits {
        StepLimits {
            memory: limits
                .memory
                .unwrap_or(DEFAULT_STEP_MEMORY)
                .min(MAX_STEP_MEMORY),
            output: limits.output.unwrap_or(DEFAULT_STEP_OUTPUT),
            log: limits.log.unwrap_or(DEFAULT_STEP_LOG),
            http_response: limits
                .http_response
                .unwrap_or(DEFAULT_STEP_HTTP_RESPONSE)
                .min(MAX_STEP_HTTP_RESPONSE),
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
        Ok(desired as u64 <= MAX_TABLE_ELEMENTS)
    }
}
