//! The exec capability: named programs only, an empty environment, a working directory inside a granted
//! directory, a deadline, and captured output with a cap. Services are started through it too; `services.rs`
//! tracks them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
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

pub(super) fn command(req: &Request<'_>) -> Command {
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
    let (run_id, step) = (s.run_id.clone(), s.step_id.clone());
    s.run
        .services
        .spawn(&run_id, &step, req)
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
