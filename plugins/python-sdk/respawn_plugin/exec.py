"""Programs named by the step's `exec` grant, run to completion or as services. Denied in the plan phase.

The environment is empty but for `PATH=/usr/local/bin:/usr/bin:/bin` and `env`; `cwd` must be inside a `files`
directory granted `rw` (a fresh scratch directory without it); the deadline is `timeout_ms`, capped by what is
left of the step's timeout (past it the program is killed: `unavailable`).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional

from . import _backend
from ._types import ExecOutput, ExecRequest


def _request(
    program: str,
    args: Iterable[str],
    cwd: Optional[str],
    env: Optional[Mapping[str, str]],
    timeout_ms: Optional[int],
) -> ExecRequest:
    if isinstance(args, str):
        raise TypeError(f"exec of `{program}`: args is a list of strings, not one string")
    return ExecRequest(
        program=program,
        args=[str(a) for a in args],
        cwd=cwd,
        env=[(str(k), str(v)) for k, v in (env or {}).items()],
        timeout_ms=timeout_ms,
    )


def run(
    program: str,
    args: Iterable[str] = (),
    *,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    timeout_ms: Optional[int] = None,
) -> ExecOutput:
    """Runs a granted program to completion: its exit status and captured stdout and stderr (each capped at the
    step's `limits.log`; `truncated` says when output was dropped)."""
    return _backend.current().exec_run(_request(program, args, cwd, env, timeout_ms))


def spawn_service(
    program: str,
    args: Iterable[str] = (),
    *,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
) -> int:
    """Starts a granted program as a long-running service; returns its pid. Keep the pid in state so destroy can
    `stop_service` it; the run stops every service still running when it ends."""
    return _backend.current().spawn_service(_request(program, args, cwd, env, None))


def stop_service(pid: int) -> None:
    """Stops a service this run started (one that has exited stops fine); any other pid is denied."""
    _backend.current().stop_service(int(pid))
