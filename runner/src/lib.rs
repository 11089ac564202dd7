//! respawn: a disaster-recovery runner. Versioned YAML recovery workflows whose steps are sandboxed WebAssembly
//! plugins recreate an environment in another region from stored images, verify it, and report RTO and RPO.
//!
//! This crate is the `respawn` binary and a thin library over the crates that do the work (see
//! `docs/architecture.md`), each usable alone:
//!
//! - [`workflow`] (`respawn-workflow`): the format, validation, expressions, params, lock file and [`plan`]; pure.
//! - [`data`] (`respawn-data`): stores, retries, fault injection, OCI images; the only crate that uses object_store.
//! - [`report`] (`respawn-report`): the record of a run and its report files.
//! - [`journal`] (`respawn-journal`): the event chain in the state store, fencing, replay, audit.
//! - [`engine`] (`respawn-engine`): the scheduler and the run driver, against the `StepExecutor` trait.
//! - [`host`] (`respawn-host`): the WebAssembly host that implements `StepExecutor`, with its capabilities.
//!
//! Each crate may use only the crates listed above it; `tests/layering.rs` keeps it so.

pub use respawn_data as data;
pub use respawn_engine as engine;
pub use respawn_host as host;
pub use respawn_journal as journal;
pub use respawn_report as report;
pub use respawn_workflow as workflow;
pub use respawn_workflow::plan;

pub mod ui;
