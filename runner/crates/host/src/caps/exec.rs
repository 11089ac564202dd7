//! The exec capability: named programs only (`respawn_sandbox::exec`), an empty environment, a working directory
//! inside a granted directory, a deadline, and captured output with a cap. Services are started through it too;
//! `services.rs` tracks them.

use std::path::PathBuf;
use std::time::Duration;

use respawn_engine::StepCall;
use wasmtime_wasi::WasiCtxBuilder;

use super::super::bindings::abi::exec::{self as api, ExecOutput, ExecRequest};
use super::super::bindings::abi::types::{Failure, FailureKind};
use super::super::context::{RunResources, StepContext};
use super::files::{self, GrantedDir};
use super::process::{ExecError, Request, RunAs, locate, run_capped};
use super::services::{Services, Started};
use super::{Answer, Capability};

pub struct Exec;

/// What exec keeps for one attempt.
pub struct ExecStep {
    /// The step's `exec` grant.
    pub grant: Vec<respawn_sandbox::exec::ExecGrant>,
    /// Where a program runs when the request names no directory.
    pub scratch_dir: PathBuf,
}

impl Capability for Exec {
    /// The services this run started.
    type Run = Services;

    fn configure(run: &RunResources) -> Services {
        Services::new(run.services_outlive)
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
}

/// What the exec interface touches of an attempt.
pub struct ExecView<'a> {
    pub ctx: &'a mut StepContext,
    pub exec: &'a ExecStep,
    pub services: &'a Services,
    /// The `files` directories: a working directory must be inside one granted `rw`.
    pub dirs: &'a [GrantedDir],
}

linked_through!(ExecView, api);

impl api::Host for ExecView<'_> {
    async fn run(&mut self, request: ExecRequest) -> Answer<ExecOutput> {
        Ok(run(self, request).await)
    }

    async fn spawn_service(&mut self, request: ExecRequest) -> Answer<u32> {
        let program = request.program.clone();
        let started = match spawn_service(self, request) {
            Ok(started) => started,
            Err(failure) => return Ok(Err(failure)),
        };
        if let Some(journal) = self.ctx.run.journal.clone() {
            let event = respawn_journal::EventBody::ServiceStarted {
                step: self.ctx.step_id.clone(),
                pid: started.pid,
                program,
                start_ticks: started.start_ticks,
                detached: started.detached,
                logs: started.logs.clone(),
            };
            if let Err(e) = journal.append(event).await {
                // No event names it, so no later runner would take it over: it must not outlive this one.
                let _ = self.services.stop(started.pid).await;
                wasmtime::bail!("{e}");
            }
        }
        Ok(Ok(started.pid))
    }

    async fn stop_service(&mut self, pid: u32) -> Answer<()> {
        Ok(stop_service(self, pid).await)
    }
}

/// Resolves program, working directory and user for a plugin's request, recording a denial when not granted.
fn resolve(
    v: &mut ExecView<'_>,
    request: &ExecRequest,
) -> Result<(PathBuf, PathBuf, Option<RunAs>), Failure> {
    let read_only = v.ctx.read_only();
    let keys = request.env.iter().map(|(k, _)| k.as_str());
    let checked = respawn_sandbox::exec::check(
        &v.exec.grant,
        &request.program,
        &request.args,
        keys,
        read_only,
    );
    if let Err(denial) = checked {
        return Err(v.ctx.deny(denial));
    }
    v.ctx.still_owner()?;
    let program = locate(&request.program)
        .map_err(|e| super::failure(FailureKind::NotFound, e.to_string()))?;
    let user = respawn_sandbox::exec::user_of(&v.exec.grant, &request.program)
        .map(RunAs::lookup)
        .transpose()
        .map_err(|e| super::failure(FailureKind::InvalidInput, e.to_string()))?;
    let cwd = match &request.cwd {
        Some(dir) => {
            let cwd = files::host_path(&v.ctx.run.base_dir, dir);
            if !files::inside_rw(v.dirs, &cwd) {
                return Err(v.ctx.deny(respawn_sandbox::exec::cwd_not_granted(dir)));
            }
            cwd
        }
        None => {
            let scratch = v.exec.scratch_dir.clone();
            std::fs::create_dir_all(&scratch)
                .map_err(|e| super::failure(FailureKind::Internal, format!("scratch dir: {e}")))?;
            scratch
        }
    };
    Ok((program, cwd, user))
}

async fn run(v: &mut ExecView<'_>, request: ExecRequest) -> Result<ExecOutput, Failure> {
    let (program, cwd, user) = resolve(v, &request)?;
    let left = v
        .ctx
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
        user: user.as_ref(),
    };
    match run_capped(req, deadline, v.ctx.limits.log as usize).await {
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

fn spawn_service(v: &mut ExecView<'_>, request: ExecRequest) -> Result<Started, Failure> {
    let (program, cwd, user) = resolve(v, &request)?;
    // A detached service's logs go into the granted directory it runs in (its scratch directory without one),
    // under `.respawn-logs/RUN_ID`. The plugin may write that directory too, so the log directory must still
    // resolve inside the grant once made (a planted symlink must not send the host's writes elsewhere), and the
    // files are opened without following links.
    let grant_dir = files::rw_dir_of(v.dirs, &cwd).unwrap_or(&cwd).to_path_buf();
    let log_dir = grant_dir.join(".respawn-logs").join(&v.ctx.run_id);
    if v.services.detaches() {
        let internal = |why: String| super::failure(FailureKind::Internal, why);
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| internal(format!("service log directory {}: {e}", log_dir.display())))?;
        let (real, root) = (
            std::fs::canonicalize(&log_dir),
            std::fs::canonicalize(&grant_dir),
        );
        if !matches!((&real, &root), (Ok(real), Ok(root)) if real.starts_with(root)) {
            return Err(v.ctx.deny(respawn_sandbox::Denial::new(
                "files",
                format!(
                    "service logs in {}: the directory leads outside the grant",
                    log_dir.display()
                ),
            )));
        }
    }
    let req = Request {
        program,
        name: &request.program,
        args: &request.args,
        cwd: &cwd,
        env: &request.env,
        user: user.as_ref(),
    };
    let (run_id, step) = (v.ctx.run_id.clone(), v.ctx.step_id.clone());
    v.services
        .spawn(&run_id, &step, req, &log_dir)
        .map_err(|e| super::failure(FailureKind::Internal, e.to_string()))
}

async fn stop_service(v: &mut ExecView<'_>, pid: u32) -> Result<(), Failure> {
    if let Err(denial) = respawn_sandbox::exec::check_stop(pid, v.ctx.read_only()) {
        return Err(v.ctx.deny(denial));
    }
    match v.services.stop(pid).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(v.ctx.deny(respawn_sandbox::exec::not_started_here(pid))),
        Err(e) => Err(super::failure(FailureKind::Internal, e.to_string())),
    }
}
