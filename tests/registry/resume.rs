//! A large blob's upload after a crash or a failed attempt: finished with the right digest, continued where the
//! registry holds it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::{bin, registry_blob_path, text};
use super::*;

#[test]
#[ignore = "needs docker-registry and skopeo (tests/servers/start)"]
fn a_run_killed_in_the_middle_of_a_large_blob_resumes_to_the_right_digest() {
    let e = env();
    let (src, dst) = (repo("resume", "src"), repo("resume", "dr"));
    let images =
        common::push_test_images_salted(&e.open, &src, None, Some(48), Some(&salt("resume")));
    let big = digest_of(&images, "big");
    let dir = workflow(
        "resume",
        &replicate_step(
            &[(&format!("{src}:big"), &format!("{dst}:big"))],
            "      chunk_mib: 1\n",
        ),
    );
    let state = dir.join("state");
    let state_url = format!("file://{}", state.display());
    let mut child = Command::new(bin())
        .args([
            "drill",
            "wf.yaml",
            "--keep",
            "--no-progress",
            "--state",
            &state_url,
        ])
        .current_dir(&dir)
        .env("REG_PW", &e.password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it once the journal holds an upload past its first chunk.
    let started = Instant::now();
    let journaled = loop {
        if journal_mentions(&state, "\\\"offset\\\":") {
            break true;
        }
        if started.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        journaled,
        "no upload offset was journaled before the run ended"
    );
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let run_id = run_id_of(&out);
    assert_eq!(
        at_auth(&format!("{dst}:big")),
        None,
        "the image was complete before the kill"
    );

    let resumed = run(
        &dir,
        &[
            "resume",
            &run_id,
            "--takeover",
            "--no-progress",
            "--state",
            &state_url,
            "-v",
        ],
    );
    let said = text(&resumed);
    assert!(resumed.status.success(), "resume: {said}");
    assert_eq!(at_auth(&format!("{dst}:big")), Some(big));
    let continued = said.contains("continuing the upload at byte");
    let restarted = said.contains("no longer holds the upload");
    assert!(
        continued || restarted,
        "the resumed step did not find the journaled upload: {said}"
    );
    eprintln!(
        "resume {}",
        if continued {
            "continued the upload"
        } else {
            "restarted the blob (the registry dropped it)"
        }
    );
    let destroyed = run(
        &dir,
        &[
            "destroy",
            &run_id,
            "--yes",
            "--no-progress",
            "--state",
            &state_url,
        ],
    );
    assert!(destroyed.status.success(), "destroy: {}", text(&destroyed));
    assert_eq!(at_auth(&format!("{dst}:big")), None);
}

#[test]
#[ignore = "needs docker-registry and skopeo (tests/servers/start)"]
fn a_retried_step_continues_a_large_blob_where_the_registry_holds_it() {
    let e = env();
    let (src, dst) = (repo("continue", "src"), repo("continue", "dr"));
    let images =
        common::push_test_images_salted(&e.open, &src, None, Some(24), Some(&salt("continue")));
    // Cut the source's largest layer of `big` at 2 MiB, a chunk boundary: the first two chunks go through and
    // are journaled, then the source answers that the blob ends early, before the third chunk is sent.
    let manifest = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--no-creds"])
        .arg(format!("docker://{}/{src}:big", e.open))
        .output()
        .unwrap();
    let manifest: Value = serde_json::from_slice(&manifest.stdout).unwrap();
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = registry_blob_path(&e.data_open, &layer);
    let whole = std::fs::read(&path).unwrap();
    assert!(
        whole.len() > 3 << 20,
        "the largest layer is only {} bytes",
        whole.len()
    );
    std::fs::write(&path, &whole[..2 << 20]).unwrap();

    let steps = replicate_step(
        &[(&format!("{src}:big"), &format!("{dst}:big"))],
        "      chunk_mib: 1\n",
    )
    .replace(
        "    grants:",
        "    retry: { attempts: 2, backoff: 3s }\n    grants:",
    );
    let dir = workflow("continue", &steps);
    let state = dir.join("state");
    let state_url = format!("file://{}", state.display());
    let child = Command::new(bin())
        .args([
            "drill",
            "wf.yaml",
            "--keep",
            "--no-progress",
            "-v",
            "--state",
            &state_url,
        ])
        .current_dir(&dir)
        .env("REG_PW", &e.password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Put the blob back while the runner waits to try again.
    let started = Instant::now();
    while !journal_mentions(&state, "shorter than its manifest says") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first attempt never failed on the cut blob"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&path, &whole).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert!(out.status.success(), "drill: {said}");
    assert!(
        said.contains(&format!(
            "{layer}: continuing the upload at byte {}",
            2 << 20
        )),
        "the second attempt did not continue the upload: {said}"
    );
    assert_eq!(
        at_auth(&format!("{dst}:big")),
        Some(digest_of(&images, "big"))
    );
    let run_id = run_id_of(&out);
    let destroyed = run(
        &dir,
        &[
            "destroy",
            &run_id,
            "--yes",
            "--no-progress",
            "--state",
            &state_url,
        ],
    );
    assert!(destroyed.status.success(), "destroy: {}", text(&destroyed));
}
