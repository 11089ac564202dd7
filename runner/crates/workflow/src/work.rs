//! Counts of graph work, so that tests can check that validation, planning and scheduling grow linearly with
//! the workflow without depending on the machine's speed: a test runs the work for n and 4n steps and compares
//! the counts, not the seconds.
//!
//! The counts are per thread (a `Cell` each, no atomics): the hot loops pay one add, and a test that runs its
//! work on its own thread (a `#[test]`, or a current-thread tokio runtime) reads only its own.

use std::cell::Cell;

/// What the graph algorithms did since the last [`take`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Steps visited by a graph walk (layering, cycle search, ancestry) or examined by the scheduler.
    pub nodes: u64,
    /// `needs` edges followed.
    pub edges: u64,
    /// `${{ … }}` expressions checked by validation.
    pub expressions: u64,
    /// Times the scheduler woke up to start steps (at the start, and once per finished step).
    pub wakeups: u64,
}

thread_local! {
    static WORK: Cell<Work> = const { Cell::new(Work { nodes: 0, edges: 0, expressions: 0, wakeups: 0 }) };
}

fn add(f: impl FnOnce(&mut Work)) {
    WORK.with(|w| {
        let mut now = w.get();
        f(&mut now);
        w.set(now);
    });
}

pub fn node() {
    add(|w| w.nodes += 1);
}

pub fn edges(n: usize) {
    add(|w| w.edges += n as u64);
}

pub fn expression() {
    add(|w| w.expressions += 1);
}

pub fn wakeup() {
    add(|w| w.wakeups += 1);
}

/// The work counted on this thread since the last call, and starts counting again from zero.
pub fn take() -> Work {
    WORK.with(|w| w.replace(Work::default()))
}
