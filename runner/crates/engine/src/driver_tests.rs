//! The run driver against a fake host and a journal in a memory store: no binary, no WebAssembly.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use respawn_data::object_store::ObjectStore;
use respawn_journal::chain;
use respawn_journal::{EventBody, Journal, Redactor, RunStarted, StepFinished, WorkflowSnapshot};
use respawn_report::record::{Outcome, RecoveryFrom, StepStatus};
use respawn_report::{PluginInfo, Report};
use respawn_workflow::{LoadedWorkflow, load_str};
use serde_json::json;
use tokio::sync::watch;

use super::driver::{Drive, Driven, RunHost, drive};
use super::recovery::RestoredImage;
use super::resume::{ResumeSeed, write_report};
use super::run::RunSpec;
use super::{Approver, Quiet};
use super::{Mode, Phase, StepCall, StepError, StepExecutor, StepResult};
use respawn_journal::replay::ImageCreated;

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
    restored: Vec<RestoredImage>,
    /// Steps whose apply outputs this `recovery_point`.
    recovery: Vec<(&'static str, String)>,
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
            let mut outputs = json!({ "path": format!("/regions/{}", call.step_id) });
            if let Some((_, point)) = self.recovery.iter().find(|(id, _)| *id == call.step_id)
                && call.phase == Phase::Apply
            {
                outputs["recovery_point"] = json!(point);
            }
            Ok(outputs)
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

    fn restored_images(&self) -> Vec<RestoredImage> {
        self.restored.clone()
    }
}

struct Never;
impl Approver for Never {
    fn approve(&self, step: &str, _: &str) -> crate::Approval {
        let why = format!("no gate in this workflow, yet `{step}` asked");
        Box::pin(std::future::ready(Err(why)))
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
    // As the CLI does before driving (unless the test wrote its own start): the report is rendered from the
    // journal, which starts here.
    if f.journal.head().await.is_none() {
        f.journal
            .append(run_started(f, SystemTime::now()))
            .await
            .expect("run-started journaled");
    }
    let fresh = Continue {
        journal: f.journal.clone(),
        resume: None,
        images_before: Vec::new(),
    };
    go_on(f, host, lease, cancel, fresh).await
}

/// The journal a run goes on writing, and what an earlier runner did (a resume).
struct Continue {
    journal: Arc<Journal>,
    resume: Option<ResumeSeed>,
    images_before: Vec<ImageCreated>,
}

async fn go_on(
    f: &Fixture,
    host: Arc<FakeHost>,
    lease: Duration,
    cancel: watch::Receiver<bool>,
    from: Continue,
) -> Driven {
    let spec = RunSpec {
        loaded: &f.loaded,
        params: BTreeMap::new(),
        run_id: "run-1".into(),
        mode: Mode::Drill,
        keep: false,
        digests: BTreeMap::from([("p".into(), "abc".into())]),
        journal: Some(from.journal.clone()),
        resume: from.resume,
    };
    drive(Drive {
        spec,
        host,
        journal: from.journal,
        lease,
        observer: Arc::new(Quiet),
        approver: &Never,
        report_dir: f.report_dir.path().join("report"),
        images_before: from.images_before,
        cancel,
    })
    .await
    .expect("the driver writes its report")
}

fn plugins() -> BTreeMap<String, PluginInfo> {
    BTreeMap::from([(
        "p".to_string(),
        PluginInfo {
            source: "builtin:check@0.1".into(),
            sha256: "abc".into(),
        },
    )])
}

fn image(step: &str, created: SystemTime) -> RestoredImage {
    RestoredImage {
        step: step.into(),
        created,
    }
}

/// The journal's first event, as the CLI writes it before driving a run.
fn run_started(f: &Fixture, at: SystemTime) -> EventBody {
    EventBody::RunStarted(Box::new(RunStarted {
        run_id: "run-1".into(),
        mode: Mode::Drill,
        keep: false,
        workflow: WorkflowSnapshot::of(&f.loaded),
        params: BTreeMap::new(),
        plugins: plugins(),
        lease_seconds: 30.0,
        started_at: rfc3339(at),
    }))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[tokio::test]
async fn a_finished_drill_is_journaled_and_reported_with_the_chain_head_and_rpo() {
    let f = fixture();
    let image_age = Duration::from_secs(3600);
    let host = Arc::new(FakeHost {
        restored: vec![image("site", SystemTime::now() - image_age)],
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

/// Each step that restored data is a source: its own `recovery_point`, else its newest image; the run's RPO is
/// the oldest source's. run-finished carries the sources, so a report written again from the journal lists them.
#[tokio::test]
async fn each_data_source_is_reported_and_the_oldest_is_the_runs_rpo() {
    let f = fixture();
    let now = SystemTime::now();
    f.journal
        .append(run_started(&f, now))
        .await
        .expect("journaled");
    let minutes = |m: u64| now - Duration::from_secs(60 * m);
    let host = Arc::new(FakeHost {
        recovery: vec![("site", rfc3339(minutes(10)))],
        restored: vec![
            // The site's own output wins over the image it restored.
            image("site", minutes(300)),
            // The web's newest image is its recovery point.
            image("web", minutes(120)),
            image("web", minutes(60)),
        ],
        ..FakeHost::default()
    });
    let (_cancel, rx) = watch::channel(false);
    let Driven::Finished { report, dir } = go(&f, host, Duration::from_secs(30), rx).await else {
        panic!("the drill should finish");
    };
    assert_eq!(report.outcome, Outcome::Passed);
    let sources: Vec<_> = report
        .recovery_points
        .iter()
        .map(|p| (p.step.as_str(), p.from, p.recovery_point.clone()))
        .collect();
    assert_eq!(
        sources,
        [
            ("site", RecoveryFrom::Output, rfc3339(minutes(10))),
            ("web", RecoveryFrom::Image, rfc3339(minutes(60))),
        ]
    );
    let rpo = report.rpo_seconds.expect("two sources");
    assert!((3599.0..3700.0).contains(&rpo), "RPO {rpo}");
    assert_eq!(
        rpo, report.recovery_points[1].rpo_seconds,
        "the oldest wins"
    );
    assert!(report.recovery_points[0].rpo_seconds < 700.0);
    assert_eq!(
        report.worst_recovery_point().map(|p| p.step.as_str()),
        Some("web")
    );
    assert!(
        report.rpo_text().ends_with("s (web)"),
        "{}",
        report.rpo_text()
    );

    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("## Recovery points"), "{md}");
    assert!(md.contains("s (web) |"), "{md}");
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(
        junit.contains(r#"<property name="rpo_source" value="web"/>"#),
        "{junit}"
    );
    assert!(
        junit.contains(r#"<property name="recovery_point.site""#),
        "{junit}"
    );

    // The journal's run-finished holds the sources; a report rebuilt from it says the same.
    let (stored, replayed) = respawn_journal::read_run(&f.store, "run-1").await.unwrap();
    let finished = replayed.finished.as_ref().expect("run-finished journaled");
    assert_eq!(finished.recovery_points, report.recovery_points);
    let again = f.report_dir.path().join("again");
    write_report(Some(&again), &stored, &replayed).unwrap();
    let rebuilt = Report::read(&again).unwrap();
    assert_eq!(rebuilt.recovery_points, report.recovery_points);
    assert_eq!(rebuilt.rpo_seconds, report.rpo_seconds);
}

/// After a crash, the sources of steps that finished before it count: their outputs and their images come from
/// the journal, and the RPO is measured from the original start.
#[tokio::test]
async fn a_resumed_run_keeps_the_sources_of_steps_finished_before_the_crash() {
    let f = fixture();
    let whole = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
    let started = whole - Duration::from_secs(600);
    let hours = |h: u64| started - Duration::from_secs(3600 * h);
    // The dead runner's journal: `site` applied with a recovery point (and an older image), `web` restored an
    // image and was cut off.
    let events = [
        run_started(&f, started),
        EventBody::StepStarted {
            step: "site".into(),
            phase: Phase::Apply,
            attempt: 1,
            params: json!({}),
        },
        EventBody::ImageRestored {
            step: "site".into(),
            created: Some(rfc3339(hours(5))),
            store: None,
            prefix: None,
            tag: None,
            manifest_digest: None,
        },
        EventBody::StepFinished(Box::new(StepFinished {
            step: "site".into(),
            phase: Phase::Apply,
            status: StepStatus::Succeeded,
            attempts: 1,
            outputs: json!({
                "params": {},
                "outputs": { "path": "/regions/site", "recovery_point": rfc3339(hours(2)) }
            }),
            state: BTreeMap::new(),
            error: None,
            note: None,
            started_at: Some(rfc3339(started)),
            finished_at: Some(rfc3339(started)),
            applied: true,
        })),
        EventBody::StepStarted {
            step: "web".into(),
            phase: Phase::Apply,
            attempt: 1,
            params: json!({}),
        },
        EventBody::ImageRestored {
            step: "web".into(),
            created: Some(rfc3339(hours(3))),
            store: None,
            prefix: None,
            tag: None,
            manifest_digest: None,
        },
    ];
    for event in events {
        f.journal.append(event).await.expect("journaled");
    }
    let (stored, replayed) = respawn_journal::read_run(&f.store, "run-1").await.unwrap();
    let journal = Arc::new(Journal::open(
        f.store.clone(),
        "run-1",
        Redactor::new(&BTreeMap::new()),
        stored.len() as u64,
        stored.last().map(|e| e.sha256.clone()),
    ));
    // The resumed `web` finds its data already there and restores nothing in this process.
    let host = Arc::new(FakeHost::default());
    let (_cancel, rx) = watch::channel(false);
    let resumed = Continue {
        journal,
        resume: Some(ResumeSeed::from_replay(&replayed)),
        images_before: replayed.images_created.clone(),
    };
    let Driven::Finished { report, .. } =
        go_on(&f, host.clone(), Duration::from_secs(30), rx, resumed).await
    else {
        panic!("the resumed drill should finish");
    };
    assert_eq!(report.outcome, Outcome::Passed);
    let applied: Vec<String> = host
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, phase)| *phase == Phase::Apply)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(applied, ["web"], "site finished before the crash");
    let sources: Vec<_> = report
        .recovery_points
        .iter()
        .map(|p| (p.step.as_str(), p.from, p.rpo_seconds))
        .collect();
    assert_eq!(
        sources,
        [
            ("site", RecoveryFrom::Output, 7200.0),
            ("web", RecoveryFrom::Image, 10800.0),
        ]
    );
    assert_eq!(report.rpo_seconds, Some(10800.0));
}
