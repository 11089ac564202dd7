//! Host-side bindings of the `respawn:plugin@0.1.0` world (plugins/wit).

wasmtime::component::bindgen!({
    world: "provider",
    path: "../../../plugins/wit",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use respawn::plugin::host as host_api;
pub use respawn::plugin::types;
