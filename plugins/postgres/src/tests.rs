//! Parsing what users write and what servers say, natively.

use crate::{Target, rfc3339_seconds, server_time_to_rfc3339};

#[test]
fn targets_parse_or_say_what_was_expected() {
    let t: Target = serde_json::from_str(r#""latest""#).unwrap();
    assert_eq!(t, Target::Latest);
    let t: Target = serde_json::from_str(r#"{"time":"2026-12-02T07:30:00Z"}"#).unwrap();
    assert_eq!(
        t.settings(),
        ["recovery_target_time=2026-12-02T07:30:00+00:00"]
    );
    assert!(t.check().is_ok());
    let t: Target = serde_json::from_str(r#"{"lsn":"0/3000060"}"#).unwrap();
    assert!(t.check().is_ok());
    for bad in [
        r#""earliest""#,
        r#"{"time":"x","lsn":"0/1"}"#,
        r#"{"when":"now"}"#,
    ] {
        let e = serde_json::from_str::<Target>(bad).unwrap_err().to_string();
        assert!(e.contains("target: expected"), "{bad}: {e}");
    }
    let t: Target = serde_json::from_str(r#"{"time":"yesterday"}"#).unwrap();
    assert!(t.check().unwrap_err().message.starts_with("target.time"));
}

#[test]
fn server_times_become_rfc3339() {
    assert_eq!(
        server_time_to_rfc3339("2026-12-02 07:30:00.123456+00"),
        "2026-12-02T07:30:00.123456+00:00"
    );
    assert_eq!(
        server_time_to_rfc3339("2026-12-02 07:30:00 UTC"),
        "2026-12-02T07:30:00Z"
    );
    assert_eq!(
        server_time_to_rfc3339("2026-12-02 09:30:00+05:30"),
        "2026-12-02T09:30:00+05:30"
    );
    assert_eq!(
        rfc3339_seconds(&server_time_to_rfc3339("2026-12-02 07:30:00.5+00")),
        rfc3339_seconds("2026-12-02T07:30:00Z")
    );
}
