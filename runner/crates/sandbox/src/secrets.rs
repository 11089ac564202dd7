//! The secrets capability: a step gets the value of a secret only if its `secrets` grant names it. Values go to
//! the plugin and nowhere else: not to logs, reports or the journal.

use crate::{Capability, Declared, Denial, Problem};

pub struct Secrets;

impl Capability for Secrets {
    const NAME: &'static str = "secrets";
    type Grant = Vec<String>;

    fn validate(grant: &Self::Grant, declared: &Declared<'_>) -> Vec<Problem> {
        grant
            .iter()
            .enumerate()
            .filter(|(_, name)| !declared.secrets.contains(&name.as_str()))
            .map(|(i, name)| {
                Problem::at(
                    format!("secrets[{i}]"),
                    format!("grant names undeclared secret `{name}`"),
                )
            })
            .collect()
    }
}

/// Whether a step with `grant` may read secret `name`.
pub fn check(grant: &[String], name: &str) -> Result<(), Denial> {
    if grant.iter().any(|g| g == name) {
        Ok(())
    } else {
        Err(Denial::new(
            Secrets::NAME,
            format!("secret `{name}` is not in the step's secrets grant"),
        ))
    }
}
