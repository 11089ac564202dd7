//! The third quickstart, `bash workflows/database/run`, end to end against the PostgreSQL 15 source cluster that
//! `tests/servers/start` runs (the script reuses it and leaves it running): the shop comes back with its catalog
//! database recovered to just before the script's bad migration, verified, and torn down, leaving no server, port or
//! data directory behind. The script uses the fixed database `catalog` of the source cluster, so this test must not
//! run beside a manual `workflows/database/run`. Needs root, like the script (postgres runs as the OS user
//! `postgres`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::pg::{self, is_root};
use common::{bin, free_port, listening, process_running, text};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Seconds since the Unix epoch of an RFC 3339 time with `Z` or a `±HH:MM` offset.
fn epoch(time: &str) -> f64 {
    let (local, offset) = match time.strip_suffix(['Z', 'z']) {
        Some(t) => (t, 0.0),
        None => {
            let (t, off) = time.split_at(time.len() - 6);
            let sign = match &off[..1] {
                "+" => 1.0,
                "-" => -1.0,
                _ => panic!("no offset in {time}"),
            };
            let hours: f64 = off[1..3].parse().unwrap();
            let minutes: f64 = off[4..6].parse().unwrap();
            (t, sign * (hours * 3600.0 + minutes * 60.0))
        }
    };
    let utc =
        humantime::parse_rfc3339(&format!("{local}Z")).unwrap_or_else(|e| panic!("{time}: {e}"));
    let since = utc.duration_since(std::time::UNIX_EPOCH).unwrap();
    since.as_secs_f64() - offset
}

/// The time the script printed after `key` (`target_time=2026-…Z;`, `base backup by 2026-…Z;`).
fn said(out: &str, key: &str) -> f64 {
    let rest = out
        .split(key)
        .nth(1)
        .unwrap_or_else(|| panic!("the script did not say `{key}`: {out}"));
    let end = rest
        .find(|c: char| c == ';' || c.is_whitespace())
        .unwrap_or(rest.len());
    epoch(&rest[..end])
}

#[test]
#[ignore = "needs PostgreSQL 15 (tests/servers/start)"]
fn the_database_quickstart_recovers_the_catalog_to_before_the_bad_migration_and_leaves_nothing_behind()
 {
    let e = pg::pg_env()
        .expect("RESPAWN_TEST_PG_* unset: run tests/servers/start and source target/servers/env");
    assert!(
        is_root(),
        "the database quickstart runs postgres as the OS user postgres: run the tests as root"
    );
    assert_eq!(
        e.archive.canonicalize().ok(),
        root()
            .join("target/servers/pg/wal-archive")
            .canonicalize()
            .ok(),
        "workflows/database/recover.yaml's wal store is tests/servers' archive"
    );
    let scratch = std::env::temp_dir().join(format!("respawn-database-qs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let (web_port, db_port) = (free_port(), free_port());
    let region = root().join("workflows/database/.respawn/regions/eu-west");
    assert!(
        !region.exists(),
        "{} is left over from an earlier run: destroy that run or remove it",
        region.display()
    );

    let state = format!("file://{}", scratch.join("state").display());
    let report_dir = scratch.join("report");
    let out = Command::new("bash")
        .arg(root().join("workflows/database/run"))
        .args(["--no-progress", "--state", &state, "--report-dir"])
        .arg(&report_dir)
        .args(["--param", &format!("port={web_port}")])
        .args(["--param", &format!("db_port={db_port}")])
        .env("RESPAWN", bin())
        .env_remove("CATALOG_DB_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("outcome   Passed"), "{t}");
    assert!(
        t.contains("servers/pg-source: reusing the source cluster"),
        "{t}"
    );

    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(r["outcome"], "passed", "{r}");
    let ids_and_statuses = |key: &str| -> Vec<(String, String)> {
        r[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in {r}"))
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let ok = |ids: &[&str]| -> Vec<(String, String)> {
        ids.iter()
            .map(|id| (id.to_string(), "succeeded".to_string()))
            .collect()
    };
    assert_eq!(
        ids_and_statuses("steps"),
        ok(&["site", "catalog-db", "web"]),
        "{r}"
    );
    assert_eq!(
        ids_and_statuses("verifications"),
        ok(&["catalog", "homepage"]),
        "{r}"
    );
    assert_eq!(r["teardown"]["status"], "succeeded", "{r}");

    // The catalog's recovery point: the last commit replayed, after the base backup (the WAL was replayed) and no
    // later than the target time, which the bad migration came after.
    let catalog = r["recovery_points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["step"] == "catalog-db")
        .unwrap_or_else(|| panic!("no recovery point of catalog-db in {r}"));
    assert_eq!(catalog["from"], "output", "{r}");
    let point = epoch(catalog["recovery_point"].as_str().unwrap());
    let (backup, target, bad) = (
        said(&t, "base backup by "),
        said(&t, "target_time="),
        said(&t, "committed by "),
    );
    assert!(
        backup < point && point <= target && target < bad,
        "recovery point {catalog} not between the base backup ({backup}) and the target time ({target}), \
         before the bad migration ({bad}): {t}"
    );

    // Nothing left behind.
    assert!(
        !listening(db_port),
        "the restored database still listens on {db_port}"
    );
    assert!(
        !listening(web_port),
        "the web service still listens on {web_port}"
    );
    assert!(
        !process_running("bin/postgres -D catalog-db"),
        "a restored postgres still runs"
    );
    assert!(
        !region.exists(),
        "{} (the site, the data directory or its staged WAL) is left behind",
        region.display()
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
