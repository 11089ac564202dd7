//! A plugin that mishandles a granted secret every way it can (logs it, prints it, keys state and outputs by it,
//! fails with it) leaves no trace of the value in respawn's stderr, text or JSON, in the journal or in the report.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{bin, respawn, text};

const SECRET: &str = "s3cr3t-Value-0xC0FFEE";

fn hostile_wasm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins/wasm32-wasip2/release/respawn_testing_hostile.wasm")
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn a_leaked_secret_reaches_no_log_journal_or_report() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = format!(
        r#"respawn: 1
name: leak
version: 1.0.0
secrets:
  token: {{ env: RESPAWN_TEST_LEAKED }}
plugins:
  hostile: file://{}
steps:
  - id: leaks
    uses: hostile/leak-secret
    with: {{ name: token }}
    grants: {{ secrets: [token] }}
  - id: fails
    uses: hostile/leak-secret
    needs: [leaks]
    with: {{ name: token, fail: true }}
    grants: {{ secrets: [token] }}
"#,
        hostile_wasm().display()
    );
    std::fs::write(dir.path().join("leak.yaml"), workflow).unwrap();
    let lock = respawn(dir.path(), &["lock", "leak.yaml"]);
    assert!(lock.status.success(), "{}", text(&lock));
    for format in ["text", "json"] {
        let out = Command::new(bin())
            .args([
                "drill",
                "leak.yaml",
                "--no-progress",
                "--log-format",
                format,
            ])
            .args(["--report-dir", &format!("report-{format}")])
            .args([
                "--state",
                &format!("file://{}/state-{format}", dir.path().display()),
            ])
            .current_dir(dir.path())
            .env("RESPAWN_TEST_LEAKED", SECRET)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "the second step fails: {t}");
        assert!(
            t.contains("the secret is ***"),
            "the plugin's log line is there, redacted: {t}"
        );
        assert!(!t.contains(SECRET), "{format} logs carry the secret: {t}");
    }
    let mut files = Vec::new();
    all_files(dir.path(), &mut files);
    let mut checked = 0;
    for file in files.iter().filter(|f| !f.ends_with("leak.yaml")) {
        let body = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        assert!(
            !body.contains(SECRET),
            "{} holds the secret",
            file.display()
        );
        checked += 1;
    }
    assert!(
        checked > 10,
        "journal events and report files were written: {files:?}"
    );
}

#[test]
fn a_secret_too_short_to_redact_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = format!(
        "respawn: 1\nname: short\nversion: 1.0.0\nsecrets:\n  pin: {{ env: RESPAWN_TEST_PIN }}\nplugins:\n  \
         hostile: file://{}\nsteps:\n  - id: a\n    uses: hostile/leak-secret\n    with: {{ name: pin }}\n    \
         grants: {{ secrets: [pin] }}\n",
        hostile_wasm().display()
    );
    std::fs::write(dir.path().join("short.yaml"), workflow).unwrap();
    assert!(
        respawn(dir.path(), &["lock", "short.yaml"])
            .status
            .success()
    );
    let out = Command::new(bin())
        .args(["drill", "short.yaml", "--no-progress"])
        .current_dir(dir.path())
        .env("RESPAWN_TEST_PIN", "Zq9")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("secret `pin`") && t.contains("shorter than 4"),
        "{t}"
    );
    assert!(!t.contains("Zq9"), "the value is not echoed: {t}");
}
