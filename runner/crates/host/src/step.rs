//! What one step attempt's wasmtime `Store` holds: the [`StepContext`] every capability sees, each capability's
//! state for the attempt and for the run, and the WASI and HTTP contexts. This is where the capabilities are
//! registered (one [`capabilities!`] line each) and wired to the linker, each through the view of the attempt it
//! declares it needs.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use respawn_engine::StepCall;

use super::bindings::abi::types;
use super::caps::{Capability, exec, files, http, images, log, secrets, state, stores};
use super::context::{Denial, RunResources, StepContext};
use super::limits::MemoryLimiter;

/// Registers capabilities: each line adds the capability's fields to [`RunCaps`] and [`StepCaps`], its
/// `configure` to every run and its `prepare` to every attempt. Its interface is linked in [`link_all`].
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

/// Links the ABI's shared types and every capability's interface, each with the view of the attempt it needs.
pub(crate) fn link_all(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    types::add_to_linker::<StepState, HasSelf<StepState>>(linker, |s| s)?;
    log::link(linker, |s| log::LogView {
        ctx: &mut s.ctx,
        sent: &mut s.caps.log,
        progress: &s.run_caps.log,
    })?;
    stores::link(linker, |s| stores::StoresView {
        ctx: &mut s.ctx,
        grant: &s.caps.stores,
        stores: &s.run_caps.stores,
        progress: &s.run_caps.log,
    })?;
    state::link(linker, |s| state::StateView {
        ctx: &mut s.ctx,
        map: &mut s.caps.state,
    })?;
    secrets::link(linker, |s| secrets::SecretsView {
        ctx: &mut s.ctx,
        grant: &s.caps.secrets,
        values: &s.run_caps.secrets,
    })?;
    exec::link(linker, |s| exec::ExecView {
        ctx: &mut s.ctx,
        exec: &s.caps.exec,
        services: &s.run_caps.exec,
        dirs: &s.caps.files,
    })?;
    images::link(linker, |s| images::ImagesView {
        ctx: &mut s.ctx,
        stores_grant: &s.caps.stores,
        stores: &s.run_caps.stores,
        dirs: &s.caps.files,
        restored: &s.run_caps.images,
        exec_grant: &s.caps.exec.grant,
    })?;
    http::link(linker, |s| http::NetView {
        ctx: &mut s.ctx,
        grant: &s.caps.http.grants,
    })?;
    Ok(())
}

/// What one step attempt's wasmtime `Store` holds.
pub struct StepState {
    pub ctx: StepContext,
    /// Each capability's state for this attempt, built from the step's grants.
    pub caps: StepCaps,
    /// Each capability's state for the whole run (services started, images restored).
    pub run_caps: Arc<RunCaps>,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub limiter: MemoryLimiter,
}

impl StepState {
    /// The first denial, from host calls or the http hook.
    pub fn take_denial(&mut self) -> Option<Denial> {
        self.ctx
            .denial
            .take()
            .or_else(|| self.caps.http.denial.take())
    }
}

impl types::Host for StepState {}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StepState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.caps.http,
        }
    }
}
