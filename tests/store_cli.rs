//! `respawn store put|get|ls|rm` through the built binary, as PostgreSQL's `archive_command` and
//! `restore_command` use it: quiet success, no overwrite of different bytes, no partial files, exit 1 for a
//! missing object, 2 for a bad URL. The S3 round trip needs moto (`tests/servers/start`).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{bin, text};

/// `respawn ARGS` in `dir`, stdin closed.
fn respawn(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `respawn ARGS` in `dir` with `input` on stdin (written from a thread; a command that stops reading early is
/// fine).
fn respawn_stdin(dir: &Path, args: &[&str], input: Vec<u8>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Deterministic bytes that do not compress or repeat in short periods.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_quiet_success(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(0), "{what}: {}", text(out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{what} prints nothing on success: {}",
        text(out)
    );
}

#[test]
fn put_get_ls_rm_round_trip_on_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let archive = format!("file://{}/archive", dir.display());
    let seg = format!("{archive}/000000010000000000000003");
    std::fs::write(dir.join("segment"), b"wal bytes\n").unwrap();

    let out = respawn(dir, &["store", "put", &seg, "--file", "segment"]);
    assert_quiet_success(&out, "put");
    assert_eq!(
        std::fs::read(dir.join("archive/000000010000000000000003")).unwrap(),
        b"wal bytes\n"
    );
    // A relative file:// URL is relative to the working directory; `--file -` is stdin.
    let out = respawn_stdin(
        dir,
        &["store", "put", "file://archive/nested/other", "--file", "-"],
        b"x".to_vec(),
    );
    assert_quiet_success(&out, "put from stdin");

    let out = respawn(dir, &["store", "ls", &archive]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = listing.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{listing}");
    assert_eq!(
        lines[0][..2],
        ["000000010000000000000003", "10"],
        "{listing}"
    );
    assert_eq!(lines[1][..2], ["nested/other", "1"], "{listing}");
    let modified = lines[0][2];
    assert!(
        modified.len() == 20 && modified.as_bytes()[10] == b'T' && modified.ends_with('Z'),
        "RFC 3339: {modified}"
    );
    let out = respawn(dir, &["store", "ls", "file://archive", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["key"], "000000010000000000000003", "{json}");
    assert_eq!(json[0]["size"], 10, "{json}");
    assert_eq!(json[0]["last_modified"], modified, "{json}");
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");

    let out = respawn(dir, &["store", "get", &seg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(out.stdout, b"wal bytes\n");
    assert!(out.stderr.is_empty(), "{}", text(&out));
    std::fs::create_dir(dir.join("pg_wal")).unwrap();
    let out = respawn(
        dir,
        &["store", "get", &seg, "--file", "pg_wal/RECOVERYXLOG"],
    );
    assert_quiet_success(&out, "get --file");
    assert_eq!(
        std::fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap(),
        b"wal bytes\n"
    );
    assert_eq!(names(&dir.join("pg_wal")), ["RECOVERYXLOG"]);

    let out = respawn(dir, &["store", "rm", &seg]);
    assert_quiet_success(&out, "rm");
    let out = respawn(dir, &["store", "rm", &seg]);
    assert_quiet_success(&out, "rm of a missing object");
    let out = respawn(dir, &["store", "rm", "file://archive/nested/other"]);
    assert_quiet_success(&out, "rm");
    let out = respawn(dir, &["store", "ls", &archive]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(
        dir.join("archive").is_dir(),
        "the store's directory stays when its last object goes"
    );
}

#[test]
fn put_refuses_different_content_and_accepts_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seg = format!("file://{}/archive/000000010000000000000001", dir.display());
    std::fs::write(dir.join("a"), b"first").unwrap();
    std::fs::write(dir.join("b"), b"other").unwrap();
    assert_quiet_success(&respawn(dir, &["store", "put", &seg, "--file", "a"]), "put");
    assert_quiet_success(
        &respawn(dir, &["store", "put", &seg, "--file", "a"]),
        "put of identical bytes",
    );
    assert_quiet_success(
        &respawn_stdin(dir, &["store", "put", &seg], b"first".to_vec()),
        "put of identical bytes from stdin",
    );
    for (how, out) in [
        (
            "--file",
            respawn(dir, &["store", "put", &seg, "--file", "b"]),
        ),
        (
            "stdin",
            respawn_stdin(dir, &["store", "put", &seg], b"firs".to_vec()),
        ),
        (
            "stdin",
            respawn_stdin(dir, &["store", "put", &seg], b"first!".to_vec()),
        ),
    ] {
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{how}: {t}");
        assert!(
            t.contains(&seg) && t.contains("different content"),
            "{how}: {t}"
        );
    }
    let stored = dir.join("archive/000000010000000000000001");
    assert_eq!(std::fs::read(&stored).unwrap(), b"first");
    assert_quiet_success(
        &respawn(dir, &["store", "put", &seg, "--file", "b", "--overwrite"]),
        "put --overwrite",
    );
    assert_eq!(std::fs::read(&stored).unwrap(), b"other");
    assert_eq!(
        names(&dir.join("archive")),
        ["000000010000000000000001"],
        "no staging file is left"
    );
}

#[test]
fn get_of_a_missing_object_exits_1_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("archive")).unwrap();
    std::fs::create_dir(dir.join("pg_wal")).unwrap();
    for store in ["file://archive", "file://never-made"] {
        let url = format!("{store}/000000010000000000000009");
        let out = respawn(dir, &["store", "get", &url]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&url) && err.contains("no such object"),
            "{err}"
        );
        let out = respawn(
            dir,
            &["store", "get", &url, "--file", "pg_wal/RECOVERYXLOG"],
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(names(&dir.join("pg_wal")).is_empty());
    }
    assert!(
        !dir.join("never-made").exists(),
        "get creates no store directory"
    );
}

#[test]
fn get_to_a_file_leaves_no_partial_file_when_it_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("segment"), noise(3 << 20, 1)).unwrap();
    let seg = "file://archive/000000010000000000000004";
    assert_quiet_success(
        &respawn(dir, &["store", "put", seg, "--file", "segment"]),
        "put",
    );
    // The bytes arrive, but they cannot take the destination's name (a directory is there): the partial copy
    // beside it goes too.
    std::fs::create_dir_all(dir.join("restore/dest")).unwrap();
    let out = respawn(dir, &["store", "get", seg, "--file", "restore/dest"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(seg), "{}", text(&out));
    assert_eq!(names(&dir.join("restore")), ["dest"]);
    assert!(names(&dir.join("restore/dest")).is_empty());
    // A destination directory that does not exist: nothing is made.
    let out = respawn(
        dir,
        &["store", "get", seg, "--file", "nowhere/RECOVERYXLOG"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!dir.join("nowhere").exists());
}

#[test]
fn twenty_mib_through_stdin_and_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let url = "file://archive/big";
    let data = noise(20 << 20, 7);
    let out = respawn_stdin(dir, &["store", "put", url], data.clone());
    assert_quiet_success(&out, "put of 20 MiB from stdin");
    let out = respawn(dir, &["store", "ls", "file://archive"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("big\t20971520\t"),
        "{}",
        text(&out)
    );
    let out = respawn(dir, &["store", "get", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout == data, "20 MiB come back byte for byte");

    // The same bytes again are fine; one byte different near the end is not, and changes nothing.
    assert_quiet_success(
        &respawn_stdin(dir, &["store", "put", url], data.clone()),
        "put of identical 20 MiB",
    );
    let mut changed = data.clone();
    *changed.last_mut().unwrap() ^= 1;
    let out = respawn_stdin(dir, &["store", "put", url], changed.clone());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(std::fs::read(dir.join("archive/big")).unwrap() == data);
    assert_quiet_success(
        &respawn_stdin(dir, &["store", "put", url, "--overwrite"], changed.clone()),
        "put --overwrite of 20 MiB",
    );
    assert!(std::fs::read(dir.join("archive/big")).unwrap() == changed);
    assert_eq!(names(&dir.join("archive")), ["big"], "no staging file left");

    // A reader that goes away after one byte (`| head -c 1`) ends the command quietly.
    let mut child = Command::new(bin())
        .args(["store", "get", url])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
}

#[test]
fn bad_urls_exit_2_with_secrets_masked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("a"), b"a").unwrap();
    for (url, expect) in [
        (
            "s3://bucket/wal/seg?aws_secret_access_key=hunter22",
            "may not be set",
        ),
        ("s3://AKIAEXAMPLE:hunter22@bucket/wal/seg", "credentials"),
        (
            "s3://bucket/wal/seg?no_such_option=hunter22",
            "unknown option",
        ),
        ("file://archive/", "ends with `/`"),
        ("archive/seg", "SCHEME://"),
        ("ftp://host/seg", "unknown scheme"),
    ] {
        for args in [
            vec!["store", "put", url, "--file", "a"],
            vec!["store", "get", url],
            vec!["store", "rm", url],
        ] {
            let out = respawn(dir, &args);
            let t = text(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {t}");
            assert!(t.contains(expect), "{args:?}: {t}");
            assert!(
                !t.contains("hunter22"),
                "{args:?}: the value is masked: {t}"
            );
        }
    }
    let out = respawn(
        dir,
        &["store", "put", "file://archive/x", "--file", "missing"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!dir.join("archive").exists());
}

/// put, get (stdout and file), ls and rm against moto, with credentials from the environment.
#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn s3_round_trip() {
    let bucket =
        std::env::var("RESPAWN_TEST_S3").expect("RESPAWN_TEST_S3: run tests/servers/start");
    let endpoint = std::env::var("RESPAWN_TEST_S3_ENDPOINT").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let query = format!("endpoint={endpoint}&allow_http=true");
    let store = format!("{bucket}/store-cli-{}/wal", std::process::id());
    let url = |key: &str| format!("{store}/{key}?{query}");
    let small = noise(100_000, 3);
    let big = noise(20 << 20, 4);
    std::fs::write(dir.join("small"), &small).unwrap();

    let seg = url("000000010000000000000001");
    assert_quiet_success(
        &respawn(dir, &["store", "put", &seg, "--file", "small"]),
        "put",
    );
    assert_quiet_success(
        &respawn(dir, &["store", "put", &seg, "--file", "small"]),
        "put of identical bytes",
    );
    let out = respawn_stdin(dir, &["store", "put", &seg], b"other".to_vec());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("different content"), "{}", text(&out));
    assert_quiet_success(
        &respawn_stdin(dir, &["store", "put", &url("big")], big.clone()),
        "multipart put from stdin",
    );

    let out = respawn(dir, &["store", "get", &seg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout == small);
    let out = respawn(dir, &["store", "get", &url("big"), "--file", "big"]);
    assert_quiet_success(&out, "get --file");
    assert!(std::fs::read(dir.join("big")).unwrap() == big);
    let out = respawn(dir, &["store", "get", &url("000000010000000000000002")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let out = respawn(dir, &["store", "ls", &format!("{store}?{query}")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let keys: Vec<(&str, &str)> = listing
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            (f.next().unwrap(), f.next().unwrap())
        })
        .collect();
    assert_eq!(
        keys,
        [("000000010000000000000001", "100000"), ("big", "20971520")],
        "{listing}"
    );

    for key in ["000000010000000000000001", "big", "big"] {
        assert_quiet_success(&respawn(dir, &["store", "rm", &url(key)]), "rm");
    }
    let out = respawn(dir, &["store", "ls", &format!("{store}?{query}")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
}
