"""Log lines of the current step, always allowed: they go to the runner's log (`warn` and `error` show by
default, `-v` shows down to `debug`, `-vv` also `trace`). Past the step's `limits.log` further lines are dropped.

Log with these rather than `print`: the plugin's stdout and stderr are captured too, but only shown with `-v`,
and each is capped.
"""

from __future__ import annotations

from . import _backend

LEVELS = ("trace", "debug", "info", "warn", "error")


def log(level: str, message: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"log level `{level}`: one of {', '.join(LEVELS)}")
    _backend.current().log(level, str(message))


def trace(message: str) -> None:
    log("trace", message)


def debug(message: str) -> None:
    log("debug", message)


def info(message: str) -> None:
    log("info", message)


def warn(message: str) -> None:
    log("warn", message)


def error(message: str) -> None:
    log("error", message)
