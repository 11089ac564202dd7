//! Appending to a run's journal.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use respawn_data::object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, oneshot, watch};

use super::event::EventBody;
use super::{JournalError, event_key};
use respawn_report::now_rfc3339;

/// Replaces every secret value found in an event's strings with `***`, so that a plugin echoing a secret in
/// an output, a state value or an error message cannot get it into the journal.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(secrets: &BTreeMap<String, String>) -> Redactor {
        let mut secrets: Vec<String> = secrets
            .values()
            .filter(|v| !v.is_empty())
            .cloned()
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    pub fn redact(&self, value: &mut serde_json::Value) {
        if self.secrets.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s) => {
                for secret in &self.secrets {
                    if s.contains(secret.as_str()) {
                        *s = s.replace(secret.as_str(), "***");
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact(v)),
            serde_json::Value::Object(map) => {
                // Keys too: a plugin may use a secret as a state key or an output name.
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    self.redact(&mut v);
                    let mut key = serde_json::Value::String(key);
                    self.redact(&mut key);
                    let key = key.as_str().unwrap_or_default().to_string();
                    map.insert(key, v);
                }
            }
            _ => {}
        }
    }
}

struct Head {
    next_seq: u64,
    prev: Option<String>,
}

/// An appended event waiting for the object that will hold it.
struct Pending {
    body: EventBody,
    done: oneshot::Sender<Result<String, JournalError>>,
}

/// The most events one object holds. Batches form only from appends made while a write is in flight, so this
/// bounds the object a burst makes (a thousand steps finishing at once), not the latency of a lone event.
pub const MAX_BATCH_EVENTS: usize = 1024;

/// A batch stops taking events once its object reaches this size: an object is read whole on resume and audit,
/// and one event may itself be near a MiB (a workflow's text, a step's outputs).
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// The writer of one run's journal, owned by one runner process.
///
/// Events are stored in order, each chained to the one before, in objects written with `PutMode::Create` at
/// `runs/RUN_ID/events/SEQ`, where SEQ is the object's first event. An object holds one event, or several
/// (each compact JSON, separated by newlines) when they were appended while the previous object was being
/// written; an append returns only once the object holding its event is stored.
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    run_id: String,
    runner: String,
    redactor: Redactor,
    /// Held by the one flush writing at a time.
    head: Mutex<Head>,
    /// Events appended and not yet taken by a flush, in the order they were appended.
    queue: std::sync::Mutex<VecDeque<Pending>>,
    /// Set once a write failed; every later write fails at once, and the run stops.
    lost: watch::Sender<Option<String>>,
    fenced: AtomicBool,
    /// How many runners have held the run, this one included: the fencing token plugins get.
    epoch: u64,
    /// When the newest write that succeeded was sent: the store stamped the event no earlier, so the lease this
    /// runner holds in another runner's eyes runs from here at the earliest.
    last_write_sent: std::sync::Mutex<Instant>,
}

/// The share of the lease a runner keeps in hand: it stops acting once `lease - lease / LEASE_MARGIN_DIVISOR` has
/// passed since its last successful journal write, before another runner may take over at `lease`.
pub const LEASE_MARGIN_DIVISOR: u32 = 6;

impl Journal {
    /// A journal whose next event is `next_seq`, chained to `prev` (a new run: 0 and `None`).
    pub fn open(
        store: Arc<dyn ObjectStore>,
        run_id: &str,
        redactor: Redactor,
        next_seq: u64,
        prev: Option<String>,
    ) -> Journal {
        Journal {
            inner: Arc::new(Inner {
                store,
                run_id: run_id.to_string(),
                runner: runner_id(),
                redactor,
                head: Mutex::new(Head { next_seq, prev }),
                queue: std::sync::Mutex::new(VecDeque::new()),
                lost: watch::channel(None).0,
                fenced: false.into(),
                epoch: 1,
                last_write_sent: std::sync::Mutex::new(Instant::now()),
            }),
        }
    }

    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// The journal of a runner that holds the run as its `epoch`th holder (a resume: the replayed epoch plus one).
    pub fn with_epoch(mut self, epoch: u64) -> Journal {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.epoch = epoch;
        }
        self
    }

    /// The run's lease epoch as this runner holds it; plugins get it as their fencing token.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// The state store the journal is written to: the run's report is rendered from what it holds.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    pub fn runner(&self) -> &str {
        &self.inner.runner
    }

    /// The redactor applied to every event; the report goes through it too.
    pub fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    /// Writes the next event and returns its sha256 once it is stored. Fails with [`JournalError::Fenced`] when
    /// another runner already wrote that sequence number, and with every later call once any write failed.
    ///
    /// The write runs on its own task: a caller cancelled mid-write (an interrupted step) cannot leave an
    /// event stored but not counted, which would make the next write collide with it. Events appended while
    /// another write is in flight are stored together in the next object.
    pub async fn append(&self, body: EventBody) -> Result<String, JournalError> {
        let (done, stored) = oneshot::channel();
        if let Ok(mut queue) = self.inner.queue.lock() {
            queue.push_back(Pending { body, done });
        }
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.flush().await });
        match stored.await {
            Ok(result) => result,
            Err(e) => Err(JournalError::Corrupt {
                run_id: self.inner.run_id.clone(),
                message: format!("the journal writer stopped: {e}"),
            }),
        }
    }

    /// Checks whether another runner wrote the next event; if so this runner is fenced now rather than at its
    /// next write, so a slow step cannot go on working for a run it no longer owns.
    pub async fn probe(&self) -> bool {
        let inner = &self.inner;
        let head = inner.head.lock().await;
        if inner.lost.borrow().is_some() {
            return inner.fenced.load(Ordering::SeqCst);
        }
        let key =
            respawn_data::object_store::path::Path::from(event_key(&inner.run_id, head.next_seq));
        if inner.store.head(&key).await.is_ok() {
            inner.fenced.store(true, Ordering::SeqCst);
            let err = JournalError::Fenced {
                run_id: inner.run_id.clone(),
                seq: head.next_seq,
            };
            inner.lost.send_replace(Some(err.to_string()));
            return true;
        }
        false
    }

    /// sha256 of the newest event written or replayed.
    pub async fn head(&self) -> Option<String> {
        self.inner.head.lock().await.prev.clone()
    }

    /// Stops this runner acting for the run (the journal counts as lost, so the run stops and nothing more is
    /// written) when no journal write has succeeded within the lease minus its margin: past the lease another
    /// runner may take over, judging by the store's time, and this one must be quiet by then. Returns whether
    /// the lease lapsed (now or earlier).
    pub fn lease_lapsed(&self, lease: Duration) -> bool {
        let inner = &self.inner;
        if inner.lost.borrow().is_some() {
            return true;
        }
        let since = inner
            .last_write_sent
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let hold = lease.saturating_sub(lease / LEASE_MARGIN_DIVISOR);
        if since < hold {
            return false;
        }
        let why = format!(
            "run `{}`: no journal write succeeded for {:.1}s, past {:.1}s of the {:.0}s lease; this runner stops \
             acting before another may take the run over",
            inner.run_id,
            since.as_secs_f64(),
            hold.as_secs_f64(),
            lease.as_secs_f64()
        );
        tracing::error!("{why}");
        inner.lost.send_replace(Some(why));
        true
    }

    /// True once another runner took the run over.
    pub fn is_fenced(&self) -> bool {
        self.inner.fenced.load(Ordering::SeqCst)
    }

    /// Why the journal can no longer be written, if it cannot.
    pub fn lost(&self) -> Option<String> {
        self.inner.lost.borrow().clone()
    }

    /// Changes to `Some(why)` when a write fails; the run stops then.
    pub fn watch_lost(&self) -> watch::Receiver<Option<String>> {
        self.inner.lost.subscribe()
    }
}

impl Inner {
    /// Writes what is queued, oldest first, as one object (up to [`MAX_BATCH_EVENTS`] events or about
    /// [`MAX_BATCH_BYTES`]); returns at once when an earlier flush already took everything.
    ///
    /// Every append spawns one flush, and each flush takes at least one event while any is queued, so no event
    /// is left behind. The head lock makes flushes one at a time: while one object is being written, the next
    /// appends queue up and go out together in the next object (group commit). No two writes are ever in flight:
    /// a runner that lost the race for key n must never have written n+1.
    async fn flush(&self) {
        let mut head = self.head.lock().await;
        let mut batch: Vec<(u64, String, Pending)> = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        let first_seq = head.next_seq;
        let mut prev = head.prev.clone();
        while batch.len() < MAX_BATCH_EVENTS && bytes.len() < MAX_BATCH_BYTES {
            let Some(pending) = self.queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                break;
            };
            if let Some(why) = self.lost.borrow().clone() {
                let seq = first_seq + batch.len() as u64;
                let _ = pending.done.send(Err(self.lost_error(seq, &why)));
                continue;
            }
            let seq = first_seq + batch.len() as u64;
            let line = match self.encode(seq, prev.clone(), &pending.body) {
                Ok(line) => line,
                Err(e) => {
                    let _ = pending.done.send(Err(e));
                    continue;
                }
            };
            let hash = hex::encode(Sha256::digest(&line));
            if !bytes.is_empty() {
                bytes.push(b'\n');
            }
            bytes.extend_from_slice(&line);
            tracing::trace!(run = %self.run_id, seq, kind = pending.body.kind(), "journaling");
            prev = Some(hash.clone());
            batch.push((seq, hash, pending));
        }
        if batch.is_empty() {
            return;
        }
        let key = respawn_data::object_store::path::Path::from(event_key(&self.run_id, first_seq));
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let sent = Instant::now();
        let outcome = self
            .store
            .put_opts(&key, PutPayload::from(bytes), options)
            .await;
        match outcome {
            Ok(_) => {
                head.next_seq += batch.len() as u64;
                head.prev = prev;
                if let Ok(mut last) = self.last_write_sent.lock() {
                    *last = sent;
                }
                for (_, hash, pending) in batch {
                    let _ = pending.done.send(Ok(hash));
                }
            }
            Err(respawn_data::object_store::Error::AlreadyExists { .. }) => {
                self.fenced.store(true, Ordering::SeqCst);
                let err = JournalError::Fenced {
                    run_id: self.run_id.clone(),
                    seq: first_seq,
                };
                self.lost.send_replace(Some(err.to_string()));
                for (seq, _, pending) in batch {
                    let _ = pending.done.send(Err(JournalError::Fenced {
                        run_id: self.run_id.clone(),
                        seq,
                    }));
                }
            }
            Err(source) => {
                let err = JournalError::Store {
                    run_id: self.run_id.clone(),
                    source,
                };
                let why = err.to_string();
                self.lost.send_replace(Some(why.clone()));
                let mut batch = batch.into_iter();
                if let Some((_, _, pending)) = batch.next() {
                    let _ = pending.done.send(Err(err));
                }
                for (seq, _, pending) in batch {
                    let _ = pending.done.send(Err(self.lost_error(seq, &why)));
                }
            }
        }
    }

    /// The error of an event that cannot be written because the journal was lost (taken over, or the store
    /// failed).
    fn lost_error(&self, seq: u64, why: &str) -> JournalError {
        if self.fenced.load(Ordering::SeqCst) {
            JournalError::Fenced {
                run_id: self.run_id.clone(),
                seq,
            }
        } else {
            JournalError::Corrupt {
                run_id: self.run_id.clone(),
                message: format!("the journal was lost earlier: {why}"),
            }
        }
    }

    /// The event's stored bytes: compact JSON, so it holds no raw newline and a batch can be split on them.
    fn encode(
        &self,
        seq: u64,
        prev: Option<String>,
        body: &EventBody,
    ) -> Result<Vec<u8>, JournalError> {
        let event = EventRef {
            seq,
            at: now_rfc3339(),
            runner: &self.runner,
            prev,
            body,
        };
        let kind = body.kind();
        let mut value = serde_json::to_value(&event).map_err(|e| JournalError::Corrupt {
            run_id: self.run_id.clone(),
            message: format!("cannot encode a {kind} event: {e}"),
        })?;
        // Only what plugins and servers produce is redacted. `run-started` holds the workflow's exact text, its
        // params and times, which the user wrote: resume re-checks the text against its sha256, so a secret value
        // that happens to occur in the workflow must not change it (secrets shorter than 4 characters are refused
        // at validation, so this cannot expose a value that also occurs by chance).
        if !matches!(body, EventBody::RunStarted(_)) {
            self.redactor.redact(&mut value);
        }
        Ok(serde_json::to_vec(&value).unwrap_or_default())
    }
}

/// An [`Event`] borrowing its body, so a queued body is encoded without a copy.
#[derive(serde::Serialize)]
struct EventRef<'a> {
    seq: u64,
    at: String,
    runner: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev: Option<String>,
    #[serde(flatten)]
    body: &'a EventBody,
}

/// `host:pid:random`: tells runners apart in the journal and in `respawn runs`.
fn runner_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{host}:{}:{:06x}", std::process::id(), random & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workflow text in `run-started` stays byte-exact even when a secret value occurs in it (resume checks
    /// the text against its sha256); what a plugin returns is redacted.
    #[tokio::test]
    async fn run_started_is_byte_exact_and_plugin_output_is_redacted() {
        use crate::event::{RunStarted, WorkflowSnapshot};
        let store: Arc<dyn ObjectStore> =
            Arc::new(respawn_data::object_store::memory::InMemory::new());
        let secrets = BTreeMap::from([("token".to_string(), "s3cr3t-value".to_string())]);
        let journal = Journal::open(store.clone(), "run-1", Redactor::new(&secrets), 0, None);
        let text = "name: w # s3cr3t-value happens to be in a comment\n";
        journal
            .append(EventBody::RunStarted(Box::new(RunStarted {
                run_id: "run-1".into(),
                mode: respawn_workflow::Mode::Drill,
                keep: false,
                workflow: WorkflowSnapshot {
                    name: "w".into(),
                    version: "1.0.0".into(),
                    sha256: "00".into(),
                    path: "/w.yaml".into(),
                    text: text.into(),
                },
                params: BTreeMap::new(),
                plugins: BTreeMap::new(),
                lease_seconds: 30.0,
                started_at: "2026-12-02T06:00:00Z".into(),
            })))
            .await
            .unwrap();
        journal
            .append(EventBody::StateWritten {
                step: "a".into(),
                phase: respawn_workflow::Phase::Apply,
                key: "s3cr3t-value".into(),
                value: Some("echo s3cr3t-value".into()),
            })
            .await
            .unwrap();
        let stored = crate::chain::read_all(&store, "run-1").await.unwrap();
        let first = String::from_utf8(stored[0].bytes.to_vec()).unwrap();
        let second = String::from_utf8(stored[1].bytes.to_vec()).unwrap();
        assert!(first.contains("s3cr3t-value happens"), "{first}");
        assert!(!second.contains("s3cr3t-value"), "{second}");
    }

    #[tokio::test]
    async fn a_runner_whose_writes_stop_succeeding_stops_acting_before_its_lease_ends() {
        let store: Arc<dyn ObjectStore> =
            Arc::new(respawn_data::object_store::memory::InMemory::new());
        let journal = Journal::open(store, "run-1", Redactor::default(), 0, None);
        let lease = Duration::from_millis(600);
        journal.append(EventBody::Heartbeat).await.unwrap();
        assert!(!journal.lease_lapsed(lease), "a write just succeeded");
        // 5/6 of the lease is 500 ms: the runner must have stopped by then, not at 600.
        tokio::time::sleep(Duration::from_millis(520)).await;
        assert!(journal.lease_lapsed(lease));
        let why = journal.lost().expect("the journal counts as lost");
        assert!(why.contains("lease"), "{why}");
        let err = journal.append(EventBody::Heartbeat).await.unwrap_err();
        assert!(err.to_string().contains("lease"), "{err}");
    }

    /// Events appended while a write is in flight go out together in one object, chained and numbered on from
    /// its key; resume and audit read them back as separate events. A lone event is an object of its own, in
    /// the same bytes as before batching existed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_appended_during_a_write_are_stored_together_and_read_back_apart() {
        let store: Arc<dyn ObjectStore> =
            Arc::new(respawn_data::object_store::memory::InMemory::new());
        let journal = Arc::new(Journal::open(
            store.clone(),
            "run-1",
            Redactor::default(),
            0,
            None,
        ));
        let first = journal.append(EventBody::Heartbeat).await.unwrap();
        // A write in flight: hold the head, as a flush does while the store works.
        let held = journal.inner.head.lock().await;
        let appends: Vec<_> = (0..50)
            .map(|_| {
                let journal = journal.clone();
                tokio::spawn(async move { journal.append(EventBody::Heartbeat).await })
            })
            .collect();
        while journal.inner.queue.lock().unwrap().len() < 50 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let mut hashes = Vec::new();
        for append in appends {
            hashes.push(append.await.unwrap().unwrap());
        }
        let listed: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(store.list(None))
            .await
            .unwrap();
        assert_eq!(
            listed.len(),
            2,
            "one object for the lone event, one for the 50: {listed:?}"
        );
        let stored = crate::chain::read_all(&store, "run-1").await.unwrap();
        assert_eq!(crate::chain::verify(&stored).unwrap().len(), 51);
        assert_eq!(stored[0].sha256, first);
        // Concurrent appends are stored in the order they were queued; each learns its own event's hash.
        let mut got: Vec<String> = stored.iter().skip(1).map(|e| e.sha256.clone()).collect();
        got.sort();
        hashes.sort();
        assert_eq!(got, hashes);
        let lone: serde_json::Value = serde_json::from_slice(&stored[0].bytes).unwrap();
        let parsed: crate::Event = serde_json::from_value(lone.clone()).unwrap();
        assert_eq!(
            serde_json::to_vec(&parsed).unwrap(),
            stored[0].bytes.to_vec()
        );
        assert!(stored.iter().all(|e| e.stored_at.is_some()));
        // The next event goes to the key after the batch.
        journal.append(EventBody::Heartbeat).await.unwrap();
        let stored = crate::chain::read_all(&store, "run-1").await.unwrap();
        assert_eq!(crate::chain::verify(&stored).unwrap().len(), 52);
    }

    /// A batch that loses the race for its key fails every event in it, and stores none of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_loses_the_race_for_its_key_fails_whole() {
        let store: Arc<dyn ObjectStore> =
            Arc::new(respawn_data::object_store::memory::InMemory::new());
        let journal = Arc::new(Journal::open(
            store.clone(),
            "run-1",
            Redactor::default(),
            0,
            None,
        ));
        let head = journal.append(EventBody::Heartbeat).await.unwrap();
        let other = Journal::open(store.clone(), "run-1", Redactor::default(), 1, Some(head));
        let held = journal.inner.head.lock().await;
        let appends: Vec<_> = (0..10)
            .map(|_| {
                let journal = journal.clone();
                tokio::spawn(async move { journal.append(EventBody::Heartbeat).await })
            })
            .collect();
        while journal.inner.queue.lock().unwrap().len() < 10 {
            tokio::task::yield_now().await;
        }
        other.append(EventBody::Heartbeat).await.unwrap();
        drop(held);
        for append in appends {
            let err = append.await.unwrap().unwrap_err();
            assert!(matches!(err, JournalError::Fenced { .. }), "{err}");
        }
        assert!(journal.is_fenced());
        let stored = crate::chain::read_all(&store, "run-1").await.unwrap();
        assert_eq!(crate::chain::verify(&stored).unwrap().len(), 2);
    }

    #[test]
    fn every_occurrence_of_a_secret_is_redacted_anywhere_in_an_event() {
        let r = Redactor::new(&BTreeMap::from([
            ("short".to_string(), "abc".to_string()),
            ("long".to_string(), "abcdef".to_string()),
            ("empty".to_string(), String::new()),
        ]));
        let mut v = serde_json::json!({
            "outputs": { "token": "abcdef", "list": ["x abc y", 3] },
            "error": "failed with abcdefabc",
            "untouched": "ab"
        });
        r.redact(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "outputs": { "token": "***", "list": ["x *** y", 3] },
                "error": "failed with ******",
                "untouched": "ab"
            })
        );
    }
}
