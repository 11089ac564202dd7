//! report.json from real runs of the binary validates against docs/report.schema.json, and the schema
//! rejects reports that break the contract (so it is not vacuous). Also checks report.md and junit.xml
//! minimally.

mod common;

use std::path::{Path, PathBuf};

use common::{copy_hello, respawn, text};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A private, locked copy of workflows/hello; `edit` may change it before it is locked.
fn hello(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix("respawn-report-schema-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    copy_hello(dir);
    edit(dir);
    let out = respawn(dir, &["lock", "verify.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    tmp
}

/// The compiled schema, with `format` asserted (2020-12 only annotates it by default).
struct Schema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Schema {
    fn load() -> Schema {
        let path = repo().join("docs/report.schema.json");
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .expect("docs/report.schema.json is JSON");
        assert_eq!(
            doc["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "schema declares draft 2020-12"
        );
        let loc = "file:///report.schema.json";
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        compiler.add_resource(loc, doc).unwrap();
        let mut schemas = boon::Schemas::new();
        let index = compiler
            .compile(loc, &mut schemas)
            .unwrap_or_else(|e| panic!("schema does not compile: {e:#}"));
        Schema { schemas, index }
    }

    fn check(&self, report: &Value) -> Result<(), String> {
        self.schemas
            .validate(report, self.index)
            .map_err(|e| format!("{e}"))
    }

    fn assert_valid(&self, report: &Value) {
        if let Err(e) = self.check(report) {
            panic!("{e}\nreport: {report:#}");
        }
    }
}

/// Runs `args` in `dir` expecting `code`, then validates `report/report.json` and checks the other two
/// reports; returns the JSON.
fn run_and_validate(schema: &Schema, dir: &Path, args: &[&str], code: i32) -> Value {
    let mut all = args.to_vec();
    all.extend(["--report-dir", "report"]);
    let out = respawn(dir, &all);
    assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    let report = dir.join("report");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    schema.assert_valid(&json);

    let sha = json["workflow"]["sha256"].as_str().unwrap();
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains(sha),
        "report.md names the workflow sha256 {sha}:\n{md}"
    );
    assert!(md.contains(json["run_id"].as_str().unwrap()), "{md}");

    let junit = std::fs::read_to_string(report.join("junit.xml")).unwrap();
    assert_xml_balanced(&junit);
    json
}

/// Minimal well-formedness without an XML parser: a declaration, one root `testsuites`, and balanced
/// `testsuite` / `testcase` elements.
fn assert_xml_balanced(xml: &str) {
    assert!(xml.starts_with("<?xml "), "{xml}");
    let body = xml[xml.find("?>").expect("declaration ends") + 2..].trim();
    assert!(
        body.starts_with("<testsuites") && body.ends_with("</testsuites>"),
        "one testsuites root: {xml}"
    );
    assert_eq!(body.matches("<testsuites").count(), 1, "{xml}");
    assert_eq!(body.matches("</testsuites>").count(), 1, "{xml}");
    let suites = body.matches("<testsuite ").count();
    assert_eq!(suites, 3, "steps, verify, teardown: {xml}");
    assert_eq!(body.matches("</testsuite>").count(), suites, "{xml}");
    for case in body
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("<testcase "))
    {
        assert!(
            case.ends_with("/>") || case.ends_with("</testcase>"),
            "testcase closes on its line: {case}"
        );
    }
    assert_eq!(
        body.matches('<').count(),
        body.matches('>').count(),
        "{xml}"
    );
}

#[test]
fn a_passing_drill_report_matches_the_schema() {
    let schema = Schema::load();
    let dir = hello(|_| {});
    let json = run_and_validate(&schema, dir.path(), &["drill", "verify.yaml"], 0);
    assert_eq!(json["outcome"], "passed");
    assert_eq!(json["steps"][0]["status"], "succeeded");
    assert!(json["rto_seconds"].is_number());
    // hello restores no data: no source, no RPO.
    assert_eq!(json["recovery_points"], json!([]));
    assert!(json["rpo_seconds"].is_null());
}

#[test]
fn a_failing_drill_report_matches_the_schema() {
    let schema = Schema::load();
    let dir = hello(|d| std::fs::write(d.join("site/index.html"), "<h1>tampered</h1>\n").unwrap());
    let json = run_and_validate(&schema, dir.path(), &["drill", "verify.yaml"], 1);
    assert_eq!(json["outcome"], "failed");
    assert_eq!(json["steps"][0]["status"], "failed");
    assert!(json["steps"][0]["error"]["kind"].is_string(), "{json:#}");
    assert_eq!(json["verifications"][0]["status"], "skipped");
    assert!(json["rto_seconds"].is_null(), "{json:#}");
}

#[test]
fn a_failover_report_matches_the_schema() {
    let schema = Schema::load();
    // An approval gate adds a step with no plugin: no `uses`, no `plugin_digest`, a `note`.
    let dir = hello(|d| {
        let wf = std::fs::read_to_string(d.join("verify.yaml")).unwrap();
        let gated = wf.replace(
            "verify:\n",
            "  - id: switch-traffic\n    needs: [page-digest]\n    approval: \"Send users to the restored site?\"\nverify:\n",
        );
        std::fs::write(d.join("verify.yaml"), gated).unwrap();
    });
    let json = run_and_validate(
        &schema,
        dir.path(),
        &["failover", "verify.yaml", "--yes"],
        0,
    );
    assert_eq!(json["mode"], "failover");
    assert_eq!(json["outcome"], "passed");
    assert_eq!(json["teardown"]["status"], "skipped");
    let gate = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "switch-traffic")
        .expect("gate step reported");
    assert!(gate.get("uses").is_none(), "{gate}");
}

/// A report as the runner writes it, independent of a run.
fn sample() -> Value {
    let digest = "a".repeat(64);
    json!({
        "run_id": "20260501T120000-abcdef",
        "mode": "drill",
        "outcome": "failed",
        "workflow": {"name": "hello", "version": "0.1.0", "sha256": digest, "file": "verify.yaml"},
        "params": {"page": "index.html"},
        "plugins": {"check": {"source": "builtin:check@0.1", "sha256": digest}},
        "started_at": "2026-05-01T12:00:00.000Z",
        "finished_at": "2026-05-01T12:00:01.250Z",
        "rto_seconds": null,
        "rpo_seconds": 3600.0,
        "recovery_points": [
            {"step": "page-digest", "recovery_point": "2026-05-01T13:00:00+02:00", "rpo_seconds": 3600.0,
             "from": "output"},
            {"step": "restore-site", "recovery_point": "2026-05-01T11:30:00Z", "rpo_seconds": 1800.0,
             "from": "image"}
        ],
        "steps": [{
            "id": "page-digest", "uses": "check/digest", "plugin_digest": digest,
            "status": "failed", "attempts": 1,
            "started_at": "2026-05-01T12:00:00.100Z", "finished_at": "2026-05-01T12:00:00.200Z",
            "error": {"kind": "verification-failed", "message": "sha256 mismatch"}
        }],
        "verifications": [{
            "id": "page-still-intact", "uses": "check/digest", "plugin_digest": digest,
            "status": "skipped", "attempts": 0, "note": "a needed step failed"
        }],
        "teardown": {"status": "succeeded", "steps": []},
        "journal_head": null
    })
}

#[test]
fn the_schema_rejects_broken_reports() {
    let schema = Schema::load();
    schema.assert_valid(&sample());
    // A report written before data sources were listed, or of a run that restored none.
    let mut older = sample();
    older.as_object_mut().unwrap().remove("recovery_points");
    schema.assert_valid(&older);
    older["recovery_points"] = json!([]);
    older["rpo_seconds"] = Value::Null;
    schema.assert_valid(&older);

    type Mutation = fn(&mut Value);
    let cases: &[(&str, Mutation)] = &[
        ("unknown outcome", |r| r["outcome"] = json!("maybe")),
        ("unknown mode", |r| r["mode"] = json!("rehearsal")),
        ("unknown step status", |r| {
            r["steps"][0]["status"] = json!("done")
        }),
        ("unknown verification status", |r| {
            r["verifications"][0]["status"] = json!("ok")
        }),
        ("missing run_id", |r| {
            r.as_object_mut().unwrap().remove("run_id");
        }),
        ("missing journal_head", |r| {
            r.as_object_mut().unwrap().remove("journal_head");
        }),
        ("missing step attempts", |r| {
            r["steps"][0].as_object_mut().unwrap().remove("attempts");
        }),
        ("unknown top-level field", |r| r["extra"] = json!(1)),
        ("unknown step field", |r| {
            r["steps"][0]["output"] = json!({})
        }),
        ("short workflow sha256", |r| {
            r["workflow"]["sha256"] = json!("abc123")
        }),
        ("uppercase plugin sha256", |r| {
            r["plugins"]["check"]["sha256"] = json!("A".repeat(64))
        }),
        ("plugin without source", |r| {
            r["plugins"]["check"]
                .as_object_mut()
                .unwrap()
                .remove("source");
        }),
        ("timestamp not RFC 3339", |r| {
            r["started_at"] = json!("yesterday")
        }),
        ("step timestamp not RFC 3339", |r| {
            r["steps"][0]["finished_at"] = json!("12:00")
        }),
        ("negative rto", |r| r["rto_seconds"] = json!(-1.0)),
        ("rpo as string", |r| r["rpo_seconds"] = json!("5s")),
        ("fractional attempts", |r| {
            r["steps"][0]["attempts"] = json!(1.5)
        }),
        ("negative attempts", |r| {
            r["steps"][0]["attempts"] = json!(-1)
        }),
        ("error without kind", |r| {
            r["steps"][0]["error"]
                .as_object_mut()
                .unwrap()
                .remove("kind");
        }),
        ("optional field as null", |r| {
            r["steps"][0]["note"] = Value::Null
        }),
        ("unknown teardown status", |r| {
            r["teardown"]["status"] = json!("cancelled")
        }),
        ("params not an object", |r| r["params"] = json!([])),
        ("recovery point of unknown origin", |r| {
            r["recovery_points"][0]["from"] = json!("guess")
        }),
        ("recovery point not RFC 3339", |r| {
            r["recovery_points"][1]["recovery_point"] = json!("2026-05-01 11:30")
        }),
        ("recovery point without its step", |r| {
            r["recovery_points"][0]
                .as_object_mut()
                .unwrap()
                .remove("step");
        }),
        ("recovery point without rpo", |r| {
            r["recovery_points"][1]
                .as_object_mut()
                .unwrap()
                .remove("rpo_seconds");
        }),
        ("negative source rpo", |r| {
            r["recovery_points"][0]["rpo_seconds"] = json!(-5.0)
        }),
        ("null source rpo", |r| {
            r["recovery_points"][0]["rpo_seconds"] = Value::Null
        }),
        ("unknown recovery point field", |r| {
            r["recovery_points"][0]["image"] = json!("site:v1")
        }),
        ("recovery points not a list", |r| {
            r["recovery_points"] = json!({"page-digest": 3600.0})
        }),
    ];
    for (what, mutate) in cases {
        let mut r = sample();
        mutate(&mut r);
        assert!(
            schema.check(&r).is_err(),
            "schema accepts a report with {what}: {r:#}"
        );
    }
}
