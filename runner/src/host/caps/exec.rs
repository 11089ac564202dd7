//! The exec capability: named programs only, an empty environment, a working directory inside a granted
//! directory, a deadline, and captured output with a cap. Services started by a run are tracked so they can be
//! stopped at destroy or when the runner exits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Why an exec request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("program `{0}` is not in the step's exec grant")]
    NotGranted(String),
    #[error("working directory {0} is not inside a directory granted rw")]
    CwdNotGranted(String),
    #[error("program `{0}` was not found on PATH")]
    NotFound(String),
    #[error("`{program}` did not finish within {seconds:.1}s and was killed")]
    TimedOut { program: String, seconds: f64 },
    #[error("`{program}`: {message}")]
    Io { program: String, message: String },
}

/// Resolves a granted program name to a path. The name must appear in the grant exactly.
pub fn resolve(grant: &[String], program: &str) -> Result<PathBuf, ExecError> {
    if !grant.iter().any(|g| g == program) {
        return Err(ExecError::NotGranted(program.to_string()));
    }
    if program.starts_with('/') {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| ExecError::NotFound(program.to_string()))
}

/// Output of a finished program.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: bool,
}

/// A command the host will run on a plugin's behalf.
pub struct Request<'a> {
    pub program: PathBuf,
    pub name: &'a str,
    pub args: &'a [String],
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
}

fn command(req: &Request<'_>) -> Command {
    let mut cmd = Command::new(&req.program);
    cmd.args(req.args)
        .current_dir(req.cwd)
        .env_clear()
        .kill_on_drop(true);
    // A minimal PATH so that interpreters can find their own helpers; nothing else leaks from the runner.
    cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    for (k, v) in req.env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs to completion within `deadline`, keeping at most `cap` bytes of each output stream.
pub async fn run_capped(
    req: Request<'_>,
    deadline: Duration,
    cap: usize,
) -> Result<Finished, ExecError> {
    let io = |e: std::io::Error| ExecError::Io {
        program: req.name.to_string(),
        message: e.to_string(),
    };
    let mut child = command(&req)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io)?;
    let out = tokio::spawn(read_capped(child.stdout.take(), cap));
    let err = tokio::spawn(read_capped(child.stderr.take(), cap));
    let status = match tokio::time::timeout(deadline, child.wait()).await {
        Ok(status) => status.map_err(io)?,
        Err(_) => {
            let _ = child.kill().await;
            return Err(ExecError::TimedOut {
                program: req.name.to_string(),
                seconds: deadline.as_secs_f64(),
            });
        }
    };
    let (stdout, t1) = out.await.unwrap_or_default();
    let (stderr, t2) = err.await.unwrap_or_default();
    Ok(Finished {
        status: status.code().unwrap_or(-1),
        stdout,
        stderr,
        truncated: t1 || t2,
    })
}

/// Reads a whole stream but keeps only the first `cap` bytes, so a chatty program cannot exhaust memory and
/// cannot block on a full pipe either.
async fn read_capped<R: AsyncRead + Unpin>(stream: Option<R>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut stream) = stream else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
}

/// A service the run stops at destroy: a child of this runner, or one adopted from a runner that died.
enum Tracked {
    Child(tokio::process::Child),
    /// Started by an earlier runner of this run (per the journal) and still running.
    Adopted {
        start_ticks: Option<u64>,
    },
}

/// Services started by a run: pid -> (step, process). Stopped at destroy, and all of them when the runner
/// drops the tracker.
#[derive(Clone, Default)]
pub struct Services {
    inner: Arc<Mutex<BTreeMap<u32, (String, Tracked)>>>,
}

impl Services {
    /// Starts a long-running program with output discarded. The child is killed if the tracker is dropped.
    pub fn spawn(&self, step: &str, req: Request<'_>) -> Result<u32, ExecError> {
        let io = |e: std::io::Error| ExecError::Io {
            program: req.name.to_string(),
            message: e.to_string(),
        };
        let child = command(&req)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io)?;
        let pid = child.id().unwrap_or(0);
        self.lock()
            .insert(pid, (step.to_string(), Tracked::Child(child)));
        Ok(pid)
    }

    /// Takes over a service that an earlier runner of this run started, if that very process still runs (its
    /// start time tells it from a process that reused the pid). Returns whether it was adopted.
    pub fn adopt(&self, step: &str, pid: u32, start_ticks: Option<u64>) -> bool {
        let alive = match (process_start_ticks(pid), start_ticks) {
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if alive {
            self.lock()
                .insert(pid, (step.to_string(), Tracked::Adopted { start_ticks }));
        }
        alive
    }

    /// Stops a tracked service. A pid this run did not start is refused; an exited one is fine.
    pub async fn stop(&self, pid: u32) -> Result<bool, ExecError> {
        let tracked = self.lock().remove(&pid);
        match tracked {
            Some((_, process)) => {
                stop(pid, process).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Kills every tracked service (runner exit, interrupted drill).
    pub async fn stop_all(&self) {
        let all: Vec<_> = std::mem::take(&mut *self.lock()).into_iter().collect();
        for (pid, (_, process)) in all {
            stop(pid, process).await;
        }
    }

    /// Lets every service run on after this runner exits: another runner took the run over and owns them.
    pub fn release_all(&self) {
        for (_, (_, process)) in std::mem::take(&mut *self.lock()) {
            if let Tracked::Child(child) = process {
                // Dropping would kill it (kill_on_drop); forgetting leaves it to the new owner.
                std::mem::forget(child);
            }
        }
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, (String, Tracked)>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn stop(pid: u32, process: Tracked) {
    match process {
        Tracked::Child(mut child) => {
            let _ = child.kill().await;
        }
        Tracked::Adopted { start_ticks } => {
            // Check again right before the kill: never signal a process that merely reused the pid.
            if process_start_ticks(pid).is_some()
                && (start_ticks.is_none() || process_start_ticks(pid) == start_ticks)
            {
                // SAFETY: kill(2) with a pid and a signal number has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
                // Not our child, so it cannot be waited for; give it a moment to go.
                for _ in 0..50 {
                    if process_start_ticks(pid).is_none() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`); `None` when it is gone
/// or a zombie (Linux only).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is at index 19.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

use super::super::bindings::host_api::{ExecOutput, ExecRequest};
use super::super::bindings::types::{Failure, FailureKind};
use super::super::state::StepState;
use super::files;

/// Resolves program and working directory for a plugin's request, recording a denial when not granted.
fn prepare(s: &mut StepState, request: &ExecRequest) -> Result<(PathBuf, PathBuf), Failure> {
    if s.read_only() {
        return Err(s.deny(
            "exec",
            format!("`{}`: the plan phase may not run programs", request.program),
        ));
    }
    let program = match resolve(&s.grants.exec, &request.program) {
        Ok(p) => p,
        Err(e @ ExecError::NotGranted(_)) => return Err(s.deny("exec", e.to_string())),
        Err(e) => return Err(super::failure(FailureKind::NotFound, e.to_string())),
    };
    let cwd = match &request.cwd {
        Some(dir) => {
            let dirs = files::granted_dirs(&s.grants, &s.run.base_dir);
            let cwd = files::host_path(&s.run.base_dir, dir);
            if !files::inside_rw(&dirs, &cwd) {
                return Err(s.deny("exec", ExecError::CwdNotGranted(dir.clone()).to_string()));
            }
            cwd
        }
        None => {
            std::fs::create_dir_all(&s.scratch_dir)
                .map_err(|e| super::failure(FailureKind::Internal, format!("scratch dir: {e}")))?;
            s.scratch_dir.clone()
        }
    };
    Ok((program, cwd))
}

pub async fn run(s: &mut StepState, request: ExecRequest) -> Result<ExecOutput, Failure> {
    let (program, cwd) = prepare(s, &request)?;
    let left = s
        .deadline
        .saturating_duration_since(std::time::Instant::now());
    let deadline = request
        .timeout_ms
        .map_or(left, |ms| Duration::from_millis(ms).min(left));
    let req = Request {
        program,
        name: &request.program,
        args: &request.args,
        cwd: &cwd,
        env: &request.env,
    };
    match run_capped(req, deadline, s.limits.log as usize).await {
        Ok(f) => Ok(ExecOutput {
            status: f.status,
            stdout: f.stdout,
            stderr: f.stderr,
            truncated: f.truncated,
        }),
        Err(e @ ExecError::TimedOut { .. }) => {
            Err(super::failure(FailureKind::Unavailable, e.to_string()))
        }
        Err(e) => Err(super::failure(FailureKind::Internal, e.to_string())),
    }
}

pub fn spawn_service(s: &mut StepState, request: ExecRequest) -> Result<u32, Failure> {
    let (program, cwd) = prepare(s, &request)?;
    let req = Request {
        program,
        name: &request.program,
        args: &request.args,
        cwd: &cwd,
        env: &request.env,
    };
    let step = s.step_id.clone();
    s.run
        .services
        .spawn(&step, req)
        .map_err(|e| super::failure(FailureKind::Internal, e.to_string()))
}

pub async fn stop_service(s: &mut StepState, pid: u32) -> Result<(), Failure> {
    if s.read_only() {
        return Err(s.deny(
            "exec",
            format!("stop pid {pid}: the plan phase may not stop services"),
        ));
    }
    match s.run.services.stop(pid).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(s.deny(
            "exec",
            format!("stop pid {pid}: not a service started by this run"),
        )),
        Err(e) => Err(super::failure(FailureKind::Internal, e.to_string())),
    }
}
