//! Running programs for plugins: finding a granted program, a clean environment, and capped output. Shared by
//! `exec` (programs run to completion) and `services` (long-running ones).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

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

pub(crate) fn command(req: &Request<'_>) -> Command {
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
