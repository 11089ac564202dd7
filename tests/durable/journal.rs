//! What the journal of a durable run holds: a hash chain whose audit names an altered, removed or reordered
//! event, and never a secret's value.

use super::*;

#[test]
fn audit_verify_names_an_altered_a_removed_and_a_reordered_event() {
    let (dir, state, run_id) = passed_drill("audit");
    let state_arg = state_url(&state);
    let audit = || respawn(&dir, &["audit", "verify", &run_id, "--state", &state_arg]);
    let ok = audit();
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("chain intact"), "{}", text(&ok));
    let head = report(&dir, "report")["journal_head"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text(&ok).contains(&head),
        "the report carries the chain head"
    );

    let paths = event_paths(&state, &run_id);
    // A file is named by its first event's number; events stored together follow on lines of their own.
    let first_seq =
        |p: &PathBuf| -> usize { p.file_name().unwrap().to_str().unwrap().parse().unwrap() };
    // Hand-edit a step result: a failure turned into a success, say.
    let (file, line) = paths
        .iter()
        .enumerate()
        .find_map(|(i, p)| {
            let text = std::fs::read_to_string(p).unwrap();
            let line = text.lines().position(|l| l.contains("\"step-finished\""))?;
            Some((i, line))
        })
        .unwrap();
    let victim = first_seq(&paths[file]) + line;
    let original = std::fs::read_to_string(&paths[file]).unwrap();
    std::fs::write(
        &paths[file],
        original.replacen("\"attempts\":1", "\"attempts\":2", 1),
    )
    .unwrap();
    let tampered = audit();
    assert_eq!(tampered.status.code(), Some(1));
    assert!(
        text(&tampered).contains(&format!("event {victim} (step-finished) was altered")),
        "{}",
        text(&tampered)
    );
    std::fs::write(&paths[file], &original).unwrap();

    // Remove one.
    let removed = std::fs::read(&paths[3]).unwrap();
    std::fs::remove_file(&paths[3]).unwrap();
    assert!(text(&audit()).contains(&format!("event {} is missing", first_seq(&paths[3]))));
    std::fs::write(&paths[3], &removed).unwrap();

    // Swap two.
    let (a, b) = (
        std::fs::read(&paths[4]).unwrap(),
        std::fs::read(&paths[5]).unwrap(),
    );
    std::fs::write(&paths[4], &b).unwrap();
    std::fs::write(&paths[5], &a).unwrap();
    assert!(text(&audit()).contains("reordered"));
    std::fs::write(&paths[4], &a).unwrap();
    std::fs::write(&paths[5], &b).unwrap();

    // The newest event has no successor to record its hash; the report's chain head catches it.
    let last = paths.last().unwrap();
    let text_last = std::fs::read_to_string(last).unwrap();
    std::fs::write(last, text_last.replace("\"passed\"", "\"failed\"")).unwrap();
    let head_check = audit();
    assert_eq!(head_check.status.code(), Some(1));
    assert!(
        text(&head_check).contains("newest event"),
        "{}",
        text(&head_check)
    );
    std::fs::write(last, &text_last).unwrap();
    assert_eq!(audit().status.code(), Some(0));
}

#[test]
fn a_secret_value_never_reaches_the_journal_or_the_report() {
    let dir = std::env::temp_dir().join(format!("respawn-secret-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let echo =
        Path::new(respawn::host::sources::TEST_PLUGINS_DIR).join("respawn_testing_echo.wasm");
    std::fs::write(
        dir.join("secret.yaml"),
        format!(
            r#"respawn: 1
name: secret-echo
version: 1.0.0
params:
  greeting: {{ type: string }}
secrets:
  token: {{ env: RESPAWN_TEST_TOKEN }}
plugins:
  echo: file://{}
steps:
  - id: say
    uses: echo/echo
    with: {{ greeting: "${{{{ params.greeting }}}}" }}
  - id: read
    uses: echo/secret
    with: {{ name: token }}
    grants: {{ secrets: [token] }}
"#,
            echo.display()
        ),
    )
    .unwrap();
    let lock = respawn(&dir, &["lock", "secret.yaml"]);
    assert!(lock.status.success(), "{}", text(&lock));
    let secret = "hunter2-correct-horse";
    let drill = |greeting: &str| {
        Command::new(bin())
            .args([
                "drill",
                "secret.yaml",
                "--no-progress",
                "--state",
                &state_url(&dir.join("state")),
            ])
            .args([
                "--param",
                &format!("greeting={greeting}"),
                "--report-dir",
                "report",
            ])
            .env("RESPAWN_TEST_TOKEN", secret)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // A secret passed as a param would be journaled byte-exact in run-started: refused before anything starts.
    let refused = drill(&format!("hello {secret}"));
    let t = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{t}");
    assert!(
        t.contains("param `greeting` holds the value of secret `token`"),
        "{t}"
    );
    assert!(!t.contains(secret), "{t}");
    assert!(!dir.join("state").exists(), "nothing journaled: {t}");

    let out = drill("hello");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(!t.contains(secret), "{t}");
    let mut files: Vec<PathBuf> = vec![
        dir.join("report/report.json"),
        dir.join("report/report.md"),
        dir.join("report/junit.xml"),
    ];
    let run_id = wait_for_run(&dir.join("state"), Duration::from_secs(1)).unwrap();
    files.extend(event_paths(&dir.join("state"), &run_id));
    for f in &files {
        let body = std::fs::read_to_string(f).unwrap();
        assert!(!body.contains(secret), "{} holds the secret", f.display());
    }
}
