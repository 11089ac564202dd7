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

const RDS: &str = "https://rds.us-west-2.amazonaws.com/";

fn db_instance(status: &str, replica_of: Option<&str>) -> String {
    let source = replica_of
        .map(|s| {
            format!(
                "<ReadReplicaSourceDBInstanceIdentifier>{s}</ReadReplicaSourceDBInstanceIdentifier>"
            )
        })
        .unwrap_or_default();
    format!(
        "<DescribeDBInstancesResponse xmlns=\"http://rds.amazonaws.com/doc/2014-10-31/\"><DescribeDBInstancesResult>\
         <DBInstances><DBInstance><DBInstanceIdentifier>shop-replica</DBInstanceIdentifier>\
         <DBInstanceStatus>{status}</DBInstanceStatus><Engine>postgres</Engine>\
         <Endpoint><Address>shop-replica.abc.us-west-2.rds.amazonaws.com</Address><Port>5432</Port></Endpoint>\
         {source}</DBInstance></DBInstances></DescribeDBInstancesResult></DescribeDBInstancesResponse>"
    )
}

/// moto keeps a promoted replica's source, so the promotion as AWS does it (modifying, then available with the
/// source gone) is shown here.
#[test]
fn a_replica_is_promoted_once_waited_for_and_left_in_place_by_destroy() {
    let promoted = Rc::new(Cell::new(false));
    let polls = Rc::new(Cell::new(0));
    let (p, n) = (promoted.clone(), polls.clone());
    let source = "arn:aws:rds:us-east-1:123456789012:db:shop";
    let mut host = host().http_with(RDS, move |call| {
        let body = String::from_utf8_lossy(call.body.as_deref().unwrap_or_default()).to_string();
        if body.contains("Action=PromoteReadReplica") {
            assert!(!p.get(), "promoted twice");
            p.set(true);
            return Ok(Response::new(200, "<PromoteReadReplicaResponse/>"));
        }
        assert!(body.contains("Action=DescribeDBInstances"), "{body}");
        if !p.get() {
            return Ok(Response::new(200, db_instance("available", Some(source))));
        }
        n.set(n.get() + 1);
        Ok(Response::new(
            200,
            match n.get() {
                1 => db_instance("modifying", Some(source)),
                2 => db_instance("available", Some(source)),
                _ => db_instance("available", None),
            },
        ))
    });
    let params =
        json!({ "region": "us-west-2", "mode": "promote-replica", "identifier": "shop-replica" });
    let out = host
        .invoke::<AwsProvider>("rds-restore", Phase::Apply, params.clone())
        .unwrap();
    assert!(promoted.get());
    assert_eq!(polls.get(), 3, "done before the source was gone");
    assert_eq!(
        out["endpoint"],
        "shop-replica.abc.us-west-2.rds.amazonaws.com"
    );
    assert_eq!(out["port"], 5432);
    let point = out["recovery_point"].as_str().unwrap();
    assert!(
        respawn_plugin_sdk::time::rfc3339_seconds(point).is_some(),
        "{point}"
    );
    assert_eq!(host.state_get("recovery_point"), Some(point));

    // Applied again (a resumed step): no second promotion, the same recovery point.
    let again = host
        .invoke::<AwsProvider>("rds-restore", Phase::Apply, params.clone())
        .unwrap();
    assert_eq!(again["recovery_point"], point);

    let destroyed = host
        .invoke::<AwsProvider>("rds-restore", Phase::Destroy, params)
        .unwrap();
    assert_eq!(destroyed["left"], "shop-replica");
    assert!(
        host.log_messages()
            .iter()
            .any(|m| m.contains("a promotion cannot be undone")),
        "{:?}",
        host.log_messages()
    );
}
