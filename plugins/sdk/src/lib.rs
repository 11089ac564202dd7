//! The Rust SDK for respawn plugins.
//!
//! A plugin implements [`Plugin`] and exports it with [`export_plugin!`]:
//!
//! ```ignore
//! use respawn_plugin_sdk::{Context, Failure, Plugin, PluginInfo, operation, export_plugin};
//!
//! struct Hello;
//! impl Plugin for Hello {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("hello", "0.1.0").operation(operation("greet", "Say hello", "{}"))
//!     }
//!     fn invoke(ctx: Context, params: &str) -> Result<String, Failure> {
//!         respawn_plugin_sdk::log::info(&format!("hello from {}", ctx.step_id));
//!         respawn_plugin_sdk::outputs(&serde_json::json!({ "greeting": "hello" }))
//!     }
//! }
//! export_plugin!(Hello);
//! ```
//!
//! Everything the plugin does outside its own memory goes through the host and is checked against the step's
//! grants; a denial comes back as a [`Failure`] of kind [`FailureKind::Denied`] naming the capability.
//!
//! Built natively (not for wasm32), the SDK answers host calls from an in-memory mock instead, so a plugin can be
//! tested with plain `cargo test`, without the runner: see the `testing` module (`testing::MockHost`).

#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "provider",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_provider",
        default_bindings_module: "respawn_plugin_sdk::bindings",
    });
}

pub mod host;
pub mod http;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod time;

pub use bindings::respawn::plugin::types::{
    Context, Failure, FailureKind, Mode, OperationInfo, Phase, PluginInfo,
};
pub use host::{exec, images, log, net, progress, secrets, state, stores};
pub use serde;
pub use serde_json;

/// What a plugin implements.
pub trait Plugin {
    /// Name, version, operations (with the JSON Schema of their params) and wanted capabilities.
    fn describe() -> PluginInfo;
    /// Runs `ctx.operation` in `ctx.phase` with `params` (JSON). Returns the step's outputs as JSON.
    fn invoke(ctx: Context, params: &str) -> Result<String, Failure>;
}

/// Exports a [`Plugin`] implementation as the component's `describe` and `invoke`.
///
/// Only a wasm32 build exports anything; a native build (plugin unit tests, see `testing::MockHost`) exports no
/// symbols, so several plugins can be linked into one test binary.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        // Natively the plugin is only reached through `testing::MockHost::invoke`; this keeps it "used".
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() -> $crate::PluginInfo = <$plugin as $crate::Plugin>::describe;
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Exported;
            impl $crate::bindings::Guest for Exported {
                fn describe() -> $crate::PluginInfo {
                    <$plugin as $crate::Plugin>::describe()
                }
                fn invoke(ctx: $crate::Context, params: String) -> Result<String, $crate::Failure> {
                    <$plugin as $crate::Plugin>::invoke(ctx, &params)
                }
            }
    $crate::bindings::export_provider!(Exported with_types_in $crate::bindings);
        };
    };
}

impl PluginInfo {
    pub fn new(name: &str, version: &str) -> PluginInfo {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            operations: Vec::new(),
            capabilities: Vec::new(),
        }
    }

    pub fn operation(mut self, op: OperationInfo) -> PluginInfo {
        self.operations.push(op);
        self
    }

    pub fn capability(mut self, name: &str) -> PluginInfo {
        self.capabilities.push(name.into());
        self
    }
}

/// Describes one operation; `params_schema` is a JSON Schema document.
pub fn operation(name: &str, description: &str, params_schema: &str) -> OperationInfo {
    OperationInfo {
        name: name.into(),
        description: description.into(),
        params_schema: params_schema.into(),
    }
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        let retryable = matches!(kind, FailureKind::Unavailable);
        Failure {
            kind,
            message: message.into(),
            retryable,
        }
    }
    pub fn invalid_input(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::InvalidInput, message)
    }
    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Conflict, message)
    }
    /// Transient: the runner retries when the step's retry policy allows.
    pub fn unavailable(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Unavailable, message)
    }
    pub fn verification_failed(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::VerificationFailed, message)
    }
    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Internal, message)
    }
    pub fn retryable(mut self, retryable: bool) -> Failure {
        self.retryable = retryable;
        self
    }
}

/// Parses the step's `with` params into `T`; errors become `invalid-input` naming the field.
pub fn params<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, Failure> {
    serde_json::from_str(raw).map_err(|e| Failure::invalid_input(format!("params: {e}")))
}

/// Serializes the step's outputs.
pub fn outputs<T: serde::Serialize>(value: &T) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure::internal(format!("outputs: {e}")))
}

/// A failure for an operation this plugin does not export.
pub fn unknown_operation(ctx: &Context) -> Failure {
    Failure::invalid_input(format!("unknown operation `{}`", ctx.operation))
}
