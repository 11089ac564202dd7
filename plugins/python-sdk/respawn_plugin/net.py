"""TCP probes allowed by `tcp://host:port` entries of the step's `http` grant. Plugins never get raw sockets."""

from __future__ import annotations

from . import _backend

#: The host caps a probe's timeout at this.
MAX_TIMEOUT_MS = 10_000


def tcp_probe(host: str, port: int, timeout_ms: int = MAX_TIMEOUT_MS) -> int:
    """Connects to `host:port` and closes the connection; returns the connect time in microseconds. A refused or
    timed-out connection is `unavailable`; an address outside the grant is `denied` (capability `http`)."""
    return _backend.current().tcp_probe(host, int(port), int(timeout_ms))
