//! The run journal (DESIGN.md §7): an append-only chain of events in the state store, from which any machine
//! that reaches the store can list, audit and resume a run.
//!
//! Every event is written with `PutMode::Create` at `runs/<run-id>/events/<seq>`. That one rule gives both
//! durability and fencing: two runners writing the same run race for the same key, and the loser learns at
//! its next write that it no longer owns the run.

pub mod chain;
pub mod event;
pub mod fleet;
pub mod replay;
mod writer;

use std::sync::Arc;

use respawn_data::object_store::ObjectStore;

pub use event::{
    Event, EventBody, RunStarted, ServiceLogs, SettledStep, StepFinished, WorkflowSnapshot,
};
pub use writer::{Journal, Redactor};

/// The default state store when neither `--state` nor `RESPAWN_STATE` is given (relative to the working
/// directory, beside the default report directory `.respawn/runs`).
pub const DEFAULT_STATE_URL: &str = "file://.respawn/state";

/// How long a runner may be silent before its run counts as stale. Heartbeats go out every third of it, so
/// two may be lost to a slow store before anyone may take over. `RESPAWN_LEASE` (e.g. `10s`) overrides.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another runner wrote the event this one meant to write: it owns the run now.
    #[error(
        "run `{run_id}` was taken over by another runner (event {seq} already exists); this runner stops"
    )]
    Fenced { run_id: String, seq: u64 },
    #[error("no run `{run_id}` in the state store (nothing under runs/{run_id}/events/)")]
    NoSuchRun { run_id: String },
    #[error("run `{run_id}`: {message}")]
    Corrupt { run_id: String, message: String },
    #[error(
        "run `{run_id}`: the journal does not verify, so it cannot be trusted to resume from: {source}"
    )]
    Untrusted {
        run_id: String,
        #[source]
        source: chain::ChainError,
    },
    #[error("{0}")]
    BadRunId(String),
    #[error("the state store failed while writing the journal of run `{run_id}`: {source}")]
    Store {
        run_id: String,
        #[source]
        source: respawn_data::object_store::Error,
    },
}

/// Key prefix of a run's events.
pub fn events_prefix(run_id: &str) -> String {
    format!("runs/{run_id}/events/")
}

/// Key of one event. Zero-padded so that listing order is chain order.
pub fn event_key(run_id: &str, seq: u64) -> String {
    format!("{}{seq:012}", events_prefix(run_id))
}

impl JournalError {
    /// Whether the fault is in what the user asked for (an unknown, malformed or untrustworthy run) rather than
    /// in the state store.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            JournalError::NoSuchRun { .. }
                | JournalError::Corrupt { .. }
                | JournalError::Untrusted { .. }
                | JournalError::BadRunId(_)
        )
    }
}

/// Reads a run's events, checks their chain and folds them into the run, refusing a journal that does not
/// verify: nothing is resumed, listed or destroyed from events that may have been tampered with.
pub async fn read_run(
    store: &Arc<dyn ObjectStore>,
    run_id: &str,
) -> Result<(Vec<chain::StoredEvent>, replay::Replayed), JournalError> {
    check_run_id(run_id).map_err(JournalError::BadRunId)?;
    let stored = chain::read_all(store, run_id).await?;
    let untrusted = |source| JournalError::Untrusted {
        run_id: run_id.to_string(),
        source,
    };
    let corrupt = |message| JournalError::Corrupt {
        run_id: run_id.to_string(),
        message,
    };
    // Each event is checked and folded in as it is parsed, never all held at once. A chain that does not verify
    // is reported before an event that does not replay, wherever each is.
    let mut checker = chain::ChainChecker::default();
    let mut events = stored.iter();
    let first = checker
        .check(
            events
                .next()
                .ok_or_else(|| corrupt("the journal is empty".into()))?,
        )
        .map_err(untrusted)?;
    let mut replayer = replay::Replayer::new(first);
    for event in events {
        let event = checker.check(event).map_err(untrusted)?;
        if let Ok(r) = &mut replayer
            && let Err(message) = r.push(event)
        {
            replayer = Err(message);
        }
    }
    let mut replayed = replayer.map_err(corrupt)?.finish();
    replayed.last_stored_at = stored.last().and_then(|e| e.stored_at);
    Ok((stored, replayed))
}

/// The state store's own time now: it writes a small clock object beside the run's events and reads back when
/// the store says it was written. Comparing that with the store's time of the newest event judges a lease by one
/// clock, so neither runner's skew can make a live run look stale. Falls back to this machine's clock for a
/// store that reports no time.
pub async fn store_now(
    store: &Arc<dyn ObjectStore>,
    run_id: &str,
) -> Result<std::time::SystemTime, JournalError> {
    use respawn_data::object_store::ObjectStoreExt;
    check_run_id(run_id).map_err(JournalError::BadRunId)?;
    let store_err = |source| JournalError::Store {
        run_id: run_id.to_string(),
        source,
    };
    let key = respawn_data::object_store::path::Path::from(format!("runs/{run_id}/clock"));
    store
        .put(
            &key,
            respawn_data::object_store::PutPayload::from_static(b"clock"),
        )
        .await
        .map_err(store_err)?;
    let meta = store.head(&key).await.map_err(store_err)?;
    Ok(meta.last_modified.into())
}

/// Refuses run ids that could address keys outside the run's own prefix.
pub fn check_run_id(run_id: &str) -> Result<(), String> {
    let ok = !run_id.is_empty()
        && run_id.len() <= 128
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !run_id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{run_id}` is not a run id (expected letters, digits, `-`, `_` or `.`, as printed by `respawn runs`)"
        ))
    }
}

/// The ids of every run in a state store, sorted (ids start with their UTC start time).
pub async fn list_runs(
    store: &Arc<dyn ObjectStore>,
) -> Result<Vec<String>, respawn_data::object_store::Error> {
    let listing = store
        .list_with_delimiter(Some(&respawn_data::object_store::path::Path::from("runs")))
        .await?;
    let mut ids: Vec<String> = listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Key of the signature of a run's report at one journal head (`respawn drill --sign-key`): beside the events,
/// never among them, so signing adds no event and the head it signs stays the head.
pub fn signature_key(run_id: &str, head: &str) -> String {
    format!("runs/{run_id}/signatures/{head}.json")
}

/// Stores a report's signature at its journal head, written once (`PutMode::Create`): ed25519 signatures are
/// deterministic, so signing the same head again finds the same bytes there and is fine.
pub async fn put_signature(
    store: &Arc<dyn ObjectStore>,
    run_id: &str,
    head: &str,
    bytes: Vec<u8>,
) -> Result<(), respawn_data::object_store::Error> {
    use respawn_data::object_store::{PutMode, PutOptions, PutPayload};
    let key = respawn_data::object_store::path::Path::from(signature_key(run_id, head));
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store.put_opts(&key, PutPayload::from(bytes), options).await {
        Ok(_) | Err(respawn_data::object_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The signature stored for a run's journal head, if any.
pub async fn get_signature(
    store: &Arc<dyn ObjectStore>,
    run_id: &str,
    head: &str,
) -> Result<Option<bytes::Bytes>, respawn_data::object_store::Error> {
    use respawn_data::object_store::ObjectStoreExt;
    let key = respawn_data::object_store::path::Path::from(signature_key(run_id, head));
    match store.get(&key).await {
        Ok(got) => got.bytes().await.map(Some),
        Err(respawn_data::object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_data::object_store::memory::InMemory;
    use respawn_data::object_store::{ObjectStoreExt, PutPayload, path::Path};
    use sha2::{Digest, Sha256};

    /// Stores `bodies` as a chained journal of run `r`, one event an object; `tamper` may edit an event's bytes
    /// after the next one recorded their hash.
    async fn store(bodies: Vec<EventBody>, tamper: Option<u64>) -> Arc<dyn ObjectStore> {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut prev = None;
        for (seq, body) in bodies.into_iter().enumerate() {
            let event = Event {
                seq: seq as u64,
                at: "2026-12-02T06:00:00Z".into(),
                runner: "r".into(),
                prev: prev.take(),
                body,
            };
            let mut bytes = serde_json::to_vec(&event).unwrap();
            prev = Some(hex::encode(Sha256::digest(&bytes)));
            if tamper == Some(seq as u64) {
                bytes = String::from_utf8(bytes)
                    .unwrap()
                    .replace("06:00:00", "06:00:01")
                    .into_bytes();
            }
            let key = Path::from(event_key("r", seq as u64));
            store.put(&key, PutPayload::from(bytes)).await.unwrap();
        }
        store
    }

    /// Replay runs as the chain is checked, but a chain that does not verify is still what is reported, even
    /// when an earlier event does not replay: tampering is never passed off as a malformed journal.
    #[tokio::test]
    async fn a_broken_chain_is_reported_before_an_event_that_does_not_replay() {
        let heartbeats = || vec![EventBody::Heartbeat; 5];
        let no_start = store(heartbeats(), None).await;
        let err = read_run(&no_start, "r").await.unwrap_err();
        assert!(
            matches!(&err, JournalError::Corrupt { message, .. } if message.contains("not run-started")),
            "{err}"
        );
        let tampered = store(heartbeats(), Some(3)).await;
        let err = read_run(&tampered, "r").await.unwrap_err();
        assert!(
            matches!(
                &err,
                JournalError::Untrusted {
                    source: chain::ChainError::Altered { seq: 3, .. },
                    ..
                }
            ),
            "{err}"
        );
    }
}
