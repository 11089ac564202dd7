//! Complexity guard: validation and planning must grow linearly with the workflow. Seconds depend on the
//! machine, so this counts the work instead (graph nodes visited, `needs` edges followed, expressions checked)
//! for n and 4n steps of a deep graph, and fails when 4n costs clearly more than 4 times n.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use respawn_workflow::expr::{RunInfo, Scope};
use respawn_workflow::work::{self, Work};
use respawn_workflow::{load_str, plan, validate};

/// Layers of `width` steps; each step needs one step of the layer before and reads its output, and every
/// fourth also reads a step two layers up (an ancestor that is not a direct need). Two verification steps read
/// main steps.
fn deep_workflow(steps: usize, width: usize) -> String {
    let mut y = String::from(
        "respawn: 1\nname: deep\nversion: 1.0.0\nparams:\n  region: { type: string, default: eu }\n\
         plugins: { p: builtin:check@0.1 }\nsteps:\n",
    );
    for i in 0..steps {
        let _ = writeln!(y, "  - id: s{i}\n    uses: p/op");
        if i >= width {
            let need = i - width;
            let _ = writeln!(y, "    needs: [s{need}]");
            let _ = write!(
                y,
                "    with:\n      from: \"${{{{ steps.s{need}.outputs.path }}}}/${{{{ params.region }}}}\"\n"
            );
            if i % 4 == 0 && i >= 2 * width {
                let _ = writeln!(
                    y,
                    "      far: \"${{{{ steps['s{}'].outputs.x }}}}\"",
                    i - 2 * width
                );
            }
        }
    }
    let _ = write!(
        y,
        "verify:\n  - id: v0\n    uses: p/op\n    with: {{ a: \"${{{{ steps.s{}.outputs.path }}}}\" }}\n\
         \x20 - id: v1\n    uses: p/op\n    needs: [v0]\n    with: {{ a: \"${{{{ steps.v0.outputs.ok }}}}\" }}\n",
        steps - 1
    );
    y
}

fn validate_and_plan(steps: usize) -> (Work, Work) {
    let loaded = load_str(Path::new("deep.yaml"), &deep_workflow(steps, 8)).expect("loads");
    work::take();
    let problems = validate::validate(&loaded, None);
    assert!(
        problems.is_empty(),
        "{:?}",
        &problems[..problems.len().min(3)]
    );
    let validated = work::take();
    let scope = Scope {
        params: BTreeMap::from([("region".into(), serde_json::json!("eu"))]),
        run: RunInfo::default(),
        steps: Default::default(),
    };
    let planned = plan::build(&loaded, &scope).expect("plans");
    assert_eq!(planned.layers.len(), steps / 8);
    (validated, work::take())
}

/// 4n steps may cost at most this many times the work of n: 4 for linear work, with room for the constant
/// parts. A quadratic algorithm costs 16 times, an n log n one about 4.9 at these sizes.
const MAX_GROWTH: f64 = 4.6;

fn assert_linear(what: &str, small: Work, large: Work) {
    for (name, a, b) in [
        ("nodes", small.nodes, large.nodes),
        ("edges", small.edges, large.edges),
        ("expressions", small.expressions, large.expressions),
    ] {
        if a == 0 {
            assert_eq!(b, 0, "{what}: {name} counted for 4n but not for n");
            continue;
        }
        let growth = b as f64 / a as f64;
        assert!(
            growth <= MAX_GROWTH,
            "{what}: {name} grew {growth:.1}× from n to 4n steps ({a} -> {b}); the work is not linear"
        );
    }
}

#[test]
fn validation_and_planning_grow_linearly_with_a_deep_graph() {
    let n = 400;
    let (validate_n, plan_n) = validate_and_plan(n);
    let (validate_4n, plan_4n) = validate_and_plan(4 * n);
    // The counters must see the work at all, or the guard guards nothing.
    assert!(
        validate_n.nodes > 0 && validate_n.edges >= n as u64 - 8,
        "{validate_n:?}"
    );
    assert!(
        validate_n.expressions >= 2 * (n as u64 - 8),
        "{validate_n:?}"
    );
    assert!(plan_n.nodes >= n as u64, "{plan_n:?}");
    assert_linear("validate", validate_n, validate_4n);
    assert_linear("plan", plan_n, plan_4n);
}
