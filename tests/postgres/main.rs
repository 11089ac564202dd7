//! The `postgres` provider end to end against a real PostgreSQL 15 that `tests/servers/start` runs on 127.0.0.1
//! with WAL archiving: point-in-time restores of real base backups, checks, faults, a crash during replay, and
//! the promotion of a streaming standby. Each test has a database and directories of its own.

#[path = "../common/mod.rs"]
mod common;
mod faults;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::pg::{self, PgEnv};
use common::{bin, free_port, run_id_of, text};

fn env() -> PgEnv {
    pg::pg_env()
        .expect("RESPAWN_TEST_PG_* unset: run tests/servers/start and source target/servers/env")
}

/// A fresh workflow directory the server user can enter.
fn workdir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("respawn-pg-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    pg::ensure_enterable(&dir);
    dir
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env("PG_PW", env().password)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Packs a base backup as the OCI layout `backups/pg` tagged `v1` in `dir`.
fn pack(dir: &Path, backup: &Path) {
    let out = Command::new(bin())
        .args(["image", "pack"])
        .arg(backup)
        .arg("--to")
        .arg(format!("file://{}/backups/pg", dir.display()))
        .args(["--tag", "v1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "image pack: {}", text(&out));
}

/// A workflow restoring `backups/pg:v1` with the WAL of `archive` to `target` on `port`, checked by `checks`.
fn workflow(dir: &Path, archive: &Path, port: u16, target: &str, checks: &str) {
    let e = env();
    let bin_dir = e.bin.display().to_string();
    let yaml = format!(
        r#"respawn: 1
name: pg-restore
version: 1.0.0
secrets:
  PG_PW: {{ env: PG_PW }}
stores:
  backups: file://backups
  wal: file://{archive}
plugins:
  postgres: builtin:postgres@0.1
steps:
  - id: db
    uses: postgres/restore
    with:
      backup: {{ store: backups, prefix: pg, tag: v1 }}
      wal: {{ store: wal }}
      data_dir: .respawn/pg/data
      port: {port}
      target: {target}
      bindir: {bin_dir}
      wait_s: 120
    grants:
      stores: {{ backups: read, wal: read }}
      files: {{ .respawn/pg: rw }}
      exec:
        - {{ program: {bin_dir}/postgres, user: postgres }}
        - {{ program: {bin_dir}/psql, user: postgres }}
        - {{ program: {bin_dir}/pg_verifybackup, user: postgres }}
      http: ["tcp://127.0.0.1:{port}"]
    timeout: 5m
verify:
  - id: rows
    uses: postgres/check
    with:
      connection: {{ host: 127.0.0.1, port: {port}, user: {user}, password_secret: PG_PW, database: {db} }}
      bindir: {bin_dir}
      amcheck: true
      checks:
{checks}
    grants:
      secrets: [PG_PW]
      exec: [{bin_dir}/psql, {bin_dir}/pg_amcheck]
"#,
        archive = archive.display(),
        user = e.user,
        db = database_of(dir),
    );
    std::fs::create_dir_all(dir.join(".respawn/pg")).unwrap();
    std::fs::write(dir.join("wf.yaml"), yaml).unwrap();
    let out = run(dir, &["lock", "wf.yaml"]);
    assert!(out.status.success(), "lock: {}", text(&out));
}

/// The test's database: named after its directory.
fn database_of(dir: &Path) -> String {
    dir.file_name()
        .unwrap()
        .to_string_lossy()
        .replace(['-', '.'], "_")
}

/// A test's database in the shared source cluster, dropped when the test ends however it ends: every base
/// backup copies the whole cluster, so leftovers would slow every later test.
struct TestDb {
    env: PgEnv,
    name: String,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = self
            .env
            .client("psql")
            .args(["-X", "-q", "-d", &self.env.conninfo("postgres"), "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// A database with rows 1..=`n` in table `t`, each with the time it was committed.
fn seed(e: &PgEnv, db: &str, n: u32) -> TestDb {
    pg::create_db(e, db);
    pg::psql(
        e,
        db,
        "create table t (id int primary key, at timestamptz default clock_timestamp())",
    );
    insert(e, db, 1, n);
    TestDb {
        env: e.clone(),
        name: db.to_string(),
    }
}

fn insert(e: &PgEnv, db: &str, from: u32, to: u32) {
    pg::psql(
        e,
        db,
        &format!("insert into t (id) select generate_series({from}, {to})"),
    );
}

#[test]
#[ignore = "needs PostgreSQL 15 (tests/servers/start)"]
fn a_point_in_time_restore_brings_back_exactly_the_rows_committed_before_the_target() {
    let e = env();
    let dir = workdir("pitr");
    let db = database_of(&dir);
    let _db = seed(&e, &db, 3);
    let backup = pg::base_backup(&e, &dir.join("basebackup"));
    pack(&dir, &backup.dir);
    insert(&e, &db, 4, 6);
    let between = pg::now_utc(&e);
    std::thread::sleep(std::time::Duration::from_millis(200));
    insert(&e, &db, 7, 9);
    pg::switch_wal(&e);

    let port = free_port();
    workflow(
        &dir,
        &e.archive,
        port,
        &format!("{{ time: \"{between}\" }}"),
        "        - { name: rows-before-target, sql: \"select count(*) from t\", expect: { value: \"6\" } }\n\
         \x20       - { name: newest, sql: \"select max(id) from t\", expect: { value: \"6\" } }",
    );
    let plan = run(&dir, &["plan", "wf.yaml"]);
    assert!(plan.status.success(), "plan: {}", text(&plan));
    assert!(
        !dir.join(".respawn/pg/data").exists(),
        "plan restored something"
    );

    let out = run(&dir, &["drill", "wf.yaml", "--keep", "--no-progress"]);
    assert!(out.status.success(), "drill: {}", text(&out));
    let run_id = run_id_of(&out);
    assert_eq!(pg::psql_port(&e, port, &db, "select count(*) from t"), "6");
    // Writable: recovery ended and the server was promoted.
    pg::psql_port(&e, port, &db, "insert into t (id) values (100)");
    // The recovery point is the last transaction replayed: the insert of rows 4..6, just before the target.
    let last = pg::psql_port(
        &e,
        port,
        &db,
        "select to_char(max(at) at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') from t where id <= 6",
    );
    let state = dir.join(".respawn/state");
    assert!(
        journal_mentions(&state, &format!("\"recovery_point\":\"{last}")),
        "the journaled recovery_point is not the last replayed commit ({last})"
    );

    // The report's RPO is measured from it: run start minus the last replayed commit.
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!(".respawn/runs/{run_id}/report.json"))).unwrap(),
    )
    .unwrap();
    let point = &report["recovery_points"][0];
    assert_eq!(point["step"], "db", "{report}");
    assert!(
        point["recovery_point"].as_str().unwrap().starts_with(&last),
        "{point}"
    );
    assert_eq!(report["rpo_seconds"], point["rpo_seconds"]);
    assert!(point["rpo_seconds"].as_f64().unwrap() > 0.0);

    // What the restore used, by digest: the base backup's image (the host), its label's start LSN and the WAL
    // segments staged (the plugin), each with the URL of the store it came from.
    let used: Vec<&serde_json::Value> = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["step"] == "db")
        .collect();
    let kinds: Vec<&str> = used.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["image", "database-backup", "wal-range"], "{used:?}");
    assert!(used[0]["digest"].as_str().unwrap().starts_with("sha256:"));
    let label = used[1]["digest"].as_str().unwrap();
    assert!(
        label.starts_with("backup_label START WAL LOCATION: ") && label.contains('/'),
        "{label}"
    );
    assert_eq!(
        used[1]["source"],
        serde_json::json!({
            "url": format!("file://{}", dir.join("backups").display()),
            "prefix": "pg",
            "tag": "v1"
        })
    );
    let range = used[2]["digest"].as_str().unwrap();
    let (first, last) = range.split_once("..").expect("FIRST..LAST");
    assert!(
        first.len() == 24 && last.len() == 24 && first <= last,
        "{range}"
    );
    assert_eq!(
        used[2]["source"]["url"],
        format!("file://{}", e.archive.display()).as_str()
    );

    let destroyed = run(&dir, &["destroy", &run_id, "--yes", "--no-progress"]);
    assert!(destroyed.status.success(), "destroy: {}", text(&destroyed));
    assert!(!pg::ready(&e, port), "the restored server still runs");
    assert!(!dir.join(".respawn/pg/data").exists());
    assert!(!dir.join(".respawn/pg/data.wal").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

fn journal_mentions(dir: &Path, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            journal_mentions(&path, needle)
        } else {
            std::fs::read_to_string(&path).is_ok_and(|t| t.contains(needle))
        }
    })
}

#[test]
#[ignore = "needs PostgreSQL 15 (tests/servers/start)"]
fn a_runner_killed_during_replay_resumes_and_finishes_the_restore() {
    let e = env();
    let dir = workdir("crash");
    let db = database_of(&dir);
    let _db = seed(&e, &db, 3);
    let backup = pg::base_backup(&e, &dir.join("basebackup"));
    pack(&dir, &backup.dir);
    // Enough WAL after the backup that replaying it takes a moment.
    pg::psql(&e, &db, "create table filler (id int, pad text)");
    pg::psql(
        &e,
        &db,
        "insert into filler select g, repeat('x', 200) from generate_series(1, 100000) g",
    );
    insert(&e, &db, 4, 6);
    pg::switch_wal(&e);
    let port = free_port();
    workflow(&dir, &e.archive, port, "latest", COUNT_SIX);
    let mut child = Command::new(bin())
        .args(["drill", "wf.yaml", "--keep", "--no-progress"])
        .current_dir(&dir)
        .env("PG_PW", &e.password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the runner once the server has started replaying.
    let log = dir.join(".respawn/pg/data/log/respawn.log");
    let started = std::time::Instant::now();
    while !log.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120)
                && child.try_wait().unwrap().is_none(),
            "the server never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let run_id = run_id_of(&out);

    let resumed = run(&dir, &["resume", &run_id, "--takeover", "--no-progress"]);
    assert!(resumed.status.success(), "resume: {}", text(&resumed));
    assert_eq!(pg::psql_port(&e, port, &db, "select count(*) from t"), "6");
    let destroyed = run(&dir, &["destroy", &run_id, "--yes", "--no-progress"]);
    assert!(destroyed.status.success(), "destroy: {}", text(&destroyed));
    assert!(!pg::ready(&e, port));
    let _ = std::fs::remove_dir_all(&dir);
}

const COUNT_SIX: &str =
    "        - { name: rows, sql: \"select count(*) from t\", expect: { value: \"6\" } }";

#[test]
#[ignore = "needs PostgreSQL 15 (tests/servers/start)"]
fn promote_makes_a_standby_writable_and_fences_the_old_primary_until_destroy() {
    let e = env();
    let dir = workdir("promote");
    let db = database_of(&dir);
    let _db = seed(&e, &db, 3);
    let standby = pg::standby(&e, &dir.join("standby"), free_port());
    // The old primary to fence: a server of the test's own (the shared source must stay writable for the
    // others), made a primary by promoting a second standby by hand.
    let old = pg::standby(&e, &dir.join("old-primary"), free_port());
    old.psql(&e, "postgres", "select pg_promote(true, 60)");
    assert_eq!(old.psql(&e, "postgres", "select pg_is_in_recovery()"), "f");
    insert(&e, &db, 4, 6);
    standby.wait_caught_up(&e);

    let bin_dir = e.bin.display().to_string();
    let conn = |port: u16| {
        format!(
            "{{ host: 127.0.0.1, port: {port}, user: {}, password_secret: PG_PW, database: {db} }}",
            e.user
        )
    };
    let yaml = format!(
        r#"respawn: 1
name: pg-promote
version: 1.0.0
secrets:
  PG_PW: {{ env: PG_PW }}
plugins:
  postgres: builtin:postgres@0.1
steps:
  - id: db
    uses: postgres/promote
    with:
      standby: {standby}
      old_primary: {old}
      bindir: {bin_dir}
    grants: {{ secrets: [PG_PW], exec: [{bin_dir}/psql] }}
verify:
  - id: writable
    uses: postgres/check
    with:
      connection: {standby}
      bindir: {bin_dir}
      checks:
        - {{ name: primary, sql: "select pg_is_in_recovery()", expect: {{ value: "f" }} }}
        - {{ name: rows, sql: "select count(*) from t", expect: {{ value: "6" }} }}
    grants: {{ secrets: [PG_PW], exec: [{bin_dir}/psql] }}
"#,
        standby = conn(standby.port),
        old = conn(old.port),
    );
    std::fs::write(dir.join("wf.yaml"), yaml).unwrap();
    assert!(run(&dir, &["lock", "wf.yaml"]).status.success());
    let out = run(&dir, &["drill", "wf.yaml", "--keep", "--no-progress"]);
    assert!(out.status.success(), "drill: {}", text(&out));
    standby.psql(&e, &db, "insert into t (id) values (7)");
    assert_eq!(
        old.psql(&e, "postgres", "show default_transaction_read_only"),
        "on"
    );
    assert!(journal_mentions(
        &dir.join(".respawn/state"),
        "\"old_primary\":\"read-only\""
    ));
    assert!(journal_mentions(
        &dir.join(".respawn/state"),
        "\"recovery_point\":\""
    ));

    let destroyed = run(
        &dir,
        &["destroy", &run_id_of(&out), "--yes", "--no-progress"],
    );
    assert!(destroyed.status.success(), "destroy: {}", text(&destroyed));
    assert_eq!(
        old.psql(&e, "postgres", "show default_transaction_read_only"),
        "off"
    );
    drop((standby, old));
    let _ = std::fs::remove_dir_all(&dir);
}
