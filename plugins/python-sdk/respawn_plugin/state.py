"""The step's own key-value state, always allowed: ids, not data (at most 256 keys of 64 KiB each; a write past
that fails the step). The runner hands it to every later attempt and phase of the step, including destroy and a
`resume` after a crash. Record what you are about to create *before* creating it. Writes in the plan phase are
dropped.
"""

from __future__ import annotations

from typing import Dict, Optional

from . import _backend


def get(key: str) -> Optional[str]:
    return _backend.current().state_get(key)


def set(key: str, value: str) -> None:  # noqa: A001 - the ABI's name
    if not isinstance(value, str):
        raise TypeError(f"state.set({key!r}, ...): values are strings, not {type(value).__name__}")
    _backend.current().state_set(key, value)


def delete(key: str) -> None:
    _backend.current().state_delete(key)


def list() -> Dict[str, str]:  # noqa: A001 - the ABI's name
    """Every pair, sorted by key."""
    return dict(sorted(_backend.current().state_list()))


def fencing_token() -> int:
    """The run's fencing token (its lease epoch): 1 for the runner that started the run, one more for each runner
    that resumed or took it over since, 0 in `respawn plan`. Pass it to systems that accept one, so a runner that
    lost the run cannot overwrite its successor's work."""
    return _backend.current().fencing_token()
