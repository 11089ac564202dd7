//! The `needs` graph of the steps the scheduler runs together (the main steps, or the verification steps).

use std::collections::HashMap;

use respawn_workflow::Step;

/// The `needs` graph of one section, by declaration position; needs outside the section (main steps, for
/// verification) are already satisfied.
pub(crate) struct SectionGraph<'s> {
    steps: &'s [&'s Step],
    index: HashMap<&'s str, usize>,
    /// How many needs within the section each step waits for.
    pub(crate) waiting: Vec<usize>,
    pub(crate) dependents: Vec<Vec<usize>>,
}

impl<'s> SectionGraph<'s> {
    pub(crate) fn new(steps: &'s [&'s Step]) -> SectionGraph<'s> {
        let mut index = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            index.entry(s.id.as_str()).or_insert(i);
        }
        let mut waiting = vec![0; steps.len()];
        let mut dependents = vec![Vec::new(); steps.len()];
        for (i, s) in steps.iter().enumerate() {
            for need in &s.needs {
                if let Some(&n) = index.get(need.as_str()) {
                    waiting[i] += 1;
                    dependents[n].push(i);
                }
            }
        }
        SectionGraph {
            steps,
            index,
            waiting,
            dependents,
        }
    }

    pub(crate) fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub(crate) fn step(&self, id: &str) -> Option<&'s Step> {
        self.position(id).map(|i| self.steps[i])
    }
}
