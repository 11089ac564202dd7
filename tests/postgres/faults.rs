//! Bad input and faults: each a clear error naming what is wrong, and nothing reported restored that is not.

use std::path::Path;

use super::common::pg;
use super::common::{free_port, text};
use super::*;

const COUNT: &str =
    "        - { name: count, sql: \"select count(*) from t\", expect: { rows: 1 } }";

fn failing_drill(dir: &Path) -> String {
    let out = run(dir, &["drill", "wf.yaml", "--no-progress"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the drill did not fail: {}",
        text(&out)
    );
    text(&out)
}

/// A copy of the shared archive of the test's own, to break.
fn private_archive(dir: &Path) -> std::path::PathBuf {
    let copy = dir.join("archive");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(env().archive).unwrap().flatten() {
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    copy
}

#[test]
#[ignore = "needs PostgreSQL 15 (tests/servers/start)"]
fn a_gap_in_the_archive_fails_naming_the_first_missing_segment() {
    let e = env();
    let dir = workdir("gap");
    let db = database_of(&dir);
    seed(&e, &db, 3);
    let backup = pg::base_backup(&e, &dir.join("basebackup"));
    pack(&dir, &backup.dir);
    insert(&e, &db, 4, 6);
    let first = pg::switch_wal(&e);
    insert(&e, &db, 7, 9);
    pg::switch_wal(&e);
    let archive = private_archive(&dir);
    std::fs::remove_file(archive.join(&first)).unwrap();
    let port = free_port();
    workflow(&dir, &archive, port, "latest", COUNT);
    let said = failing_drill(&dir);
    assert!(
        said.contains("not-found") && said.contains(&format!("WAL segment {first} is missing")),
        "{said}"
    );
    assert!(
        !pg::ready(&e, port),
        "a server was started on a broken archive"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs PostgreSQL 15 (tests/servers/start)"]
fn a_target_before_the_backup_is_invalid_input() {
    let e = env();
    let dir = workdir("early");
    let db = database_of(&dir);
    seed(&e, &db, 3);
    let before = pg::now_utc(&e);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let backup = pg::base_backup(&e, &dir.join("basebackup"));
    pack(&dir, &backup.dir);
    let port = free_port();
    workflow(
        &dir,
        &e.archive,
        port,
        &format!("{{ time: \"{before}\" }}"),
        COUNT,
    );
    let said = failing_drill(&dir);
    assert!(
        said.contains("invalid-input") && said.contains("is before the base backup started"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs PostgreSQL 15 (tests/servers/start)"]
fn a_base_backup_missing_a_file_fails_before_a_server_starts_naming_it() {
    let e = env();
    let dir = workdir("missing");
    let db = database_of(&dir);
    seed(&e, &db, 3);
    let backup = pg::base_backup(&e, &dir.join("basebackup"));
    // A file the backup's manifest lists, gone before it was stored.
    let victim = std::fs::read_dir(backup.dir.join("global"))
        .unwrap()
        .flatten()
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .find(|name| name.chars().all(|c| c.is_ascii_digit()))
        .expect("a relation file in global/");
    std::fs::remove_file(backup.dir.join("global").join(&victim)).unwrap();
    pack(&dir, &backup.dir);
    let port = free_port();
    workflow(&dir, &e.archive, port, "latest", COUNT);
    let said = failing_drill(&dir);
    assert!(
        said.contains("verification-failed") && said.contains(&format!("global/{victim}")),
        "{said}"
    );
    assert!(!pg::ready(&e, port));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs PostgreSQL 15 (tests/servers/start)"]
fn a_port_in_use_is_a_conflict_and_a_bad_check_quotes_the_server() {
    let e = env();
    let dir = workdir("port");
    let db = database_of(&dir);
    seed(&e, &db, 3);
    let backup = pg::base_backup(&e, &dir.join("basebackup"));
    pack(&dir, &backup.dir);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    workflow(&dir, &e.archive, port, "latest", COUNT);
    let said = failing_drill(&dir);
    assert!(
        said.contains("conflict") && said.contains(&format!("port {port} is already in use")),
        "{said}"
    );
    drop(taken);

    let port = free_port();
    workflow(
        &dir,
        &e.archive,
        port,
        "latest",
        "        - { name: typo, sql: \"selec count(*) from t\", expect: { rows: 1 } }",
    );
    let said = failing_drill(&dir);
    assert!(
        said.contains("check `typo`") && said.contains("syntax error"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
