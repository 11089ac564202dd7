//! What a respawn plugin may do: every capability is denied unless the step's `grants:` allow it.
//!
//! This crate is the pure half of each capability: the shape of its grant in a workflow, the validation of that
//! grant (reported by `respawn validate` at file:line:col), and the checks that decide each request. It knows
//! nothing of WebAssembly, async runtimes or stores, so three places share it and cannot drift apart:
//!
//! - `respawn-workflow` parses and validates [`Grants`];
//! - `respawn-host` enforces them when a plugin calls (its `caps/` modules hold the other half of each capability:
//!   per-step state and the WIT functions);
//! - the plugin SDK's `testing::MockHost` enforces the same checks, so a plugin's unit tests see the denials the
//!   runner would give.
//!
//! ```
//! use respawn_sandbox::{Grants, stores::{self, Need}};
//!
//! let grants: Grants = serde_json::from_str(r#"{ "stores": { "backups": "read" } }"#).unwrap();
//! assert!(stores::check(&grants.stores, "backups", "images/site", Need::Read, false).is_ok());
//! let denial = stores::check(&grants.stores, "backups", "x", Need::Write, false).unwrap_err();
//! assert_eq!(denial.to_string(), "stores denied: write backups:x: store `backups` is granted read only");
//! ```
//!
//! [`limits`] is the one table of every limit a step runs under, with the reason for each value.
//!
//! To add a capability, see "Adding a capability" in `docs/architecture.md`.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod exec;
pub mod files;
pub mod http;
pub mod limits;
pub mod secrets;
pub mod state;
pub mod stores;

/// The pure half of a capability that a step must be granted.
pub trait Capability {
    /// Its key under `grants:`, and the capability every denial of it names.
    const NAME: &'static str;
    /// Its part of a step's `grants:`.
    type Grant: Default + Clone + fmt::Debug + PartialEq;
    /// What is wrong with a step's grant, given what the workflow declares.
    fn validate(grant: &Self::Grant, declared: &Declared<'_>) -> Vec<Problem>;
}

/// Registers the granted capabilities: each line adds the capability's field to [`Grants`] (its key under a
/// step's `grants:`) and its validation to [`Grants::validate`].
macro_rules! grants {
    ($($(#[doc = $doc:literal])* $field:ident: $cap:ty,)*) => {
        /// Capabilities granted to a step; everything not listed is denied. One field per granted capability.
        #[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct Grants {
            $(
                $(#[doc = $doc])*
                #[serde(default, skip_serializing_if = "is_default")]
                pub $field: <$cap as Capability>::Grant,
            )*
        }

        impl Grants {
            /// Every problem of every capability's grant.
            pub fn validate(&self, declared: &Declared<'_>) -> Vec<Problem> {
                let mut problems = Vec::new();
                $(problems.extend(<$cap as Capability>::validate(&self.$field, declared));)*
                problems
            }
        }

        #[cfg(test)]
        const GRANTED: &[&str] = &[$(<$cap as Capability>::NAME,)*];
    };
}

grants! {
    /// Store name -> `read`, `write`, or `{ access, prefix }`.
    stores: stores::Stores,
    /// Secret names.
    secrets: secrets::Secrets,
    /// Program names the step may execute (a bare name found on PATH, or an absolute path).
    exec: exec::Exec,
    /// Allowed `http://`, `https://` or `tcp://` `host[:port]` patterns (tcp needs a port); `*` matches any host
    /// label or port.
    http: http::Http,
    /// Directory -> `ro` or `rw`. Relative paths are relative to the workflow file.
    files: files::Files,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// What a workflow declares that grants refer to.
#[derive(Debug, Clone, Copy)]
pub struct Declared<'a> {
    pub stores: &'a [&'a str],
    pub secrets: &'a [&'a str],
}

/// One problem with a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where under the step's `grants`, as a node path: `stores.backups`, `exec[0]`, `files`.
    pub at: String,
    /// Whether the problem is the map key itself (reported at the key, not its value).
    pub at_key: bool,
    pub message: String,
}

impl Problem {
    pub(crate) fn at(at: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            at: at.into(),
            at_key: false,
            message: message.into(),
        }
    }

    pub(crate) fn at_key(at: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            at: at.into(),
            at_key: true,
            message: message.into(),
        }
    }
}

/// A request a capability refused: which capability, and what was asked. Its text is what the plugin sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub capability: &'static str,
    pub asked: String,
}

impl Denial {
    pub fn new(capability: &'static str, asked: impl Into<String>) -> Denial {
        Denial {
            capability,
            asked: asked.into(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} denied: {}", self.capability, self.asked)
    }
}

impl std::error::Error for Denial {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A capability's key under `grants:` is its name, the one its denials carry.
    #[test]
    fn each_grant_key_is_its_capability_name() {
        let all = r#"{ "stores": {}, "secrets": [], "exec": [], "http": [], "files": {} }"#;
        let keys: serde_json::Value = serde_json::from_str(all).unwrap();
        let fields: Vec<&str> = keys
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, GRANTED);
        let parsed: Grants = serde_json::from_str(all).expect("every capability's key parses");
        assert_eq!(parsed, Grants::default());
        let unknown = serde_json::from_str::<Grants>(r#"{ "sockets": [] }"#).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `sockets`"),
            "{unknown}"
        );
    }
}
