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
    #[error("user `{user}`: {message}")]
    User { user: String, message: String },
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
    /// The OS user the step's exec grant runs this program as; the runner's own user when `None`.
    pub user: Option<&'a RunAs>,
}

/// An OS user a program runs as, looked up when the step asks to run it.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl RunAs {
    /// Looks `name` up in the user database. Switching to another user needs the runner to be root; running as
    /// the runner's own user needs nothing.
    pub fn lookup(name: &str) -> Result<RunAs, ExecError> {
        let c_name = std::ffi::CString::new(name).map_err(|_| ExecError::User {
            user: name.to_string(),
            message: "not a user name".into(),
        })?;
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: getpwnam_r writes into `pwd` and `buf` (whose length it is given) and sets `result` to `pwd`
        // or null; nothing is read from them unless it returned 0 with a non-null result.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() {
            return Err(ExecError::User {
                user: name.to_string(),
                message: "no such user on this machine".into(),
            });
        }
        // SAFETY: pw_dir points into `buf`, NUL-terminated by getpwnam_r.
        let home = unsafe { std::ffi::CStr::from_ptr(pwd.pw_dir) }
            .to_string_lossy()
            .into_owned();
        let user = RunAs {
            name: name.to_string(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: PathBuf::from(home),
        };
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if me != 0 && me != user.uid {
            return Err(ExecError::User {
                user: name.to_string(),
                message: format!(
                    "the runner runs as uid {me}, and only root can run a program as another user"
                ),
            });
        }
        Ok(user)
    }
}

pub(crate) fn command(req: &Request<'_>) -> Command {
    let mut cmd = Command::new(&req.program);
    cmd.args(req.args)
        .current_dir(req.cwd)
        .env_clear()
        .kill_on_drop(true);
    // A minimal PATH so that interpreters can find their own helpers; nothing else leaks from the runner.
    cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    if let Some(user) = req.user {
        // std drops the supplementary groups when a root parent switches uid.
        cmd.uid(user.uid).gid(user.gid);
        cmd.env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    for (k, v) in req.env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs to completion within `deadline`, keeping at most `cap` bytes of each output stream. The program runs in
/// a process group of its own: at the deadline the whole group is killed, and reading its output is under the
/// same deadline, so a grandchild that inherited a pipe cannot hold the step past it. Whatever of the group is
/// still running when the program exits is killed too: a program run to completion leaves nothing behind
/// (long-running processes are services).
pub async fn run_capped(
    req: Request<'_>,
    deadline: Duration,
    cap: usize,
) -> Result<Finished, ExecError> {
    let io = |e: std::io::Error| ExecError::Io {
        program: req.name.to_string(),
        message: e.to_string(),
    };
    let timed_out = || ExecError::TimedOut {
        program: req.name.to_string(),
        seconds: deadline.as_secs_f64(),
    };
    let until = tokio::time::Instant::now() + deadline;
    let mut child = command(&req)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io)?;
    // The group id is the leader's pid; it stays reserved while any member lives, so signalling it cannot reach
    // an unrelated process.
    let group = child.id();
    let out = tokio::spawn(read_capped(child.stdout.take(), cap));
    let err = tokio::spawn(read_capped(child.stderr.take(), cap));
    let status = match tokio::time::timeout_at(until, child.wait()).await {
        Ok(status) => status.map_err(io)?,
        Err(_) => {
            // Before reaping the leader, so its pid (the group id) cannot have been reused.
            kill_group(group);
            let _ = child.kill().await;
            out.abort();
            err.abort();
            return Err(timed_out());
        }
    };
    kill_group(group);
    let outputs = tokio::time::timeout_at(until, async { (out.await, err.await) }).await;
    let Ok((out, err)) = outputs else {
        return Err(timed_out());
    };
    let (stdout, t1) = out.unwrap_or_default();
    let (stderr, t2) = err.unwrap_or_default();
    Ok(Finished {
        status: status.code().unwrap_or(-1),
        stdout,
        stderr,
        truncated: t1 || t2,
    })
}

/// SIGKILL to every process of the group `leader` leads (nothing when it has none left).
fn kill_group(leader: Option<u32>) {
    if let Some(pid) = leader.and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: killpg(2) with a process group id and a signal number has no memory-safety preconditions.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, dir: &Path) -> (PathBuf, Vec<String>, PathBuf) {
        let args = vec!["-c".to_string(), script.to_string()];
        (locate("sh").unwrap(), args, dir.to_path_buf())
    }

    /// Running, as opposed to gone or a zombie nobody reaped yet (an orphan's reaper may be slow).
    fn alive(pid_file: &Path) -> bool {
        let pid = std::fs::read_to_string(pid_file).unwrap();
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        let state = stat
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.chars().next());
        state.is_some_and(|s| s != 'Z' && s != 'X')
    }

    #[tokio::test]
    async fn a_background_grandchild_holding_the_pipe_neither_hangs_the_call_nor_outlives_it() {
        let dir = tempfile::tempdir().unwrap();
        let (program, args, cwd) = sh("sleep 30 & echo $! > bg.pid; echo done", dir.path());
        let req = Request {
            program,
            name: "sh",
            args: &args,
            cwd: &cwd,
            env: &[],
            user: None,
        };
        let started = std::time::Instant::now();
        let finished = run_capped(req, Duration::from_secs(20), 1024)
            .await
            .unwrap();
        assert_eq!(finished.stdout, b"done\n");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !alive(&dir.path().join("bg.pid")),
            "the grandchild outlived exec"
        );
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let (program, args, cwd) = sh("sleep 30 & echo $! > bg.pid; sleep 30", dir.path());
        let req = Request {
            program,
            name: "sh",
            args: &args,
            cwd: &cwd,
            env: &[],
            user: None,
        };
        let err = run_capped(req, Duration::from_millis(500), 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::TimedOut { .. }), "{err}");
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !alive(&dir.path().join("bg.pid")),
            "the grandchild survived the timeout"
        );
    }
}
