//! Per-step overhead of the plugin host, measured with the `respawn_testing_echo` component:
//!
//! - `cold_load`: a new host on an empty compile cache, then `load` (compile + describe).
//! - `warm_load`: `load` on an existing host with a populated cache (deserialize + describe);
//!   `warm_host_and_load` also creates the host (engine, pooling allocator, linker).
//! - `warm_step`: one no-op step (`echo`/`echo`, params `{}`) on a loaded plugin: a fresh store, instantiate,
//!   invoke. Budget: ≤ 100 µs in release.
//! - `workflow_1000_*`: 1,000 no-op steps through `execute`: sequentially, in chunks of 8 joined on one task,
//!   and as 8 spawned tasks of 125 steps each. One iteration is 1,000 steps.
//!
//! Run: `cargo bench --bench step_overhead`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use respawn_engine::{Mode, Phase, StepCall, StepExecutor, StepResult};
use respawn_host::cache::CacheOutcome;
use respawn_host::sources::{PluginBytes, TEST_PLUGINS_DIR};
use respawn_host::{Host, RunResources};
use respawn_workflow::{Grants, Limits};
use serde_json::json;

const STEPS: usize = 1_000;
const CONCURRENCY: usize = 8;

/// One runtime for every benchmark, built outside the measured closures.
static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
});

/// Scratch root of this process: base dir of the runs and the shared (warm) compile cache.
static SCRATCH: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("respawn-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
});

static ECHO: LazyLock<PluginBytes> = LazyLock::new(|| {
    let path = Path::new(TEST_PLUGINS_DIR).join("respawn_testing_echo.wasm");
    let bytes = std::fs::read(&path).expect("test plugin built");
    PluginBytes::new(&format!("file://{}", path.display()), bytes).expect("plugin bytes")
});

fn warm_cache_dir() -> PathBuf {
    SCRATCH.join("cache")
}

fn new_host(cache_dir: PathBuf) -> Host {
    Host::with_cache_dir(RunResources::new(SCRATCH.clone()), Some(cache_dir)).expect("host")
}

/// A host with `echo` loaded; populates the warm cache on first use.
static HOST: LazyLock<Host> = LazyLock::new(|| {
    let host = new_host(warm_cache_dir());
    RT.block_on(host.load("echo", &ECHO)).expect("load echo");
    host
});

fn noop_call(i: usize) -> StepCall {
    StepCall {
        run_id: "bench-run".into(),
        step_id: format!("step-{i}"),
        plugin: "echo".into(),
        operation: "echo".into(),
        phase: Phase::Apply,
        mode: Mode::Drill,
        attempt: 1,
        params: json!({}),
        grants: Grants::default(),
        limits: Limits::default(),
        timeout: Duration::from_secs(20),
        state: BTreeMap::new(),
    }
}

fn check(result: &StepResult) {
    if let Err(e) = &result.outcome {
        panic!("no-op step failed: {e}");
    }
}

fn main() {
    // Populate the warm cache and sanity-check one step before measuring anything.
    check(&RT.block_on(HOST.execute(noop_call(0))));
    divan::main();
    let _ = std::fs::remove_dir_all(&*SCRATCH);
}

/// New host on an empty cache dir + load: compiles the component (~1 s).
#[divan::bench(sample_count = 5, sample_size = 1)]
fn cold_load(bencher: Bencher) {
    let mut n = 0usize;
    bencher
        .with_inputs(|| {
            n += 1;
            let dir = SCRATCH.join(format!("cold-{n}"));
            let _ = std::fs::remove_dir_all(&dir);
            dir
        })
        .bench_local_values(|dir| {
            let host = new_host(dir.clone());
            let loaded = RT.block_on(host.load("echo", &ECHO)).expect("load");
            assert_eq!(loaded.compile, CacheOutcome::Compiled);
            (host, loaded, dir)
        });
}

/// Load on an existing host, cache populated: deserialize + instantiate_pre + describe.
#[divan::bench(sample_count = 50)]
fn warm_load(bencher: Bencher) {
    let host = new_host(warm_cache_dir());
    bencher.bench_local(|| {
        let loaded = RT.block_on(host.load("echo", &ECHO)).expect("load");
        debug_assert_eq!(loaded.compile, CacheOutcome::Hit);
        loaded
    });
}

/// New host (engine, pooling allocator, linker) + load, cache populated.
#[divan::bench(sample_count = 30, sample_size = 1)]
fn warm_host_and_load(bencher: Bencher) {
    bencher.bench_local(|| {
        let host = new_host(warm_cache_dir());
        let loaded = RT.block_on(host.load("echo", &ECHO)).expect("load");
        assert_eq!(loaded.compile, CacheOutcome::Hit);
        (host, loaded)
    });
}

/// One no-op step on a loaded plugin: new store + instantiate + invoke. Budget ≤ 100 µs.
#[divan::bench]
fn warm_step(bencher: Bencher) {
    let host = &*HOST;
    let call = noop_call(0);
    bencher
        .with_inputs(|| call.clone())
        .bench_local_values(|call| {
            let result = RT.block_on(host.execute(call));
            check(&result);
            result
        });
}

/// 1,000 sequential no-op steps.
#[divan::bench(sample_count = 20, sample_size = 1)]
fn workflow_1000_sequential(bencher: Bencher) {
    let host = &*HOST;
    let calls: Vec<StepCall> = (0..STEPS).map(noop_call).collect();
    bencher
        .counter(ItemsCount::new(STEPS))
        .with_inputs(|| calls.clone())
        .bench_local_values(|calls| {
            RT.block_on(async {
                for call in calls {
                    check(&black_box(host.execute(call).await));
                }
            })
        });
}

/// 1,000 no-op steps, 8 at a time: chunks of 8 joined with `futures::future::join_all` on one task.
#[divan::bench(sample_count = 20, sample_size = 1)]
fn workflow_1000_join8(bencher: Bencher) {
    let host = &*HOST;
    let calls: Vec<StepCall> = (0..STEPS).map(noop_call).collect();
    bencher
        .counter(ItemsCount::new(STEPS))
        .with_inputs(|| calls.clone())
        .bench_local_values(|calls| {
            RT.block_on(async {
                let mut calls = calls.into_iter().peekable();
                while calls.peek().is_some() {
                    let chunk: Vec<_> = calls
                        .by_ref()
                        .take(CONCURRENCY)
                        .map(|c| host.execute(c))
                        .collect();
                    for result in futures::future::join_all(chunk).await {
                        check(&result);
                    }
                }
            })
        });
}

/// 1,000 no-op steps as 8 spawned tasks of 125 sequential steps each (parallel on the 2 runtime workers).
#[divan::bench(sample_count = 20, sample_size = 1)]
fn workflow_1000_spawn8(bencher: Bencher) {
    let host: &'static Host = &HOST;
    let calls: Vec<StepCall> = (0..STEPS).map(noop_call).collect();
    bencher
        .counter(ItemsCount::new(STEPS))
        .with_inputs(|| calls.clone())
        .bench_local_values(|calls| {
            RT.block_on(async {
                let per_task = STEPS.div_ceil(CONCURRENCY);
                let mut calls = calls.into_iter();
                let tasks: Vec<_> = (0..CONCURRENCY)
                    .map(|_| {
                        let mine: Vec<StepCall> = calls.by_ref().take(per_task).collect();
                        tokio::spawn(async move {
                            for call in mine {
                                check(&host.execute(call).await);
                            }
                        })
                    })
                    .collect();
                for task in futures::future::join_all(tasks).await {
                    task.expect("bench task");
                }
            })
        });
}
