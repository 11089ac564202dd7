//! The engine against a fake executor: no WebAssembly, just the scheduling rules.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::run::{RunSpec, run};
use super::{Approver, Quiet};
use super::{Mode, Phase, StepCall, StepError, StepExecutor, StepResult};
use respawn_report::record::{Outcome, StepStatus};
use respawn_workflow::{LoadedWorkflow, load_str};

/// Answers each call from a script: a step id listed in `fail` fails (retryable when listed in `flaky` and
/// the attempt is the first); `slow` steps sleep.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<(String, Phase, u32, serde_json::Value)>>,
    fail: Vec<&'static str>,
    flaky: Vec<&'static str>,
    slow: Vec<&'static str>,
    /// Steps whose apply panics inside the executor (a bug in a host, not a plugin failure).
    panics: Vec<&'static str>,
    /// Steps whose apply outputs this `recovery_point` besides `path`.
    recovery: Vec<(&'static str, serde_json::Value)>,
}

impl StepExecutor for Fake {
    async fn execute(&self, call: StepCall) -> StepResult {
        self.calls.lock().unwrap().push((
            call.step_id.clone(),
            call.phase,
            call.attempt,
            call.params.clone(),
        ));
        if self.panics.contains(&call.step_id.as_str()) && call.phase == Phase::Apply {
            panic!("scripted panic in {}", call.step_id);
        }
        if self.slow.contains(&call.step_id.as_str()) && call.phase == Phase::Apply {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        let mut state = call.state.clone();
        state.insert("created".into(), call.step_id.clone());
        let fail = |retryable| StepError::Plugin {
            plugin: call.plugin.clone(),
            step: call.step_id.clone(),
            failure_kind: "unavailable".into(),
            message: "scripted failure".into(),
            retryable,
        };
        let outcome = if self.flaky.contains(&call.step_id.as_str()) && call.attempt == 1 {
            Err(fail(true))
        } else if self.fail.contains(&call.step_id.as_str()) && call.phase == Phase::Apply {
            Err(fail(false))
        } else {
            let mut outputs = json!({ "path": format!("/regions/{}", call.step_id) });
            if let Some((_, point)) = self.recovery.iter().find(|(id, _)| *id == call.step_id)
                && call.phase == Phase::Apply
            {
                outputs["recovery_point"] = point.clone();
            }
            Ok(outputs)
        };
        StepResult { outcome, state }
    }
}

/// Answers every gate with its result; `None` never answers (a person who walked away).
struct Answer(Option<Result<String, String>>);
impl Approver for Answer {
    fn approve(&self, _: &str, _: &str) -> crate::Approval {
        match self.0.clone() {
            Some(answer) => Box::pin(std::future::ready(answer)),
            None => Box::pin(std::future::pending()),
        }
    }
}

const WORKFLOW: &str = r#"
respawn: 1
name: t
version: 1.0.0
plugins: { p: builtin:check@0.1 }
steps:
  - id: site
    uses: p/op
    retry: { attempts: 3, backoff: 10ms }
  - id: web
    uses: p/op
    needs: [site]
    with: { volume: "${{ steps.site.outputs.path }}" }
  - id: gate
    needs: [web]
    approval: "Switch DNS?"
  - id: dns
    uses: p/op
    needs: [gate]
  - id: optional
    uses: p/op
    when: "${{ run.mode == 'failover' }}"
verify:
  - id: check
    uses: p/op
"#;

fn workflow() -> LoadedWorkflow {
    load_str(Path::new("t.yaml"), WORKFLOW).unwrap()
}

async fn go(
    fake: Arc<Fake>,
    mode: Mode,
    approver: Answer,
    cancel: watch::Receiver<bool>,
) -> respawn_report::record::RunRecord {
    let loaded = workflow();
    let spec = RunSpec {
        loaded: &loaded,
        params: BTreeMap::new(),
        run_id: "r1".into(),
        mode,
        keep: false,
        digests: BTreeMap::from([("p".into(), "abc".into())]),
        journal: None,
        resume: None,
    };
    run(&spec, fake, &approver, Arc::new(Quiet), cancel).await
}

fn phases(fake: &Fake, phase: Phase) -> Vec<String> {
    fake.calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.1 == phase)
        .map(|c| c.0.clone())
        .collect()
}

#[tokio::test]
async fn drill_applies_in_order_verifies_and_tears_down_in_reverse() {
    let fake = Arc::new(Fake {
        flaky: vec!["site"],
        ..Fake::default()
    });
    let (_tx, rx) = watch::channel(false);
    let record = go(
        fake.clone(),
        Mode::Drill,
        Answer(Some(Err("never asked in a drill".into()))),
        rx,
    )
    .await;
    assert_eq!(record.outcome, Outcome::Passed, "{record:#?}");
    let applied = phases(&fake, Phase::Apply);
    assert_eq!(
        applied.iter().filter(|s| *s == "site").count(),
        2,
        "a retryable failure is retried"
    );
    assert!(applied.iter().position(|s| s == "site") < applied.iter().position(|s| s == "web"));
    let web = fake
        .calls
        .lock()
        .unwrap()
        .iter()
        .find(|c| c.0 == "web")
        .unwrap()
        .3
        .clone();
    assert_eq!(
        web["volume"], "/regions/site",
        "outputs flow into dependents' params"
    );
    let gate = record.steps.iter().find(|s| s.id == "gate").unwrap();
    assert_eq!(gate.status, StepStatus::Skipped);
    assert!(
        gate.note
            .as_deref()
            .unwrap()
            .contains("approval skipped in a drill")
    );
    assert!(
        applied.contains(&"dns".to_string()),
        "a drill's skipped gate does not block dependents"
    );
    assert!(
        !applied.contains(&"optional".to_string()),
        "`when` false skips the step"
    );
    assert_eq!(phases(&fake, Phase::Verify), vec!["check"]);
    let destroyed = phases(&fake, Phase::Destroy);
    let mut expected: Vec<String> = applied.iter().filter(|s| *s != "site").cloned().collect();
    expected.dedup();
    assert_eq!(
        destroyed.first().map(String::as_str),
        Some("dns"),
        "teardown starts from the last applied"
    );
    assert_eq!(
        destroyed.last().map(String::as_str),
        Some("site"),
        "and ends with the first"
    );
    assert_eq!(record.teardown.status, "succeeded");
    assert!(record.rto_seconds.is_some());
    assert_eq!(record.steps[0].plugin_digest.as_deref(), Some("abc"));
    let site_destroy = fake
        .calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.0 == "site" && c.1 == Phase::Destroy);
    assert!(site_destroy);
}

#[tokio::test]
async fn a_failed_step_skips_dependents_and_the_drill_still_tears_down() {
    let fake = Arc::new(Fake {
        fail: vec!["web"],
        ..Fake::default()
    });
    let (_tx, rx) = watch::channel(false);
    let record = go(
        fake.clone(),
        Mode::Drill,
        Answer(Some(Ok("yes".into()))),
        rx,
    )
    .await;
    assert_eq!(record.outcome, Outcome::Failed);
    let web = record.steps.iter().find(|s| s.id == "web").unwrap();
    assert_eq!(web.status, StepStatus::Failed);
    assert_eq!(web.attempts, 1, "a non-retryable failure is not retried");
    assert_eq!(web.error.as_ref().unwrap().kind, "plugin");
    for id in ["gate", "dns"] {
        let s = record.steps.iter().find(|s| s.id == id).unwrap();
        assert_eq!(s.status, StepStatus::Skipped, "{id}");
        assert!(
            s.note.as_deref().unwrap().contains("did not succeed"),
            "{id}"
        );
    }
    assert_eq!(
        record.verifications[0].status,
        StepStatus::Skipped,
        "verification needs every step"
    );
    assert_eq!(
        phases(&fake, Phase::Destroy),
        vec!["web", "site"],
        "teardown covers the failed step too"
    );
    assert!(record.rto_seconds.is_none());
}

/// A step whose task panics fails as an internal error naming the step, not as an interrupt; the run goes on to
/// fail and tear down, the panicked step included.
#[tokio::test]
async fn a_panicking_step_task_is_an_internal_failure_of_that_step() {
    let fake = Arc::new(Fake {
        panics: vec!["web"],
        ..Fake::default()
    });
    let (_tx, rx) = watch::channel(false);
    let record = go(
        fake.clone(),
        Mode::Drill,
        Answer(Some(Ok("yes".into()))),
        rx,
    )
    .await;
    assert_eq!(record.outcome, Outcome::Failed, "not interrupted");
    let web = record.steps.iter().find(|s| s.id == "web").unwrap();
    assert_eq!(web.status, StepStatus::Failed);
    let error = web.error.as_ref().unwrap();
    assert_eq!(error.kind, "internal");
    assert!(error.message.contains("step `web`"), "{}", error.message);
    assert!(
        error.message.contains("scripted panic"),
        "{}",
        error.message
    );
    assert_eq!(phases(&fake, Phase::Destroy), vec!["web", "site"]);
}

#[tokio::test]
async fn failover_gate_refused_stops_the_run_without_teardown() {
    let fake = Arc::new(Fake::default());
    let (_tx, rx) = watch::channel(false);
    let record = go(
        fake.clone(),
        Mode::Failover,
        Answer(Some(Err("no TTY and no --yes".into()))),
        rx,
    )
    .await;
    assert_eq!(record.outcome, Outcome::Failed);
    let gate = record.steps.iter().find(|s| s.id == "gate").unwrap();
    assert_eq!(gate.status, StepStatus::Failed);
    assert!(gate.error.as_ref().unwrap().message.contains("no TTY"));
    assert!(!phases(&fake, Phase::Apply).contains(&"dns".to_string()));
    assert!(
        phases(&fake, Phase::Destroy).is_empty(),
        "failover never tears down"
    );
    assert_eq!(record.teardown.status, "skipped");

    let fake = Arc::new(Fake::default());
    let (_tx, rx) = watch::channel(false);
    let record = go(
        fake.clone(),
        Mode::Failover,
        Answer(Some(Ok("--yes".into()))),
        rx,
    )
    .await;
    assert_eq!(record.outcome, Outcome::Passed);
    assert!(
        phases(&fake, Phase::Apply).contains(&"optional".to_string()),
        "when true in failover"
    );
}

#[tokio::test]
async fn an_interrupt_at_a_gate_nobody_answers_ends_the_wait_at_once() {
    let fake = Arc::new(Fake::default());
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn({
        let fake = fake.clone();
        async move { go(fake, Mode::Failover, Answer(None), rx).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!handle.is_finished(), "the gate waits for its answer");
    tx.send(true).unwrap();
    let record = tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("the interrupt ended the gate's wait")
        .unwrap();
    assert_eq!(record.outcome, Outcome::Interrupted);
    let gate = record.steps.iter().find(|s| s.id == "gate").unwrap();
    assert!(
        gate.error
            .as_ref()
            .unwrap()
            .message
            .contains("interrupted while approval gate `gate`")
    );
    assert!(!phases(&fake, Phase::Apply).contains(&"dns".to_string()));
}

#[tokio::test]
async fn an_interrupt_cancels_running_steps_and_tears_down() {
    let fake = Arc::new(Fake {
        slow: vec!["web"],
        ..Fake::default()
    });
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn({
        let fake = fake.clone();
        async move { go(fake, Mode::Drill, Answer(Some(Ok("y".into()))), rx).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(true).unwrap();
    let record = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("stops promptly")
        .unwrap();
    assert_eq!(record.outcome, Outcome::Interrupted);
    assert_eq!(
        record.steps.iter().find(|s| s.id == "web").unwrap().status,
        StepStatus::Cancelled
    );
    assert_eq!(
        phases(&fake, Phase::Destroy),
        vec!["web", "site"],
        "an interrupted drill still tears down"
    );
}

/// A `recovery_point` that is not an RFC 3339 time with an offset, or lies in the future, fails its step (not
/// retried: the plugin would say the same again) with a message naming the step, the output and the value; a
/// good one, or `null`, passes.
#[tokio::test]
async fn a_bad_recovery_point_fails_its_step_naming_the_output_and_value() {
    let future =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(3600))
            .to_string();
    let skewed =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(20))
            .to_string();
    for (value, why) in [
        (json!("yesterday"), "not of the form"),
        (json!("2026-05-01T12:00:00"), "no UTC offset"),
        (json!(1714564800), "not a string"),
        (json!(future), "in the future"),
    ] {
        let fake = Arc::new(Fake {
            recovery: vec![("site", value.clone())],
            ..Fake::default()
        });
        let (_tx, rx) = watch::channel(false);
        let record = go(
            fake.clone(),
            Mode::Drill,
            Answer(Some(Ok("yes".into()))),
            rx,
        )
        .await;
        assert_eq!(record.outcome, Outcome::Failed, "{value}");
        let site = &record.steps[0];
        assert_eq!(site.status, StepStatus::Failed, "{value}");
        assert_eq!(site.attempts, 1, "a broken contract is not retried");
        let error = site.error.as_ref().unwrap();
        assert_eq!(error.kind, "contract");
        for part in ["`site`", "`recovery_point`", &value.to_string(), why] {
            assert!(
                error.message.contains(part),
                "{part:?} in {}",
                error.message
            );
        }
        assert_eq!(
            phases(&fake, Phase::Destroy),
            vec!["site"],
            "the step ran, so it is torn down"
        );
    }
    for value in [
        json!(skewed),
        json!(null),
        json!("2026-05-01T14:00:00.5+02:00"),
    ] {
        let fake = Arc::new(Fake {
            recovery: vec![("site", value.clone())],
            ..Fake::default()
        });
        let (_tx, rx) = watch::channel(false);
        let record = go(fake, Mode::Drill, Answer(Some(Ok("yes".into()))), rx).await;
        assert_eq!(record.steps[0].status, StepStatus::Succeeded, "{value}");
    }
}

/// Complexity guard for the scheduler: the steps it examines and its wake-ups, for n and 4n steps of a deep graph
/// (layers of 8, each step needing one of the layer before and reading its output), must grow linearly. Counts,
/// not seconds, so the machine's speed does not matter; the test's runtime is one thread, which the counts are.
#[tokio::test]
async fn scheduling_grows_linearly_with_a_deep_graph() {
    async fn drill(steps: usize) -> respawn_workflow::work::Work {
        let mut y = String::from(
            "respawn: 1\nname: deep\nversion: 1.0.0\nplugins: { p: builtin:check@0.1 }\nsteps:\n",
        );
        for i in 0..steps {
            y.push_str(&format!("  - id: s{i}\n    uses: p/op\n"));
            if i >= 8 {
                let need = i - 8;
                y.push_str(&format!(
                    "    needs: [s{need}]\n    with: {{ from: \"${{{{ steps.s{need}.outputs.path }}}}\" }}\n"
                ));
            }
        }
        let loaded = load_str(Path::new("deep.yaml"), &y).unwrap();
        let spec = RunSpec {
            loaded: &loaded,
            params: BTreeMap::new(),
            run_id: "deep".into(),
            mode: Mode::Drill,
            keep: false,
            digests: BTreeMap::new(),
            journal: None,
            resume: None,
        };
        let (_tx, cancel) = watch::channel(false);
        respawn_workflow::work::take();
        let record = run(
            &spec,
            Arc::new(Fake::default()),
            &Answer(Some(Ok("yes".into()))),
            Arc::new(Quiet),
            cancel,
        )
        .await;
        assert_eq!(record.outcome, Outcome::Passed);
        assert_eq!(record.teardown.steps.len(), steps);
        respawn_workflow::work::take()
    }
    let n = 200;
    let small = drill(n).await;
    let large = drill(4 * n).await;
    // A wake-up settles every step that has ended by then, so there may be fewer wake-ups than steps.
    assert!(small.wakeups > 0 && small.nodes >= n as u64, "{small:?}");
    for (name, a, b) in [
        ("steps examined", small.nodes, large.nodes),
        ("wake-ups", small.wakeups, large.wakeups),
    ] {
        let growth = b as f64 / a as f64;
        assert!(
            growth <= 4.6,
            "{name} grew {growth:.1}× from n to 4n steps ({a} -> {b}); scheduling is not linear"
        );
    }
}
