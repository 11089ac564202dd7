//! A plugin frozen at an older ABI: built with wit-bindgen against `wit/plugin.wit`, a copy of
//! `respawn:plugin@0.2.0` as it was before `stores.get-range` and `images.unpack-as` were added, and without the
//! SDK (which always follows the current `plugins/wit`). The host's tests load it to show that a plugin built
//! against an older 0.2 keeps running in a host that links the newer one
//! (`runner/crates/host/tests/abi_evolution.rs`; the policy is in docs/plugin-abi.md, "ABI evolution").
//!
//! Operations: `old-abi/state` counts its attempts in step state; `old-abi/stores` puts `{data}` at `{key}` in
//! `{store}`, then reads it back with `get`, `head` and `list`, and deletes it. Both log a line.

#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        world: "provider",
        path: "wit",
    });
}

use bindings::respawn::plugin::log::{self, Level};
use bindings::respawn::plugin::types::{FailureKind, OperationInfo, Phase};
use bindings::respawn::plugin::{state, stores};
// `context`, `failure` and `plugin-info` are the world's own (`use types.{…}`), generated at its root.
use bindings::{Context, Failure, Guest, PluginInfo};
use serde_json::{Value, json};

struct OldAbi;

fn operation(name: &str, description: &str) -> OperationInfo {
    OperationInfo {
        name: name.into(),
        description: description.into(),
        params_schema: "{}".into(),
    }
}

fn failure(kind: FailureKind, message: String) -> Failure {
    Failure {
        kind,
        message,
        retryable: false,
    }
}

impl Guest for OldAbi {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "old-abi".into(),
            version: "0.1.0".into(),
            operations: vec![
                operation("state", "Count invocations in step state"),
                operation(
                    "stores",
                    "Put {data} at {store}:{key}, read it back, delete it",
                ),
            ],
            capabilities: vec!["stores".into()],
        }
    }

    fn invoke(ctx: Context, params: String) -> Result<String, Failure> {
        let params: Value = serde_json::from_str(&params)
            .map_err(|e| failure(FailureKind::InvalidInput, format!("params: {e}")))?;
        log::log(
            Level::Info,
            &format!("old-abi {} attempt {}", ctx.operation, ctx.attempt),
        );
        let out = match ctx.operation.as_str() {
            "state" => {
                let n: u64 = state::get("count")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if ctx.phase != Phase::Plan {
                    state::set("count", &(n + 1).to_string());
                }
                json!({ "count": n + 1, "keys": state::list().len() })
            }
            "stores" => {
                let text = |k: &str| params[k].as_str().unwrap_or_default().to_string();
                let (store, key) = (text("store"), text("key"));
                stores::put(&store, &key, text("data").as_bytes())?;
                let read = stores::get(&store, &key)?;
                let size = stores::head(&store, &key)?.map(|m| m.size);
                let listed: Vec<String> = stores::list(&store, "")?
                    .into_iter()
                    .map(|m| m.key)
                    .collect();
                stores::delete(&store, &key)?;
                let gone = stores::head(&store, &key)?.is_none();
                json!({
                    "read": String::from_utf8_lossy(&read),
                    "size": size,
                    "listed": listed,
                    "deleted": gone,
                })
            }
            other => {
                return Err(failure(
                    FailureKind::InvalidInput,
                    format!("old-abi has no operation `{other}`"),
                ));
            }
        };
        Ok(out.to_string())
    }
}

bindings::export!(OldAbi with_types_in bindings);
