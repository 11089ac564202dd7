//! The `__NAME__` respawn plugin. Build it with `./build.sh` (-> __NAME__.wasm); test it with `cargo test`.
//! See docs/writing-plugins-rust.md of respawn.

use respawn_plugin_sdk::{Context, Failure, Phase, Plugin, PluginInfo, export_plugin, operation};
use serde::{Deserialize, Serialize};

struct Provider;

/// Params of `__NAME__/greet`, from the step's `with:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GreetParams {
    who: String,
}

#[derive(Serialize)]
struct GreetOutputs {
    greeting: String,
}

const GREET_SCHEMA: &str = r#"{"type":"object","required":["who"],"properties":{"who":{"type":"string"}},"additionalProperties":false}"#;

impl Plugin for Provider {
    fn describe() -> PluginInfo {
        PluginInfo::new("__NAME__", env!("CARGO_PKG_VERSION"))
            .operation(operation("greet", "Say hello", GREET_SCHEMA))
    }

    fn invoke(ctx: Context, params: &str) -> Result<String, Failure> {
        match ctx.operation.as_str() {
            "greet" => {
                let p: GreetParams = respawn_plugin_sdk::params(params)?;
                let greeting = match ctx.phase {
                    // Plan must have no side effects: say what apply would do.
                    Phase::Plan => format!("would greet {}", p.who),
                    // Apply is idempotent; destroy must succeed when there is nothing to undo.
                    Phase::Apply | Phase::Verify | Phase::Destroy => format!("hello, {}", p.who),
                };
                respawn_plugin_sdk::log::info(&greeting);
                respawn_plugin_sdk::outputs(&GreetOutputs { greeting })
            }
            _ => Err(respawn_plugin_sdk::unknown_operation(&ctx)),
        }
    }
}

export_plugin!(Provider);

/// Unit tests against the SDK's mock host: `cargo test` (natively, no runner, no wasm build).
#[cfg(test)]
mod tests {
    use super::Provider;
    use respawn_plugin_sdk::testing::MockHost;
    use respawn_plugin_sdk::{FailureKind, Phase};
    use serde_json::json;

    #[test]
    fn plans_then_greets() {
        let mut host = MockHost::new();
        let plan = host.invoke::<Provider>("greet", Phase::Plan, json!({ "who": "world" }));
        assert_eq!(plan.unwrap(), json!({ "greeting": "would greet world" }));
        let apply = host.invoke::<Provider>("greet", Phase::Apply, json!({ "who": "world" }));
        assert_eq!(apply.unwrap()["greeting"], "hello, world");
        assert_eq!(host.log_messages(), ["would greet world", "hello, world"]);
        assert!(host.state_map().is_empty() && host.denials().is_empty());
    }

    #[test]
    fn a_misspelt_param_is_invalid_input() {
        let mut host = MockHost::new();
        let failure = host
            .invoke::<Provider>("greet", Phase::Apply, json!({ "whom": "world" }))
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::InvalidInput);
    }
}
