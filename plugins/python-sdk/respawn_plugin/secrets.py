"""Secrets named by the step's `secrets` grant. Never log a secret or put one in outputs (the runner replaces
its value by `***` everywhere it can, but a transformed value it cannot recognise)."""

from __future__ import annotations

from . import _backend


def get(name: str) -> str:
    """The value. Raises a `denied` Failure when the grant does not name it, `not-found` when it has no value."""
    return _backend.current().secret(name)
