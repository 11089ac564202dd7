//! Typed form of workflow format v1 (see `docs/workflow-format.md`).
//!
//! Every struct denies unknown fields: a misspelt key is an error, never a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// A whole workflow file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Format version; only `1` exists.
    pub respawn: u32,
    pub name: String,
    /// Semver; checked by validation.
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    /// Store name -> object_store URL.
    #[serde(default)]
    pub stores: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSpec>,
    /// Plugin alias -> source (`builtin:NAME@VER`, `file://…`, or a store URL).
    #[serde(default)]
    pub plugins: BTreeMap<String, String>,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Verification steps; they run after every step in `steps` has succeeded.
    #[serde(default)]
    pub verify: Vec<Step>,
    /// The recovery objectives a run is judged against; its report says met or missed for each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Objectives>,
    /// Whether a missed objective fails the run (the default) or is only reported as a warning (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives_enforce: Option<bool>,
    /// Id -> place, built on the first [`Workflow::step`]: the engine and validation look steps up by id for
    /// every step of a run, and a scan each time made a 10,000-step run quadratic.
    #[serde(skip)]
    index: std::sync::OnceLock<std::collections::HashMap<String, (Section, usize)>>,
}

/// Recovery time and recovery point objectives (`objectives: { rto: 15m, rpo: 5m }`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// The longest the run may take from its start to the last passed verification.
    #[serde(
        default,
        with = "duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub rto: Option<Duration>,
    /// The oldest the restored data may be at the run's start (its worst source).
    #[serde(
        default,
        with = "duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub rpo: Option<Duration>,
}

/// The largest objective a workflow may declare: an RTO or RPO beyond 30 days is a typo (`15h` meant as minutes)
/// more often than a promise anyone audits, and a week-long nightly-backup RPO still fits well inside it.
pub const MAX_OBJECTIVE: Duration = Duration::from_secs(30 * 24 * 3600);

impl Workflow {
    /// Whether a missed objective fails the run: unless the workflow says `objectives_enforce: false`.
    pub fn enforces_objectives(&self) -> bool {
        self.objectives_enforce.unwrap_or(true)
    }
}

impl Workflow {
    /// All steps, main steps first, then verification steps.
    pub fn all_steps(&self) -> impl Iterator<Item = (Section, usize, &Step)> {
        let main = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (Section::Steps, i, s));
        let verify = self
            .verify
            .iter()
            .enumerate()
            .map(|(i, s)| (Section::Verify, i, s));
        main.chain(verify)
    }

    /// The step with id `id` (the first one declared, should ids repeat), in O(1).
    pub fn step(&self, id: &str) -> Option<&Step> {
        let index = self.index.get_or_init(|| {
            let mut index = std::collections::HashMap::new();
            for (section, i, step) in self.all_steps() {
                index.entry(step.id.clone()).or_insert((section, i));
            }
            index
        });
        let at = |&(section, i): &(Section, usize)| match section {
            Section::Steps => self.steps.get(i),
            Section::Verify => self.verify.get(i),
        };
        match index.get(id).and_then(at) {
            Some(step) if step.id == id => Some(step),
            // The fields are public: should a caller have changed the steps after the first lookup, the index
            // may be stale, so a miss falls back to a scan (misses are errors, e.g. an unknown `needs`).
            _ => self.all_steps().map(|(_, _, s)| s).find(|s| s.id == id),
        }
    }
}

/// Which list a step is declared in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Steps,
    Verify,
}

impl Section {
    /// The YAML key of the list, used in source paths such as `steps[2].needs[0]`.
    pub fn key(self) -> &'static str {
        match self {
            Section::Steps => "steps",
            Section::Verify => "verify",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub kind: ParamType,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_yaml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Boolean,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Boolean => "boolean",
        })
    }
}

/// Where a secret's value comes from. Values never enter logs, reports or the journal.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// Name of the environment variable of the runner that holds the value.
    pub env: String,
}

/// One step of `steps:` or `verify:`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub id: String,
    /// `plugin/operation`. Absent only for a pure approval gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Parameters for the plugin; strings may hold `${{ … }}` expressions.
    #[serde(default, skip_serializing_if = "serde_yaml::Mapping::is_empty")]
    pub with: serde_yaml::Mapping,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Deadline of one attempt. Defaults to [`DEFAULT_STEP_TIMEOUT`].
    #[serde(
        default,
        with = "duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// A `${{ … }}` condition; the step is skipped when it is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// A question an operator must confirm before the step runs (failover only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    #[serde(default)]
    pub limits: Limits,
}

pub use respawn_sandbox::Grants;
pub use respawn_sandbox::files::Access;
pub use respawn_sandbox::limits::{DEFAULT_STEP_TIMEOUT, MAX_STEP_HTTP_RESPONSE, MAX_STEP_MEMORY};
pub use respawn_sandbox::stores::{StoreAccess, StoreGrant};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Total attempts, including the first. At least 1.
    pub attempts: u32,
    /// Delay before the second attempt; doubled for each later one, with jitter.
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

/// Per-step resource limits. Unset fields take the host defaults (documented in `docs/plugin-abi.md`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear-memory cap, e.g. `256MiB`.
    #[serde(default, with = "bytes_opt", skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Cap on the JSON outputs a step may return, e.g. `1MiB`.
    #[serde(default, with = "bytes_opt", skip_serializing_if = "Option::is_none")]
    pub output: Option<u64>,
    /// Cap on captured stdout/stderr of each executed program and on log volume.
    #[serde(default, with = "bytes_opt", skip_serializing_if = "Option::is_none")]
    pub log: Option<u64>,
    /// Cap on each HTTP response body the plugin receives through wasi:http, e.g. `8GiB` for a step that streams
    /// registry blobs.
    #[serde(default, with = "bytes_opt", skip_serializing_if = "Option::is_none")]
    pub http_response: Option<u64>,
}

/// What a duration should look like, for messages.
const DURATION_HINT: &str = "expected a duration like 90s or 5m";

/// What a size should look like, for messages.
const SIZE_HINT: &str = "expected a size like 256MiB, 512KiB, 1GiB or a byte count";

/// Parses durations such as `90s`, `5m`, `1h30m`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let numeric = t.chars().any(|c| c.is_ascii_digit())
        && t.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '+');
    if numeric {
        return Err(format!(
            "invalid duration `{text}`: a number needs a unit; {DURATION_HINT}"
        ));
    }
    let d = humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration `{text}` ({e}); {DURATION_HINT}"))?;
    if d.is_zero() {
        return Err(format!(
            "invalid duration `{text}`: must be greater than zero"
        ));
    }
    Ok(d)
}

/// Parses sizes such as `256MiB`, `1MiB`, `512KiB`, `1GiB`, `1TiB` or a plain byte count.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("invalid size `{text}`; {SIZE_HINT}");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        "TiB" | "Ti" => 1 << 40,
        "KB" | "K" => 1_000,
        "MB" | "M" => 1_000_000,
        "GB" | "G" => 1_000_000_000,
        "TB" | "T" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

// Durations and sizes are parsed inside a `Visitor`, not after reading a `String`: an error raised while serde_yaml
// visits the scalar carries the scalar's own position, while a later custom error only gets the enclosing mapping's.

/// Reads a duration from a string (`90s`); a bare number is refused with a hint about units.
struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(DURATION_HINT.trim_start_matches("expected "))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        self.visit_str(&v.to_string())
    }
}

/// Reads a size from a byte count (`1048576`) or a string with a unit (`1MiB`).
struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SIZE_HINT.trim_start_matches("expected "))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_bytes(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("invalid size `{v}`: must not be negative")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Err(E::custom(format!(
            "invalid size `{v}`: fractions are not accepted; {SIZE_HINT}"
        )))
    }
}

mod duration {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
    pub fn serialize<S: serde::Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }
}

pub(crate) mod duration_opt {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
    pub fn serialize<S: serde::Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::duration::serialize(v, s),
            None => s.serialize_none(),
        }
    }
}

mod bytes_opt {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(SizeVisitor).map(Some)
    }
    pub fn serialize<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_u64(*n),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_reject() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .contains("expected a duration like 90s or 5m")
        );
        assert!(
            parse_duration("30")
                .unwrap_err()
                .contains("a number needs a unit")
        );
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("greater than zero")
        );
    }

    #[test]
    fn sizes_parse_and_reject() {
        assert_eq!(parse_bytes("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_bytes("1TiB").unwrap(), 1 << 40);
        assert_eq!(parse_bytes("2TB").unwrap(), 2_000_000_000_000);
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
    }
}
