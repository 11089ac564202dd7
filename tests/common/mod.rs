//! Helpers shared by the end-to-end tests that drive the binary on copies of the sample workflows.
#![allow(dead_code)]

pub mod pg;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_respawn")
}

/// The run id a `respawn` command printed (`… (run ID)`).
pub fn run_id_of(out: &Output) -> String {
    let t = text(out);
    t.split("(run ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no run id in: {t}"))
        .to_string()
}

/// stdout then stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "backups" || name == ".respawn" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// A private copy of workflows/quickstart with its backups made by `respawn image pack`.
pub fn quickstart(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("respawn-qs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/quickstart"),
        &dir,
    );
    let out = Command::new("bash")
        .arg(dir.join("make-backups"))
        .arg(bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "make-backups: {}", text(&out));
    dir
}

/// Copies workflows/hello (its workflow and site, not its lock state) into `dir`.
pub fn copy_hello(dir: &Path) {
    std::fs::create_dir_all(dir.join("site")).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/hello");
    for f in ["verify.yaml", "site/index.html", "site/index.html.sha256"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
}

/// A port nothing listens on, for a service a test starts. Tests run as separate processes at once, and a port
/// the kernel hands out for `:0` can be handed to another test as soon as it is released; so each test process
/// takes ports from a block of its own below the kernel's ephemeral range, checking each is free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u32 = 20_000;
    const BLOCK: u32 = 8;
    const BLOCKS: u32 = 1_500;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = FIRST + (std::process::id() % BLOCKS) * BLOCK;
    for _ in 0..BLOCK {
        let offset = u32::from(NEXT.fetch_add(1, Ordering::Relaxed)) % BLOCK;
        let port = (base + offset) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && !listening(port) {
            return port;
        }
    }
    panic!("no free port in this test's block from {base}")
}

pub fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

pub fn region_dir(dir: &Path) -> PathBuf {
    dir.join(".respawn/regions/eu-west")
}

/// `respawn ARGS` in `dir`, stdin closed.
pub fn respawn(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Whether a process whose command line contains `pattern` exists.
pub fn process_running(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `respawn resume RUN_ID --takeover --no-progress --state STATE EXTRA…` in `dir`.
pub fn resume_takeover(dir: &Path, run_id: &str, state: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "resume",
        run_id,
        "--takeover",
        "--no-progress",
        "--state",
        state,
    ];
    args.extend_from_slice(extra);
    respawn(dir, &args)
}

/// Waits (a minute at most) until apply has restored the site volume of the quickstart in `dir`.
pub fn wait_for_site_restored(dir: &Path) {
    let started = std::time::Instant::now();
    while !region_dir(dir).join("shop/site/index.html").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "apply never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The two OCI registries (Debian's docker-registry 2.8, plain HTTP on 127.0.0.1) that tests/servers/start runs
/// and describes in target/servers/env.
#[derive(Debug, Clone)]
pub struct RegistryEnv {
    /// host:port of the anonymous registry (`RESPAWN_TEST_REGISTRY_OPEN`).
    pub open: String,
    /// host:port of the registry that needs basic auth with `user` and `password` (`RESPAWN_TEST_REGISTRY_AUTH`).
    pub auth: String,
    pub user: String,
    pub password: String,
    /// The registries' storage roots (`RESPAWN_TEST_REGISTRY_DATA_OPEN`, `…_AUTH`); see [`registry_blob_path`].
    pub data_open: PathBuf,
    pub data_auth: PathBuf,
}

impl RegistryEnv {
    /// The auth registry's credentials, as [`push_test_images`] and [`skopeo_digest`] take them.
    pub fn creds(&self) -> Option<(&str, &str)> {
        Some((self.user.as_str(), self.password.as_str()))
    }
}

/// The registries' environment, or None when tests/servers/start's variables are not set.
pub fn registry_env() -> Option<RegistryEnv> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Some(RegistryEnv {
        open: var("RESPAWN_TEST_REGISTRY_OPEN")?,
        auth: var("RESPAWN_TEST_REGISTRY_AUTH")?,
        user: var("RESPAWN_TEST_REGISTRY_USER")?,
        password: var("RESPAWN_TEST_REGISTRY_PASSWORD")?,
        data_open: var("RESPAWN_TEST_REGISTRY_DATA_OPEN")?.into(),
        data_auth: var("RESPAWN_TEST_REGISTRY_DATA_AUTH")?.into(),
    })
}

/// Where a registry whose storage root is `data` keeps the bytes of blob `digest` (`sha256:HEX`). A registry stores
/// each blob once for all its repositories: corrupt only blobs pushed with a salt of the test's own
/// ([`push_test_images_salted`]).
pub fn registry_blob_path(data: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("a sha256: digest");
    data.join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// Pushes the deterministic test images of tests/servers/registry-images to `registry` (host:port, plain HTTP) as
/// `repo`: tags `multi` (an index of linux/amd64 and linux/arm64), `single`, `big` (with `big_mib`), a referrer of
/// `multi` under its referrers tag and a cosign-style signature of `single`. Returns the script's JSON: `multi`,
/// `multi_platforms`, `single`, `referrer`, `referrers_tag`, `referrers_index`, `signature_tag`, `signature`, `big`
/// (null without `big_mib`) and `blobs`.
pub fn push_test_images(
    registry: &str,
    repo: &str,
    creds: Option<(&str, &str)>,
    big_mib: Option<u32>,
) -> serde_json::Value {
    push_test_images_salted(registry, repo, creds, big_mib, None)
}

/// [`push_test_images`] with `salt` mixed into every blob (but the 2-byte empty one), so that the images' blobs
/// and digests are this push's own: for tests that corrupt blobs on disk.
pub fn push_test_images_salted(
    registry: &str,
    repo: &str,
    creds: Option<(&str, &str)>,
    big_mib: Option<u32>,
    salt: Option<&str>,
) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/servers/registry-images");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).args(["push", registry, repo]);
    if let Some((user, password)) = creds {
        cmd.arg("--creds").arg(format!("{user}:{password}"));
    }
    if let Some(n) = big_mib {
        cmd.arg("--big-mib").arg(n.to_string());
    }
    if let Some(salt) = salt {
        cmd.arg("--salt").arg(salt);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("running tests/servers/registry-images (needs python3)");
    assert!(
        out.status.success(),
        "registry-images push {registry} {repo}: {}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("registry-images printed no JSON ({e}): {}", text(&out)))
}

/// `sha256:HEX` of the manifest `skopeo inspect --raw` reads at `registry/reference` (`REPO:TAG` or
/// `REPO@DIGEST`), or None when the registry has no such manifest. Panics on any other failure (registry down,
/// wrong credentials).
pub fn skopeo_digest(
    registry: &str,
    reference: &str,
    creds: Option<(&str, &str)>,
) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw", "--tls-verify=false"]);
    match creds {
        Some((user, password)) => cmd.arg("--creds").arg(format!("{user}:{password}")),
        None => cmd.arg("--no-creds"),
    };
    let out = cmd
        .arg(format!("docker://{registry}/{reference}"))
        .stdin(Stdio::null())
        .output()
        .expect("running skopeo");
    if out.status.success() {
        return Some(format!("sha256:{:x}", Sha256::digest(&out.stdout)));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("manifest unknown") || err.contains("name unknown") {
        return None;
    }
    panic!("skopeo inspect {registry}/{reference}: {}", text(&out))
}
