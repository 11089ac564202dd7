//! End-to-end test of the bad-input corpus in `tests/fixtures/invalid/`.
//!
//! Each fixture starts with header comments:
//!
//! ```text
//! # expect: LINE:COL: SUBSTRING     (one or more; each must match some `FILE:LINE:COL: message` on stderr)
//! # absent: SUBSTRING               (optional, repeatable; no line of stderr may contain it)
//! # command: plan --param k=v       (optional; default `validate`; the file goes right after the subcommand)
//! ```
//!
//! Every fixture must be refused with exit code 2, within a hard deadline, without a panic, and with every
//! expected diagnostic at the expected position.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_respawn");

/// Hard deadline for one invocation of the binary.
const DEADLINE: Duration = Duration::from_secs(10);

/// The corpus must never shrink to (almost) nothing unnoticed.
const MIN_FIXTURES: usize = 25;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runner/ has a parent")
        .to_path_buf()
}

fn fixture_dir() -> PathBuf {
    repo_root().join("tests/fixtures/invalid")
}

/// What one invocation of the binary did.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs the binary with `args` in `dir`; kills it and panics if it outlives [`DEADLINE`].
fn run(dir: &Path, args: &[OsString]) -> Outcome {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn respawn");
    // Read both pipes concurrently so a chatty child can never block on a full pipe.
    let out = drain(child.stdout.take().expect("stdout piped"));
    let err = drain(child.stderr.take().expect("stderr piped"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for respawn") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "respawn {:?} did not finish within {DEADLINE:?} (killed)",
                args
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    Outcome {
        code: status.code(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        elapsed,
    }
}

/// One `# expect: LINE:COL: SUBSTRING` header.
#[derive(Debug)]
struct Expect {
    line: usize,
    col: usize,
    text: String,
}

#[derive(Debug)]
struct Fixture {
    path: PathBuf,
    name: String,
    expects: Vec<Expect>,
    /// Substrings no line of stderr may contain (a spurious extra diagnostic).
    absent: Vec<String>,
    /// Subcommand and extra arguments; the file goes between them.
    command: Vec<String>,
}

fn parse_expect(raw: &str) -> Result<Expect, String> {
    let mut parts = raw.splitn(3, ':');
    let (Some(line), Some(col), Some(text)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("`# expect: {raw}` is not LINE:COL: SUBSTRING"));
    };
    let number = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("`# expect: {raw}`: `{s}` is not a number"))
    };
    let text = text.strip_prefix(' ').unwrap_or(text).to_string();
    if text.trim().is_empty() {
        return Err(format!("`# expect: {raw}` has no message substring"));
    }
    Ok(Expect {
        line: number(line)?,
        col: number(col)?,
        text,
    })
}

/// Reads the header comments of one fixture (the body may be anything, even invalid UTF-8).
fn parse_fixture(path: &Path) -> Result<Fixture, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut expects = Vec::new();
    let mut absent = Vec::new();
    let mut command = vec!["validate".to_string()];
    for line in bytes.split(|b| *b == b'\n') {
        if !line.starts_with(b"#") {
            break;
        }
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if let Some(raw) = line.strip_prefix("# expect:") {
            expects.push(parse_expect(raw.trim_start()).map_err(|e| format!("{name}: {e}"))?);
        } else if let Some(raw) = line.strip_prefix("# absent:") {
            let text = raw.trim();
            if text.is_empty() {
                return Err(format!("{name}: empty `# absent:`"));
            }
            absent.push(text.to_string());
        } else if let Some(raw) = line.strip_prefix("# command:") {
            command = raw.split_whitespace().map(str::to_string).collect();
            if command.is_empty() {
                return Err(format!("{name}: empty `# command:`"));
            }
        }
    }
    if expects.is_empty() {
        return Err(format!("{name}: no `# expect:` header"));
    }
    Ok(Fixture {
        path: path.to_path_buf(),
        name,
        expects,
        absent,
        command,
    })
}

fn fixtures() -> Vec<Fixture> {
    let dir = fixture_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("read fixture dir").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match parse_fixture(&path) {
            Ok(f) => out.push(f),
            Err(e) => errors.push(e),
        }
    }
    assert!(
        errors.is_empty(),
        "bad fixture headers:\n{}",
        errors.join("\n")
    );
    out
}

fn run_fixture(f: &Fixture) -> Outcome {
    let dir = f.path.parent().expect("fixture has a directory");
    let mut args: Vec<OsString> = vec![f.command[0].clone().into(), f.name.clone().into()];
    args.extend(f.command[1..].iter().map(OsString::from));
    run(dir, &args)
}

/// Problems with one fixture's outcome (empty when it behaved as expected).
fn check(f: &Fixture, o: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    if o.code != Some(2) {
        problems.push(format!("exit code {:?}, expected 2", o.code));
    }
    if o.stderr.contains("panicked") {
        problems.push("the runner panicked".to_string());
    }
    for e in &f.expects {
        let at = format!(":{}:{}: ", e.line, e.col);
        let found = o.stderr.lines().any(|line| {
            line.find(&at)
                .is_some_and(|i| line[i + at.len()..].contains(&e.text))
        });
        if !found {
            problems.push(format!(
                "no diagnostic `{}:{}: …{}…`",
                e.line, e.col, e.text
            ));
        }
    }
    for text in &f.absent {
        if let Some(line) = o.stderr.lines().find(|l| l.contains(text.as_str())) {
            problems.push(format!("unexpected diagnostic containing `{text}`: {line}"));
        }
    }
    problems
}

#[test]
fn every_invalid_fixture_is_refused_at_the_right_place() {
    let all = fixtures();
    assert!(
        all.len() >= MIN_FIXTURES,
        "only {} fixtures in {}; expected at least {MIN_FIXTURES}",
        all.len(),
        fixture_dir().display()
    );
    let mut failures = Vec::new();
    for f in &all {
        let o = run_fixture(f);
        let problems = check(f, &o);
        if !problems.is_empty() {
            failures.push(format!(
                "{} (respawn {}):\n  - {}\n  stderr:\n{}\n  stdout:\n{}",
                f.name,
                f.command.join(" "),
                problems.join("\n  - "),
                o.stderr,
                o.stdout
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures misbehaved:\n\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
}

#[test]
fn alias_bomb_is_refused_fast() {
    let all = fixtures();
    let bomb = all
        .iter()
        .find(|f| f.name.contains("alias-bomb"))
        .expect("the corpus has an alias-bomb fixture");
    let o = run_fixture(bomb);
    assert_eq!(o.code, Some(2), "stderr:\n{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "stderr:\n{}", o.stderr);
    assert!(
        o.elapsed < Duration::from_secs(2),
        "alias bomb took {:?} to refuse",
        o.elapsed
    );
}

/// A scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "respawn-invalid-corpus-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn oversized_workflow_is_refused_with_the_limit() {
    let scratch = Scratch::new("big");
    let mut text = String::from(
        "respawn: 1\nname: big\nversion: 1.0.0\nplugins:\n  local: builtin:local@0.1\n\
         steps:\n  - id: a\n    uses: local/run\n",
    );
    let filler = format!("# {}\n", "x".repeat(1021));
    while text.len() < 2 << 20 {
        text.push_str(&filler);
    }
    std::fs::write(scratch.0.join("big.yaml"), &text).expect("write big workflow");
    let o = run(&scratch.0, &["validate".into(), "big.yaml".into()]);
    assert_eq!(o.code, Some(2), "stderr:\n{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "stderr:\n{}", o.stderr);
    let line = o
        .stderr
        .lines()
        .find(|l| l.starts_with("big.yaml:1:1: "))
        .unwrap_or_else(|| panic!("no diagnostic at big.yaml:1:1; stderr:\n{}", o.stderr));
    assert!(
        line.contains("limit") && line.contains(&(1u64 << 20).to_string()),
        "message does not name the limit: {line}"
    );
}

#[test]
fn empty_workflows_are_refused() {
    // A fixture cannot be empty (it carries its `# expect:` header), so these are made here.
    let scratch = Scratch::new("empty");
    for (name, text) in [("empty.yaml", ""), ("blank.yaml", " \n\n\t\n")] {
        std::fs::write(scratch.0.join(name), text).expect("write empty workflow");
        let o = run(&scratch.0, &["validate".into(), name.into()]);
        assert_eq!(o.code, Some(2), "{name}: stderr:\n{}", o.stderr);
        assert!(
            o.stderr
                .lines()
                .any(|l| l.starts_with(&format!("{name}:1:1: ")) && l.contains("empty")),
            "{name}: stderr:\n{}",
            o.stderr
        );
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("read workflows dir").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml")
            && path.file_name().is_some_and(|n| n != "respawn.lock")
        {
            out.push(path);
        }
    }
}

#[test]
fn shipped_workflows_are_valid() {
    let mut files = Vec::new();
    yaml_files(&repo_root().join("workflows"), &mut files);
    files.sort();
    assert!(!files.is_empty(), "no workflows found under workflows/");
    let mut failures = Vec::new();
    for file in &files {
        // A fleet file (docs/fleet.md) is checked as one, with every member's workflow.
        let is_fleet = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("fleet:"));
        let command = if is_fleet {
            vec![
                "fleet".into(),
                "validate".into(),
                file.clone().into_os_string(),
            ]
        } else {
            vec!["validate".into(), file.clone().into_os_string()]
        };
        let o = run(&repo_root(), &command);
        if o.code != Some(0) {
            failures.push(format!(
                "{}: exit code {:?}\n{}",
                file.display(),
                o.code,
                o.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
