"""The component side: the exported `describe` and `invoke`, and every host call made through the imports that
componentize-py generates for the world `provider-http` (plugins/wit/provider-http.wit) into the `wit_world`
package. Only a component imports this module; a unit test never does (there is no `wit_world` outside one).

Generated names differ by world: with wasi:http in the world, `respawn:plugin/types` is `respawn_plugin_types`
(wasi:http has a `types` too); in the world `provider` it is plain `types`.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterator, List, Optional, Tuple

from componentize_py_types import Err, Ok

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

#: Bytes asked of the host per read of a response body.
READ_CHUNK = 1 << 20


def _module(*names: str) -> Any:
    for name in names:
        try:
            return importlib.import_module(f"wit_world.imports.{name}")
        except ImportError:
            continue
    raise ImportError(f"the component's bindings have none of {names}: build against plugins/wit, world provider-http")


# Imported now, while componentize-py pre-initializes the app: only modules imported then are in the component.
_TYPES = _module("respawn_plugin_types", "types")
_LOG = _module("log")
_STORES = _module("stores")
_STATE = _module("state")
_SECRETS = _module("secrets")
_EXEC = _module("exec")
_IMAGES = _module("images")
_NET = _module("net")
try:
    _HTTP: Optional[Tuple[Any, Any, Any]] = (
        _module("wasi_http_types"),
        _module("outgoing_handler"),
        _module("streams"),
    )
except ImportError:  # a component of the world `provider`, without wasi:http
    _HTTP = None


def _abi_types() -> Any:
    return _TYPES


def _failure(e: Err) -> Failure:
    """A host call's `Err(failure)` as the SDK's Failure."""
    value = e.value
    kind = FailureKind[value.kind.name] if hasattr(value, "kind") else FailureKind.INTERNAL
    return Failure(kind, getattr(value, "message", str(value)), getattr(value, "retryable", None))


def describe(plugin: Any) -> Any:
    """The component's `describe`: the plugin's info as the bindings' record."""
    t = _abi_types()
    info = plugin.describe()
    return t.PluginInfo(
        name=info.name,
        version=info.version,
        operations=[
            t.OperationInfo(name=o.name, description=o.description, params_schema=o.params_schema)
            for o in info.operations
        ],
        capabilities=list(info.capabilities),
    )


def invoke(plugin: Any, ctx: Any, params: str) -> str:
    """The component's `invoke`: the plugin runs with the runner answering its host calls; a Failure becomes the
    bindings' `Err(failure)`."""
    t = _abi_types()
    context = Context(
        run_id=ctx.run_id,
        step_id=ctx.step_id,
        operation=ctx.operation,
        phase=Phase(ctx.phase.name.lower()),
        attempt=ctx.attempt,
        mode=Mode(ctx.mode.name.lower()),
    )
    try:
        with _backend.installed(WasmHost()):
            return plugin.invoke(context, params)
    except Failure as f:
        failure = f
    # Raised outside every `with`: `Err` is a frozen dataclass, and a context manager that re-raises an exception
    # sets its __traceback__, which a frozen instance refuses (the component would trap).
    raise Err(t.Failure(kind=t.FailureKind[failure.kind.name], message=failure.message, retryable=failure.retryable))


class WasmHost:
    """Host calls through the component's imports."""

    def __init__(self) -> None:
        self._log = _LOG
        self._stores = _STORES
        self._state = _STATE
        self._secrets = _SECRETS
        self._exec = _EXEC
        self._images = _IMAGES
        self._net = _NET

    # log ------------------------------------------------------------------------------------------------------
    def log(self, level: str, message: str) -> None:
        self._log.log(self._log.Level[level.upper()], message)

    def progress(self, done: int, total: Optional[int], message: str) -> None:
        self._log.progress(done, total, message)

    # stores ---------------------------------------------------------------------------------------------------
    def store_get(self, store: str, key: str) -> bytes:
        try:
            return bytes(self._stores.get(store, key))
        except Err as e:
            raise _failure(e) from None

    def store_get_range(self, store: str, key: str, offset: int, length: int) -> bytes:
        try:
            return bytes(self._stores.get_range(store, key, offset, length))
        except Err as e:
            raise _failure(e) from None

    def store_put(self, store: str, key: str, data: bytes) -> None:
        try:
            self._stores.put(store, key, data)
        except Err as e:
            raise _failure(e) from None

    def store_head(self, store: str, key: str) -> Optional[ObjectMeta]:
        try:
            m = self._stores.head(store, key)
        except Err as e:
            raise _failure(e) from None
        return None if m is None else ObjectMeta(m.key, m.size, m.last_modified)

    def store_list(self, store: str, prefix: str) -> List[ObjectMeta]:
        try:
            return [ObjectMeta(m.key, m.size, m.last_modified) for m in self._stores.list(store, prefix)]
        except Err as e:
            raise _failure(e) from None

    def store_delete(self, store: str, key: str) -> None:
        try:
            self._stores.delete(store, key)
        except Err as e:
            raise _failure(e) from None

    def store_copy(
        self, from_store: str, from_key: str, to_store: str, to_key: str, expected_sha256: Optional[str]
    ) -> CopyResult:
        try:
            r = self._stores.copy(from_store, from_key, to_store, to_key, expected_sha256)
        except Err as e:
            raise _failure(e) from None
        return CopyResult(r.bytes, r.sha256)

    # state ----------------------------------------------------------------------------------------------------
    def state_get(self, key: str) -> Optional[str]:
        return self._state.get(key)

    def state_set(self, key: str, value: str) -> None:
        self._state.set(key, value)

    def state_delete(self, key: str) -> None:
        self._state.delete(key)

    def state_list(self) -> List[Tuple[str, str]]:
        return [(k, v) for k, v in self._state.list()]

    def fencing_token(self) -> int:
        return self._state.fencing_token()

    # secrets --------------------------------------------------------------------------------------------------
    def secret(self, name: str) -> str:
        try:
            return self._secrets.get(name)
        except Err as e:
            raise _failure(e) from None

    # exec -----------------------------------------------------------------------------------------------------
    def _request(self, r: ExecRequest) -> Any:
        return self._exec.ExecRequest(
            program=r.program, args=list(r.args), cwd=r.cwd, env=list(r.env), timeout_ms=r.timeout_ms
        )

    def exec_run(self, request: ExecRequest) -> ExecOutput:
        try:
            o = self._exec.run(self._request(request))
        except Err as e:
            raise _failure(e) from None
        return ExecOutput(o.status, bytes(o.stdout), bytes(o.stderr), o.truncated)

    def spawn_service(self, request: ExecRequest) -> int:
        try:
            return self._exec.spawn_service(self._request(request))
        except Err as e:
            raise _failure(e) from None

    def stop_service(self, pid: int) -> None:
        try:
            self._exec.stop_service(pid)
        except Err as e:
            raise _failure(e) from None

    # images ---------------------------------------------------------------------------------------------------
    def image_unpack(self, store: str, prefix: str, tag: str, dir: str, user: Optional[str]) -> UnpackResult:
        try:
            if user is None:
                r = self._images.unpack(store, prefix, tag, dir)
            else:
                r = self._images.unpack_as(store, prefix, tag, dir, user)
        except Err as e:
            raise _failure(e) from None
        return UnpackResult(r.manifest_digest, r.files, r.bytes, r.created)

    def image_compare(self, store: str, prefix: str, tag: str, dir: str) -> CompareResult:
        try:
            r = self._images.compare(store, prefix, tag, dir)
        except Err as e:
            raise _failure(e) from None
        return CompareResult(r.checked, list(r.mismatches))

    # net ------------------------------------------------------------------------------------------------------
    def tcp_probe(self, host: str, port: int, timeout_ms: int) -> int:
        try:
            return self._net.tcp_probe(host, port, timeout_ms)
        except Err as e:
            raise _failure(e) from None

    # wasi:http ------------------------------------------------------------------------------------------------
    def http_send(
        self,
        method: str,
        url: str,
        headers: List[Tuple[str, str]],
        body: Optional[Iterator[bytes]],
        timeouts: Any,
    ) -> Tuple[int, List[Tuple[str, str]], Any]:
        return _http_send(method, url, headers, body, timeouts)


# ---------------------------------------------------------------------------------------------------------------
# wasi:http/outgoing-handler, synchronously: each wait blocks on the host's pollable.


def _http() -> Tuple[Any, Any, Any]:
    if _HTTP is not None:
        return _HTTP
    raise Failure.internal(
        "this component has no wasi:http: build it for the world provider-http "
        "(componentize-py -d wit -w provider-http componentize app)"
    )


def _drop(*resources: Any) -> None:
    """Drops resources now, in order (a child before its parent), rather than whenever they are collected."""
    for r in resources:
        if r is not None:
            r.__exit__(None, None, None)


def _code_name(code: Any) -> str:
    name = type(code).__name__.removeprefix("ErrorCode_")
    value = getattr(code, "value", None)
    return f"{name}({value!r})" if value is not None else name


def _map_error(method: str, url: str, code: Any) -> Failure:
    name = type(code).__name__
    if name == "ErrorCode_HttpRequestDenied":
        return Failure.denied(f"http: {method} {url} denied (not in the step's http grant)")
    if name == "ErrorCode_InternalError" and "denied" in str(getattr(code, "value", "") or ""):
        return Failure.denied(f"http: {code.value}")
    return Failure.unavailable(f"{method} {url}: {_code_name(code)}")


def _split(url: str) -> Tuple[str, str, str]:
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise Failure.invalid_input(f"bad url `{url}`: expected scheme://host[:port]/path")
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if not authority:
        raise Failure.invalid_input(f"bad url `{url}`: no host")
    if not path.startswith("/"):
        path = "/" + path
    return scheme, authority, path


def _write_all(stream: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        permitted = stream.check_write()
        if permitted == 0:
            with stream.subscribe() as ready:
                ready.block()
            continue
        n = min(permitted, len(view))
        stream.write(bytes(view[:n]))
        view = view[n:]


def _http_send(
    method: str,
    url: str,
    headers: List[Tuple[str, str]],
    body: Optional[Iterator[bytes]],
    timeouts: Any,
) -> Tuple[int, List[Tuple[str, str]], Any]:
    ht, handler, streams = _http()
    scheme, authority, path = _split(url)
    try:
        fields = ht.Fields.from_list([(n.lower(), v.encode("utf-8")) for n, v in headers])
    except Err as e:
        raise Failure.invalid_input(
            f"{method} {url}: a request header is not valid HTTP: {type(e.value).__name__}"
        ) from None
    request = ht.OutgoingRequest(fields)
    methods = {
        "GET": ht.Method_Get,
        "HEAD": ht.Method_Head,
        "POST": ht.Method_Post,
        "PUT": ht.Method_Put,
        "PATCH": ht.Method_Patch,
        "DELETE": ht.Method_Delete,
        "OPTIONS": ht.Method_Options,
    }
    try:
        request.set_method(methods[method]() if method in methods else ht.Method_Other(method))
        request.set_scheme(
            ht.Scheme_Http() if scheme == "http" else ht.Scheme_Https() if scheme == "https" else ht.Scheme_Other(scheme)
        )
        request.set_authority(authority)
        request.set_path_with_query(path)
    except Err:
        raise Failure.invalid_input(f"{method} {url}: not a valid request") from None
    options = ht.RequestOptions()
    for setter, seconds in (
        (options.set_connect_timeout, timeouts.connect),
        (options.set_first_byte_timeout, timeouts.first_byte),
        (options.set_between_bytes_timeout, timeouts.between_bytes),
    ):
        if seconds is not None:
            try:
                setter(int(seconds * 1_000_000_000))
            except Err:
                pass
    out_body = request.body()
    # Hand the request over before writing its body, so a large body flows while it is written.
    try:
        future = handler.handle(request, options)
    except Err as e:
        _drop(out_body)
        raise _map_error(method, url, e.value) from None
    sent: Optional[str] = None
    stream = out_body.write()
    try:
        for chunk in body or ():
            _write_all(stream, chunk)
        stream.blocking_flush()
    except Err as e:
        sent = type(e.value).__name__
    except BaseException:
        # The body's own reader failed: release the request's resources, children first, before it propagates.
        _drop(stream, out_body, future)
        raise
    _drop(stream)
    try:
        ht.OutgoingBody.finish(out_body, None)
    except Err as e:
        sent = sent or _code_name(e.value)
    with future.subscribe() as ready:
        ready.block()
    answer = future.get()
    _drop(future)
    if answer is None or isinstance(answer, Err):
        raise Failure.internal(f"{method} {url}: the response was not ready or was taken twice")
    inner = answer.value if isinstance(answer, Ok) else answer
    if isinstance(inner, Err):
        failure = _map_error(method, url, inner.value)
        if sent is not None and failure.kind is not FailureKind.DENIED:
            failure = Failure.unavailable(f"{method} {url}: sending the body: {sent} ({failure.message})")
        raise failure
    response = inner.value if isinstance(inner, Ok) else inner
    status = response.status()
    with response.headers() as fields:
        head = [(n, bytes(v).decode("utf-8", "replace")) for n, v in fields.entries()]
    incoming = response.consume()
    return status, head, _Body(url, response, incoming, incoming.stream(), streams, ht)


class _Body:
    """A response body read as it arrives."""

    def __init__(self, url: str, response: Any, body: Any, stream: Any, streams: Any, ht: Any) -> None:
        self._url = url
        self._response = response
        self._body = body
        self._stream = stream
        self._streams = streams
        self._ht = ht

    def read(self, n: int) -> bytes:
        while self._stream is not None:
            try:
                chunk = self._stream.blocking_read(max(1, min(n, READ_CHUNK)))
            except Err as e:
                if isinstance(e.value, self._streams.StreamError_Closed):
                    self.close()
                    return b""
                why = self._why(e.value)
                self.close()
                if "limits.http_response" in why:
                    raise Failure.invalid_input(f"reading {self._url}: {why}") from None
                raise Failure.unavailable(f"reading {self._url}: {why}") from None
            if chunk:
                return bytes(chunk)
        return b""

    def _why(self, error: Any) -> str:
        failed = getattr(error, "value", None)
        if failed is None:
            return type(error).__name__
        code = self._ht.http_error_code(failed)
        if code is not None and type(code).__name__ == "ErrorCode_HttpResponseBodySize":
            return f"the response is larger than the step's limits.http_response ({code.value or 0} bytes)"
        if code is not None:
            return _code_name(code)
        return failed.to_debug_string()

    def close(self) -> None:
        stream, body, response = self._stream, self._body, self._response
        self._stream = self._body = self._response = None
        _drop(stream, body, response)

    def __del__(self) -> None:
        # An unread, unclosed body: drop its resources in order (a child before its parent), not in whatever order
        # the collector would.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing to report to from a finalizer
            pass
