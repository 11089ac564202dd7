//! Host-side bindings of the `respawn:plugin@0.2.2` world (plugins/wit): one interface per capability.

wasmtime::component::bindgen!({
    world: "provider",
    path: "../../../plugins/wit",
    imports: { default: async | trappable },
    exports: { default: async },
});

/// The ABI's interfaces: `abi::types`, and one module per capability (`abi::stores`, `abi::exec`, ...).
pub use respawn::plugin as abi;
