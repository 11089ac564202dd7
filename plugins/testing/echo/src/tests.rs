//! The echo plugin run natively against `respawn_plugin_sdk::testing::MockHost`, without the runner.

use respawn_plugin_sdk::testing::MockHost;
use respawn_plugin_sdk::{FailureKind, Mode, Phase};
use serde_json::json;

use super::Echo;

#[test]
fn echo_returns_params_phase_and_attempt() {
    let mut host = MockHost::new().attempt(2).fencing_token(5);
    let params = json!({ "a": 1, "nested": { "list": [true, null, "x"] } });
    let out = host
        .invoke::<Echo>("echo", Phase::Apply, params.clone())
        .unwrap();
    assert_eq!(
        out,
        json!({ "params": params, "phase": "Phase::Apply", "attempt": 2, "fencing_token": 5 })
    );
    assert!(host.state_map().is_empty(), "echo keeps no state");
    assert!(host.denials().is_empty());
}

#[test]
fn state_counts_across_invocations() {
    let mut host = MockHost::new();
    for n in 1..=3 {
        let out = host
            .invoke::<Echo>("state", Phase::Apply, json!({}))
            .unwrap();
        assert_eq!(out, json!({ "count": n }));
    }
    assert_eq!(host.state_get("count"), Some("3"));
    // Verify and destroy write state too; only plan does not.
    host.invoke::<Echo>("state", Phase::Verify, json!({}))
        .unwrap();
    assert_eq!(host.state_get("count"), Some("4"));
}

#[test]
fn state_starts_from_what_an_earlier_attempt_recorded() {
    let mut host = MockHost::new().state("count", "41").attempt(2);
    let out = host
        .invoke::<Echo>("state", Phase::Apply, json!({}))
        .unwrap();
    assert_eq!(out, json!({ "count": 42 }));
    assert_eq!(host.state_get("count"), Some("42"));
}

#[test]
fn plan_does_not_persist_state() {
    let mut host = MockHost::new().mode(Mode::Plan);
    let out = host
        .invoke::<Echo>("state", Phase::Plan, json!({}))
        .unwrap();
    assert_eq!(out, json!({ "count": 1 }), "plan says what apply would do");
    assert_eq!(host.state_get("count"), None, "plan recorded nothing");

    host.invoke::<Echo>("state", Phase::Apply, json!({}))
        .unwrap();
    let out = host
        .invoke::<Echo>("state", Phase::Plan, json!({}))
        .unwrap();
    assert_eq!(out, json!({ "count": 2 }));
    assert_eq!(host.state_get("count"), Some("1"), "plan changed nothing");
    let out = host
        .invoke::<Echo>("state", Phase::Apply, json!({}))
        .unwrap();
    assert_eq!(out, json!({ "count": 2 }));
}

#[test]
fn granted_secret_is_read() {
    let mut host = MockHost::new().secret("db-password", "hunter2");
    let out = host
        .invoke::<Echo>("secret", Phase::Apply, json!({ "name": "db-password" }))
        .unwrap();
    assert_eq!(out, json!({ "length": 7 }));
    assert!(host.denials().is_empty());
}

#[test]
fn ungranted_secret_is_denied() {
    let mut host = MockHost::new().secret("db-password", "hunter2");
    let failure = host
        .invoke::<Echo>("secret", Phase::Apply, json!({ "name": "api-token" }))
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Denied);
    assert!(!failure.retryable);
    assert!(
        failure.message.starts_with("secrets denied:") && failure.message.contains("api-token"),
        "the message names the capability and the secret: {}",
        failure.message
    );
    let denial = host.denial().expect("the denial is recorded");
    assert_eq!(denial.capability, "secrets");
    assert!(!denial.asked.contains("hunter2"));
}

#[test]
fn granted_secret_without_a_value_is_not_found() {
    let mut host = MockHost::new().secret_unset("api-token");
    let failure = host
        .invoke::<Echo>("secret", Phase::Apply, json!({ "name": "api-token" }))
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::NotFound);
    assert!(host.denials().is_empty());
}

#[test]
fn fail_returns_the_failure_asked_for() {
    let mut host = MockHost::new();
    let params = json!({ "kind": "unavailable", "message": "try later", "retryable": true });
    let failure = host
        .invoke::<Echo>("fail", Phase::Verify, params)
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Unavailable);
    assert_eq!(failure.message, "try later");
    assert!(failure.retryable);
}

#[test]
fn malformed_params_are_invalid_input() {
    let mut host = MockHost::new();
    let failure = host
        .invoke_raw::<Echo>("echo", Phase::Apply, "{not json")
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::InvalidInput);
    assert!(
        failure.message.starts_with("params:"),
        "{}",
        failure.message
    );
}
