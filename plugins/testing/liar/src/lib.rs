//! A plugin whose `describe` lies: it claims the same operation twice, one with a params schema that is not
//! JSON, and an empty name. The runner must refuse to load it with a clear error, before any step runs.

use respawn_plugin_sdk::{Context, Failure, Plugin, PluginInfo, export_plugin, operation};

struct Liar;

impl Plugin for Liar {
    fn describe() -> PluginInfo {
        PluginInfo::new("", "not-a-version")
            .operation(operation("volume", "restore", "{ this is not json"))
            .operation(operation("volume", "restore again", "{}"))
    }

    fn invoke(_ctx: Context, _params: &str) -> Result<String, Failure> {
        respawn_plugin_sdk::outputs(&serde_json::json!({ "lied": true }))
    }
}

export_plugin!(Liar);
