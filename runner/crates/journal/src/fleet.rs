//! The runs of a fleet's members (DESIGN.md §11): member N of fleet run F runs as `F.N`, and as `F.N.K` for its
//! K-th run once an earlier one was interrupted and torn down. That naming is all a restarted process needs to
//! find its member's run in the shared state store.

use std::sync::Arc;

use respawn_data::object_store::ObjectStore;
use respawn_report::record::Outcome;

use crate::JournalError;
use crate::chain::StoredEvent;
use crate::replay::Replayed;

/// The id of the `attempt`-th run (from 1) of member `index` of fleet run `fleet_run`.
pub fn member_run_id(fleet_run: &str, index: usize, attempt: u32) -> String {
    if attempt <= 1 {
        format!("{fleet_run}.{index}")
    } else {
        format!("{fleet_run}.{index}.{attempt}")
    }
}

/// Runs after which a member stops starting new ones (each earlier one interrupted and torn down).
pub const MAX_RUNS: u32 = 100;

/// A member's run as the journal has it.
pub enum Found {
    None,
    /// The member's latest run: which one, its id and what it says.
    Run {
        attempt: u32,
        run_id: String,
        stored: Vec<StoredEvent>,
        replayed: Box<Replayed>,
    },
}

/// The latest run of member `index`: its runs are numbered, and a later one exists only once an earlier one
/// was interrupted and torn down.
pub async fn latest_run(
    store: &Arc<dyn ObjectStore>,
    fleet_run: &str,
    index: usize,
) -> Result<Found, JournalError> {
    let mut found = Found::None;
    for attempt in 1..=MAX_RUNS {
        let run_id = member_run_id(fleet_run, index, attempt);
        match crate::read_run(store, &run_id).await {
            Ok((stored, replayed)) => {
                found = Found::Run {
                    attempt,
                    run_id,
                    stored,
                    replayed: Box::new(replayed),
                }
            }
            Err(JournalError::NoSuchRun { .. }) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// How a member's run stands, for starting it and for the members that need it.
#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    NotStarted,
    /// Unfinished, or an interrupted failover: resume it.
    Resumable,
    Passed,
    Failed,
    /// Interrupted and torn down: the member starts a new run.
    TornDown,
    /// Someone is destroying what it left.
    Destroying,
}

pub fn standing(found: &Found) -> Standing {
    let Found::Run { replayed: r, .. } = found else {
        return Standing::NotStarted;
    };
    if r.destroying && !r.destroy_failed && r.destroyed_at.is_none() {
        return Standing::Destroying;
    }
    if r.resumable() {
        return Standing::Resumable;
    }
    match r.finished.as_ref().map(|f| f.outcome) {
        Some(Outcome::Passed) => Standing::Passed,
        Some(Outcome::Failed) => Standing::Failed,
        _ => Standing::TornDown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_run_ids_are_run_ids_that_sort_by_member() {
        assert_eq!(member_run_id("F", 3, 1), "F.3");
        assert_eq!(member_run_id("F", 3, 2), "F.3.2");
        assert!(crate::check_run_id(&member_run_id("20261202T101010-a1b2c3", 9999, 100)).is_ok());
    }

    #[test]
    fn a_fleet_without_runs_has_members_not_started() {
        let store: Arc<dyn ObjectStore> =
            Arc::new(respawn_data::object_store::memory::InMemory::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let found = rt.block_on(latest_run(&store, "F", 0)).unwrap();
        assert_eq!(standing(&found), Standing::NotStarted);
    }
}
