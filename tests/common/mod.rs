//! Helpers shared by the end-to-end tests that drive the binary on copies of the sample workflows.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_respawn")
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
