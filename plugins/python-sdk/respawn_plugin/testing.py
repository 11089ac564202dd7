"""Testing a plugin without the runner: `MockHost`, a native stand-in for the host.

While `MockHost.invoke` runs a plugin, the SDK's host helpers (`stores`, `state`, `secrets`, `exec`, `images`,
`net`, `http`, `log`, `progress`) answer from the mock. Its builder methods grant what they name, and every call is
checked like the runner checks it, with the runner's messages:

- a store, secret, program, URL origin or TCP address the mock was not given is denied: the plugin gets a
  `Failure` of kind `denied` whose message names the capability (`stores denied: ...`, `secrets denied: ...`,
  `exec denied: ...`; HTTP gets `http: METHOD URL denied ...` as through wasi:http), and the denial is recorded
  (`denials`, `denial`);
- in the plan phase store writes, exec, services and HTTP other than GET/HEAD are denied, and state writes are
  dropped;
- state persists across invocations of one mock, like a step's journaled state across attempts and phases;
- an uncaught exception becomes an `internal` failure, as in a component.

    import unittest
    from respawn_plugin import Phase
    from respawn_plugin.testing import MockHost

    import app

    class GreetTest(unittest.TestCase):
        def test_plans_then_greets(self):
            host = MockHost()
            self.assertEqual(host.invoke(app.plugin, "greet", "plan", {"who": "world"}),
                             {"greeting": "would greet world"})

Run the tests with `python3 -m unittest` (stdlib only; pytest runs them too).

Not modelled: `files` grants (a test touches the real filesystem), the working-directory check of exec, log caps,
timeouts and memory limits; images fail `internal` saying so (after the user check of `unpack(user=...)`).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from . import _backend
from ._types import (
    CompareResult,
    Context,
    CopyResult,
    ExecOutput,
    ExecRequest,
    Failure,
    FailureKind,
    Mode,
    ObjectMeta,
    Phase,
    UnpackResult,
)
from .http import Response

#: The runner's limits (docs/plugin-abi.md, "Limits"), enforced by the mock as by the host.
MAX_GET_BYTES = 64 << 20
MAX_GET_RANGE_BYTES = 16 << 20
MAX_STATE_KEYS = 256
MAX_STATE_VALUE_BYTES = 64 << 10


class Access(str, enum.Enum):
    """What a step's grant allows on a store; `write` implies read."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Denial:
    """A request the host refused: the capability, and what was asked. Its text is what the plugin sees."""

    capability: str
    asked: str

    def __str__(self) -> str:
        return f"{self.capability} denied: {self.asked}"


class Trap(BaseException):
    """What the runner does with a plugin that breaks the ABI (e.g. a state write past its limits): the step fails
    with kind `trap`. A BaseException, so the SDK does not turn it into a failure."""


@dataclass(frozen=True)
class HttpCall:
    """One HTTP request that reached a configured answer (its body read whole)."""

    method: str
    url: str
    headers: List[Tuple[str, str]]
    body: Optional[bytes]

    def header(self, name: str) -> Optional[str]:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None


@dataclass(frozen=True)
class Progress:
    done: int
    total: Optional[int]
    message: str


@dataclass(frozen=True)
class Service:
    pid: int
    request: ExecRequest


@dataclass
class _Object:
    data: bytes
    last_modified: int


@dataclass
class _StoreGrant:
    access: Access
    prefix: Optional[str]


def output(status: int = 0, stdout: Union[str, bytes] = b"", stderr: Union[str, bytes] = b"") -> ExecOutput:
    """An `ExecOutput` for `MockHost.exec`."""
    enc = lambda s: s.encode("utf-8") if isinstance(s, str) else bytes(s)  # noqa: E731
    return ExecOutput(status, enc(stdout), enc(stderr), False)


ExecAnswer = Union[ExecOutput, Failure, Callable[[ExecRequest], ExecOutput]]
HttpAnswer = Union[Response, Failure, Callable[[HttpCall], Response]]


def _split_url(url: str) -> Optional[Tuple[str, str, int, str]]:
    """`scheme://host[:port]/path` as (scheme, host, port, path), the port defaulted by scheme as the runner does."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = min([i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0], default=len(rest))
    authority, path = rest[:end], rest[end:]
    host, port_text = authority, None
    if ":" in authority and not authority.endswith("]"):
        host, port_text = authority.rsplit(":", 1)
    if port_text is not None:
        if not port_text.isdigit() or int(port_text) > 65535:
            return None
        port = int(port_text)
    elif scheme == "https":
        port = 443
    elif scheme == "http":
        port = 80
    else:
        return None
    path = path.split("?", 1)[0].split("#", 1)[0] or "/"
    return scheme, host, port, path


def _pattern_matches(pattern: str, scheme: str, host: str, port: int) -> bool:
    """The runner's http grant patterns: `*` matches one whole host label or the whole port; no port means the
    scheme's default."""
    p_scheme, sep, rest = pattern.partition("://")
    if not sep or p_scheme.lower() != scheme.lower():
        return False
    p_host, p_port = rest, None
    if ":" in rest:  # as runner/crates/sandbox/src/http.rs splits it
        head, _, tail = rest.rpartition(":")
        if not head.endswith("]") or rest.startswith("["):
            p_host, p_port = head, tail
    if p_port == "*":
        port_ok = True
    elif p_port is not None:
        port_ok = p_port.isdigit() and int(p_port) == port
    else:
        port_ok = {"http": 80, "https": 443}.get(scheme) == port
    labels, host_labels = p_host.split("."), host.split(".")
    return (
        port_ok
        and len(labels) == len(host_labels)
        and all(p == "*" or p.lower() == h.lower() for p, h in zip(labels, host_labels))
    )


def _under(key: str, prefix: str) -> bool:
    if not prefix or prefix.endswith("/"):
        return key.startswith(prefix)
    return key == prefix or key.startswith(prefix + "/")


class MockHost:
    """An in-memory host for plugin unit tests. Configure it with the builder methods (each grants what it names
    and returns the mock), run the plugin with `invoke`, then inspect state, stores and what was captured."""

    def __init__(
        self,
        *,
        run_id: str = "test-run",
        step_id: str = "test-step",
        mode: Union[Mode, str] = Mode.DRILL,
        attempt: int = 1,
    ) -> None:
        self.run_id = run_id
        self.step_id = step_id
        self.mode = Mode(mode)
        self.attempt = attempt
        self.phase = Phase.APPLY
        self._clock = 1_700_000_000
        self._store_grants: Dict[str, _StoreGrant] = {}
        self._stores: Dict[str, Dict[str, _Object]] = {}
        self._state: Dict[str, str] = {}
        self._fencing_token = 1
        self._secrets: Dict[str, Optional[str]] = {}
        self._programs: Dict[str, Callable[[ExecRequest], ExecOutput]] = {}
        self._users: Dict[str, str] = {}
        self._urls: Dict[str, Callable[[HttpCall], Response]] = {}
        self._http_grant: List[str] = []
        self._tcp: Dict[Tuple[str, int], Union[int, Failure]] = {}
        self._next_pid = 4000
        self._services: Dict[int, ExecRequest] = {}
        self.logs: List[Tuple[str, str]] = []
        self.progress: List[Progress] = []
        self.exec_calls: List[ExecRequest] = []
        self.http_calls: List[HttpCall] = []
        self.denials: List[Denial] = []

    # builder --------------------------------------------------------------------------------------------------
    def store(self, name: str, access: Union[Access, str] = Access.READ, *, prefix: Optional[str] = None) -> "MockHost":
        """Grants a store (empty until `with_object`), `read` or `write`, for keys under `prefix` only if given."""
        self._store_grants[name] = _StoreGrant(Access(access), prefix)
        self._stores.setdefault(name, {})
        return self

    def with_object(self, store: str, key: str, data: Union[bytes, str]) -> "MockHost":
        """Puts an object into a store granted with `store`."""
        self.put_object(store, key, data)
        return self

    def fencing_token(self, token: int) -> "MockHost":
        """The fencing token the plugin sees (1 by default), as for a run resumed by its `token`th runner."""
        self._fencing_token = token
        return self

    def with_state(self, key: str, value: str) -> "MockHost":
        """Seeds the step's state, as an earlier attempt would have left it."""
        self._state[key] = value
        return self

    def secret(self, name: str, value: str) -> "MockHost":
        """Grants a secret with its value."""
        self._secrets[name] = value
        return self

    def secret_unset(self, name: str) -> "MockHost":
        """Grants a secret that has no value in the run: reading it is `not-found`."""
        self._secrets[name] = None
        return self

    def exec(self, program: str, answer: ExecAnswer = None) -> "MockHost":  # type: ignore[assignment]
        """Grants `program`. Runs of it return `answer`: an `ExecOutput` (see `output`), a `Failure` to raise,
        or a function of the `ExecRequest` (args, env, cwd) returning an ExecOutput. By default, status 0."""
        if answer is None:
            answer = output()
        if isinstance(answer, ExecOutput):
            fixed_output = answer
            self._programs[program] = lambda _request: fixed_output
        elif isinstance(answer, Failure):
            fixed_failure = answer

            def fail(_request: ExecRequest) -> ExecOutput:
                raise fixed_failure

            self._programs[program] = fail
        else:
            self._programs[program] = answer
        return self

    def run_as(self, program: str, user: str) -> "MockHost":
        """Makes the exec grant of `program` run it as `user` (the grant entry `{ program, user }`)."""
        self._users[program] = user
        self._programs.setdefault(program, lambda _request: output())
        return self

    def http(
        self,
        url: str,
        answer: Union[HttpAnswer, int] = 200,
        body: Union[bytes, str] = b"",
        headers: Optional[Dict[str, str]] = None,
    ) -> "MockHost":
        """Grants `url`'s origin (as the grant `scheme://host:port`) and answers requests to `url` (exact, any
        method). `answer` is a status (with `body` and `headers`), a `Response`, a `Failure` to fail with (e.g.
        `Failure.unavailable("connection refused")`), or a function of the `HttpCall` returning a Response.
        Other URLs of a granted origin get `unavailable`, as from a server that does not answer them."""
        if isinstance(answer, int):
            answer = Response(answer, body.encode("utf-8") if isinstance(body, str) else bytes(body), headers or {})
        if isinstance(answer, Response):
            fixed_response = answer
            handler: Callable[[HttpCall], Response] = lambda _call: fixed_response  # noqa: E731
        elif isinstance(answer, Failure):
            fixed_failure = answer

            def handler(_call: HttpCall) -> Response:
                raise fixed_failure

        else:
            handler = answer
        parts = _split_url(url)
        if parts is None:
            raise ValueError(f"MockHost.http: `{url}` is not scheme://host[:port]/path")
        scheme, host, port, _ = parts
        origin = f"{scheme}://{host}:{port}"
        if origin not in self._http_grant:
            self._http_grant.append(origin)
        self._urls[url] = handler
        return self

    def tcp(self, host: str, port: int, answer: Union[int, Failure] = 1000) -> "MockHost":
        """Grants `tcp://host:port`; probes report a connect time of `answer` microseconds, or fail with it."""
        grant = f"tcp://{host}:{port}"
        if grant not in self._http_grant:
            self._http_grant.append(grant)
        self._tcp[(host, port)] = answer
        return self

    # running --------------------------------------------------------------------------------------------------
    def context(self, operation: str, phase: Union[Phase, str]) -> Context:
        """The context `invoke` passes to the plugin."""
        return Context(self.run_id, self.step_id, operation, Phase(phase), self.attempt, self.mode)

    def invoke(
        self, plugin: Any, operation: str, phase: Union[Phase, str] = Phase.APPLY, params: Any = None
    ) -> Dict[str, Any]:
        """Calls the plugin's `operation` in `phase` with `params` (a dict, `{}` when None) as the runner would,
        with this mock answering its host calls. Returns the outputs, or raises the plugin's `Failure`. Raises
        AssertionError, as the runner refuses, when the plugin does not describe `operation` or its outputs are
        not a JSON object. `denials` then holds the denials of this call only."""
        text = self.invoke_raw(plugin, operation, phase, json.dumps({} if params is None else params))
        value = json.loads(text)
        assert isinstance(value, dict), f"{operation}: outputs must be a JSON object, got {text}"
        return value

    def invoke_raw(self, plugin: Any, operation: str, phase: Union[Phase, str], params: str) -> str:
        """`invoke` with params as raw text (to test malformed JSON), returning the outputs' JSON text."""
        described = [o.name for o in plugin.describe().operations]
        assert operation in described, f"plugin `{plugin.name}` has no operation `{operation}` (describe lists {described})"
        self.denials = []
        ctx = self.context(operation, phase)
        with self.enter(phase):
            return plugin.invoke(ctx, params)

    @contextlib.contextmanager
    def enter(self, phase: Union[Phase, str] = Phase.APPLY) -> Iterator["MockHost"]:
        """Makes this mock answer host calls in the block, as in `phase`: to test a plugin's helpers alone."""
        self.phase = Phase(phase)
        with _backend.installed(_Answering(self)):
            yield self

    # inspection -----------------------------------------------------------------------------------------------
    def state_get(self, key: str) -> Optional[str]:
        return self._state.get(key)

    def state_map(self) -> Dict[str, str]:
        """The step's whole state, sorted by key."""
        return dict(sorted(self._state.items()))

    def set_state(self, key: str, value: Optional[str]) -> None:
        """Changes the state between calls (None removes the key)."""
        if value is None:
            self._state.pop(key, None)
        else:
            self._state[key] = value

    def object(self, store: str, key: str) -> Optional[bytes]:
        o = self._stores.get(store, {}).get(key)
        return None if o is None else o.data

    def object_keys(self, store: str) -> List[str]:
        return sorted(self._stores.get(store, {}))

    def put_object(self, store: str, key: str, data: Union[bytes, str]) -> None:
        """Puts an object into a granted store between calls."""
        if store not in self._stores:
            raise AssertionError(f"MockHost: grant store `{store}` with .store(...) before putting objects in it")
        self._clock += 1
        self._stores[store][key] = _Object(data.encode("utf-8") if isinstance(data, str) else bytes(data), self._clock)

    def remove_object(self, store: str, key: str) -> None:
        self._stores.get(store, {}).pop(key, None)

    def log_messages(self) -> List[str]:
        return [m for _, m in self.logs]

    @property
    def services(self) -> List[Service]:
        """Services started and not stopped."""
        return [Service(pid, r) for pid, r in sorted(self._services.items())]

    def denial(self) -> Optional[Denial]:
        """The first denial of the last call: what the runner would report the step as denied."""
        return self.denials[0] if self.denials else None

    def clear_captured(self) -> None:
        """Forgets logs, progress, exec and HTTP calls and denials (not state, stores or grants)."""
        self.logs, self.progress, self.exec_calls, self.http_calls, self.denials = [], [], [], [], []

    # the host side ----------------------------------------------------------------------------------------------
    def _read_only(self) -> bool:
        return self.phase is Phase.PLAN

    def _deny(self, capability: str, asked: str) -> Failure:
        denial = Denial(capability, asked)
        self.denials.append(denial)
        return Failure.denied(str(denial))

    def _open(self, store: str, key: str, write: bool) -> Dict[str, _Object]:
        verb = "write" if write else "read"
        grant = self._store_grants.get(store)
        if grant is None:
            raise self._deny("stores", f"{verb} {store}:{key}: store `{store}` is not granted")
        if write and grant.access is not Access.WRITE:
            raise self._deny("stores", f"write {store}:{key}: store `{store}` is granted read only")
        if write and self._read_only():
            raise self._deny("stores", f"write {store}:{key}: the plan phase is read-only")
        if grant.prefix is not None and not _under(key, grant.prefix):
            raise self._deny("stores", f"{verb} {store}:{key}: outside the granted prefix `{grant.prefix}`")
        if ".." in key.split("/"):
            raise self._deny("stores", f"{verb} {store}:{key}: `..` is not allowed in keys")
        if key.startswith("/"):
            raise Failure.invalid_input(f"invalid key `{key}`: keys are relative")
        return self._stores.setdefault(store, {})

    def _host_log(self, level: str, message: str) -> None:
        self.logs.append((level, message))

    def _host_progress(self, done: int, total: Optional[int], message: str) -> None:
        self.progress.append(Progress(done, total, message))

    def _host_store_get(self, store: str, key: str) -> bytes:
        o = self._open(store, key, False).get(key)
        if o is None:
            raise Failure.not_found(f"{store}:{key}: not found")
        if len(o.data) > MAX_GET_BYTES:
            raise Failure.invalid_input(
                f"{store}:{key} is {len(o.data)} bytes; stores.get returns at most {MAX_GET_BYTES}, use stores.copy"
            )
        return o.data

    def _host_store_get_range(self, store: str, key: str, offset: int, length: int) -> bytes:
        objects = self._open(store, key, False)
        if length > MAX_GET_RANGE_BYTES:
            raise Failure.invalid_input(
                f"{store}:{key}: stores.get-range reads at most {MAX_GET_RANGE_BYTES} bytes (16 MiB) per call, "
                f"asked for {length}"
            )
        o = objects.get(key)
        if o is None:
            raise Failure.not_found(f"{store}:{key}: not found")
        start = min(offset, len(o.data))
        return o.data[start : min(offset + length, len(o.data))]

    def _host_store_put(self, store: str, key: str, data: bytes) -> None:
        self._open(store, key, True)
        self.put_object(store, key, data)

    def _host_store_head(self, store: str, key: str) -> Optional[ObjectMeta]:
        o = self._open(store, key, False).get(key)
        return None if o is None else ObjectMeta(key, len(o.data), o.last_modified)

    def _host_store_list(self, store: str, prefix: str) -> List[ObjectMeta]:
        objects = self._open(store, prefix, False)
        # As the runner's stores: a prefix names whole path segments (`a/b` lists `a/b/c`, not `a/bc`).
        base = prefix.rstrip("/")
        return [
            ObjectMeta(k, len(o.data), o.last_modified)
            for k, o in sorted(objects.items())
            if not base or k.startswith(base + "/")
        ]

    def _host_store_delete(self, store: str, key: str) -> None:
        self._open(store, key, True).pop(key, None)

    def _host_store_copy(
        self, from_store: str, from_key: str, to_store: str, to_key: str, expected_sha256: Optional[str]
    ) -> CopyResult:
        source = self._open(from_store, from_key, False).get(from_key)
        self._open(to_store, to_key, True)
        if source is None:
            raise Failure.not_found(f"{from_store}:{from_key}: not found")
        digest = hashlib.sha256(source.data).hexdigest()
        if expected_sha256 is not None and expected_sha256.lower() != digest:
            raise Failure.verification_failed(
                f"digest mismatch for {from_key}: expected sha256:{expected_sha256}, got sha256:{digest}"
            )
        self.put_object(to_store, to_key, source.data)
        return CopyResult(len(source.data), digest)

    def _host_state_get(self, key: str) -> Optional[str]:
        return self._state.get(key)

    def _host_state_set(self, key: str, value: str) -> None:
        if self._read_only():
            return
        if len(value.encode("utf-8")) > MAX_STATE_VALUE_BYTES or (
            key not in self._state and len(self._state) >= MAX_STATE_KEYS
        ):
            raise Trap(
                f"state limit exceeded ({MAX_STATE_KEYS} keys of at most {MAX_STATE_VALUE_BYTES} bytes): "
                "the runner traps the plugin"
            )
        self._state[key] = value

    def _host_state_delete(self, key: str) -> None:
        if not self._read_only():
            self._state.pop(key, None)

    def _host_fencing_token(self) -> int:
        return self._fencing_token

    def _host_state_list(self) -> List[Tuple[str, str]]:
        return sorted(self._state.items())

    def _host_secret(self, name: str) -> str:
        if name not in self._secrets:
            raise self._deny("secrets", f"secret `{name}` is not in the step's secrets grant")
        value = self._secrets[name]
        if value is None:
            raise Failure.not_found(f"secret `{name}` has no value in this run")
        return value

    def _program(self, request: ExecRequest) -> Callable[[ExecRequest], ExecOutput]:
        program = request.program
        if self._read_only():
            raise self._deny("exec", f"`{program}`: the plan phase may not run programs")
        if program not in self._programs:
            raise self._deny("exec", f"program `{program}` is not in the step's exec grant")
        for key, _ in request.env:
            upper = key.upper()
            if upper == "PATH" or upper.startswith("LD_") or upper.startswith("DYLD_"):
                raise self._deny(
                    "exec",
                    f"environment variable `{key}` may not be set by a plugin: it would change which program or "
                    "code runs",
                )
        return self._programs[program]

    def _host_exec_run(self, request: ExecRequest) -> ExecOutput:
        answer = self._program(request)
        try:
            return answer(request)
        finally:
            self.exec_calls.append(request)

    def _host_spawn_service(self, request: ExecRequest) -> int:
        self._program(request)
        pid = self._next_pid
        self._next_pid += 1
        self._services[pid] = request
        return pid

    def _host_stop_service(self, pid: int) -> None:
        if self._read_only():
            raise self._deny("exec", f"stop pid {pid}: the plan phase may not stop services")
        if pid not in self._services:
            raise self._deny("exec", f"stop pid {pid}: not a service started by this run")
        del self._services[pid]

    def _host_image_unpack(self, store: str, prefix: str, tag: str, dir: str, user: Optional[str]) -> UnpackResult:
        if user is not None:
            if self._read_only():
                raise self._deny("exec", f"user `{user}`: the plan phase may not write")
            if user not in self._users.values():
                raise self._deny("exec", f"user `{user}` is not a user the step's exec grant runs a program as")
        raise Failure.internal(f"MockHost does not model images ({store}:{prefix})")

    def _host_image_compare(self, store: str, prefix: str, tag: str, dir: str) -> CompareResult:
        raise Failure.internal(f"MockHost does not model images ({store}:{prefix})")

    def _host_tcp_probe(self, host: str, port: int, timeout_ms: int) -> int:
        if not any(_pattern_matches(p, "tcp", host, port) for p in self._http_grant):
            raise self._deny("http", f"tcp://{host}:{port} is not in the step's http grant")
        answer = self._tcp.get((host, port))
        if answer is None:
            raise Failure.unavailable(f"tcp://{host}:{port}: the mock host has no answer for this address")
        if isinstance(answer, Failure):
            raise answer
        return answer

    def _host_http_send(
        self, method: str, url: str, headers: List[Tuple[str, str]], body: Optional[Iterator[bytes]], timeouts: Any
    ) -> Tuple[int, List[Tuple[str, str]], Any]:
        parts = _split_url(url)
        if parts is None:
            raise Failure.invalid_input(f"bad url `{url}`")
        scheme, host, port, path = parts
        asked = f"{method} {scheme}://{host}:{port}{path}"
        if not any(_pattern_matches(p, scheme, host, port) for p in self._http_grant):
            self.denials.append(Denial("http", f"{asked} is not in the step's http grant"))
            raise Failure.denied(f"http: {method} {url} denied (not in the step's http grant)")
        if self._read_only() and method not in ("GET", "HEAD"):
            self.denials.append(Denial("http", f"{asked}: the plan phase may only GET or HEAD"))
            raise Failure.denied(f"http: {method} {url} denied (not in the step's http grant)")
        handler = self._urls.get(url)
        if handler is None:
            raise Failure.unavailable(f"{method} {url}: the mock host has no answer for this URL")
        call = HttpCall(method, url, list(headers), None if body is None else b"".join(body))
        try:
            response = handler(call)
        finally:
            self.http_calls.append(call)
        return response.status, response.headers.items(), _BytesBody(response.body)


class _Answering:
    """The mock as the SDK's backend: each host call goes to the mock's `_host_...` method."""

    def __init__(self, mock: MockHost) -> None:
        self._mock = mock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mock, "_host_" + name)


class _BytesBody:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, n: int) -> bytes:
        chunk, self._data = self._data[:n], self._data[n:]
        return chunk

    def close(self) -> None:
        self._data = b""
