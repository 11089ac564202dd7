//! Semantic checks of a loaded workflow. Every problem is reported, each at the node it concerns.

use respawn_sandbox::limits::{MAX_RETRY_BACKOFF, MAX_STEP_HTTP_RESPONSE, MAX_STEP_TIMEOUT, Value};
use std::collections::{HashMap, HashSet};

use super::{Diagnostic, LoadedWorkflow, ParamType, Section, Step};

/// Answers which operations a plugin exports, once plugins can be loaded. Validation without a catalog checks
/// only that `uses` names a declared plugin.
pub trait OperationCatalog {
    /// Operations of the plugin declared under `alias`, or an error text if it cannot be loaded.
    fn operations(&self, alias: &str) -> Result<Vec<String>, String>;
}

pub use super::expr::RUN_FIELDS;

mod ancestry;
mod expressions;

/// Checks `loaded` and returns every problem found (empty when valid).
pub fn validate(
    loaded: &LoadedWorkflow,
    catalog: Option<&dyn OperationCatalog>,
) -> Vec<Diagnostic> {
    let mut c = Checker {
        w: loaded,
        diags: Vec::new(),
    };
    c.duplicate_keys();
    c.header();
    c.params();
    c.stores_and_plugins();
    let ids = c.ids();
    c.steps(&ids, catalog);
    c.cycles(&ids);
    c.expressions();
    c.diags.sort_by_key(|d| (d.pos.line, d.pos.col));
    c.diags.dedup();
    c.diags
}

struct Checker<'a> {
    w: &'a LoadedWorkflow,
    diags: Vec<Diagnostic>,
}

/// Where each step id is first declared: id -> (section, index).
type Ids = HashMap<String, (Section, usize)>;

fn step_path(section: Section, index: usize) -> String {
    format!("{}[{index}]", section.key())
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_step_id(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 64
        && matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Checker<'_> {
    fn at(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.w.source.value(path);
        self.diags.push(self.w.diag(pos, message));
    }

    fn at_key(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.w.source.key(path);
        self.diags.push(self.w.diag(pos, message));
    }

    fn duplicate_keys(&mut self) {
        for (path, pos) in &self.w.source.duplicate_keys {
            self.diags
                .push(self.w.diag(*pos, super::load::duplicate_key_message(path)));
        }
    }

    fn header(&mut self) {
        let w = &self.w.workflow;
        if w.respawn != 1 {
            self.at(
                "respawn",
                format!(
                    "unsupported format version {}; this respawn reads version 1",
                    w.respawn
                ),
            );
        }
        if w.name.trim().is_empty() || w.name.contains(['/', ' ', '\t']) {
            self.at("name", "name must be non-empty, without spaces or `/`");
        }
        if let Err(e) = semver::Version::parse(&w.version) {
            self.at(
                "version",
                format!(
                    "version `{}` is not semver ({e}); expected e.g. 1.4.0",
                    w.version
                ),
            );
        }
        if w.steps.is_empty() {
            self.at("steps", "a workflow needs at least one step under `steps`");
        }
        let objectives = w.objectives.clone().unwrap_or_default();
        for (name, value) in [("rto", objectives.rto), ("rpo", objectives.rpo)] {
            if value.is_some_and(|d| d > super::MAX_OBJECTIVE) {
                self.at(
                    &format!("objectives.{name}"),
                    format!(
                        "objectives.{name} may be at most {}",
                        Value::Time(super::MAX_OBJECTIVE)
                    ),
                );
            }
        }
    }

    fn params(&mut self) {
        for (name, spec) in &self.w.workflow.params {
            let path = format!("params.{name}");
            if !is_name(name) {
                self.at_key(
                    &path,
                    format!("param name `{name}` must be letters, digits and `_`"),
                );
            }
            if spec.required && spec.default.is_some() {
                self.at(
                    &format!("{path}.default"),
                    format!("param `{name}` is required and cannot have a default"),
                );
            }
            if let Some(default) = &spec.default {
                let ok = match spec.kind {
                    ParamType::String => default.is_string(),
                    ParamType::Integer => default.as_i64().is_some(),
                    ParamType::Boolean => default.is_bool(),
                };
                if !ok {
                    self.at(
                        &format!("{path}.default"),
                        format!("default of param `{name}` must be {}", article(spec.kind)),
                    );
                }
            }
        }
    }

    fn stores_and_plugins(&mut self) {
        for (name, url) in &self.w.workflow.stores {
            if !is_name(name) {
                self.at_key(
                    &format!("stores.{name}"),
                    format!("store name `{name}` must be letters, digits and `_`"),
                );
            }
            if !STORE_SCHEMES.iter().any(|s| url.starts_with(s)) {
                self.at(
                    &format!("stores.{name}"),
                    format!(
                        "store `{name}`: unsupported URL `{url}`; expected {}",
                        STORE_SCHEMES.join(", ")
                    ),
                );
            }
        }
        for (name, spec) in &self.w.workflow.secrets {
            if spec.env.trim().is_empty() {
                self.at(
                    &format!("secrets.{name}.env"),
                    format!("secret `{name}`: env must name a variable"),
                );
            }
        }
        for (alias, source) in &self.w.workflow.plugins {
            if !is_name(alias) {
                self.at_key(
                    &format!("plugins.{alias}"),
                    format!("plugin alias `{alias}` must be letters, digits and `_`"),
                );
            }
            if let Err(why) = check_plugin_source(source) {
                self.at(
                    &format!("plugins.{alias}"),
                    format!("plugin `{alias}`: {why}"),
                );
            }
        }
    }

    fn ids(&mut self) -> Ids {
        let mut ids = Ids::new();
        let all: Vec<(Section, usize, String)> = self
            .w
            .workflow
            .all_steps()
            .map(|(s, i, step)| (s, i, step.id.clone()))
            .collect();
        for (section, index, id) in all {
            let path = format!("{}.id", step_path(section, index));
            if !is_step_id(&id) {
                self.at(&path, format!("step id `{id}` must be 1-64 letters, digits, `_` or `-`, starting alphanumeric"));
            }
            if let Some((s0, i0)) = ids.get(&id) {
                let first = self.w.source.value(&format!("{}.id", step_path(*s0, *i0)));
                self.at(
                    &path,
                    format!(
                        "duplicate step id `{id}` (first declared at line {})",
                        first.line
                    ),
                );
            } else {
                ids.insert(id, (section, index));
            }
        }
        ids
    }

    fn steps(&mut self, ids: &Ids, catalog: Option<&dyn OperationCatalog>) {
        let w = &self.w.workflow;
        for (section, index, step) in w.all_steps() {
            let path = step_path(section, index);
            self.uses(&path, step, catalog);
            if section == Section::Verify && step.approval.is_some() {
                self.at(
                    &format!("{path}.approval"),
                    "approval gates are not allowed in `verify`",
                );
            }
            let mut seen = HashSet::new();
            for (n, need) in step.needs.iter().enumerate() {
                let npath = format!("{path}.needs[{n}]");
                if !seen.insert(need) {
                    self.at(&npath, format!("`{need}` is listed twice in needs"));
                }
                match ids.get(need) {
                    None => self.at(
                        &npath,
                        format!("needs unknown step `{need}`{}", suggest(need, ids.keys())),
                    ),
                    Some((Section::Verify, _)) if section == Section::Steps => self.at(
                        &npath,
                        format!("step `{}` cannot need verification step `{need}`", step.id),
                    ),
                    Some(_) if *need == step.id => {
                        self.at(&npath, format!("step `{need}` needs itself"))
                    }
                    Some(_) => {}
                }
            }
            self.grants(&path, step);
            if step
                .limits
                .memory
                .is_some_and(|m| m > super::MAX_STEP_MEMORY)
            {
                self.at(
                    &format!("{path}.limits.memory"),
                    format!(
                        "limits.memory may be at most {} MiB",
                        super::MAX_STEP_MEMORY >> 20
                    ),
                );
            }
            if step
                .limits
                .http_response
                .is_some_and(|b| b > MAX_STEP_HTTP_RESPONSE)
            {
                self.at(
                    &format!("{path}.limits.http_response"),
                    format!(
                        "limits.http_response may be at most {}",
                        Value::Bytes(MAX_STEP_HTTP_RESPONSE)
                    ),
                );
            }
            if step.timeout.is_some_and(|t| t > MAX_STEP_TIMEOUT) {
                self.at(
                    &format!("{path}.timeout"),
                    format!("timeout may be at most {}", Value::Time(MAX_STEP_TIMEOUT)),
                );
            }
            if let Some(retry) = &step.retry
                && retry.backoff > MAX_RETRY_BACKOFF
            {
                self.at(
                    &format!("{path}.retry.backoff"),
                    format!(
                        "retry.backoff may be at most {}",
                        Value::Time(MAX_RETRY_BACKOFF)
                    ),
                );
            }
            if let Some(retry) = &step.retry
                && !(1..=100).contains(&retry.attempts)
            {
                self.at(
                    &format!("{path}.retry.attempts"),
                    "retry.attempts must be between 1 and 100",
                );
            }
        }
    }

    fn uses(&mut self, path: &str, step: &Step, catalog: Option<&dyn OperationCatalog>) {
        let Some(uses) = &step.uses else {
            if step.approval.is_none() {
                self.at(
                    path,
                    format!(
                        "step `{}` needs `uses: plugin/operation` or an `approval`",
                        step.id
                    ),
                );
            }
            return;
        };
        let upath = format!("{path}.uses");
        let Some((plugin, op)) = uses
            .split_once('/')
            .filter(|(p, o)| !p.is_empty() && !o.is_empty())
        else {
            self.at(&upath, format!("uses `{uses}` must be `plugin/operation`"));
            return;
        };
        if !self.w.workflow.plugins.contains_key(plugin) {
            let declared = self.w.workflow.plugins.keys();
            self.at(
                &upath,
                format!(
                    "uses undeclared plugin `{plugin}`{}",
                    suggest(plugin, declared)
                ),
            );
            return;
        }
        if let Some(catalog) = catalog {
            match catalog.operations(plugin) {
                Ok(ops) if ops.iter().any(|o| o == op) => {}
                Ok(ops) => self.at(
                    &upath,
                    format!(
                        "plugin `{plugin}` has no operation `{op}`; it exports: {}",
                        ops.join(", ")
                    ),
                ),
                Err(why) => self.at(&upath, format!("plugin `{plugin}`: {why}")),
            }
        }
    }

    fn grants(&mut self, path: &str, step: &Step) {
        let w = &self.w.workflow;
        let stores: Vec<&str> = w.stores.keys().map(String::as_str).collect();
        let secrets: Vec<&str> = w.secrets.keys().map(String::as_str).collect();
        let declared = respawn_sandbox::Declared {
            stores: &stores,
            secrets: &secrets,
        };
        for problem in step.grants.validate(&declared) {
            let at = format!("{path}.grants.{}", problem.at);
            if problem.at_key {
                self.at_key(&at, problem.message);
            } else {
                self.at(&at, problem.message);
            }
        }
    }

    /// Reports each dependency cycle once, as `a -> b -> a`.
    fn cycles(&mut self, ids: &Ids) {
        let w = &self.w.workflow;
        let needs: HashMap<&str, &[String]> = w
            .all_steps()
            .map(|(_, _, s)| (s.id.as_str(), s.needs.as_slice()))
            .collect();
        let mut state: HashMap<&str, u8> = HashMap::new(); // 1 = on stack, 2 = done
        let mut reported: HashSet<Vec<String>> = HashSet::new();
        let mut order: Vec<&str> = w.all_steps().map(|(_, _, s)| s.id.as_str()).collect();
        order.dedup();
        for root in order {
            if state.contains_key(root) {
                continue;
            }
            // Iterative DFS: (node, next need index).
            let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
            state.insert(root, 1);
            while let Some((node, next)) = stack.last_mut() {
                let node = *node;
                let list = needs.get(node).copied().unwrap_or(&[]);
                if *next >= list.len() {
                    state.insert(node, 2);
                    stack.pop();
                    continue;
                }
                let dep = list[*next].as_str();
                *next += 1;
                // A step needing itself is reported as such by `steps`, not as a cycle `a -> a`.
                if !ids.contains_key(dep) || dep == node {
                    continue;
                }
                match state.get(dep) {
                    None => {
                        state.insert(dep, 1);
                        stack.push((dep, 0));
                    }
                    Some(1) => {
                        let start = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            stack[start..].iter().map(|(n, _)| n.to_string()).collect();
                        let mut key = cycle.clone();
                        key.sort();
                        if reported.insert(key) {
                            cycle.push(dep.to_string());
                            let (section, index) = ids[node];
                            let pos = needs[node].iter().position(|n| n == dep).unwrap_or(0);
                            self.at(
                                &format!("{}.needs[{pos}]", step_path(section, index)),
                                format!("dependency cycle: {}", cycle.join(" -> ")),
                            );
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

/// URL schemes a store may use.
pub const STORE_SCHEMES: [&str; 5] = ["file://", "memory://", "s3://", "az://", "gs://"];

fn check_plugin_source(source: &str) -> Result<(), String> {
    if let Some(rest) = source.strip_prefix("builtin:") {
        let ok = rest
            .split_once('@')
            .is_some_and(|(n, v)| is_step_id(n) && !v.is_empty());
        return if ok {
            Ok(())
        } else {
            Err(format!("`{source}`: expected builtin:NAME@VERSION"))
        };
    }
    if STORE_SCHEMES.iter().any(|s| source.starts_with(s))
        && source.len() > source.find("://").unwrap_or(0) + 3
    {
        return Ok(());
    }
    Err(format!(
        "unsupported source `{source}`; expected builtin:NAME@VERSION, file://PATH or a store URL"
    ))
}

fn article(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "a string",
        ParamType::Integer => "an integer",
        ParamType::Boolean => "a boolean",
    }
}

/// How alike (Jaro-Winkler, 0..=1) a name must be to a known one to be suggested: high enough that `regoin`
/// finds `region` and `locl` finds `local`, low enough that unrelated names stay silent.
const SUGGESTION_SIMILARITY: f64 = 0.8;

/// "; did you mean `x`?" naming the known name most like `name`, when one is alike enough.
fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let lowered = name.to_ascii_lowercase();
    let best = known
        .filter(|k| k.as_str() != name)
        .map(|k| (strsim::jaro_winkler(&lowered, &k.to_ascii_lowercase()), k))
        .filter(|(score, _)| *score >= SUGGESTION_SIMILARITY)
        // Highest score first; on a tie the name that sorts first, so the message is stable.
        .max_by(|(a, ka), (b, kb)| a.total_cmp(b).then_with(|| kb.cmp(ka)));
    match best {
        Some((_, k)) => format!("; did you mean `{k}`?"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const HEAD: &str = "respawn: 1\nname: demo\nversion: 1.0.0\nparams:\n  region: { type: string }\n\
        plugins:\n  local: builtin:local@0.1\nsteps:\n";

    fn problems(steps: &str) -> Vec<String> {
        let loaded =
            super::super::load_str(Path::new("w.yaml"), &format!("{HEAD}{steps}")).expect("loads");
        validate(&loaded, None)
            .into_iter()
            .map(|d| format!("{}:{}: {}", d.pos.line, d.pos.col, d.message))
            .collect()
    }

    #[test]
    fn bracketed_references_are_checked() {
        let d = problems(
            "  - id: db-1\n    uses: local/run\n  - id: b\n    uses: local/run\n    needs: [db-1]\n    with:\n\
             \x20     ok: \"${{ steps['db-1'].outputs['x'].y ~ params['region'] ~ run['id'] }}\"\n\
             \x20     p: \"${{ params['regoin'] }}\"\n\
             \x20     s: \"${{ steps['b'].outputs }}\"\n",
        );
        assert_eq!(
            d,
            [
                "16:10: in `${{ params['regoin'] }}`: unknown param `regoin`; did you mean `region`?",
                "17:10: in `${{ steps['b'].outputs }}`: step `b` cannot read its own outputs",
            ]
        );
    }

    #[test]
    fn computed_keys_and_guards_are_not_errors() {
        let d = problems(
            "  - id: a\n    uses: local/run\n    with:\n\
             \x20     x: \"${{ params[params.region] }}\"\n\
             \x20     y: \"${{ params['nope'] | default('z') }}\"\n",
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn hyphenated_step_gives_one_error() {
        let d = problems(
            "  - id: restore-db\n    uses: local/run\n  - id: b\n    uses: local/run\n    needs: [restore-db]\n\
             \x20   with: { dsn: \"${{ steps.restore-db.outputs.dsn }}\" }\n",
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].contains("unknown step `restore`; ids with `-`"),
            "{d:?}"
        );
    }

    #[test]
    fn self_need_is_not_also_a_cycle() {
        let d = problems("  - id: a\n    uses: local/run\n    needs: [a]\n");
        assert_eq!(d, ["11:13: step `a` needs itself"]);
    }

    #[test]
    fn http_response_limit_is_checked_against_its_largest() {
        let step = |size: &str| {
            format!("  - id: a\n    uses: local/run\n    limits: {{ http_response: {size} }}\n")
        };
        assert!(problems(&step("8GiB")).is_empty());
        assert!(problems(&step("1TiB")).is_empty());
        assert_eq!(
            problems(&step("2TiB")),
            ["11:30: limits.http_response may be at most 1 TiB"]
        );
    }
}
