//! Fleet files (DESIGN.md §11): the recovery workflows of many services, run at once as one fleet run, member N
//! by `respawn fleet run --index N` (a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`).
//!
//! A member's index is its position in `members`, and `needs` may only name members listed before it. That
//! one rule makes index order a valid start order: a Job with any parallelism starts the lowest pending
//! indexes first, so a member never holds a slot waiting for one that cannot start.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::load::parse_document;
use super::model::duration_opt;
use super::positions::SourceMap;
use super::{Diagnostic, Invalid};

/// Most members a fleet may have (a Kubernetes Indexed Job with `backoffLimitPerIndex` allows 100,000
/// completions; past ten thousand services a region wants several fleets).
pub const MAX_MEMBERS: usize = 10_000;

/// How long a member waits for the members it needs when the fleet does not say.
pub const DEFAULT_NEEDS_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A whole fleet file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// Format version; only `1` exists.
    pub respawn: u32,
    /// The fleet's name.
    pub fleet: String,
    /// Semver.
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How long a member waits for the members it `needs` to pass before it gives up (exit 3, retried).
    #[serde(
        default,
        with = "duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub needs_timeout: Option<Duration>,
    pub members: Vec<Member>,
}

/// One service's recovery workflow in a fleet.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Unique in the fleet; what `needs` and the fleet report name it by.
    pub name: String,
    /// A path relative to the fleet file, or a store URL (`s3://bucket/dr/web/recover.yaml`) whose directory
    /// also holds the workflow's `respawn.lock`.
    pub workflow: String,
    /// The workflow file's sha256: required for a workflow in a store, checked for a path when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default)]
    pub mode: MemberMode,
    /// The workflow's params, as `--param NAME=VALUE` would give them.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Members (listed before this one) whose runs must pass before this member starts.
    #[serde(default)]
    pub needs: Vec<String>,
}

/// How a member runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberMode {
    #[default]
    Drill,
    Failover,
}

impl MemberMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberMode::Drill => "drill",
            MemberMode::Failover => "failover",
        }
    }
}

/// Where a member's workflow comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowSource {
    /// A file, resolved against the fleet file's directory.
    Path(PathBuf),
    /// An object in a store: the store's URL (the object's directory) and the object's name in it.
    Store { store_url: String, key: String },
}

impl Member {
    /// Where this member's workflow is, for a fleet file in `base_dir`.
    pub fn source(&self, base_dir: &Path) -> WorkflowSource {
        match self.workflow.split_once("://") {
            Some(("file", rest)) => WorkflowSource::Path(base_dir.join(rest)),
            Some(_) => {
                // The store's options ride in the query (`?endpoint=…`): the key is the path's last segment.
                let (base, query) = match self.workflow.split_once('?') {
                    Some((base, query)) => (base, format!("?{query}")),
                    None => (self.workflow.as_str(), String::new()),
                };
                let (dir, key) = base.rsplit_once('/').unwrap_or((base, ""));
                WorkflowSource::Store {
                    store_url: format!("{dir}{query}"),
                    key: key.to_string(),
                }
            }
            None => WorkflowSource::Path(base_dir.join(&self.workflow)),
        }
    }

    /// A param's value as `--param NAME=VALUE` text.
    pub fn param_assignments(&self) -> Vec<(String, String)> {
        self.params
            .iter()
            .map(|(name, value)| {
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (name.clone(), text)
            })
            .collect()
    }
}

/// A parsed fleet file with what a fleet run records about it.
#[derive(Debug)]
pub struct LoadedFleet {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Lowercase hex sha256 of `bytes`.
    pub sha256: String,
    pub fleet: Fleet,
    pub source: SourceMap,
}

impl LoadedFleet {
    /// The directory relative member paths are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// A diagnostic at the value of `path` (`members[2].needs[0]`).
    pub fn at(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(&self.path, self.source.value(path), message)
    }

    /// A diagnostic at the key of `path` (`members[1].params.port`).
    pub fn at_key(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(&self.path, self.source.key(path), message)
    }

    /// The index of the member named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fleet.members.iter().position(|m| m.name == name)
    }

    pub fn needs_timeout(&self) -> Duration {
        self.fleet.needs_timeout.unwrap_or(DEFAULT_NEEDS_TIMEOUT)
    }
}

/// Reads and parses a fleet file; structural problems only (see [`validate`]).
pub fn load_file(path: &Path) -> Result<LoadedFleet, Invalid> {
    let bytes = std::fs::read(path).map_err(|e| {
        Invalid::one(Diagnostic::new(
            path,
            super::Pos::START,
            format!("cannot read fleet file: {e}"),
        ))
    })?;
    load_bytes(path, bytes)
}

/// Parses fleet text held in memory (a fleet file recorded in the state store); `path` names it in messages.
pub fn load_bytes(path: &Path, bytes: Vec<u8>) -> Result<LoadedFleet, Invalid> {
    let (fleet, source) = parse_document::<Fleet>(path, &bytes, "fleet")?;
    Ok(LoadedFleet {
        path: path.to_path_buf(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        bytes,
        fleet,
        source,
    })
}

/// A member or fleet name: what a person types and a Kubernetes label can hold.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Everything wrong with a fleet file on its own (member workflows are checked by the caller, which can load
/// plugins), sorted by position.
pub fn validate(loaded: &LoadedFleet) -> Vec<Diagnostic> {
    let f = &loaded.fleet;
    let mut diags: Vec<Diagnostic> = loaded
        .source
        .duplicate_keys
        .iter()
        .map(|(path, pos)| {
            Diagnostic::new(&loaded.path, *pos, super::load::duplicate_key_message(path))
        })
        .collect();
    if f.respawn != 1 {
        diags.push(loaded.at(
            "respawn",
            format!(
                "unsupported format version {}; this respawn reads version 1",
                f.respawn
            ),
        ));
    }
    if !is_name(&f.fleet) {
        diags.push(loaded.at(
            "fleet",
            format!(
                "fleet name `{}` must be 1-63 letters, digits, `-`, `_` or `.`, starting with a letter or digit",
                f.fleet
            ),
        ));
    }
    if let Err(e) = semver::Version::parse(&f.version) {
        diags.push(loaded.at(
            "version",
            format!(
                "version `{}` is not semver ({e}); expected e.g. 1.4.0",
                f.version
            ),
        ));
    }
    if f.members.is_empty() {
        diags.push(loaded.at(
            "members",
            "a fleet needs at least one member under `members`",
        ));
    }
    if f.members.len() > MAX_MEMBERS {
        diags.push(loaded.at(
            "members",
            format!(
                "{} members; a fleet holds at most {MAX_MEMBERS} (split the region into several fleets)",
                f.members.len()
            ),
        ));
    }
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (i, m) in f.members.iter().enumerate() {
        let here = format!("members[{i}]");
        if !is_name(&m.name) {
            diags.push(loaded.at(
                &format!("{here}.name"),
                format!(
                    "member name `{}` must be 1-63 letters, digits, `-`, `_` or `.`, starting with a letter or digit",
                    m.name
                ),
            ));
        }
        if let Some(first) = first_index.get(m.name.as_str()) {
            diags.push(loaded.at(
                &format!("{here}.name"),
                format!(
                    "member name `{}` is already used by member {first}; names must be unique",
                    m.name
                ),
            ));
        } else {
            first_index.insert(&m.name, i);
        }
        member_workflow(loaded, i, m, &mut diags);
        for (name, value) in &m.params {
            if value.is_array() || value.is_object() || value.is_null() {
                diags.push(loaded.at(
                    &format!("{here}.params.{name}"),
                    format!(
                        "param `{name}` must be a string, number or boolean (what --param {name}=VALUE gives)"
                    ),
                ));
            }
        }
        let mut seen = Vec::new();
        for (j, need) in m.needs.iter().enumerate() {
            let at = format!("{here}.needs[{j}]");
            if seen.contains(&need) {
                diags.push(loaded.at(&at, format!("`{need}` is listed twice in needs")));
                continue;
            }
            seen.push(need);
            match first_index.get(need.as_str()) {
                Some(&k) if k < i => {}
                _ if *need == m.name => {
                    diags.push(loaded.at(&at, format!("member `{need}` cannot need itself")))
                }
                _ => match f.members.iter().position(|o| o.name == *need) {
                    Some(k) => diags.push(loaded.at(
                        &at,
                        format!(
                            "`{need}` is member {k}, listed after this one ({i}); a member may only need members \
                             listed before it, so that index order is a valid start order"
                        ),
                    )),
                    None => {
                        let known: Vec<&str> =
                            f.members.iter().map(|o| o.name.as_str()).collect();
                        diags.push(loaded.at(
                            &at,
                            format!(
                                "no member `{need}` in this fleet; members: {}",
                                known.join(", ")
                            ),
                        ))
                    }
                },
            }
        }
    }
    diags.sort_by_key(|d| (d.pos.line, d.pos.col));
    diags
}

fn member_workflow(loaded: &LoadedFleet, i: usize, m: &Member, diags: &mut Vec<Diagnostic>) {
    let here = format!("members[{i}]");
    if m.workflow.trim().is_empty() {
        diags.push(loaded.at(
            &format!("{here}.workflow"),
            "workflow must be a path relative to the fleet file or a store URL",
        ));
        return;
    }
    if let Some(sha) = &m.sha256
        && !is_sha256(sha)
    {
        diags.push(loaded.at(
            &format!("{here}.sha256"),
            format!(
                "sha256 `{sha}` must be 64 lowercase hex digits (`sha256sum` of the workflow file)"
            ),
        ));
    }
    if let WorkflowSource::Store { key, .. } = m.source(loaded.base_dir()) {
        if key.is_empty() {
            diags.push(loaded.at(
                &format!("{here}.workflow"),
                format!(
                    "`{}` names a store but no workflow in it; expected e.g. s3://bucket/dr/web/recover.yaml",
                    m.workflow
                ),
            ));
        } else if m.sha256.is_none() {
            diags.push(loaded.at(
                &format!("{here}.workflow"),
                format!(
                    "a workflow in a store must be pinned: add `sha256:` with the sha256 of `{}` (whoever can \
                     write to the store could otherwise change what this fleet runs)",
                    m.workflow
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let loaded = match load_bytes(Path::new("fleet.yaml"), text.as_bytes().to_vec()) {
            Ok(l) => l,
            Err(e) => return e.diagnostics.iter().map(|d| d.to_string()).collect(),
        };
        validate(&loaded).iter().map(|d| d.to_string()).collect()
    }

    const HEAD: &str = "respawn: 1\nfleet: eu-west\nversion: 1.0.0\nmembers:\n";

    #[test]
    fn a_good_fleet_has_no_problems_and_resolves_sources() {
        let text = format!(
            "{HEAD}  - name: db\n    workflow: db/recover.yaml\n    params: {{ port: 5433, tier: gold }}\n\
             \x20 - name: web\n    workflow: s3://dr/web/recover.yaml\n    sha256: {}\n    needs: [db]\n    mode: failover\n",
            "a".repeat(64)
        );
        assert_eq!(problems(&text), Vec::<String>::new());
        let loaded = load_bytes(Path::new("/x/fleet.yaml"), text.into_bytes()).unwrap();
        let [db, web] = &loaded.fleet.members[..] else {
            panic!()
        };
        assert_eq!(
            db.source(loaded.base_dir()),
            WorkflowSource::Path("/x/db/recover.yaml".into())
        );
        assert_eq!(
            web.source(loaded.base_dir()),
            WorkflowSource::Store {
                store_url: "s3://dr/web".into(),
                key: "recover.yaml".into()
            }
        );
        assert_eq!(web.mode, MemberMode::Failover);
        let with_query = Member {
            workflow: "s3://dr/web/recover.yaml?endpoint=http://127.0.0.1:5055&allow_http=true"
                .into(),
            ..web.clone()
        };
        assert_eq!(
            with_query.source(loaded.base_dir()),
            WorkflowSource::Store {
                store_url: "s3://dr/web?endpoint=http://127.0.0.1:5055&allow_http=true".into(),
                key: "recover.yaml".into()
            }
        );
        assert_eq!(
            db.param_assignments(),
            [
                ("port".into(), "5433".into()),
                ("tier".into(), "gold".into())
            ]
        );
    }

    #[test]
    fn needs_may_only_name_earlier_members_and_each_problem_has_its_place() {
        let text = format!(
            "{HEAD}  - name: web\n    workflow: web.yaml\n    needs: [db, web, nope]\n\
             \x20 - name: db\n    workflow: db.yaml\n\
             \x20 - name: db\n    workflow: s3://dr/x.yaml\n    params: {{ list: [1] }}\n"
        );
        let p = problems(&text);
        assert_eq!(
            p,
            [
                "fleet.yaml:7:13: `db` is member 1, listed after this one (0); a member may only need members \
                 listed before it, so that index order is a valid start order",
                "fleet.yaml:7:17: member `web` cannot need itself",
                "fleet.yaml:7:22: no member `nope` in this fleet; members: web, db, db",
                "fleet.yaml:10:11: member name `db` is already used by member 1; names must be unique",
                "fleet.yaml:11:15: a workflow in a store must be pinned: add `sha256:` with the sha256 of \
                 `s3://dr/x.yaml` (whoever can write to the store could otherwise change what this fleet runs)",
                "fleet.yaml:12:21: param `list` must be a string, number or boolean (what --param list=VALUE gives)",
            ],
            "{p:#?}"
        );
    }

    #[test]
    fn structure_errors_point_at_the_field() {
        let p = problems(&format!(
            "{HEAD}  - name: a\n    workflow: a.yaml\n    mode: destroy\n"
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("fleet.yaml:7:11: members[0].mode: unknown variant `destroy`"),
            "{p:?}"
        );
        let p = problems("respawn: 2\nfleet: 'a b'\nversion: one\nmembers: []\n");
        assert_eq!(
            p,
            [
                "fleet.yaml:1:10: unsupported format version 2; this respawn reads version 1",
                "fleet.yaml:2:8: fleet name `a b` must be 1-63 letters, digits, `-`, `_` or `.`, starting with a \
                 letter or digit",
                "fleet.yaml:3:10: version `one` is not semver (unexpected character 'o' while parsing major version \
                 number); expected e.g. 1.4.0",
                "fleet.yaml:4:10: a fleet needs at least one member under `members`",
            ]
        );
        let p = problems(&format!(
            "{HEAD}  - name: a\n    workflow: a.yaml\n    wokflow: b\n"
        ));
        assert!(p[0].contains("unknown field `wokflow`"), "{p:?}");
    }
}
