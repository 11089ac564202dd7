//! Host capabilities, one module each, all denied unless the step's grants allow them.
//!
//! In the spirit of Spin's factors, a capability is a type implementing [`Capability`]: the state it keeps for a
//! run (configured once from the run's [`RunResources`]), the state it keeps for one step attempt (built from the
//! step's call when the attempt starts), and, in its module, its WIT interface implemented on a *view* of the
//! attempt: a struct naming exactly what the capability may touch (the [`StepContext`], its own state, and what
//! it borrows from other capabilities, such as the `files` directories that `exec` checks a working directory
//! against). The pure half of a capability (its grant, the grant's validation and the checks of each request)
//! lives in `respawn_sandbox::<name>`, shared with the validator and the SDK's mock host.
//!
//! Capabilities know nothing of the attempt's whole state: `step.rs` composes them, registers each with one line,
//! and builds each view when it links the capability's interface. Adding a capability: a module here, one line
//! in `step.rs`'s `capabilities!` and one `link` call beside it, and the interface in `plugins/wit` (see
//! docs/architecture.md).
//!
//! [`StepContext`]: crate::context::StepContext

use respawn_engine::StepCall;
use wasmtime_wasi::WasiCtxBuilder;

use super::bindings::abi::types::{Failure, FailureKind};
use super::context::RunResources;

/// The link of a capability's WIT interface through its view: `linked_through!(StoresView, api)` defines
/// `pub fn link(linker, view)`, where `view` picks the capability's view out of the store's data.
macro_rules! linked_through {
    ($view:ident, $api:ident) => {
        struct Data;
        impl wasmtime::component::HasData for Data {
            type Data<'a> = $view<'a>;
        }

        /// Links this capability's interface; `view` picks its view out of the store's data.
        pub fn link<T: Send + 'static>(
            linker: &mut wasmtime::component::Linker<T>,
            view: fn(&mut T) -> $view<'_>,
        ) -> wasmtime::Result<()> {
            $api::add_to_linker::<T, Data>(linker, view)
        }
    };
}

pub mod exec;
pub mod files;
pub mod http;
pub mod images;
pub mod log;
pub mod process;
pub mod secrets;
pub mod services;
pub mod state;
pub mod stores;

/// One capability's runtime half.
pub trait Capability {
    /// What the capability keeps for the whole run (a registry, handles): a field of `RunCaps`.
    type Run: Send + Sync + 'static;

    /// Configures the run's state from what the runner opened for the run.
    fn configure(run: &RunResources) -> Self::Run;

    /// What the capability keeps for one step attempt (its grant, counters, hooks): a field of `StepCaps`.
    type Step: Send + 'static;

    /// Builds the attempt's state from the call. `wasi` is the attempt's WASI context under construction, for
    /// capabilities that work through WASI (preopened directories).
    fn prepare(
        call: &StepCall,
        run: &RunResources,
        wasi: &mut WasiCtxBuilder,
    ) -> std::io::Result<Self::Step>;
}

/// The answer of a host function that may fail (and may trap, the outer result).
pub(crate) type Answer<T> = wasmtime::Result<Result<T, Failure>>;

/// A failure of the given kind.
pub(crate) fn failure(kind: FailureKind, message: impl Into<String>) -> Failure {
    let retryable = matches!(kind, FailureKind::Unavailable);
    Failure {
        kind,
        message: message.into(),
        retryable,
    }
}
