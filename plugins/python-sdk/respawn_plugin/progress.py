"""Progress of the current step, always allowed: shown on its line of the progress bars during `drill` and
`failover` as bytes with throughput (`MESSAGE: 12 MiB of 40 MiB at 8 MiB/s`), so report byte counts."""

from __future__ import annotations

from typing import Optional

from . import _backend


def report(done: int, total: Optional[int] = None, message: str = "") -> None:
    """`done` of `total` bytes (`None` when the total is unknown)."""
    _backend.current().progress(int(done), None if total is None else int(total), message)
