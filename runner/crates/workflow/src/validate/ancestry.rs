//! Which steps' outputs an expression of a step may read: those of its ancestors in the `needs` graph.
//!
//! Validation used to collect every step's full ancestor set, with a scan of the step list for each ancestor,
//! which is quadratic and worse in the depth of the graph. Here each question "is `a` an ancestor of `s`" is
//! answered only when an expression asks it:
//! - a direct need (the common case: a step reads what it waits for) is a lookup in `s`'s needs;
//! - otherwise a search backwards from `s` that never enters a step whose level (longest path from a root) is not
//!   above `a`'s: an ancestor of `s` always has a lower level than `s`, so such a step cannot lead to `a`.
//!
//! So a workflow whose expressions read their needs costs O(steps + edges) in all, and a read of a step k levels
//! up costs the steps in those k levels of the cone above the reader, not the whole graph.

use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use crate::{Workflow, work};

/// The `needs` graph of all steps (main, then verify), by position.
#[derive(Debug)]
pub(super) struct Ancestry {
    index: HashMap<String, usize>,
    /// Known needs of each step, self-needs left out (validation reports them on their own).
    needs: Vec<Vec<usize>>,
    /// Longest path from a root; `None` when the graph has a cycle (reported on its own), then searches go
    /// without pruning.
    level: Option<Vec<u32>>,
    main_steps: usize,
}

impl Ancestry {
    pub(super) fn new(w: &Workflow) -> Ancestry {
        let mut index = HashMap::new();
        let mut ids = Vec::new();
        for (_, _, step) in w.all_steps() {
            index.entry(step.id.clone()).or_insert(ids.len());
            ids.push(step.id.as_str());
        }
        let needs: Vec<Vec<usize>> = w
            .all_steps()
            .enumerate()
            .map(|(i, (_, _, step))| {
                work::edges(step.needs.len());
                step.needs
                    .iter()
                    .filter_map(|n| index.get(n).copied())
                    .filter(|&n| n != i)
                    .collect()
            })
            .collect();
        let level = levels(&needs);
        Ancestry {
            index,
            needs,
            level,
            main_steps: w.steps.len(),
        }
    }

    pub(super) fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Whether `target`'s outputs are visible to the expressions of the step at `step`: an ancestor, or (for a
    /// verification step) any main step.
    pub(super) fn visible(&self, step: usize, target: &str) -> bool {
        let Some(target) = self.position(target) else {
            return false;
        };
        if target == step {
            return false;
        }
        if step >= self.main_steps && target < self.main_steps {
            return true;
        }
        self.is_ancestor(target, step)
    }

    fn is_ancestor(&self, target: usize, step: usize) -> bool {
        work::edges(self.needs[step].len());
        if self.needs[step].contains(&target) {
            return true;
        }
        let floor = match &self.level {
            Some(level) if level[target] >= level[step] => return false,
            Some(level) => Some((level, level[target])),
            None => None,
        };
        let mut seen = HashSet::from([step]);
        let mut todo = vec![step];
        while let Some(at) = todo.pop() {
            work::node();
            work::edges(self.needs[at].len());
            for &need in &self.needs[at] {
                if need == target {
                    return true;
                }
                let above = floor.is_none_or(|(level, min)| level[need] > min);
                if above && seen.insert(need) {
                    todo.push(need);
                }
            }
        }
        false
    }
}

/// Longest path from a root for every step (Kahn's algorithm, O(steps + edges)), or `None` on a cycle.
fn levels(needs: &[Vec<usize>]) -> Option<Vec<u32>> {
    let mut waiting: Vec<usize> = needs.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); needs.len()];
    for (i, list) in needs.iter().enumerate() {
        for &n in list {
            dependents[n].push(i);
        }
    }
    let mut level = vec![0u32; needs.len()];
    let mut ready: Vec<usize> = (0..needs.len()).filter(|&i| waiting[i] == 0).collect();
    let mut placed = 0;
    while let Some(i) = ready.pop() {
        work::node();
        placed += 1;
        for &d in &dependents[i] {
            level[d] = level[d].max(level[i] + 1);
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(d);
            }
        }
    }
    (placed == needs.len()).then_some(level)
}

/// What the expressions of one step may read, as the probe scope asks it.
#[derive(Debug)]
pub(super) struct StepView {
    pub(super) graph: Arc<Ancestry>,
    pub(super) step: usize,
}

impl crate::expr::Visible for StepView {
    fn visible(&self, id: &str) -> bool {
        self.graph.visible(self.step, id)
    }
}
