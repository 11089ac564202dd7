//! The run driver against a fake host and a journal in a memory store: no binary, no WebAssembly.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use respawn_data::object_store::ObjectStore;
use respawn_journal::chain;
use respawn_journal::{EventBody, Journal, Redactor};
use respawn_report::record::Outcome;
use respawn_report::{PluginInfo, Report};
use respawn_workflow::{LoadedWorkflow, load_str};
use serde_json::json;
use tokio::sync::watch;

use super::driver::{Drive, Driven, RunHost, drive};
use super::run::RunSpec;
use super::{Approver, Quiet};
use super::{Mode, Phase, StepCall, StepError, StepExecutor, StepResult};

const SECRET: &str = "hunter2-very-secret";

const WORKFLOW: &str = r#"
respawn: 1
name: t
version: 1.0.0
plugins: { p: builtin:check@0.1 }
steps:
  - id: site
    uses: p/op
  - id: web
    uses: p/op
    needs: [site]
verify:
  - id: check
    uses: p/op
"#;

/// A host whose steps succeed unless scripted otherwise, and that counts what the driver asks of its services.
#[derive(Default)]
struct FakeHost {
    calls: Mutex<Vec<(String, Phase)>>,
    /// Steps whose apply fails with a message that carries the secret.
    leaky: Vec<&'static str>,
    /// Steps whose apply takes this long.
    slow: Option<(&'static str, Duration)>,
    restored: Vec<SystemTime>,
    stopped: AtomicU32,
    released: AtomicU32,
}

impl StepExecutor for FakeHost {
    async fn execute(&self, call: StepCall) -> StepResult {
        self.calls
            .lock()
            .unwrap()
            .push((call.step_id.clone(), call.phase));
        if let Some((id, wait)) = self.slow
            && id == call.step_id
            && call.phase == Phase::Apply
        {
            tokio::time::sleep(wait).await;
        }
        let outcome = if self.leaky.contains(&call.step_id.as_str()) && call.phase == Phase::Apply {
            Err(StepError::Plugin {
                plugin: call.plugin.clone(),
                step: call.step_id.clone(),
                failure_kind: "denied".into(),
                message: format!("login with password {SECRET} refused"),
                retryable: false,
            })
        } else {
            Ok(json!({ "path": format!("/regions/{}", call.step_id) }))
        };
        StepResult {
            outcome,
            state: call.state,
        }
    }
}

impl RunHost for FakeHost {
    async fn stop_services(&self) {
        self.stopped.fetch_add(1, Ordering::SeqCst);
    }

    fn release_services(&self) {
        self.released.fetch_add(1, Ordering::SeqCst);
    }

    fn restored_images(&self) -> Vec<SystemTime> {
        self.restored.clone()
    }
}

struct Never;
impl Approver for Never {
    fn approve(&self, step: &str, _: &str) -> Result<String, String> {
        Err(format!("no gate in this workflow, yet `{step}` asked"))
    }
}

struct Fixture {
    store: Arc<dyn ObjectStore>,
    loaded: LoadedWorkflow,
    journal: Arc<Journal>,
    report_dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let store = respawn_data::open_store("memory://", Path::new(".")).expect("memory store");
    let secrets = BTreeMap::from([("db".to_string(), SECRET.to_string())]);
    let journal = Arc::new(Journal::open(
        store.clone(),
        "run-1",
        Redactor::new(&secrets),
        0,
        None,
    ));
    Fixture {
        store,
        loaded: load_str(Path::new("t.yaml"), WORKFLOW).expect("workflow loads"),
        journal,
        report_dir: tempfile::tempdir().expect("temp dir"),
    }
}

async fn go(
    f: &Fixture,
    host: Arc<FakeHost>,
    lease: Duration,
    cancel: watch::Receiver<bool>,
) -> Driven {
    let spec = RunSpec {
        loaded: &f.loaded,
        params: BTreeMap::new(),
        run_id: "run-1".into(),
        mode: Mode::Drill,
        keep: false,
        digests: BTreeMap::from([("p".into(), "abc".into())]),
        journal: Some(f.journal.clone()),
        resume: None,
    };
    let plugins = BTreeMap::from([(
        "p".to_string(),
        PluginInfo {
            source: "builtin:check@0.1".into(),
            sha256: "abc".into(),
        },
    )]);
    drive(Drive {
        spec,
        host,
        journal: f.journal.clone(),
        lease,
        observer: Arc::new(Quiet),
        approver: &Never,
        plugins,
        report_dir: f.report_dir.path().join("report"),
        images_before: Vec::new(),
        cancel,
    })
    .await
    .expect("the driver writes its report")
}

#[tokio::test]
async fn a_finished_drill_is_journaled_and_reported_with_the_chain_head_and_rpo() {
    let f = fixture();
    let image_age = Duration::from_secs(3600);
    let host = Arc::new(FakeHost {
        restored: vec![SystemTime::now() - image_age],
        ..FakeHost::default()
    });
    let (_cancel, rx) = watch::channel(false);
    let Driven::Finished { report, dir } = go(&f, host.clone(), Duration::from_secs(30), rx).await
    else {
        panic!("the drill should finish");
    };
    assert_eq!(report.outcome, Outcome::Passed);
    assert_eq!(report.teardown.status, "succeeded");
    let rpo = report.rpo_seconds.expect("an image was restored");
    assert!((3599.0..3700.0).contains(&rpo), "RPO {rpo}");
    assert_eq!(
        host.stopped.load(Ordering::SeqCst),
        1,
        "services stopped once"
    );
    assert_eq!(host.released.load(Ordering::SeqCst), 0);

    // The report on disk is the one returned, and it names the journal's head: the run-finished event.
    let on_disk = Report::read(&dir).expect("report.json written");
    assert_eq!(on_disk.run_id, "run-1");
    let stored = chain::read_all(&f.store, "run-1").await.expect("journal");
    let events = chain::verify(&stored).expect("chain verifies");
    assert!(matches!(
        events.last().map(|e| &e.body),
        Some(EventBody::RunFinished {
            outcome: Outcome::Passed,
            ..
        })
    ));
    assert_eq!(
        on_disk.journal_head,
        stored.last().map(|e| e.sha256.clone())
    );
    assert!(dir.join("report.md").exists() && dir.join("junit.xml").exists());
}

#[tokio::test]
async fn a_secret_in_a_plugin_error_never_reaches_the_report() {
    let f = fixture();
    let host = Arc::new(FakeHost {
        leaky: vec!["web"],
        ..FakeHost::default()
    });
    let (_cancel, rx) = watch::channel(false);
    let Driven::Finished { report, dir } = go(&f, host, Duration::from_secs(30), rx).await else {
        panic!("the drill should finish");
    };
    assert_eq!(report.outcome, Outcome::Failed);
    for file in ["report.json", "report.md", "junit.xml"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("report file");
        assert!(!text.contains(SECRET), "{file} leaks the secret");
        if file == "report.json" {
            assert!(text.contains("login with password *** refused"), "{text}");
        }
    }
}

#[tokio::test]
async fn a_cancel_interrupts_the_run_and_still_tears_down() {
    let f = fixture();
    let host = Arc::new(FakeHost {
        slow: Some(("web", Duration::from_secs(30))),
        ..FakeHost::default()
    });
    let (cancel, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = cancel.send(true);
    });
    let started = std::time::Instant::now();
    let Driven::Finished { report, .. } = go(&f, host.clone(), Duration::from_secs(30), rx).await
    else {
        panic!("an interrupted drill still finishes with a report");
    };
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the slow step was cut short"
    );
    assert_eq!(report.outcome, Outcome::Interrupted);
    let destroyed: Vec<String> = host
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, phase)| *phase == Phase::Destroy)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(destroyed.contains(&"site".to_string()), "{destroyed:?}");
    assert_eq!(host.stopped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_runner_whose_run_is_taken_over_stops_without_a_report_and_leaves_the_services() {
    let f = fixture();
    let host = Arc::new(FakeHost {
        slow: Some(("web", Duration::from_secs(20))),
        ..FakeHost::default()
    });
    let (_cancel, rx) = watch::channel(false);
    // Another runner claims the run while `web` is applying: it stores the next event first.
    let store = f.store.clone();
    let usurper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stored = chain::read_all(&store, "run-1").await.expect("journal");
        let other = Journal::open(
            store,
            "run-1",
            Redactor::new(&BTreeMap::new()),
            stored.len() as u64,
            stored.last().map(|e| e.sha256.clone()),
        );
        other
            .append(EventBody::Resumed { takeover: true })
            .await
            .expect("the usurper writes first");
    });
    let started = std::time::Instant::now();
    // A 3 s lease probes for a takeover every second.
    let driven = go(&f, host.clone(), Duration::from_secs(3), rx).await;
    usurper.await.unwrap();
    assert!(
        matches!(driven, Driven::TakenOver { .. }),
        "expected a takeover, got {driven:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the runner noticed within seconds, not after its slow step"
    );
    assert_eq!(
        host.released.load(Ordering::SeqCst),
        1,
        "services left to the new owner"
    );
    assert_eq!(host.stopped.load(Ordering::SeqCst), 0, "no service stopped");
    assert!(
        !f.report_dir.path().join("report").exists(),
        "no report written"
    );
}
