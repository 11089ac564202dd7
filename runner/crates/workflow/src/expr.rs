//! `${{ … }}` expressions, evaluated by minijinja.
//!
//! Expressions see only `params`, `run` (id, mode, started_at) and `steps.<id>.outputs`: no I/O, no environment,
//! no secrets. Undefined names are errors, never empty strings. A string that is exactly one expression keeps the
//! expression's type (a number stays a number); otherwise the pieces are joined as text.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};

use minijinja::value::{Enumerator, Object};
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use serde::Serialize;

/// Fuel for one evaluation: enough for any sensible expression, small enough that `range(…)` tricks end fast.
const FUEL: u64 = 20_000;

const OPEN: &str = "${{";
const CLOSE: &str = "}}";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExprError {
    #[error("unterminated `${{{{` (expected a closing `}}}}`)")]
    Unterminated,
    #[error("invalid expression `{expr}`: {message}")]
    Syntax { expr: String, message: String },
    #[error("expression `{expr}`: {message}")]
    Eval {
        expr: String,
        message: String,
        undefined: bool,
    },
    #[error("key of `with` mapping must be a string")]
    NonStringKey,
}

/// A piece of a string: literal text, or the source of one expression (without delimiters).
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Expr(&'a str),
}

/// Splits `s` into text and expressions.
pub fn split(s: &str) -> Result<Vec<Piece<'_>>, ExprError> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find(OPEN) {
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + OPEN.len()..];
        let end = after.find(CLOSE).ok_or(ExprError::Unterminated)?;
        pieces.push(Piece::Expr(after[..end].trim()));
        rest = &after[end + CLOSE.len()..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// True when `s` contains at least one expression.
pub fn has_expr(s: &str) -> bool {
    s.contains(OPEN)
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env
    })
}

/// The names an expression reads, as dotted chains (`steps.site.outputs.path`, `params.region`).
pub fn references(source: &str) -> Result<Vec<String>, ExprError> {
    let expr = env()
        .compile_expression(source)
        .map_err(|e| ExprError::Syntax {
            expr: source.to_string(),
            message: describe(&e),
        })?;
    let mut names: Vec<String> = expr.undeclared_variables(true).into_iter().collect();
    names.sort();
    Ok(names)
}

fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// What expressions can see.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scope {
    pub params: BTreeMap<String, serde_json::Value>,
    pub run: RunInfo,
    /// Step id -> `{ "outputs": … }` for steps that have finished.
    pub steps: StepOutputs,
}

/// The outputs of finished steps, shared with every evaluation rather than copied into it: a run adds one step
/// at a time while each expression reads a few, and converting the whole map for every expression made a
/// 10,000-step run quadratic.
#[derive(Debug, Clone, Default)]
pub struct StepOutputs(Arc<BTreeMap<String, StepView>>);

impl StepOutputs {
    /// Adds a finished step. O(log n): no evaluation holds the map between expressions, so it is not copied.
    pub fn insert(&mut self, id: String, view: StepView) {
        Arc::make_mut(&mut self.0).insert(id, view);
    }

    pub fn get(&self, id: &str) -> Option<&StepView> {
        self.0.get(id)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for StepOutputs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// `steps` as expressions see it at run time: a step's view is converted when an expression reads it.
#[derive(Debug)]
struct StepsTable(Arc<BTreeMap<String, StepView>>);

impl Object for StepsTable {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0
            .get(key.as_str()?)
            .map(|view| Value::from(minijinja::value::Serde(view)))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.keys().map(|k| Value::from(k.as_str())).collect())
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunInfo {
    pub id: String,
    pub mode: String,
    pub started_at: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StepView {
    pub outputs: serde_json::Value,
}

impl Scope {
    fn value(&self) -> Value {
        Value::from(BTreeMap::from([
            ("params", Value::from(minijinja::value::Serde(&self.params))),
            ("run", Value::from(minijinja::value::Serde(&self.run))),
            (
                "steps",
                Value::from_object(StepsTable(self.steps.0.clone())),
            ),
        ]))
    }
}

/// Evaluates one expression.
pub fn eval(source: &str, scope: &Scope) -> Result<Value, ExprError> {
    eval_in(source, &scope.value())
}

fn eval_in(source: &str, ctx: &Value) -> Result<Value, ExprError> {
    let fail = |e: minijinja::Error| ExprError::Eval {
        expr: source.to_string(),
        undefined: e.kind() == ErrorKind::UndefinedError,
        message: describe(&e),
    };
    let expr = env()
        .compile_expression(source)
        .map_err(|e| ExprError::Syntax {
            expr: source.to_string(),
            message: describe(&e),
        })?;
    let value = expr.eval(ctx.clone()).map_err(fail)?;
    if value.is_undefined() {
        // Strict mode only errors when an undefined value is used; a bare lookup must fail too.
        return Err(ExprError::Eval {
            expr: source.to_string(),
            message: "undefined value (no such param, run field or step output)".into(),
            undefined: true,
        });
    }
    Ok(value)
}

/// What validation evaluates an expression against: every declared param, the run fields, and for each step an
/// expression may read (its ancestors) an `outputs` that has any attribute or item.
#[derive(Debug, Clone)]
pub struct ProbeScope {
    /// Declared params with their default, or a placeholder of their type.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Which steps' outputs are visible. Asked per lookup rather than listed, so that probing an expression costs
    /// what it reads, not the number of the step's ancestors.
    pub steps: Arc<dyn Visible>,
}

impl Default for ProbeScope {
    fn default() -> ProbeScope {
        ProbeScope {
            params: BTreeMap::new(),
            steps: Arc::new(BTreeSet::<String>::new()),
        }
    }
}

/// Answers whether an expression may read the outputs of the step `id`.
pub trait Visible: Send + Sync + std::fmt::Debug {
    fn visible(&self, id: &str) -> bool;
}

impl Visible for BTreeSet<String> {
    fn visible(&self, id: &str) -> bool {
        self.contains(id)
    }
}

/// The result of [`probe`]: how the evaluation ended, and every lookup that found nothing.
#[derive(Debug)]
pub struct Probed {
    pub result: Result<Value, ExprError>,
    /// Each miss as a path: `["params", "x"]`, `["steps", "b"]`, `["steps", "a", "status"]`, `["run", "date"]`.
    pub misses: Vec<Vec<String>>,
}

/// Evaluates `source` against `scope`, recording every lookup in `params`, `run` or `steps` that found nothing.
///
/// This sees what [`references`] cannot: `params['x']`, `steps['my-id'].outputs` and other `[…]` lookups.
pub fn probe(source: &str, scope: &ProbeScope) -> Probed {
    let misses: Misses = Arc::default();
    let table = |path: &str, entries: BTreeMap<String, Value>| {
        Value::from_object(ProbeTable {
            path: vec![path.to_string()],
            entries,
            misses: misses.clone(),
        })
    };
    let params = scope
        .params
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(minijinja::value::Serde(v))))
        .collect();
    let run = RUN_FIELDS
        .iter()
        .map(|f| (f.to_string(), Value::from("")))
        .collect();
    let steps = Value::from_object(ProbeSteps {
        visible: scope.steps.clone(),
        misses: misses.clone(),
    });
    let ctx = Value::from(BTreeMap::from([
        ("params", table("params", params)),
        ("run", table("run", run)),
        ("steps", steps),
    ]));
    let result = eval_in(source, &ctx);
    let misses = std::mem::take(&mut *misses.lock().unwrap_or_else(|e| e.into_inner()));
    Probed { result, misses }
}

/// Names that `run.` exposes to expressions.
pub const RUN_FIELDS: [&str; 3] = ["id", "mode", "started_at"];

type Misses = Arc<Mutex<Vec<Vec<String>>>>;

/// A map of known entries that records every lookup of an unknown one.
#[derive(Debug)]
struct ProbeTable {
    path: Vec<String>,
    entries: BTreeMap<String, Value>,
    misses: Misses,
}

impl Object for ProbeTable {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if let Some(found) = key.as_str().and_then(|k| self.entries.get(k)) {
            return Some(found.clone());
        }
        let mut path = self.path.clone();
        path.push(key.as_str().map_or_else(|| key.to_string(), str::to_string));
        self.misses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path);
        None
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.entries
                .keys()
                .map(|k| Value::from(k.as_str()))
                .collect(),
        )
    }
}

/// The `steps` of a probe: a visible step has an `outputs` with anything in it; any other lookup is a miss.
#[derive(Debug)]
struct ProbeSteps {
    visible: Arc<dyn Visible>,
    misses: Misses,
}

impl Object for ProbeSteps {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let id = key.as_str().map_or_else(|| key.to_string(), str::to_string);
        if self.visible.visible(&id) {
            let outputs = BTreeMap::from([("outputs".to_string(), Value::from_object(Anything))]);
            return Some(Value::from_object(ProbeTable {
                path: vec!["steps".to_string(), id],
                entries: outputs,
                misses: self.misses.clone(),
            }));
        }
        self.misses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(vec!["steps".to_string(), id]);
        None
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        // The visible steps are asked one by one, never listed; iterating `steps` is a question for the run.
        Enumerator::NonEnumerable
    }
}

/// Stands for step outputs not known before a run: every attribute or item exists.
#[derive(Debug)]
struct Anything;

impl Object for Anything {
    fn get_value(self: &Arc<Self>, _key: &Value) -> Option<Value> {
        Some(Value::from_object(Anything))
    }
}

/// Evaluates a `when:` condition.
pub fn condition(text: &str, scope: &Scope) -> Result<bool, ExprError> {
    let ctx = scope.value();
    match split(text)?.as_slice() {
        [Piece::Expr(src)] => Ok(eval_in(src, &ctx)?.is_true()),
        _ => Ok(!render_string(text, &ctx, false)?
            .as_str()
            .unwrap_or_default()
            .is_empty()),
    }
}

/// Renders a `with:` value into JSON, evaluating every expression in its strings.
///
/// With `keep_unresolved`, expressions that read something not yet known (typically a step output during
/// planning) are left as written instead of failing.
pub fn render(
    value: &serde_yaml::Value,
    scope: &Scope,
    keep_unresolved: bool,
) -> Result<serde_json::Value, ExprError> {
    render_in(value, &scope.value(), keep_unresolved)
}

fn render_in(
    value: &serde_yaml::Value,
    ctx: &Value,
    keep: bool,
) -> Result<serde_json::Value, ExprError> {
    use serde_yaml::Value as Y;
    Ok(match value {
        Y::String(s) => render_string(s, ctx, keep)?,
        Y::Sequence(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|v| render_in(v, ctx, keep))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = k.as_str().ok_or(ExprError::NonStringKey)?;
                out.insert(key.to_string(), render_in(v, ctx, keep)?);
            }
            serde_json::Value::Object(out)
        }
        Y::Tagged(t) => render_in(&t.value, ctx, keep)?,
        Y::Null => serde_json::Value::Null,
        Y::Bool(b) => serde_json::Value::Bool(*b),
        Y::Number(n) => serde_json::to_value(n).unwrap_or(serde_json::Value::Null),
    })
}

fn render_string(s: &str, ctx: &Value, keep: bool) -> Result<serde_json::Value, ExprError> {
    let pieces = split(s)?;
    if let [Piece::Expr(src)] = pieces.as_slice() {
        return match eval_in(src, ctx) {
            Ok(v) => serde_json::to_value(&v).map_err(|e| ExprError::Eval {
                expr: src.to_string(),
                message: e.to_string(),
                undefined: false,
            }),
            Err(ExprError::Eval {
                undefined: true, ..
            }) if keep => Ok(serde_json::Value::String(s.to_string())),
            Err(e) => Err(e),
        };
    }
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Expr(src) => match eval_in(src, ctx) {
                Ok(v) => out.push_str(&v.to_string()),
                Err(ExprError::Eval {
                    undefined: true, ..
                }) if keep => {
                    out.push_str(OPEN);
                    out.push(' ');
                    out.push_str(src);
                    out.push(' ');
                    out.push_str(CLOSE);
                }
                Err(e) => return Err(e),
            },
        }
    }
    Ok(serde_json::Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let mut s = Scope::default();
        s.params.insert("region".into(), json!("eu-west"));
        s.params.insert("replicas".into(), json!(3));
        s.run.mode = "drill".into();
        s.steps.insert(
            "site".into(),
            StepView {
                outputs: json!({"path": "/r/site"}),
            },
        );
        s
    }

    fn yaml(s: &str) -> serde_yaml::Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn whole_expression_keeps_its_type() {
        assert_eq!(
            render(&yaml("'${{ params.replicas }}'"), &scope(), false).unwrap(),
            json!(3)
        );
    }

    #[test]
    fn mixed_text_is_joined() {
        let v = render(
            &yaml("'img:${{ params.region }}/${{ steps.site.outputs.path }}'"),
            &scope(),
            false,
        );
        assert_eq!(v.unwrap(), json!("img:eu-west//r/site"));
    }

    #[test]
    fn undefined_names_are_errors_not_empty_strings() {
        let err = render(&yaml("'${{ params.nope }}'"), &scope(), false).unwrap_err();
        assert!(
            matches!(
                err,
                ExprError::Eval {
                    undefined: true,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn planning_keeps_unresolved_outputs() {
        let v = render(
            &yaml("'${{ steps.web.outputs.url }}/x ${{ params.region }}'"),
            &scope(),
            true,
        )
        .unwrap();
        assert_eq!(v, json!("${{ steps.web.outputs.url }}/x eu-west"));
    }

    #[test]
    fn references_are_dotted_chains() {
        let refs = references("steps.site.outputs.path ~ params.region").unwrap();
        assert_eq!(refs, vec!["params.region", "steps.site.outputs.path"]);
    }

    #[test]
    fn unterminated_and_syntax_errors() {
        assert_eq!(split("a ${{ b").unwrap_err(), ExprError::Unterminated);
        assert!(matches!(references("a +"), Err(ExprError::Syntax { .. })));
    }

    #[test]
    fn runaway_expressions_run_out_of_fuel() {
        let err = eval(
            "range(100000) | map('string') | join(',') | length",
            &scope(),
        );
        assert!(err.is_err());
    }

    #[test]
    fn probes_record_what_is_missing() {
        let mut scope = ProbeScope::default();
        scope.params.insert("region".into(), json!("eu"));
        scope.steps = Arc::new(BTreeSet::from(["db-1".to_string()]));
        let ok = probe(
            "steps['db-1'].outputs.a['b'][0] ~ params['region'] ~ run.mode",
            &scope,
        );
        assert!(ok.result.is_ok(), "{:?}", ok.result);
        assert!(ok.misses.is_empty());
        let bad = probe("params['x'] ~ steps['c'].outputs.y", &scope);
        assert!(matches!(
            bad.result,
            Err(ExprError::Eval {
                undefined: true,
                ..
            })
        ));
        assert_eq!(bad.misses, [vec!["params", "x"], vec!["steps", "c"]]);
    }

    #[test]
    fn conditions() {
        assert!(condition("${{ run.mode == 'drill' }}", &scope()).unwrap());
        assert!(!condition("${{ run.mode == 'failover' }}", &scope()).unwrap());
    }
}
