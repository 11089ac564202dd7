//! The secrets capability: a step gets the value of a secret only if its `secrets` grant names it
//! (`respawn_sandbox::secrets`). Values go to the plugin and nowhere else: not to logs, reports or the journal.

use std::collections::BTreeMap;
use std::sync::Arc;

use respawn_engine::StepCall;
use wasmtime_wasi::WasiCtxBuilder;

use super::super::bindings::abi::secrets as api;
use super::super::bindings::abi::types::FailureKind;
use super::super::context::{RunResources, StepContext};
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
}

/// What the secrets interface touches of an attempt.
pub struct SecretsView<'a> {
    pub ctx: &'a mut StepContext,
    pub grant: &'a [String],
    pub values: &'a BTreeMap<String, String>,
}

linked_through!(SecretsView, api);

impl api::Host for SecretsView<'_> {
    async fn get(&mut self, name: String) -> Answer<String> {
        if let Err(denial) = respawn_sandbox::secrets::check(self.grant, &name) {
            return Ok(Err(self.ctx.deny(denial)));
        }
        Ok(match self.values.get(&name) {
            Some(value) => Ok(value.clone()),
            None => Err(failure(
                FailureKind::NotFound,
                format!("secret `{name}` has no value in this run"),
            )),
        })
    }
}
