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
    let _db = seed(&e, &db, 3);
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
    let _db = seed(&e, &db, 3);
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
    let _db = seed(&e, &db, 3);
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
    let _db = seed(&e, &db, 3);
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

#[test]
#[ignore = "needs PostgreSQL 15 (tests/servers/start)"]
fn a_server_that_crashes_during_recovery_fails_the_step_with_its_log() {
    let e = env();
    let dir = workdir("crashes");
    let db = database_of(&dir);
    let _db = seed(&e, &db, 3);
    let backup = pg::base_backup(&e, &dir.join("basebackup"));
    pack(&dir, &backup.dir);
    pg::psql(&e, &db, "create table filler (id int, pad text)");
    pg::psql(
        &e,
        &db,
        "insert into filler select g, repeat('x', 200) from generate_series(1, 300000) g",
    );
    pg::switch_wal(&e);
    let port = free_port();
    workflow(&dir, &e.archive, port, "latest", COUNT);
    let child = std::process::Command::new(super::common::bin())
        .args(["drill", "wf.yaml", "--no-progress"])
        .current_dir(&dir)
        .env("PG_PW", &e.password)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill one of the server's processes as soon as it has them: the checkpointer runs from the start of recovery.
    let data = dir.join(".respawn/pg/data");
    let started = std::time::Instant::now();
    let victim = loop {
        // The server runs with `-D data` relative to its working directory: read the pid file as it is.
        let postmaster = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok());
        if let Some(postmaster) = postmaster
            && let Some(process) = child_named(postmaster, "checkpointer")
        {
            break process;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "recovery never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let _ = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("unavailable")
            && said.contains("its log ends")
            && said.contains("terminated by signal 9"),
        "{said}"
    );
    assert!(!pg::ready(&e, port));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child of `parent` whose command line contains `name` (PostgreSQL titles its processes `postgres: NAME`).
fn child_named(parent: u32, name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
            (ppid == parent && cmdline.contains(name)).then_some(pid)
        })
}

#[test]
#[ignore = "needs PostgreSQL 15 (tests/servers/start)"]
fn a_corrupt_blob_of_the_stored_backup_fails_before_a_server_starts_naming_it() {
    let e = env();
    let dir = workdir("corrupt");
    let db = database_of(&dir);
    let _db = seed(&e, &db, 3);
    let backup = pg::base_backup(&e, &dir.join("basebackup"));
    pack(&dir, &backup.dir);
    // The largest blob of the layout is the backup's layer: flip a byte in the middle.
    let blobs = dir.join("backups/pg/blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|b| b.metadata().unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(layer.path()).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(layer.path(), &bytes).unwrap();
    let digest = format!("sha256:{}", layer.file_name().to_string_lossy());
    let port = free_port();
    workflow(&dir, &e.archive, port, "latest", COUNT);
    let said = failing_drill(&dir);
    assert!(
        said.contains("verification-failed") && said.contains(&digest),
        "{said}"
    );
    assert!(!pg::ready(&e, port));
    let _ = std::fs::remove_dir_all(&dir);
}
