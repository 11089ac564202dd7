//! The exec capability: named programs only (`respawn_sandbox::exec`), an empty environment, a working directory
//! inside a granted directory, a deadline, and captured output with a cap. Services are started through it too;
//! `services.rs` tracks them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use respawn_engine::StepCall;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::WasiCtxBuilder;

use super::super::bindings::abi::exec::{self as api, ExecOutput, ExecRequest};
use super::super::bindings::abi::types::{Failure, FailureKind};
use super::super::state::{RunResources, StepState};
use super::services::Services;
use super::{Answer, Capability, files};

pub struct Exec;

/// What exec keeps for one attempt.
pub struct ExecStep {
    /// The step's `exec` grant.
    pub grant: Vec<String>,
    /// Where a program runs when the request names no directory.
    pub scratch_dir: PathBuf,
}

impl Capability for Exec {
    /// The services this run started.
    type Run = Services;

    fn configure(_: &RunResources) -> Services {
        Services::default()
    }

    type Step = ExecStep;

    fn prepare(
        call: &StepCall,
        _: &RunResources,
        _: &mut WasiCtxBuilder,
    ) -> std::io::Result<ExecStep> {
        Ok(ExecStep {
            grant: call.grants.exec.clone(),
            scratch_dir: std::env::temp_dir().join(format!(
                "respawn-{}-{}",
                std::process::id(),
                call.step_id
            )),
        })
    }

    fn link(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
        api::add_to_linker::<StepState, HasSelf<StepState>>(linker, |s| s)
    }
}

impl api::Host for StepState {
    async fn run(&mut self, request: ExecRequest) -> Answer<ExecOutput> {
        Ok(run(self, request).await)
    }

    async fn spawn_service(&mut self, request: ExecRequest) -> Answer<u32> {
        let program = request.program.clone();
        let pid = spawn_service(self, request);
        if let (Ok(pid), Some(journal)) = (&pid, self.run.journal.clone()) {
            let started = respawn_journal::EventBody::ServiceStarted {
                step: self.step_id.clone(),
                pid: *pid,
                program,
                start_ticks: super::services::process_start_ticks(*pid),
            };
            if let Err(e) = journal.append(started).await {
                // No event names it, so no later runner would take it over: it must not outlive this one.
                let _ = self.run_caps.exec.stop(*pid).await;
                wasmtime::bail!("{e}");
            }
        }
        Ok(pid)
    }

    async fn stop_service(&mut self, pid: u32) -> Answer<()> {
        Ok(stop_service(self, pid).await)
    }
}

/// Why an exec request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("program `{0}` was not found on PATH")]
    NotFound(String),
    #[error("`{program}` did not finish within {seconds:.1}s and was killed")]
    TimedOut { program: String, seconds: f64 },
    #[error("`{program}`: {message}")]
    Io { program: String, message: String },
}

/// Finds a (granted) program: an absolute path as is, a bare name on the runner's PATH.
pub fn locate(program: &str) -> Result<PathBuf, ExecError> {
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

/// Resolves program and working directory for a plugin's request, recording a denial when not granted.
fn prepare(s: &mut StepState, request: &ExecRequest) -> Result<(PathBuf, PathBuf), Failure> {
    let read_only = s.read_only();
    if let Err(denial) =
        respawn_sandbox::exec::check(&s.caps.exec.grant, &request.program, read_only)
    {
        return Err(s.deny(denial));
    }
    let program = locate(&request.program)
        .map_err(|e| super::failure(FailureKind::NotFound, e.to_string()))?;
    let cwd = match &request.cwd {
        Some(dir) => {
            let cwd = files::host_path(&s.run.base_dir, dir);
            if !files::inside_rw(&s.caps.files, &cwd) {
                return Err(s.deny(respawn_sandbox::exec::cwd_not_granted(dir)));
            }
            cwd
        }
        None => {
            let scratch = s.caps.exec.scratch_dir.clone();
            std::fs::create_dir_all(&scratch)
                .map_err(|e| super::failure(FailureKind::Internal, format!("scratch dir: {e}")))?;
            scratch
        }
    };
    Ok((program, cwd))
}

async fn run(s: &mut StepState, request: ExecRequest) -> Result<ExecOutput, Failure> {
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

fn spawn_service(s: &mut StepState, request: ExecRequest) -> Result<u32, Failure> {
    let (program, cwd) = prepare(s, &request)?;
    let req = Request {
        program,
        name: &request.program,
        args: &request.args,
        cwd: &cwd,
        env: &request.env,
    };
    let (run_id, step) = (s.run_id.clone(), s.step_id.clone());
    s.run_caps
        .exec
        .spawn(&run_id, &step, req)
        .map_err(|e| super::failure(FailureKind::Internal, e.to_string()))
}

async fn stop_service(s: &mut StepState, pid: u32) -> Result<(), Failure> {
    if let Err(denial) = respawn_sandbox::exec::check_stop(pid, s.read_only()) {
        return Err(s.deny(denial));
    }
    match s.run_caps.exec.stop(pid).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(s.deny(respawn_sandbox::exec::not_started_here(pid))),
        Err(e) => Err(super::failure(FailureKind::Internal, e.to_string())),
    }
}
