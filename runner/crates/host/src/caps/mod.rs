//! Host capabilities, one module each, all denied unless the step's grants allow them.
//!
//! In the spirit of Spin's factors, a capability is a type implementing [`Capability`]: the state it keeps for a
//! run (configured once from the run's [`RunResources`]), the state it keeps for one step attempt (built from the
//! step's call when the attempt starts), and the link of its WIT interface, whose functions its module implements
//! on [`StepState`]. The pure half of a capability (its grant, the grant's validation and the checks of each
//! request) lives in `respawn_sandbox::<name>`, shared with the validator and the SDK's mock host.
//!
//! Adding a capability: a module here implementing [`Capability`] and its WIT interface's `Host` trait, one line
//! in [`capabilities!`] below, and the interface in `plugins/wit` (see docs/architecture.md).

use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;

use respawn_engine::StepCall;

use super::bindings::abi::types::{self, Failure, FailureKind};
use super::state::{RunResources, StepState};

pub mod exec;
pub mod files;
pub mod http;
pub mod images;
pub mod log;
pub mod secrets;
pub mod services;
pub mod state;
pub mod stores;

/// One capability's runtime half.
pub trait Capability {
    /// What the capability keeps for the whole run (a registry, handles): a field of [`RunCaps`].
    type Run: Send + Sync + 'static;

    /// Configures the run's state from what the runner opened for the run.
    fn configure(run: &RunResources) -> Self::Run;

    /// What the capability keeps for one step attempt (its grant, counters, hooks): a field of [`StepCaps`].
    type Step: Send + 'static;

    /// Builds the attempt's state from the call. `wasi` is the attempt's WASI context under construction, for
    /// capabilities that work through WASI (preopened directories).
    fn prepare(
        call: &StepCall,
        run: &RunResources,
        wasi: &mut WasiCtxBuilder,
    ) -> std::io::Result<Self::Step>;

    /// Adds the capability's WIT interface to the linker.
    fn link(linker: &mut Linker<StepState>) -> wasmtime::Result<()>;
}

/// Registers capabilities: each line adds the capability's fields to [`RunCaps`] and [`StepCaps`], its
/// `configure` to every run and `prepare` to every attempt, and its interface to the linker.
macro_rules! capabilities {
    ($($field:ident: $cap:ty),* $(,)?) => {
        /// The per-run state of every capability.
        pub struct RunCaps {
            $(pub $field: <$cap as Capability>::Run,)*
        }

        impl RunCaps {
            pub(crate) fn configure(run: &RunResources) -> RunCaps {
                RunCaps {
                    $($field: <$cap as Capability>::configure(run),)*
                }
            }
        }

        /// The per-attempt state of every capability.
        pub struct StepCaps {
            $(pub $field: <$cap as Capability>::Step,)*
        }

        impl StepCaps {
            pub(crate) fn prepare(
                call: &StepCall,
                run: &RunResources,
                wasi: &mut WasiCtxBuilder,
            ) -> std::io::Result<StepCaps> {
                Ok(StepCaps {
                    $($field: <$cap as Capability>::prepare(call, run, wasi)?,)*
                })
            }
        }

        /// Links the ABI's shared types and every capability's interface.
        pub(crate) fn link_all(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
            types::add_to_linker::<StepState, wasmtime::component::HasSelf<StepState>>(linker, |s| s)?;
            $(<$cap as Capability>::link(linker)?;)*
            Ok(())
        }
    };
}

capabilities! {
    log: log::Log,
    stores: stores::Stores,
    state: state::State,
    secrets: secrets::Secrets,
    exec: exec::Exec,
    images: images::Images,
    http: http::Http,
    files: files::Files,
}

impl types::Host for StepState {}

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
