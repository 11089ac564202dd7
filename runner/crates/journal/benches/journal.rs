//! Cost of the run journal, which every step pays at least twice (`step-started`, `step-finished`):
//!
//! - `append_file`: one heartbeat event appended to a `file://` state store (JSON encode, sha256, an exclusive
//!   create of a new file).
//! - `append_memory`: the same on `memory://`, i.e. the journal's own CPU cost without the filesystem.
//! - `append_file_64_at_once`: 64 events appended at once to a `file://` store, as 64 steps ending together
//!   do: group commit stores them in a few objects, not 64.
//! - `audit_1000_file`: read, chain-check and replay a 1,000-event journal from a `file://` store (what
//!   `resume`, `runs` and `audit verify` do per run).
//!
//! Run: `cargo bench --bench journal`.

use std::path::Path;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use divan::Bencher;
use respawn_journal::{EventBody, Journal, Redactor, RunStarted, WorkflowSnapshot};

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
});

static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| tempfile::tempdir().unwrap());

fn main() {
    divan::main();
}

fn fresh_run_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("bench-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn started(run_id: &str) -> EventBody {
    EventBody::RunStarted(Box::new(RunStarted {
        run_id: run_id.into(),
        mode: respawn_workflow::Mode::Drill,
        keep: false,
        workflow: WorkflowSnapshot {
            name: "bench".into(),
            version: "1.0.0".into(),
            sha256: "0".repeat(64),
            path: "/bench.yaml".into(),
            text: "respawn: 1\n".repeat(40),
        },
        params: Default::default(),
        plugins: Default::default(),
        lease_seconds: 30.0,
        started_at: "2026-01-01T00:00:00Z".into(),
    }))
}

fn journal_on(url: &str) -> Journal {
    let store = respawn_data::open_store(url, Path::new("/")).unwrap();
    let run_id = fresh_run_id();
    let journal = Journal::open(store, &run_id, Redactor::default(), 0, None);
    RT.block_on(journal.append(started(&run_id))).unwrap();
    journal
}

#[divan::bench(sample_count = 50, sample_size = 20)]
fn append_file(bencher: Bencher) {
    let journal = journal_on(&format!("file://{}", DIR.path().display()));
    bencher.bench_local(|| RT.block_on(journal.append(EventBody::Heartbeat)).unwrap());
}

#[divan::bench(sample_count = 50, sample_size = 20)]
fn append_memory(bencher: Bencher) {
    let journal = journal_on("memory://");
    bencher.bench_local(|| RT.block_on(journal.append(EventBody::Heartbeat)).unwrap());
}

#[divan::bench(sample_count = 30, sample_size = 5)]
fn append_file_64_at_once(bencher: Bencher) {
    let journal = std::sync::Arc::new(journal_on(&format!("file://{}", DIR.path().display())));
    bencher.bench_local(|| {
        RT.block_on(async {
            let appends: Vec<_> = (0..64)
                .map(|_| {
                    let journal = journal.clone();
                    tokio::spawn(async move { journal.append(EventBody::Heartbeat).await })
                })
                .collect();
            for append in appends {
                append.await.unwrap().unwrap();
            }
        })
    });
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn audit_1000_file(bencher: Bencher) {
    let url = format!("file://{}", DIR.path().display());
    let journal = journal_on(&url);
    for _ in 1..1000 {
        RT.block_on(journal.append(EventBody::Heartbeat)).unwrap();
    }
    let store = respawn_data::open_store(&url, Path::new("/")).unwrap();
    let run_id = journal.run_id().to_string();
    // What `resume`, `runs` and every end-of-run report do: read, chain-check and replay as one pass.
    bencher.bench_local(|| {
        RT.block_on(respawn_journal::read_run(&store, &run_id))
            .unwrap()
    });
}
