"""Outgoing HTTP through wasi:http, which the host filters by the step's `http` grant.

    from respawn_plugin import http

    r = http.get("http://127.0.0.1:8080/health")            # the whole body, in memory
    if r.status != 200:
        raise r.failure("health check")                      # 404 -> not-found, 5xx -> unavailable, ...

    with http.send("GET", url, headers={"Accept": "application/json"}) as r:   # the body as it arrives
        for chunk in r.iter_chunks():
            ...

`send` streams both ways: the request body may be bytes, a str, an iterable of bytes or a file-like object
(read as it is sent), and the response body is read as it arrives, so a large one never sits whole in memory.
No redirect is followed and nothing is retried: a 3xx comes back as it is, and retrying is the runner's job
(`retry:` of the step, for `unavailable` failures).

- Outside the grant a request fails `denied` (its message starts with `http:`); in the plan phase only GET and
  HEAD are allowed. Connection and protocol errors are `unavailable`.
- The host's timeouts (connect 10 s, first byte 30 s, between bytes 30 s) can be shortened with `timeouts=`.
- A response body past the step's `limits.http_response` (64 MiB by default) fails `invalid-input` naming it.

Natively (unit tests) the requests are answered by `respawn_plugin.testing.MockHost`.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from . import _backend
from ._types import Failure, FailureKind

#: The most `Response.bytes`, `.text` and `.json` read unless told otherwise, and what `request`/`get` keep.
DEFAULT_MAX_BODY = 64 << 20
#: Bytes per chunk of `iter_chunks` and of a file-like request body.
CHUNK = 64 << 10

BodyLike = Union[None, bytes, bytearray, memoryview, str, Iterable[bytes], Any]


@dataclass(frozen=True)
class Timeouts:
    """Timeouts in seconds asked of the host, which caps them with its own; None keeps the host's."""

    connect: Optional[float] = None
    first_byte: Optional[float] = None
    between_bytes: Optional[float] = None


class Headers:
    """Header names and values in order; names compare without regard to case."""

    def __init__(self, items: Union[None, Mapping[str, str], Iterable[Tuple[str, str]]] = None) -> None:
        if items is None:
            self._items: List[Tuple[str, str]] = []
        elif isinstance(items, Headers):
            self._items = list(items._items)
        elif isinstance(items, Mapping):
            self._items = [(str(k), str(v)) for k, v in items.items()]
        else:
            self._items = [(str(k), str(v)) for k, v in items]

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of `name`."""
        lower = name.lower()
        for n, v in self._items:
            if n.lower() == lower:
                return v
        return default

    def get_all(self, name: str) -> List[str]:
        lower = name.lower()
        return [v for n, v in self._items if n.lower() == lower]

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self._items.append((name, str(value)))

    def add(self, name: str, value: str) -> None:
        self._items.append((name, str(value)))

    def remove(self, name: str) -> None:
        lower = name.lower()
        self._items = [(n, v) for n, v in self._items if n.lower() != lower]

    def items(self) -> List[Tuple[str, str]]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[Tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def status_failure(status: int, what: str, detail: str = "") -> Failure:
    """The failure an HTTP status stands for: 401/403 `denied`, 404 `not-found`, 409 `conflict`, 429 and 5xx
    `unavailable` (retryable), other statuses `invalid-input`."""
    if status in (401, 403):
        kind = FailureKind.DENIED
    elif status == 404:
        kind = FailureKind.NOT_FOUND
    elif status == 409:
        kind = FailureKind.CONFLICT
    elif status == 429 or 500 <= status <= 599:
        kind = FailureKind.UNAVAILABLE
    else:
        kind = FailureKind.INVALID_INPUT
    message = f"{what}: HTTP {status}"
    if detail:
        message += f": {detail}"
    return Failure(kind, message)


def _redact(url: str) -> str:
    """The URL without its query, which may carry a token."""
    return url.split("?", 1)[0]


class StreamingResponse:
    """A response whose body is read as it arrives. Use it as a context manager (or call `close`) so an unread
    body is released at once."""

    def __init__(self, url: str, status: int, headers: Headers, body: Any) -> None:
        self.url = url
        self.status = status
        self.headers = headers
        self._body = body
        self._buffer = b""

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status <= 299

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name)

    def _next(self, n: int) -> bytes:
        if self._buffer:
            chunk, self._buffer = self._buffer[:n], self._buffer[n:]
            return chunk
        if self._body is None:
            return b""
        chunk = self._body.read(n)
        if len(chunk) > n:
            chunk, self._buffer = chunk[:n], chunk[n:]
        return chunk

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (as many as have arrived, at least one unless the body has ended: `b""`); with no `n`,
        the rest of the body, at most `DEFAULT_MAX_BODY` bytes."""
        if n is None or n < 0:
            return self.bytes(DEFAULT_MAX_BODY)
        if n == 0:
            return b""
        return self._next(n)

    def iter_chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The rest of the body in chunks of at most `size` bytes."""
        while True:
            chunk = self._next(size)
            if not chunk:
                return
            yield chunk

    def __iter__(self) -> Iterator[bytes]:
        return self.iter_chunks()

    def bytes(self, max: int = DEFAULT_MAX_BODY) -> bytes:  # noqa: A002 - as in the Rust SDK
        """The rest of the body, refusing one longer than `max` bytes (`invalid-input`)."""
        parts: List[bytes] = []
        size = 0
        for chunk in self.iter_chunks(CHUNK * 16):
            size += len(chunk)
            if size > max:
                self.close()
                raise Failure.invalid_input(f"{_redact(self.url)}: response body larger than {max} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def text(self, max: int = DEFAULT_MAX_BODY, encoding: str = "utf-8") -> str:  # noqa: A002
        return self.bytes(max).decode(encoding, "replace")

    def json(self, max: int = DEFAULT_MAX_BODY) -> Any:  # noqa: A002
        """The body parsed as JSON; a body that is not JSON is an `internal` failure quoting its start."""
        raw = self.bytes(max)
        try:
            return _json.loads(raw)
        except ValueError as e:
            start = raw[:100].decode("utf-8", "replace")
            raise Failure.internal(f"{_redact(self.url)}: the response is not JSON ({e}): {start!r}") from None

    def failure(self, what: str) -> Failure:
        """The failure this response's status stands for (see `status_failure`), quoting the start of its body
        (an API's error document). `what` says what was being done, e.g. `GET manifest`."""
        try:
            detail = self.bytes(64 << 10).decode("utf-8", "replace")[:300].strip()
        except Failure:
            detail = ""
        return status_failure(self.status, f"{what}: {_redact(self.url)}", detail)

    def close(self) -> None:
        body, self._body = self._body, None
        self._buffer = b""
        if body is not None:
            body.close()

    def __enter__(self) -> "StreamingResponse":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StreamingResponse(status={self.status}, url={_redact(self.url)!r})"


@dataclass
class Response:
    """A response with its whole body: what `request` and `get` return."""

    status: int
    body: bytes = b""
    headers: Headers = None  # type: ignore[assignment]
    url: str = ""

    def __post_init__(self) -> None:
        if self.headers is None:
            self.headers = Headers()
        elif not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers)
        if isinstance(self.body, str):
            self.body = self.body.encode("utf-8")

    @property
    def ok(self) -> bool:
        return 200 <= self.status <= 299

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise Failure.internal(f"{_redact(self.url)}: the response is not JSON ({e})") from None

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name)

    def failure(self, what: str) -> Failure:
        detail = self.body[: 64 << 10].decode("utf-8", "replace")[:300].strip()
        return status_failure(self.status, f"{what}: {_redact(self.url)}", detail)


def _chunks(body: BodyLike) -> Tuple[Optional[Iterator[bytes]], Optional[int]]:
    """A request body as chunks, and its length when known (sent as Content-Length)."""
    if body is None:
        return None, None
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
        return iter([data]), len(data)
    if hasattr(body, "read"):
        reader = body

        def read() -> Iterator[bytes]:
            while True:
                chunk = reader.read(CHUNK)
                if not chunk:
                    return
                yield chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)

        return read(), None
    return (bytes(c) for c in body), None


def send(
    method: str,
    url: str,
    *,
    headers: Union[None, Headers, Mapping[str, str], Iterable[Tuple[str, str]]] = None,
    body: BodyLike = None,
    length: Optional[int] = None,
    timeouts: Optional[Timeouts] = None,
) -> StreamingResponse:
    """Sends one request; the response's body is read as it arrives. Any status is returned: turn the ones you
    did not expect into a failure with `StreamingResponse.failure`. `length` is the body's length when it is
    streamed (then sent as Content-Length; the host refuses a body that ends early or runs long)."""
    method = method.upper()
    head = Headers(headers)
    chunks, known = _chunks(body)
    size = length if length is not None else known
    if size is not None and "content-length" not in head and not (size == 0 and method in ("GET", "HEAD", "DELETE")):
        head.add("content-length", str(size))
    status, got, reader = _backend.current().http_send(method, url, head.items(), chunks, timeouts or Timeouts())
    return StreamingResponse(url, status, Headers(got), reader)


def request(
    method: str,
    url: str,
    body: BodyLike = None,
    *,
    headers: Union[None, Headers, Mapping[str, str], Iterable[Tuple[str, str]]] = None,
    timeouts: Optional[Timeouts] = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> Response:
    """Sends one request and reads the whole response body (at most `max_body` bytes)."""
    with send(method, url, headers=headers, body=body, timeouts=timeouts) as r:
        data = r.bytes(max_body)
        return Response(r.status, data, r.headers, url)


def get(url: str, *, headers: Union[None, Headers, Mapping[str, str]] = None, timeouts: Optional[Timeouts] = None) -> Response:
    """`request("GET", url)`."""
    return request("GET", url, headers=headers, timeouts=timeouts)
