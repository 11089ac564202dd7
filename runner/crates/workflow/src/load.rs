//! Reading a workflow file into the typed model, with limits that keep hostile input cheap to refuse.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::positions::{Pos, SourceMap};
use super::{Diagnostic, Invalid, Workflow};

/// Largest workflow file accepted. Real workflows are a few KiB; anything near this is a mistake or an attack.
pub use respawn_sandbox::limits::MAX_WORKFLOW_BYTES;

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
    if meta.len() > MAX_WORKFLOW_BYTES {
        return Err(at_start(too_big("workflow", meta.len() as usize)));
    }
    let bytes = std::fs::read(path).map_err(|e| at_start(format!("cannot read workflow: {e}")))?;
    load_bytes(path, bytes)
}

/// Parses workflow text held in memory; `path` is used for messages and relative URLs.
pub fn load_str(path: &Path, text: &str) -> Result<LoadedWorkflow, Invalid> {
    load_bytes(path, text.as_bytes().to_vec())
}

fn too_big(kind: &str, len: usize) -> String {
    format!("{kind} is {len} bytes; the limit is {MAX_WORKFLOW_BYTES} bytes")
}

pub fn load_bytes(path: &Path, bytes: Vec<u8>) -> Result<LoadedWorkflow, Invalid> {
    let (workflow, source) = parse_document::<Workflow>(path, &bytes, "workflow")?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(LoadedWorkflow {
        path: path.to_path_buf(),
        bytes,
        sha256,
        workflow,
        source,
    })
}

/// Parses one YAML document of a respawn file (`kind` names it in messages: `workflow`, `fleet`) into `T`, with
/// the positions of its nodes. Structural problems (size, encoding, syntax, types, unknown fields, repeated keys,
/// a second document) are reported here, each at its `file:line:col`.
pub fn parse_document<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    kind: &str,
) -> Result<(T, SourceMap), Invalid> {
    let err = |pos: Pos, m: String| Invalid::one(Diagnostic::new(path, pos, m));
    if bytes.len() as u64 > MAX_WORKFLOW_BYTES {
        return Err(err(Pos::START, too_big(kind, bytes.len())));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let col = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        err(Pos { line, col }, format!("{kind} is not valid UTF-8"))
    })?;
    let empty = || {
        err(
            Pos::START,
            format!("{kind} is empty; expected a mapping with `respawn: 1`"),
        )
    };
    if text.trim().is_empty() {
        return Err(empty());
    }
    // Positions come from a second, event-level parse; it also finds what serde_yaml reports badly or not at all:
    // repeated keys, a second document, and a file of nothing but comments.
    let source = SourceMap::build(text);
    if source.is_empty_document() {
        return Err(empty());
    }
    match serde_yaml::from_str(text) {
        Ok(value) => Ok((value, source)),
        Err(e) => Err(Invalid {
            diagnostics: yaml_diagnostics(path, &e, &source, kind),
        }),
    }
}

/// The problems behind a serde_yaml error, each at the best position known.
fn yaml_diagnostics(
    path: &Path,
    e: &serde_yaml::Error,
    source: &SourceMap,
    kind: &str,
) -> Vec<Diagnostic> {
    let mut diags: Vec<Diagnostic> = source
        .duplicate_keys
        .iter()
        .map(|(key_path, pos)| Diagnostic::new(path, *pos, duplicate_key_message(key_path)))
        .collect();
    let pos = e.location().map_or(Pos::START, |l| Pos {
        line: l.line(),
        col: l.column(),
    });
    let message = yaml_message(e, pos);
    if message.starts_with(MORE_THAN_ONE_DOCUMENT) {
        let pos = source.documents.get(1).map_or(pos, |d| d.start);
        diags.push(Diagnostic::new(
            path,
            pos,
            format!("a second YAML document starts here; a {kind} file holds exactly one document"),
        ));
    } else if diags.is_empty() || !is_duplicate_error(&message) {
        // serde_yaml's own duplicate error points at the mapping, not at the key: the ones above replace it.
        diags.push(Diagnostic::new(path, pos, message));
    }
    diags.sort_by_key(|d| (d.pos.line, d.pos.col));
    diags
}

/// The message for a key repeated in one mapping; `key_path` is the path of the repeated key.
pub fn duplicate_key_message(key_path: &str) -> String {
    match key_path.rsplit_once('.') {
        Some((_, key)) => format!("duplicate key `{key}` (in `{key_path}`)"),
        None => format!("duplicate key `{key_path}`"),
    }
}

const MORE_THAN_ONE_DOCUMENT: &str = "deserializing from YAML containing more than one document";

fn is_duplicate_error(message: &str) -> bool {
    message.contains("duplicate field `") || message.contains("duplicate entry ")
}

/// serde_yaml's message, made to read well next to the diagnostic's own `line:col`.
///
/// The location equal to `pos` is dropped, since the diagnostic already shows it. A syntax error's context keeps its
/// own location ("…, while parsing a flow sequence started at line 12 column 12"). serde_yaml's limits get an
/// explanation.
fn yaml_message(e: &serde_yaml::Error, pos: Pos) -> String {
    let mut text = e.to_string();
    let own = format!(" at line {} column {}", pos.line, pos.col);
    if text.ends_with(&own) {
        text.truncate(text.len() - own.len());
    } else if let Some(i) = text.find(&format!("{own}, ")) {
        text.replace_range(i..i + own.len(), "");
    }
    if let Some(i) = text.find(", while ")
        && let Some(j) = text[i..].find(" at line ")
    {
        text.replace_range(i + j..i + j + " at line ".len(), " started at line ");
    }
    if text == "repetition limit exceeded" {
        text.push_str(": YAML aliases expand too much (alias bomb?)");
    } else if text == "recursion limit exceeded" {
        text.push_str(": nested deeper than serde_yaml's limit of 128 levels");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "respawn: 1\nname: demo\nversion: 1.0.0\nsteps:\n  - id: a\n    uses: local/run\n";

    fn fail(text: &str) -> Vec<String> {
        let err = load_str(Path::new("w.yaml"), text).expect_err("should be refused");
        err.diagnostics
            .iter()
            .map(|d| format!("{}:{}: {}", d.pos.line, d.pos.col, d.message))
            .collect()
    }

    #[test]
    fn bad_durations_and_sizes_point_at_the_value() {
        let d = fail(&format!("{HEAD}    timeout: 30\n"));
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("7:14: steps[0].timeout: "), "{d:?}");
        assert!(d[0].contains("expected a duration like 90s or 5m"), "{d:?}");
        let d = fail(&format!("{HEAD}    limits: {{ log: 3 bananas }}\n"));
        assert!(
            d[0].starts_with("7:20: steps[0].limits.log: invalid size"),
            "{d:?}"
        );
    }

    #[test]
    fn duplicate_keys_replace_serdes_duplicate_field() {
        let d = fail(&format!("{HEAD}    uses: local/other\n"));
        assert_eq!(d, ["7:5: duplicate key `uses` (in `steps[0].uses`)"]);
    }

    #[test]
    fn a_second_document_is_pointed_at() {
        let d = fail(&format!("{HEAD}---\nrespawn: 1\n"));
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("7:1: a second YAML document"), "{d:?}");
    }

    #[test]
    fn comments_only_is_empty() {
        for text in ["# nothing\n# here\n", "---\n# nothing\n", "~\n"] {
            let d = fail(text);
            assert_eq!(d.len(), 1);
            assert!(
                d[0].starts_with("1:1: workflow is empty"),
                "{text:?}: {d:?}"
            );
        }
    }

    #[test]
    fn syntax_errors_keep_their_context() {
        let d = fail(&format!("{HEAD}    needs: [a, b\n"));
        assert_eq!(
            d,
            [
                "8:1: did not find expected ',' or ']', while parsing a flow sequence started at line 7 column 12"
            ]
        );
    }
}
