"""A plugin: its name, version and operations, each with a handler per phase; and the dispatch of `invoke`."""

from __future__ import annotations

import json
import os
import traceback
from typing import Any, Callable, Dict, Iterable, List

from . import _params
from ._types import Context, Failure, OperationInfo, Phase, PluginInfo

#: Frames of an uncaught exception's traceback quoted in the failure: the innermost ones, where it was raised.
TRACEBACK_FRAMES = 5
#: Longest failure message made from an uncaught exception; the report keeps what the plugin returns.
MAX_EXCEPTION_MESSAGE = 4096

_SDK_DIR = os.path.dirname(os.path.abspath(__file__))

Handler = Callable[[Context, Any], Any]


class Operation:
    """One operation of a plugin (`uses: PLUGIN/NAME`), with a handler per phase.

    Register handlers with the phase decorators, or give one handler for every phase by calling the operation
    on a function (which is what `@plugin.operation(...)` does):

        restore = plugin.operation("restore", "Restore a volume", RestoreParams)

        @restore.plan
        def _(ctx, p): return {"would": f"restore {p.volume}"}

        @restore.apply
        def _(ctx, p): ...

    A phase without a handler fails with `invalid-input` naming the operation and the phase (e.g. a workflow
    that lists a check-only operation under `steps:`, whose destroy it does not implement).
    """

    def __init__(self, name: str, description: str, params: Any = None, schema: Any = None):
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise ValueError(f"operation name `{name}`: letters, digits, `-` and `_` only")
        if params is not None:
            _params.check_params_class(params)
        self.name = name
        self.description = description
        self.params = params
        if schema is None:
            schema = _params.schema_of(params) if params is not None else {"type": "object"}
        self.schema: str = schema if isinstance(schema, str) else json.dumps(schema)
        json.loads(self.schema)  # a schema that is not JSON fails at import, i.e. at build time
        self.handlers: Dict[Phase, Handler] = {}

    def __call__(self, handler: Handler) -> "Operation":
        """Registers `handler` for every phase that has none yet; it tells them apart by `ctx.phase`."""
        for phase in Phase:
            self.handlers.setdefault(phase, handler)
        return self

    def on(self, *phases: Phase | str) -> Callable[[Handler], Handler]:
        """Registers the decorated function for `phases`: `@op.on("apply", "verify")`."""

        def register(handler: Handler) -> Handler:
            for phase in phases:
                self.handlers[Phase(phase)] = handler
            return handler

        return register

    def plan(self, handler: Handler) -> Handler:
        """The plan phase: say what apply would do, with no side effects."""
        return self.on(Phase.PLAN)(handler)

    def apply(self, handler: Handler) -> Handler:
        """The apply phase: create, idempotently."""
        return self.on(Phase.APPLY)(handler)

    def verify(self, handler: Handler) -> Handler:
        """The verify phase: check what apply created."""
        return self.on(Phase.VERIFY)(handler)

    def destroy(self, handler: Handler) -> Handler:
        """The destroy phase: undo apply; succeed when there is nothing to undo."""
        return self.on(Phase.DESTROY)(handler)

    def info(self) -> OperationInfo:
        return OperationInfo(self.name, self.description, self.schema)


class Plugin:
    """A plugin: what `describe` answers, and the operations `invoke` dispatches to.

        plugin = Plugin("greeter", "0.1.0")

        @dataclass
        class GreetParams:
            who: str

        @plugin.operation("greet", "Say hello", GreetParams)
        def greet(ctx: Context, p: GreetParams) -> dict:
            if ctx.phase == Phase.PLAN:
                return {"greeting": f"would greet {p.who}"}
            return {"greeting": f"hello, {p.who}"}

        WitWorld = plugin.world()   # what componentize-py exports as the component's describe and invoke
    """

    def __init__(self, name: str, version: str, capabilities: Iterable[str] = ()):
        self.name = name
        self.version = version
        self.capabilities: List[str] = list(capabilities)
        self.operations: Dict[str, Operation] = {}

    def operation(self, name: str, description: str = "", params: Any = None, schema: Any = None) -> Operation:
        """Adds an operation. `params` is a dataclass the step's `with:` is parsed into (the handler's second
        argument; a dict when none), `schema` the JSON Schema shown by `respawn plugin inspect` (by default
        derived from `params`)."""
        if name in self.operations:
            raise ValueError(f"plugin `{self.name}` already has an operation `{name}`")
        op = Operation(name, description, params, schema)
        self.operations[name] = op
        return op

    def describe(self) -> PluginInfo:
        return PluginInfo(
            name=self.name,
            version=self.version,
            operations=[op.info() for op in self.operations.values()],
            capabilities=list(self.capabilities),
        )

    def invoke(self, ctx: Context, params: str) -> str:
        """Runs `ctx.operation` in `ctx.phase`; returns the outputs as JSON text or raises a `Failure`. An
        exception other than a `Failure` becomes a failure of kind `internal` whose message has the exception's
        type, its message and the innermost frames of its traceback."""
        where = f"{self.name}/{ctx.operation} ({ctx.phase.value})"
        try:
            op = self.operations.get(ctx.operation)
            if op is None:
                raise Failure.invalid_input(f"unknown operation `{ctx.operation}`")
            handler = op.handlers.get(ctx.phase)
            if handler is None:
                raise Failure.invalid_input(
                    f"operation `{op.name}` of plugin `{self.name}` has no {ctx.phase.value} phase"
                )
            p = _params.parse_params(params, op.params)
            return _params.outputs_json(handler(ctx, p), where)
        except Failure:
            raise
        except (Exception, SystemExit) as e:  # noqa: BLE001 - every exception must become a failure
            raise uncaught(e, where) from None

    def world(self) -> type:
        """The class componentize-py exports (assign it to `WitWorld` in the app module): the component's
        `describe` and `invoke`, answered by this plugin, its host calls by the runner."""
        plugin = self
        try:
            # componentize-py bundles the modules imported while it pre-initializes the app (at build time), so
            # the component's side is imported now. Outside a component (a unit test) there are no bindings.
            from . import _wasm  # noqa: F401
        except ImportError:
            pass

        class WitWorld:
            # The bindings exist only inside a component: import them there, at the first call.
            def describe(self) -> Any:
                from . import _wasm

                return _wasm.describe(plugin)

            def invoke(self, ctx: Any, params: str) -> str:
                from . import _wasm

                return _wasm.invoke(plugin, ctx, params)

        return WitWorld


def uncaught(e: BaseException, where: str) -> Failure:
    """The `internal` failure an uncaught exception becomes."""
    frames = traceback.extract_tb(e.__traceback__)
    # The SDK's dispatch frames come first; the plugin's own, and any SDK helper it called, after them.
    while frames and os.path.abspath(frames[0].filename).startswith(_SDK_DIR + os.sep):
        frames.pop(0)
    lines = [f"uncaught {type(e).__name__} in {where}: {e}"]
    cause = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    if cause is not None:
        lines.append(f"  caused by {type(cause).__name__}: {cause}")
    tail = list(frames)[-TRACEBACK_FRAMES:]
    if tail:
        skipped = len(frames) - len(tail)
        lines.append(
            "traceback (most recent call last"
            + (f", {skipped} outer frame(s) left out" if skipped else "")
            + "):"
        )
        for frame in tail:
            lines.append(f'  File "{_shown(frame.filename)}", line {frame.lineno}, in {frame.name}')
            if frame.line:
                lines.append(f"    {frame.line.strip()}")
    message = "\n".join(lines)
    if len(message) > MAX_EXCEPTION_MESSAGE:
        message = message[: MAX_EXCEPTION_MESSAGE - 3] + "..."
    return Failure.internal(message)


def _shown(filename: str) -> str:
    """A frame's file as the author knows it: componentize-py mounts each Python path directory as `/N/`, so
    `/0/app.py` is `app.py`. (Inside a component the source lines themselves are not there to quote.)"""
    parts = filename.split("/", 2)
    if len(parts) == 3 and parts[0] == "" and parts[1].isdigit():
        return parts[2]
    return filename

