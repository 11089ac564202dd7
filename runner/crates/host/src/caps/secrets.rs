//! The secrets capability: a step gets the value of a secret only if its `secrets` grant names it. Values go to
//! the plugin and nowhere else: not to logs, reports or the journal.

use super::super::bindings::types::{Failure, FailureKind};
use super::super::state::StepState;
use super::failure;

pub fn get(s: &mut StepState, name: &str) -> Result<String, Failure> {
    if !s.grants.secrets.iter().any(|g| g == name) {
        return Err(s.deny(
            "secrets",
            format!("secret `{name}` is not in the step's secrets grant"),
        ));
    }
    match s.run.secrets.get(name) {
        Some(value) => Ok(value.clone()),
        None => Err(failure(
            FailureKind::NotFound,
            format!("secret `{name}` has no value in this run"),
        )),
    }
}
