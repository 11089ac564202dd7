//! A plugin written in Python, end to end through the binary: `respawn plugin new pyx --lang python` writes a
//! scaffold that carries the Python SDK and the WIT; its unit tests pass under `python3 -m unittest`; its
//! `build.sh` builds a component with the pinned componentize-py (installed by tests/setup into
//! target/python-venv); and that component runs under `respawn validate`, `lock`, `plan` and `drill`, making HTTP
//! requests to a loopback server this test starts, with a denied grant and an uncaught exception reported as
//! such. The SDK's own unit tests run here too.
//!
//! The component is built once per test process (about 10 s, plus about 20 s for respawn to compile its 18 MiB
//! the first time, cached after that) and shared by the tests.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use common::{respawn, text};
use sha2::{Digest, Sha256};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("respawn-py-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `python3 -m unittest ARGS` in `dir`, which must pass.
fn unittest(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("python3")
        .args(["-m", "unittest"])
        .args(args)
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    assert!(out.status.success(), "python3 -m unittest:\n{}", text(&out));
    out
}

/// Operations the tests add to the scaffold's `app.py`, beside its `greet` and `fetch`. Imports stay at module
/// level: componentize-py bundles only the modules imported while it pre-initializes the app.
const TEST_OPERATIONS: &str = r#"

# --- added by tests/python_plugin.rs ---
from respawn_plugin import Phase


@dataclass
class PostParams:
    url: str
    size: int


post = plugin.operation("post", "POST a generated body of `size` bytes, streamed", PostParams)


@post
def post_body(ctx: Context, p: PostParams) -> dict:
    if ctx.phase in (Phase.PLAN, Phase.DESTROY):
        return {}
    chunk = bytes(range(256)) * 256

    def body():
        left = p.size
        while left > 0:
            n = min(left, len(chunk))
            yield chunk[:n]
            left -= n

    with http.send("POST", p.url, headers={"X-Test": ctx.step_id}, body=body(), length=p.size) as r:
        if not r.ok:
            raise r.failure("POST")
        return r.json()


boom = plugin.operation("boom", "Raise an exception the plugin does not catch")


@boom
def boom_any(ctx: Context, p: dict) -> dict:
    def deeper() -> None:
        raise RuntimeError(f"kaboom in {ctx.step_id}")

    deeper()
    return {}
"#;

/// The directory of the built component `pyx.wasm` (with the scaffold around it), built once per process.
fn built() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = scratch("build");
        let out = respawn(&dir, &["plugin", "new", "pyx", "--lang", "python"]);
        assert!(out.status.success(), "{}", text(&out));
        let plugin = dir.join("pyx");
        let mut app = std::fs::read_to_string(plugin.join("app.py")).unwrap();
        app.push_str(TEST_OPERATIONS);
        std::fs::write(plugin.join("app.py"), app).unwrap();

        // The pinned componentize-py of tests/setup first; build.sh installs it under ~/.cache otherwise.
        let venv = repo().join("target/python-venv/bin");
        let path = format!(
            "{}:{}",
            venv.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let started = Instant::now();
        let build = Command::new("sh")
            .arg("build.sh")
            .current_dir(&plugin)
            .env("PATH", &path)
            .output()
            .expect("run build.sh");
        assert!(
            build.status.success(),
            "build.sh failed (tests/setup installs componentize-py):\n{}",
            text(&build)
        );
        eprintln!(
            "python_plugin: built pyx.wasm in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        // Compile it once into the compile cache, so the tests running at once do not all compile it.
        let started = Instant::now();
        let inspect = respawn(&plugin, &["plugin", "inspect", "pyx.wasm"]);
        assert!(inspect.status.success(), "{}", text(&inspect));
        eprintln!(
            "python_plugin: first load (compile) in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        plugin
    })
}

/// A copy of the built component in a directory of its own, with `workflow` as `wf.yaml`.
fn workspace(name: &str, workflow: &str) -> PathBuf {
    let dir = scratch(name);
    std::fs::copy(built().join("pyx.wasm"), dir.join("pyx.wasm")).unwrap();
    std::fs::write(dir.join("wf.yaml"), workflow).unwrap();
    dir
}

/// The bytes `GET /data` answers.
fn data() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 251) as u8).collect()
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A loopback HTTP/1.1 server, one request per connection: `GET /data` answers [`data`] as text/plain; `POST
/// /echo` answers `{"bytes", "sha256", "x_test"}` of what it received; anything else 404. Its thread lives as
/// long as the test process.
fn serve() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    port
}

fn answer(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let (mut length, mut x_test) = (0usize, String::new());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "x-test" => x_test = value.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (status, content_type, payload) =
        match request_line.split_whitespace().take(2).collect::<Vec<_>>()[..] {
            ["GET", "/data"] => ("200 OK", "text/plain", data()),
            ["POST", "/echo"] => (
                "200 OK",
                "application/json",
                format!(
                    r#"{{"bytes":{},"sha256":"{}","x_test":"{x_test}"}}"#,
                    body.len(),
                    hex_sha256(&body)
                )
                .into_bytes(),
            ),
            _ => ("404 Not Found", "text/plain", b"no such thing".to_vec()),
        };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&payload);
}

#[test]
fn the_sdk_unit_tests_pass() {
    let out = unittest(
        &repo().join("plugins/python-sdk"),
        &["discover", "-s", "tests"],
    );
    assert!(text(&out).contains("OK"), "{}", text(&out));
}

#[test]
fn the_scaffold_is_standalone_and_its_unit_tests_pass() {
    let dir = scratch("scaffold");
    let out = respawn(&dir, &["plugin", "new", "unit", "--lang", "python"]);
    assert!(out.status.success(), "{}", text(&out));
    let plugin = dir.join("unit");
    for file in [
        "app.py",
        "test_app.py",
        "build.sh",
        "recover.yaml",
        "respawn_plugin/__init__.py",
        "respawn_plugin/testing.py",
        "wit/plugin.wit",
        "wit/provider-http.wit",
        "wit/deps/http.wit",
    ] {
        assert!(plugin.join(file).is_file(), "the scaffold has {file}");
    }
    let build = std::fs::read_to_string(plugin.join("build.sh")).unwrap();
    let pinned =
        std::fs::read_to_string(repo().join("plugins/python-sdk/build-requirements.txt")).unwrap();
    let version = pinned
        .lines()
        .find_map(|l| l.strip_prefix("componentize-py=="))
        .unwrap();
    assert!(build.contains(&format!("version={version}")), "{build}");
    let checkout = repo().canonicalize().unwrap();
    for entry in ["app.py", "build.sh", "recover.yaml"] {
        let body = std::fs::read_to_string(plugin.join(entry)).unwrap();
        assert!(
            !body.contains(&checkout.display().to_string()),
            "{entry} names no path of the checkout"
        );
    }
    unittest(&plugin, &[]);
    let sdk = respawn(
        &dir,
        &["plugin", "new", "other", "--lang", "python", "--sdk", "."],
    );
    assert_eq!(sdk.status.code(), Some(2), "{}", text(&sdk));
}

#[test]
fn a_python_plugin_validates_locks_plans_and_drills_with_http() {
    let port = serve();
    let workflow = format!(
        r#"respawn: 1
name: pyx-http
version: 1.0.0
plugins:
  pyx: file://pyx.wasm
steps:
  - id: hello
    uses: pyx/greet
    with: {{ who: world }}
  - id: fetch
    uses: pyx/fetch
    with: {{ url: "http://127.0.0.1:{port}/data" }}
    grants: {{ http: ["http://127.0.0.1:{port}"] }}
  - id: post
    uses: pyx/post
    with: {{ url: "http://127.0.0.1:{port}/echo", size: 300000 }}
    grants: {{ http: ["http://127.0.0.1:*"] }}
verify:
  - id: check
    uses: pyx/greet
    with: {{ who: "${{{{ steps.fetch.outputs.sha256 }}}}/${{{{ steps.post.outputs.sha256 }}}}/${{{{ steps.post.outputs.x_test }}}}" }}
"#
    );
    let dir = workspace("http", &workflow);

    let valid = respawn(&dir, &["validate", "wf.yaml"]);
    assert!(valid.status.success(), "{}", text(&valid));
    let lock = respawn(&dir, &["lock", "wf.yaml"]);
    assert!(lock.status.success(), "{}", text(&lock));

    let plan = respawn(&dir, &["plan", "wf.yaml", "--json"]);
    let t = text(&plan);
    assert!(plan.status.success(), "{t}");
    let expected_get = hex_sha256(&data());
    assert!(t.contains("would greet world"), "{t}");
    assert!(
        t.contains(&expected_get),
        "plan GETs /data and hashes what it streamed: {t}"
    );
    assert!(t.contains("text/plain"), "the response's headers: {t}");

    let drill = respawn(&dir, &["-v", "drill", "wf.yaml", "--no-progress"]);
    let t = text(&drill);
    assert!(drill.status.success(), "{t}");
    let posted: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
    assert!(
        t.contains(&format!(
            "hello, {expected_get}/{}/post",
            hex_sha256(&posted)
        )),
        "apply streamed 300000 bytes to /echo with its header, and verify saw the outputs: {t}"
    );
}

#[test]
fn a_denied_grant_and_an_uncaught_exception_are_reported() {
    let port = serve();
    let workflow = format!(
        r#"respawn: 1
name: pyx-failures
version: 1.0.0
plugins:
  pyx: file://pyx.wasm
steps:
  - id: ungranted
    uses: pyx/fetch
    with: {{ url: "http://127.0.0.1:{port}/data" }}
  - id: boom
    uses: pyx/boom
  - id: typo
    uses: pyx/greet
    with: {{ whom: world }}
"#
    );
    let dir = workspace("failures", &workflow);
    let lock = respawn(&dir, &["lock", "wf.yaml"]);
    assert!(lock.status.success(), "{}", text(&lock));

    // A misspelt param is caught before anything runs, against the schema the Python plugin publishes.
    let plan = respawn(&dir, &["plan", "wf.yaml"]);
    let t = text(&plan);
    assert_eq!(plan.status.code(), Some(2), "{t}");
    assert!(
        t.contains("wf.yaml:14:5: step `typo`: with: Additional properties are not allowed ('whom' was unexpected)"),
        "{t}"
    );
    let fixed = workflow.replace("    with: { whom: world }\n", "    with: { who: world }\n");
    assert_ne!(fixed, workflow);
    std::fs::write(dir.join("wf.yaml"), &fixed).unwrap();

    let plan = respawn(&dir, &["plan", "wf.yaml"]);
    let t = text(&plan);
    assert_eq!(plan.status.code(), Some(1), "{t}");
    assert!(
        t.contains(r#""kind":"denied""#) && t.contains("denied http: GET"),
        "the denial names the capability: {t}"
    );

    let drill = respawn(&dir, &["drill", "wf.yaml", "--no-progress"]);
    let t = text(&drill);
    assert_eq!(drill.status.code(), Some(1), "{t}");
    let report = std::fs::read_dir(dir.join(".respawn/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("report.json");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let error = |id: &str| {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("step {id} in {report}"))["error"]
            .clone()
    };
    let denied = error("ungranted");
    assert_eq!(denied["kind"], "denied", "{denied}");
    assert!(
        denied["message"].as_str().unwrap().contains("http"),
        "{denied}"
    );
    let boom = error("boom");
    let message = boom["message"].as_str().unwrap();
    assert_eq!(boom["kind"], "plugin", "{boom}");
    for part in [
        "internal: uncaught RuntimeError in pyx/boom (apply): kaboom in boom",
        "traceback (most recent call last",
        "app.py\", line",
        "in deeper",
    ] {
        assert!(message.contains(part), "`{part}` in: {message}");
    }
}
