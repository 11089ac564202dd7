//! Reading a run's events back and checking their hash chain (`respawn audit verify`).

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use respawn_data::object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};

use super::event::Event;
use super::{JournalError, events_prefix};

/// One stored event: the number in its key, its exact bytes, and their sha256.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub key_seq: u64,
    pub bytes: bytes::Bytes,
    pub sha256: String,
    /// When the store says it was written (its own clock, not the writer's): staleness is judged by this.
    pub stored_at: Option<std::time::SystemTime>,
}

/// Every stored event of a run, in key order. Fails when the run has none.
pub async fn read_all(
    store: &Arc<dyn ObjectStore>,
    run_id: &str,
) -> Result<Vec<StoredEvent>, JournalError> {
    let store_err = |source| JournalError::Store {
        run_id: run_id.to_string(),
        source,
    };
    let prefix = respawn_data::object_store::path::Path::from(events_prefix(run_id));
    let metas: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(store_err)?;
    let mut keyed = Vec::new();
    for meta in metas {
        let name = meta.location.filename().unwrap_or_default().to_string();
        let Ok(seq) = name.parse::<u64>() else {
            return Err(JournalError::Corrupt {
                run_id: run_id.to_string(),
                message: format!("unexpected object {} among the events", meta.location),
            });
        };
        keyed.push((seq, meta.location, meta.last_modified));
    }
    if keyed.is_empty() {
        return Err(JournalError::NoSuchRun {
            run_id: run_id.to_string(),
        });
    }
    keyed.sort_by_key(|(seq, _, _)| *seq);
    // In key order, several at once: every finished run's report is rendered from its journal read back, and a
    // large run's journal on a cloud store is thousands of small objects.
    let objects: Vec<Vec<StoredEvent>> = futures::stream::iter(keyed)
        .map(|(key_seq, location, modified)| async move {
            let bytes = store.get(&location).await?.bytes().await?;
            Ok(split_object(key_seq, &bytes, Some(modified.into())))
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await
        .map_err(store_err)?;
    Ok(objects.into_iter().flatten().collect())
}

/// The events of one stored object: one, or several separated by newlines (appended together while an earlier
/// write was in flight). The object's key is its first event's number, so the others are numbered on from it;
/// [`verify`] checks every number against the event's own `seq`.
pub fn split_object(
    key_seq: u64,
    bytes: &bytes::Bytes,
    stored_at: Option<std::time::SystemTime>,
) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, end) in bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(at, _)| at)
        .chain([bytes.len()])
        .enumerate()
    {
        let line = bytes.slice(start..end);
        start = end + 1;
        out.push(StoredEvent {
            key_seq: key_seq + i as u64,
            sha256: hex::encode(Sha256::digest(&line)),
            bytes: line,
            stored_at,
        });
    }
    out
}

/// Events fetched at once when a journal is read back: enough to hide a cloud store's per-request latency, few
/// enough not to trip its rate limits.
const READ_CONCURRENCY: usize = 16;

/// What is wrong with a chain: the first problem, naming the event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChainError {
    #[error("event {seq} is missing: it was removed, or the chain was cut")]
    Missing { seq: u64 },
    #[error("event {seq} is not a journal event: {why}")]
    Unreadable { seq: u64, why: String },
    #[error(
        "event stored as {key_seq} says it is event {claimed}: events were reordered or renumbered"
    )]
    Reordered { key_seq: u64, claimed: u64 },
    #[error(
        "event {seq} ({kind}) was altered: its sha256 is {actual} but event {next} records {recorded}"
    )]
    Altered {
        seq: u64,
        kind: String,
        actual: String,
        next: u64,
        recorded: String,
    },
    #[error("event {seq} does not chain to event {prev}: its `prev` is missing")]
    Unchained { seq: u64, prev: u64 },
    #[error(
        "the newest event {seq} ({kind}) was altered or removed: the chain head is {actual} but the run's report \
         records {recorded}"
    )]
    HeadMismatch {
        seq: u64,
        kind: String,
        actual: String,
        recorded: String,
    },
}

/// Checks numbering, parsing and every `prev` link; returns the parsed events on success.
pub fn verify(events: &[StoredEvent]) -> Result<Vec<Event>, ChainError> {
    let mut checker = ChainChecker::default();
    events.iter().map(|stored| checker.check(stored)).collect()
}

/// Checks a chain one stored event at a time, in key order, so a long journal can be checked and folded
/// without holding every parsed event: [`verify`] over an iterator.
#[derive(Debug, Default)]
pub struct ChainChecker {
    next: u64,
    /// The sha256 and kind of the event checked last.
    previous: Option<(String, &'static str)>,
}

impl ChainChecker {
    /// Parses the next event and checks its number and its link to the one before.
    pub fn check(&mut self, stored: &StoredEvent) -> Result<Event, ChainError> {
        let i = self.next;
        if stored.key_seq != i {
            return Err(ChainError::Missing {
                seq: i.min(stored.key_seq),
            });
        }
        let event: Event =
            serde_json::from_slice(&stored.bytes).map_err(|e| ChainError::Unreadable {
                seq: i,
                why: e.to_string(),
            })?;
        if event.seq != i {
            return Err(ChainError::Reordered {
                key_seq: i,
                claimed: event.seq,
            });
        }
        if let Some((before, kind)) = &self.previous {
            match &event.prev {
                None => {
                    return Err(ChainError::Unchained {
                        seq: i,
                        prev: i - 1,
                    });
                }
                Some(recorded) if recorded != before => {
                    return Err(ChainError::Altered {
                        seq: i - 1,
                        kind: kind.to_string(),
                        actual: before.clone(),
                        next: i,
                        recorded: recorded.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        self.previous = Some((stored.sha256.clone(), event.body.kind()));
        self.next += 1;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventBody;

    fn chain(n: u64) -> Vec<StoredEvent> {
        let mut out: Vec<StoredEvent> = Vec::new();
        for seq in 0..n {
            let event = Event {
                seq,
                at: "2026-01-01T00:00:00Z".into(),
                runner: "r".into(),
                prev: out.last().map(|e| e.sha256.clone()),
                body: EventBody::Heartbeat,
            };
            let bytes = bytes::Bytes::from(serde_json::to_vec(&event).unwrap());
            out.push(StoredEvent {
                key_seq: seq,
                sha256: hex::encode(Sha256::digest(&bytes)),
                bytes,
                stored_at: None,
            });
        }
        out
    }

    fn rehash(e: &mut StoredEvent, text: String) {
        e.bytes = bytes::Bytes::from(text);
        e.sha256 = hex::encode(Sha256::digest(&e.bytes));
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(5)).unwrap().len(), 5);
    }

    #[test]
    fn an_altered_event_is_named() {
        let mut events = chain(5);
        let text = String::from_utf8(events[2].bytes.to_vec()).unwrap();
        rehash(
            &mut events[2],
            text.replace("\"runner\":\"r\"", "\"runner\":\"x\""),
        );
        let err = verify(&events).unwrap_err();
        assert!(
            matches!(
                err,
                ChainError::Altered {
                    seq: 2,
                    next: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_removed_event_is_named() {
        let mut events = chain(5);
        events.remove(3);
        assert_eq!(verify(&events).unwrap_err(), ChainError::Missing { seq: 3 });
    }

    #[test]
    fn swapped_events_are_named() {
        let mut events = chain(5);
        let (a, b) = (events[1].bytes.clone(), events[2].bytes.clone());
        rehash(&mut events[1], String::from_utf8(b.to_vec()).unwrap());
        rehash(&mut events[2], String::from_utf8(a.to_vec()).unwrap());
        assert_eq!(
            verify(&events).unwrap_err(),
            ChainError::Reordered {
                key_seq: 1,
                claimed: 2
            }
        );
    }
}
