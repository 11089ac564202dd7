//! End-to-end through the binary: a plugin scaffolded by `respawn plugin new` carries its SDK (no path into this
//! checkout), passes its unit tests with `cargo test`, builds with its `build.sh`, is pinned by `respawn lock`,
//! runs its plan phase in a workflow as `file://…`, and is refused once a single byte changes. The Python
//! scaffold is tests/python_plugin.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{respawn, text};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("respawn-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `program args` in `dir` as an author would run it, without the variables of the cargo running this test; a
/// target dir inside the repository keeps reruns fast.
fn author(dir: &Path, program: &str, args: &[&str]) -> std::process::Output {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold-test");
    let mut command = Command::new(program);
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key == "RUSTFLAGS" {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn scaffolded_plugin_runs_after_lock_and_a_changed_byte_is_refused() {
    let dir = scratch("scaffold");
    let out = respawn(&dir, &["plugin", "new", "hello-plugin"]);
    assert!(out.status.success(), "{}", text(&out));
    let plugin = dir.join("hello-plugin");

    // Standalone: the SDK, the sandbox checks its mock host uses and the WIT are vendored, and nothing names a
    // path of this checkout.
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    for manifest in [
        "Cargo.toml",
        "vendor/respawn-plugin-sdk/Cargo.toml",
        "vendor/respawn-sandbox/Cargo.toml",
    ] {
        let body = std::fs::read_to_string(plugin.join(manifest)).unwrap();
        assert!(!body.contains(&checkout), "{manifest} names the checkout");
        assert!(!body.contains("workspace = true"), "{manifest}: {body}");
    }
    assert!(plugin.join("vendor/wit/deps/http.wit").is_file());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tested = author(&plugin, &cargo, &["test"]);
    assert!(
        tested.status.success(),
        "the scaffold's unit tests pass natively against the vendored MockHost:\n{}",
        text(&tested)
    );
    let built = author(&plugin, "sh", &["build.sh"]);
    assert!(
        built.status.success(),
        "scaffold must build:\n{}",
        text(&built)
    );
    let wasm = dir.join("hello.wasm");
    std::fs::copy(plugin.join("hello-plugin.wasm"), &wasm).unwrap();

    // Its own workflow runs it as it is.
    let lock = respawn(&plugin, &["lock", "recover.yaml"]);
    assert!(lock.status.success(), "{}", text(&lock));
    let planned = respawn(&plugin, &["plan", "recover.yaml"]);
    assert!(
        text(&planned).contains("would greet world"),
        "{}",
        text(&planned)
    );

    std::fs::write(
        dir.join("wf.yaml"),
        "respawn: 1\nname: greet\nversion: 1.0.0\nparams:\n  who: { type: string, required: true }\n\
         plugins:\n  hello: file://hello.wasm\nsteps:\n  - id: greet\n    uses: hello/greet\n    with: { who: \"${{ params.who }}\" }\n",
    )
    .unwrap();

    let unlocked = respawn(&dir, &["plan", "wf.yaml", "--param", "who=ops"]);
    assert_eq!(
        unlocked.status.code(),
        Some(2),
        "plan needs a lock: {}",
        text(&unlocked)
    );
    assert!(
        text(&unlocked).contains("respawn lock"),
        "{}",
        text(&unlocked)
    );

    let lock = respawn(&dir, &["lock", "wf.yaml"]);
    assert!(lock.status.success(), "{}", text(&lock));
    let planned = respawn(&dir, &["plan", "wf.yaml", "--param", "who=ops"]);
    assert!(planned.status.success(), "{}", text(&planned));
    assert!(
        text(&planned).contains("would greet ops"),
        "the plugin's plan phase ran: {}",
        text(&planned)
    );

    let locked_digest = sha256_of(&wasm);
    let mut bytes = std::fs::read(&wasm).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&wasm, &bytes).unwrap();
    let tampered = respawn(&dir, &["plan", "wf.yaml", "--param", "who=ops"]);
    let t = text(&tampered);
    assert_eq!(tampered.status.code(), Some(2), "{t}");
    assert!(
        t.contains(&format!("locked sha256:{locked_digest}")),
        "shows the locked digest: {t}"
    );
    assert!(
        t.contains(&format!("found sha256:{}", sha256_of(&wasm))),
        "shows the found digest: {t}"
    );
    assert!(
        !t.contains("would greet"),
        "the changed plugin never ran: {t}"
    );
}

fn sha256_of(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn plugin_new_refuses_bad_names_and_existing_directories() {
    let dir = scratch("names");
    let bad = respawn(&dir, &["plugin", "new", "Bad_Name"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("lowercase"), "{}", text(&bad));
    std::fs::create_dir_all(dir.join("taken")).unwrap();
    let taken = respawn(&dir, &["plugin", "new", "taken"]);
    assert_eq!(taken.status.code(), Some(2));
    assert!(text(&taken).contains("already exists"), "{}", text(&taken));
    let lang = respawn(&dir, &["plugin", "new", "x", "--lang", "cobol"]);
    assert_eq!(lang.status.code(), Some(2), "{}", text(&lang));
    let sdk = respawn(&dir, &["plugin", "new", "x", "--sdk", "no/such/dir"]);
    assert_eq!(sdk.status.code(), Some(2), "{}", text(&sdk));
    assert!(!dir.join("x").exists(), "nothing written on bad usage");
}

#[test]
fn plugin_new_with_sdk_depends_on_that_checkout_instead_of_vendoring() {
    let dir = scratch("with-sdk");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
    let out = respawn(
        &dir,
        &["plugin", "new", "dev", "--sdk", sdk.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let manifest = std::fs::read_to_string(dir.join("dev/Cargo.toml")).unwrap();
    let sdk = sdk.canonicalize().unwrap();
    assert!(
        manifest.contains(&format!("path = \"{}\"", sdk.display())),
        "{manifest}"
    );
    assert!(!dir.join("dev/vendor").exists());
}
