//! The files capability: granted directories, read-only or read-write, are all a plugin sees of the host
//! filesystem (WASI preopens). In the plan phase every directory is read-only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Capability, Declared, Problem};

pub struct Files;

impl Capability for Files {
    const NAME: &'static str = "files";
    type Grant = BTreeMap<String, Access>;

    fn validate(grant: &Self::Grant, _: &Declared<'_>) -> Vec<Problem> {
        grant
            .keys()
            .filter(|dir| dir.trim().is_empty())
            .map(|_| Problem::at("files", "files grant needs a directory path"))
            .collect()
    }
}

/// File access mode of a `files` grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Ro,
    Rw,
}
