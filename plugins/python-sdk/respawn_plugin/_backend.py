"""Which host answers the SDK's calls: the runner (through the component's imports, `_wasm.py`) during a real
invocation, or a `testing.MockHost` during a unit test. Both implement the methods the helper modules call."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

_current: Optional[Any] = None


def current() -> Any:
    """The host of the invocation in progress."""
    if _current is None:
        raise RuntimeError(
            "respawn_plugin: a host call outside an invocation. Inside a component the runner answers it; in a "
            "unit test, run the plugin (or the helper, with MockHost.enter) through respawn_plugin.testing.MockHost"
        )
    return _current


@contextlib.contextmanager
def installed(backend: Any) -> Iterator[Any]:
    """Makes `backend` answer host calls until the block ends (calls may nest: the inner one answers)."""
    global _current
    outer = _current
    _current = backend
    try:
        yield backend
    finally:
        _current = outer
