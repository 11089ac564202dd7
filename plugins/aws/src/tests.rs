//! Behaviour moto cannot show, natively against `MockHost`: credentials only from granted secrets and never in
//! a message, throttling retried with backoff until it gives up as `unavailable`, and the signed request's shape.

use std::cell::Cell;
use std::rc::Rc;

use respawn_plugin_sdk::http::Response;
use respawn_plugin_sdk::testing::MockHost;
use respawn_plugin_sdk::{FailureKind, Phase};
use serde_json::json;

use crate::AwsProvider;

/// DescribeImages of the launch params' image, as plan sends it (a GET: plan may only read).
const EC2: &str = "https://ec2.us-west-2.amazonaws.com/?Action=DescribeImages&Version=2016-11-15&ImageId.1=ami-12345678";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn host() -> MockHost {
    MockHost::new()
        .secret("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .secret("AWS_SECRET_ACCESS_KEY", SECRET)
}

fn launch_params() -> serde_json::Value {
    json!({ "region": "us-west-2", "image": "ami-12345678", "instance_type": "t3.micro" })
}

#[test]
fn refused_credentials_are_denied_and_never_echoed() {
    let mut host = host().http_with(EC2, |call| {
        let auth = call.headers.get("authorization").unwrap_or_default();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{auth}");
        assert!(!auth.contains(SECRET));
        // An endpoint that quotes what it got: the plugin must not pass a credential on.
        Ok(Response::new(
            401,
            format!("<Response><Errors><Error><Code>AuthFailure</Code><Message>bad key {SECRET} AKIDEXAMPLE</Message></Error></Errors></Response>"),
        ))
    });
    let failure = host
        .invoke::<AwsProvider>("launch", Phase::Plan, launch_params())
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Denied, "{}", failure.message);
    assert!(!failure.message.contains(SECRET), "{}", failure.message);
    assert!(
        !failure.message.contains("AKIDEXAMPLE"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("AuthFailure"),
        "{}",
        failure.message
    );
}

#[test]
fn credentials_come_only_from_granted_secrets() {
    let mut host = MockHost::new().http(EC2, 200, "<x/>");
    let failure = host
        .invoke::<AwsProvider>("launch", Phase::Plan, launch_params())
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Denied, "{}", failure.message);
}

#[test]
fn throttling_is_retried_then_reported_unavailable() {
    let calls = Rc::new(Cell::new(0));
    let seen = calls.clone();
    let mut host = host().http_with(EC2, move |_| {
        seen.set(seen.get() + 1);
        Ok(Response::new(
            400,
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors></Response>",
        ))
    });
    let failure = host
        .invoke::<AwsProvider>("launch", Phase::Plan, launch_params())
        .unwrap_err();
    assert_eq!(
        failure.kind,
        FailureKind::Unavailable,
        "{}",
        failure.message
    );
    assert!(failure.retryable);
    assert_eq!(calls.get(), 6);
}

#[test]
fn an_unknown_image_is_not_found() {
    let mut host = host().http(
        EC2,
        400,
        "<Response><Errors><Error><Code>InvalidAMIID.NotFound</Code><Message>The image id '[ami-12345678]' does not exist</Message></Error></Errors></Response>",
    );
    let failure = host
        .invoke::<AwsProvider>("launch", Phase::Plan, launch_params())
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::NotFound, "{}", failure.message);
}
