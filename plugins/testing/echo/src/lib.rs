//! A well-behaved test plugin: `echo/echo` returns its params as outputs; `echo/outputs` returns the params
//! themselves as the outputs; `echo/state` counts attempts in its step state; `echo/fail` fails with the kind it
//! is asked for; `echo/secret` reports a secret's length;
//! `echo/get-range` reads a range of a store object; `echo/fetch` GETs a URL and reports the body's length.

use respawn_plugin_sdk::{
    Context, Failure, FailureKind, Phase, Plugin, PluginInfo, export_plugin, operation,
};
use serde_json::{Value, json};

struct Echo;

impl Plugin for Echo {
    fn describe() -> PluginInfo {
        PluginInfo::new("echo", "0.1.0")
            .operation(operation("echo", "Return the params as outputs", "{}"))
            .operation(operation(
                "outputs",
                "Return the params themselves as the outputs (a plugin's declared artifacts, say)",
                "{}",
            ))
            .operation(operation("state", "Count invocations in step state", "{}"))
            .operation(operation(
                "fail",
                "Fail with {kind, message, retryable}",
                "{}",
            ))
            .operation(operation(
                "secret",
                "Read a secret and return its length",
                "{}",
            ))
            .operation(operation(
                "get-range",
                "Read {store, key, offset, length} with stores.get-range",
                "{}",
            ))
            .operation(operation(
                "fetch",
                "GET {url} and return the status and body length",
                "{}",
            ))
            .operation(operation(
                "run",
                "Run {program} with {args} and return its status and stdout",
                "{}",
            ))
            .operation(operation(
                "unpack-as",
                "Restore {store}:{prefix}:{tag} into {dir} owned by {user}",
                "{}",
            ))
    }

    fn invoke(ctx: Context, params: &str) -> Result<String, Failure> {
        let params: Value = respawn_plugin_sdk::params(params)?;
        let out = match ctx.operation.as_str() {
            "echo" => {
                json!({
                    "params": params,
                    "phase": format!("{:?}", ctx.phase),
                    "attempt": ctx.attempt,
                    "fencing_token": respawn_plugin_sdk::state::fencing_token(),
                })
            }
            "outputs" => params,
            "state" => {
                let n: u64 = respawn_plugin_sdk::state::get("count")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if ctx.phase != Phase::Plan {
                    respawn_plugin_sdk::state::set("count", &(n + 1).to_string());
                }
                json!({ "count": n + 1 })
            }
            "fail" => {
                let kind = match params["kind"].as_str().unwrap_or("internal") {
                    "unavailable" => FailureKind::Unavailable,
                    "not-found" => FailureKind::NotFound,
                    "verification-failed" => FailureKind::VerificationFailed,
                    _ => FailureKind::Internal,
                };
                let message = params["message"].as_str().unwrap_or("asked to fail");
                let retryable = params["retryable"].as_bool().unwrap_or(false);
                return Err(Failure::new(kind, message).retryable(retryable));
            }
            "secret" => {
                let name = params["name"].as_str().unwrap_or_default();
                let value = respawn_plugin_sdk::secrets::get(name)?;
                json!({ "length": value.len() })
            }
            "get-range" => {
                let text = |k: &str| params[k].as_str().unwrap_or_default().to_string();
                let number = |k: &str| params[k].as_u64().unwrap_or_default();
                let bytes = respawn_plugin_sdk::stores::get_range(
                    &text("store"),
                    &text("key"),
                    number("offset"),
                    number("length"),
                )?;
                json!({ "len": bytes.len(), "data": String::from_utf8_lossy(&bytes) })
            }
            "fetch" => {
                let url = params["url"].as_str().unwrap_or_default();
                let response = respawn_plugin_sdk::http::get(url)?;
                json!({ "status": response.status, "len": response.body.len() })
            }
            "run" => {
                let program = params["program"].as_str().unwrap_or_default();
                let args = params["args"].as_array().cloned().unwrap_or_default();
                let out = respawn_plugin_sdk::exec::Command::new(program)
                    .args(args.iter().map(|a| a.as_str().unwrap_or_default()))
                    .output()?;
                json!({ "status": out.status, "stdout": String::from_utf8_lossy(&out.stdout) })
            }
            "unpack-as" => {
                let text = |k: &str| params[k].as_str().unwrap_or_default().to_string();
                let restored = respawn_plugin_sdk::images::unpack_as(
                    &text("store"),
                    &text("prefix"),
                    &text("tag"),
                    &text("dir"),
                    &text("user"),
                )?;
                json!({ "files": restored.files })
            }
            _ => return Err(respawn_plugin_sdk::unknown_operation(&ctx)),
        };
        respawn_plugin_sdk::outputs(&out)
    }
}

export_plugin!(Echo);

#[cfg(test)]
mod tests;
