//! Reading a workflow file into the typed model, with limits that keep hostile input cheap to refuse.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::positions::{Pos, SourceMap};
use super::{Diagnostic, Invalid, Workflow};

/// Largest workflow file accepted. Real workflows are a few KiB; anything near this is a mistake or an attack.
pub const MAX_WORKFLOW_BYTES: usize = 1 << 20;

/// A parsed workflow together with what a run must record about it.
#[derive(Debug)]
pub struct LoadedWorkflow {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Lowercase hex sha256 of `bytes`.
    pub sha256: String,
    pub workflow: Workflow,
    pub source: SourceMap,
}

impl LoadedWorkflow {
    /// The directory relative `file://` URLs and grant paths are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub fn diag(&self, pos: Pos, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(&self.path, pos, message)
    }
}

/// Reads and parses `path`. Structural problems (syntax, types, unknown fields) are reported here; semantic
/// checks are in [`super::validate`].
pub fn load_file(path: &Path) -> Result<LoadedWorkflow, Invalid> {
    let at_start = |m: String| Invalid::one(Diagnostic::new(path, Pos::START, m));
    let meta =
        std::fs::metadata(path).map_err(|e| at_start(format!("cannot read workflow: {e}")))?;
    if meta.len() > MAX_WORKFLOW_BYTES as u64 {
        return Err(at_start(too_big(meta.len() as usize)));
    }
    let bytes = std::fs::read(path).map_err(|e| at_start(format!("cannot read workflow: {e}")))?;
    load_bytes(path, bytes)
}

/// Parses workflow text held in memory; `path` is used for messages and relative URLs.
pub fn load_str(path: &Path, text: &str) -> Result<LoadedWorkflow, Invalid> {
    load_bytes(path, text.as_bytes().to_vec())
}

fn too_big(len: usize) -> String {
    format!("workflow is {len} bytes; the limit is {MAX_WORKFLOW_BYTES} bytes")
}

pub fn load_bytes(path: &Path, bytes: Vec<u8>) -> Result<LoadedWorkflow, Invalid> {
    let err = |pos: Pos, m: String| Invalid::one(Diagnostic::new(path, pos, m));
    if bytes.len() > MAX_WORKFLOW_BYTES {
        return Err(err(Pos::START, too_big(bytes.len())));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let col = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        err(Pos { line, col }, "workflow is not valid UTF-8".to_string())
    })?;
    if text.trim().is_empty() {
        return Err(err(
            Pos::START,
            "workflow is empty; expected a mapping with `respawn: 1`".to_string(),
        ));
    }
    let workflow: Workflow = serde_yaml::from_str(text).map_err(|e| {
        let pos = e.location().map_or(Pos::START, |l| Pos {
            line: l.line(),
            col: l.column(),
        });
        err(pos, yaml_message(&e))
    })?;
    let sha256 = hex(&Sha256::digest(&bytes));
    let source = SourceMap::build(text);
    Ok(LoadedWorkflow {
        path: path.to_path_buf(),
        bytes,
        sha256,
        workflow,
        source,
    })
}

/// serde_yaml's message without its trailing " at line L column C", which the diagnostic already shows.
fn yaml_message(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
