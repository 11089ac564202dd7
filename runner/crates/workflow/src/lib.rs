//! Workflow format v1: the typed model, loading with source positions, validation, expressions and the lock file.
//!
//! Nothing here knows about wasmtime, tokio or object stores (see `docs/architecture.md`).

pub mod expr;
pub mod fleet;
pub mod load;
pub mod lock;
mod mode;
pub mod model;
pub mod params;
pub mod plan;
pub mod positions;
pub mod validate;
pub mod work;

use std::fmt;
use std::path::{Path, PathBuf};

pub use load::{LoadedWorkflow, load_file, load_str};
pub use mode::{Mode, Phase};
pub use model::*;
pub use positions::Pos;

/// One problem in a workflow file, located at `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub pos: Pos,
    pub message: String,
}

impl Diagnostic {
    pub fn new(file: &Path, pos: Pos, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_path_buf(),
            pos,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.pos.line,
            self.pos.col,
            self.message
        )
    }
}

/// A workflow that could not be accepted, with every problem found.
#[derive(Debug, thiserror::Error)]
pub struct Invalid {
    pub diagnostics: Vec<Diagnostic>,
}

impl Invalid {
    pub fn one(d: Diagnostic) -> Invalid {
        Invalid {
            diagnostics: vec![d],
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}
