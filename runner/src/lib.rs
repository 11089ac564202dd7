//! respawn: a disaster-recovery runner. Versioned YAML recovery workflows whose steps are sandboxed WebAssembly
//! plugins recreate an environment in another region from stored images, verify it, and report RTO and RPO.
//!
//! Layout (see `docs/architecture.md`): [`workflow`] and [`plan`] are pure; [`engine`] runs steps through the
//! [`engine::StepExecutor`] trait that [`host`] implements; [`data`] is the only module that touches object
//! stores; the CLI in `cli/` is thin.

pub mod data;
pub mod engine;
pub mod host;
pub mod journal;
pub mod plan;
pub mod report;
pub mod ui;
pub mod workflow;
