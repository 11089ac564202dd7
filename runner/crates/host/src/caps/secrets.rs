//! The secrets capability: a step gets the value of a secret only if its `secrets` grant names it
//! (`respawn_sandbox::secrets`). Values go to the plugin and nowhere else: not to logs, reports or the journal.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::WasiCtxBuilder;

use respawn_engine::StepCall;

use super::super::bindings::abi::secrets as api;
use super::super::bindings::abi::types::{Failure, FailureKind};
use super::super::state::{RunResources, StepState};
use super::{Answer, Capability, failure};

pub struct Secrets;

impl Capability for Secrets {
    /// Secret name -> value, read when the run started.
    type Run = Arc<BTreeMap<String, String>>;

    fn configure(run: &RunResources) -> Arc<BTreeMap<String, String>> {
        run.secrets.clone()
    }

    /// The step's `secrets` grant.
    type Step = Vec<String>;

    fn prepare(
        call: &StepCall,
        _: &RunResources,
        _: &mut WasiCtxBuilder,
    ) -> std::io::Result<Vec<String>> {
        Ok(call.grants.secrets.clone())
    }

    fn link(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
        api::add_to_linker::<StepState, HasSelf<StepState>>(linker, |s| s)
    }
}

impl api::Host for StepState {
    async fn get(&mut self, name: String) -> Answer<String> {
        Ok(get(self, &name))
    }
}

fn get(s: &mut StepState, name: &str) -> Result<String, Failure> {
    if let Err(denial) = respawn_sandbox::secrets::check(&s.caps.secrets, name) {
        return Err(s.deny(denial));
    }
    match s.run_caps.secrets.get(name) {
        Some(value) => Ok(value.clone()),
        None => Err(failure(
            FailureKind::NotFound,
            format!("secret `{name}` has no value in this run"),
        )),
    }
}
