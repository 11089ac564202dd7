"""The Python SDK for respawn plugins: pure Python over the bindings componentize-py generates from plugins/wit.

A plugin is a module (`app.py`; any name but `wit_world`, which the bindings take) that declares its operations
on a `Plugin` and exports it as `WitWorld`:

    from dataclasses import dataclass
    from respawn_plugin import Context, Phase, Plugin, log

    plugin = Plugin("greeter", "0.1.0")

    @dataclass
    class GreetParams:
        who: str

    greet = plugin.operation("greet", "Say hello", GreetParams)

    @greet.plan
    def _(ctx: Context, p: GreetParams) -> dict:
        return {"greeting": f"would greet {p.who}"}      # plan: no side effects

    @greet.on("apply", "verify", "destroy")
    def _(ctx: Context, p: GreetParams) -> dict:
        log.info(f"hello, {p.who}")
        return {"greeting": f"hello, {p.who}"}

    WitWorld = plugin.world()

Build it into a component with `componentize-py -d wit -w provider-http componentize app -o greeter.wasm`
(what `respawn plugin new NAME --lang python` writes into `build.sh`), and test it without the runner with
`respawn_plugin.testing.MockHost` under `python3 -m unittest`.

- A handler gets the `Context` and the params parsed into the operation's dataclass (a misspelt or missing key
  is an `invalid-input` failure naming the field) and returns the outputs: a dict, a dataclass or None.
- To fail, raise a `Failure` (`Failure.not_found("...")`, ...). Host calls raise one too: a denied call raises a
  `denied` Failure naming the capability. Any other exception becomes an `internal` failure whose message has
  the exception's type, its message and the innermost frames of its traceback.
- Host helpers: `log`, `progress`, `state`, `stores`, `secrets`, `exec`, `images`, `net`, and `http` (over
  wasi:http). Everything is denied unless the step's `grants:` allow it.

See docs/writing-plugins-python.md.
"""

from . import exec, http, images, log, net, progress, secrets, state, stores
from ._params import parse_params, schema_of
from ._plugin import Operation, Plugin
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
    OperationInfo,
    Phase,
    PluginInfo,
    UnpackResult,
)

#: The SDK's version; it speaks respawn:plugin@0.2.0.
__version__ = "0.1.0"

__all__ = [
    "CompareResult",
    "Context",
    "CopyResult",
    "ExecOutput",
    "ExecRequest",
    "Failure",
    "FailureKind",
    "Mode",
    "ObjectMeta",
    "Operation",
    "OperationInfo",
    "Phase",
    "Plugin",
    "PluginInfo",
    "UnpackResult",
    "exec",
    "http",
    "images",
    "log",
    "net",
    "parse_params",
    "progress",
    "schema_of",
    "secrets",
    "state",
    "stores",
]
