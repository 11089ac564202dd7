"""Unit tests of the Python SDK against its mock host: `python3 -m unittest discover -s plugins/python-sdk/tests`.

The component side (`respawn_plugin/_wasm.py`, over the bindings componentize-py generates) is exercised end to
end by tests/python_plugin.rs, which builds a plugin with componentize-py and runs it with respawn.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import os
import sys
import unittest
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from respawn_plugin import (  # noqa: E402
    Context,
    Failure,
    FailureKind,
    Phase,
    Plugin,
    exec,
    http,
    images,
    log,
    net,
    progress,
    secrets,
    state,
    stores,
)
from respawn_plugin.testing import Access, MockHost, Trap, output  # noqa: E402


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Server:
    host: str
    port: int = 80


@dataclass
class Params:
    name: str
    count: int = 1
    ratio: float = 0.5
    enabled: bool = False
    tags: List[str] = field(default_factory=list)
    labels: Dict[str, int] = field(default_factory=dict)
    servers: List[Server] = field(default_factory=list)
    mode: Literal["fast", "safe"] = "safe"
    color: Optional[Color] = None
    note: Optional[str] = None
    source: str = field(default="backups", metadata={"key": "from", "description": "store to read"})
    extra: Any = None


def plugin_with(handler: Any, params: Any = Params) -> Plugin:
    plugin = Plugin("t", "0.1.0")
    plugin.operation("op", "test", params)(handler)
    return plugin


def echo(ctx: Context, p: Any) -> Any:
    return {"p": repr(p)}


class ParamsTest(unittest.TestCase):
    def invoke(self, params: Any, handler: Any = echo) -> Any:
        return MockHost().invoke(plugin_with(handler), "op", "apply", params)

    def failure(self, params: Any) -> Failure:
        with self.assertRaises(Failure) as caught:
            self.invoke(params)
        self.assertEqual(caught.exception.kind, FailureKind.INVALID_INPUT)
        return caught.exception

    def test_parses_every_supported_type(self):
        seen = {}

        def keep(ctx: Context, p: Params) -> None:
            seen["p"] = p

        self.invoke(
            {
                "name": "n",
                "count": 3,
                "ratio": 2,
                "enabled": True,
                "tags": ["a"],
                "labels": {"x": 1},
                "servers": [{"host": "h"}],
                "mode": "fast",
                "color": "blue",
                "from": "elsewhere",
                "extra": {"any": [1]},
            },
            keep,
        )
        p = seen["p"]
        self.assertEqual((p.name, p.count, p.ratio, p.enabled), ("n", 3, 2.0, True))
        self.assertEqual((p.tags, p.labels, p.servers), (["a"], {"x": 1}, [Server("h", 80)]))
        self.assertEqual((p.mode, p.color, p.note, p.source, p.extra), ("fast", Color.BLUE, None, "elsewhere", {"any": [1]}))

    def test_errors_name_the_field(self):
        self.assertEqual(self.failure({"nam": "x"}).message, "params: unknown field `nam`, expected one of `name`, `count`, `ratio`, `enabled`, `tags`, `labels`, `servers`, `mode`, `color`, `note`, `from`, `extra`")
        self.assertEqual(self.failure({}).message, "params: missing field `name`")
        self.assertEqual(self.failure({"name": 3}).message, "params.name: expected a string, found 3")
        self.assertEqual(self.failure({"name": "n", "count": True}).message, "params.count: expected an integer, found true")
        self.assertEqual(
            self.failure({"name": "n", "servers": [{"host": "a"}, {"host": "b", "port": "80"}]}).message,
            'params.servers[1].port: expected an integer, found "80"',
        )
        self.assertEqual(self.failure({"name": "n", "mode": "slow"}).message, 'params.mode: expected one of "fast", "safe", found "slow"')
        self.assertEqual(self.failure({"name": "n", "color": "green"}).message, 'params.color: expected one of "red", "blue" or null, found "green"')
        self.assertEqual(self.failure({"name": "n", "labels": {"a": "b"}}).message, 'params.labels.a: expected an integer, found "b"')
        self.assertEqual(self.failure([1]).message, "params: expected an object, found [1]")

    def test_malformed_json_is_invalid_input(self):
        with self.assertRaises(Failure) as caught:
            MockHost().invoke_raw(plugin_with(echo), "op", "apply", "{not json")
        self.assertEqual(caught.exception.kind, FailureKind.INVALID_INPUT)
        self.assertTrue(caught.exception.message.startswith("params: not JSON"), caught.exception.message)

    def test_without_a_params_class_the_handler_gets_the_object(self):
        plugin = plugin_with(lambda ctx, p: {"keys": sorted(p)}, params=None)
        self.assertEqual(MockHost().invoke(plugin, "op", "plan", {"b": 1, "a": 2}), {"keys": ["a", "b"]})
        self.assertEqual(json.loads(plugin.describe().operations[0].params_schema), {"type": "object"})

    def test_the_schema_follows_the_dataclass(self):
        schema = json.loads(plugin_with(echo).describe().operations[0].params_schema)
        self.assertEqual(schema["required"], ["name"])
        self.assertFalse(schema["additionalProperties"])
        props = schema["properties"]
        self.assertEqual(props["count"], {"type": "integer", "default": 1})
        self.assertEqual(props["servers"]["items"]["required"], ["host"])
        self.assertEqual(props["mode"], {"enum": ["fast", "safe"], "default": "safe"})
        self.assertEqual(props["color"], {"anyOf": [{"enum": ["red", "blue"]}, {"type": "null"}], "default": None})
        self.assertEqual(props["from"], {"description": "store to read", "type": "string", "default": "backups"})
        self.assertEqual(props["labels"], {"type": "object", "additionalProperties": {"type": "integer"}})

    def test_an_unsupported_params_type_fails_at_import(self):
        @dataclass
        class Bad:
            when: complex

        with self.assertRaises(TypeError):
            Plugin("t", "0.1.0").operation("op", "", Bad)
        with self.assertRaises(TypeError):
            Plugin("t", "0.1.0").operation("op", "", dict)


class DispatchTest(unittest.TestCase):
    def test_each_phase_has_its_handler(self):
        plugin = Plugin("t", "0.1.0")
        op = plugin.operation("op", "", None)
        op.plan(lambda ctx, p: {"did": "plan"})
        op.on("apply", Phase.VERIFY)(lambda ctx, p: {"did": f"{ctx.phase}"})
        host = MockHost()
        self.assertEqual(host.invoke(plugin, "op", "plan"), {"did": "plan"})
        self.assertEqual(host.invoke(plugin, "op", "verify"), {"did": "verify"})
        with self.assertRaises(Failure) as caught:
            host.invoke(plugin, "op", "destroy")
        self.assertEqual(caught.exception.kind, FailureKind.INVALID_INPUT)
        self.assertIn("has no destroy phase", caught.exception.message)

    def test_a_default_handler_fills_the_other_phases(self):
        plugin = Plugin("t", "0.1.0")

        @plugin.operation("op", "")
        def anything(ctx: Context, p: Any) -> dict:
            return {"phase": ctx.phase, "attempt": ctx.attempt, "mode": ctx.mode, "step": ctx.step_id}

        @anything.destroy
        def destroy(ctx: Context, p: Any) -> None:
            return None

        host = MockHost(step_id="s1", attempt=2, mode="failover")
        self.assertEqual(host.invoke(plugin, "op", "apply"), {"phase": "apply", "attempt": 2, "mode": "failover", "step": "s1"})
        self.assertEqual(host.invoke(plugin, "op", "destroy"), {})

    def test_outputs_may_be_a_dataclass_and_must_be_an_object(self):
        @dataclass
        class Out:
            url: str
            color: Color = Color.RED

        host = MockHost()
        self.assertEqual(host.invoke(plugin_with(lambda c, p: Out("u"), None), "op"), {"url": "u", "color": "red"})
        with self.assertRaises(Failure) as caught:
            host.invoke(plugin_with(lambda c, p: [1], None), "op")
        self.assertEqual(caught.exception.kind, FailureKind.INTERNAL)
        self.assertIn("outputs must be a dict", caught.exception.message)

    def test_an_unknown_operation_is_refused_like_the_runner(self):
        with self.assertRaises(AssertionError):
            MockHost().invoke(plugin_with(echo), "nope", "apply", {})

    def test_an_uncaught_exception_is_an_internal_failure_with_its_traceback(self):
        def deep(n: int) -> None:
            if n == 0:
                raise KeyError("the-missing-key")
            deep(n - 1)

        def handler(ctx: Context, p: Any) -> None:
            try:
                deep(8)
            except KeyError as e:
                raise ValueError("lookup failed") from e

        with self.assertRaises(Failure) as caught:
            MockHost().invoke(plugin_with(handler, None), "op", "apply")
        f = caught.exception
        self.assertEqual((f.kind, f.retryable), (FailureKind.INTERNAL, False))
        lines = f.message.splitlines()
        self.assertEqual(lines[0], "uncaught ValueError in t/op (apply): lookup failed")
        self.assertEqual(lines[1], "  caused by KeyError: 'the-missing-key'")
        self.assertIn("traceback (most recent call last", f.message)
        self.assertIn("test_sdk.py", f.message)
        self.assertIn('raise ValueError("lookup failed") from e', f.message)
        self.assertNotIn("_plugin.py", f.message, "the SDK's own dispatch frames are left out")

    def test_exit_is_a_failure_too(self):
        with self.assertRaises(Failure) as caught:
            MockHost().invoke(plugin_with(lambda c, p: sys.exit(3), None), "op")
        self.assertIn("uncaught SystemExit", caught.exception.message)

    def test_failures_keep_their_kind_and_retryable(self):
        self.assertTrue(Failure.unavailable("x").retryable)
        self.assertFalse(Failure.unavailable("x").with_retryable(False).retryable)
        self.assertFalse(Failure.conflict("x").retryable)
        self.assertEqual(str(Failure.not_found("gone")), "not-found: gone")

        def handler(ctx: Context, p: Any) -> None:
            raise Failure.conflict("busy").with_retryable(True)

        with self.assertRaises(Failure) as caught:
            MockHost().invoke(plugin_with(handler, None), "op")
        self.assertEqual(caught.exception, Failure(FailureKind.CONFLICT, "busy", True))

    def test_host_calls_outside_an_invocation_say_how_to_test(self):
        with self.assertRaises(RuntimeError) as caught:
            state.get("x")
        self.assertIn("MockHost", str(caught.exception))
        with MockHost().with_state("x", "1").enter("plan"):
            self.assertEqual(state.get("x"), "1")

    def test_world_is_a_class_to_export(self):
        world = plugin_with(echo).world()
        self.assertTrue(hasattr(world, "describe") and hasattr(world, "invoke"))


class StoresTest(unittest.TestCase):
    def test_reads_writes_and_the_grant(self):
        host = MockHost().store("backups", Access.READ).with_object("backups", "db/dump", b"0123456789").store("regions", "write")
        with host.enter("apply"):
            self.assertEqual(stores.get("backups", "db/dump"), b"0123456789")
            self.assertEqual(stores.get_range("backups", "db/dump", 8, 5), b"89")
            self.assertEqual(stores.get_range("backups", "db/dump", 20, 5), b"")
            self.assertEqual(b"".join(stores.read_chunks("backups", "db/dump", chunk=3)), b"0123456789")
            self.assertEqual(stores.head("backups", "db/dump").size, 10)
            self.assertIsNone(stores.head("backups", "nope"))
            stores.put("regions", "site/a", "text")
            stores.put("regions", "site2/b", b"x")
            self.assertEqual([m.key for m in stores.list("regions", "site")], ["site/a"])
            copied = stores.copy("backups", "db/dump", "regions", "db/dump", hashlib.sha256(b"0123456789").hexdigest())
            self.assertEqual(copied.bytes, 10)
            stores.delete("regions", "nothing-there")
            with self.assertRaises(Failure) as caught:
                stores.put("backups", "x", b"")
            self.assertEqual(caught.exception.message, "stores denied: write backups:x: store `backups` is granted read only")
            with self.assertRaises(Failure) as caught:
                stores.get("other", "x")
            self.assertEqual(caught.exception.kind, FailureKind.DENIED)
            with self.assertRaises(Failure) as caught:
                stores.get("backups", "missing")
            self.assertEqual(caught.exception.kind, FailureKind.NOT_FOUND)
            with self.assertRaises(Failure) as caught:
                stores.get_range("backups", "db/dump", 0, (16 << 20) + 1)
            self.assertEqual(caught.exception.kind, FailureKind.INVALID_INPUT)
            self.assertIn("16 MiB", caught.exception.message)
            with self.assertRaises(Failure) as caught:
                stores.copy("backups", "db/dump", "regions", "c", "00" * 32)
            self.assertEqual(caught.exception.kind, FailureKind.VERIFICATION_FAILED)
        self.assertEqual(host.object("regions", "site/a"), b"text")
        self.assertIsNone(host.object("regions", "c"), "nothing is left behind on a mismatch")
        self.assertEqual([d.capability for d in host.denials], ["stores", "stores"])

    def test_the_plan_phase_and_prefixes(self):
        host = MockHost().store("regions", Access.WRITE, prefix="site/")
        with host.enter("plan"):
            with self.assertRaises(Failure) as caught:
                stores.put("regions", "site/a", b"")
            self.assertEqual(caught.exception.message, "stores denied: write regions:site/a: the plan phase is read-only")
        with host.enter("apply"):
            with self.assertRaises(Failure) as caught:
                stores.get("regions", "site-prod/a")
            self.assertIn("outside the granted prefix `site/`", caught.exception.message)
            with self.assertRaises(Failure) as caught:
                stores.get("regions", "site/../x")
            self.assertIn("`..` is not allowed", caught.exception.message)


class StateTest(unittest.TestCase):
    def test_state_carries_over_and_plan_drops_writes(self):
        plugin = Plugin("t", "0.1.0")

        @plugin.operation("count", "")
        def count(ctx: Context, p: Any) -> dict:
            n = int(state.get("n") or "0") + 1
            state.set("n", str(n))
            return {"n": n, "all": state.list()}

        host = MockHost()
        self.assertEqual(host.invoke(plugin, "count", "apply")["n"], 1)
        self.assertEqual(host.invoke(plugin, "count", "apply"), {"n": 2, "all": {"n": "2"}})
        self.assertEqual(host.invoke(plugin, "count", "plan")["n"], 3)
        self.assertEqual(host.state_map(), {"n": "2"}, "the plan's write was dropped")
        with host.enter("apply"):
            state.delete("n")
            with self.assertRaises(TypeError):
                state.set("n", 3)  # type: ignore[arg-type]
            with self.assertRaises(Trap):
                state.set("big", "x" * (64 * 1024 + 1))
        self.assertEqual(host.state_map(), {})

    def test_fencing_token_is_the_mocks_epoch(self):
        with MockHost().enter():
            self.assertEqual(state.fencing_token(), 1)
        with MockHost().fencing_token(4).enter():
            self.assertEqual(state.fencing_token(), 4)


class SecretsExecNetImagesTest(unittest.TestCase):
    def test_secrets(self):
        host = MockHost().secret("db", "s3cret").secret_unset("unset")
        with host.enter():
            self.assertEqual(secrets.get("db"), "s3cret")
            with self.assertRaises(Failure) as caught:
                secrets.get("unset")
            self.assertEqual(caught.exception.kind, FailureKind.NOT_FOUND)
            with self.assertRaises(Failure) as caught:
                secrets.get("other")
            self.assertEqual(caught.exception.message, "secrets denied: secret `other` is not in the step's secrets grant")

    def test_exec_and_services(self):
        host = (
            MockHost()
            .exec("pg_restore", output(0, "restored"))
            .exec("echo", lambda r: output(0, " ".join(r.args)))
            .exec("slow", Failure.unavailable("killed at its deadline"))
        )
        with host.enter("apply"):
            self.assertEqual(exec.run("pg_restore", ["--clean"]).stdout_text, "restored")
            self.assertEqual(exec.run("echo", ["a", "b"], env={"X": "1"}, timeout_ms=10).stdout, b"a b")
            with self.assertRaises(Failure) as caught:
                exec.run("slow")
            self.assertTrue(caught.exception.retryable)
            with self.assertRaises(Failure) as caught:
                exec.run("rm", ["-rf", "/"])
            self.assertEqual(caught.exception.message, "exec denied: program `rm` is not in the step's exec grant")
            with self.assertRaises(Failure) as caught:
                exec.run("echo", env={"LD_PRELOAD": "x"})
            self.assertIn("may not be set by a plugin", caught.exception.message)
            pid = exec.spawn_service("echo", ["serve"], cwd="www")
            self.assertEqual([s.pid for s in host.services], [pid])
            exec.stop_service(pid)
            with self.assertRaises(Failure) as caught:
                exec.stop_service(pid)
            self.assertIn("not a service started by this run", caught.exception.message)
        self.assertEqual([r.program for r in host.exec_calls], ["pg_restore", "echo", "slow"])
        self.assertEqual(host.exec_calls[1].env, [("X", "1")])
        with host.enter("plan"):
            with self.assertRaises(Failure) as caught:
                exec.run("echo")
            self.assertEqual(caught.exception.message, "exec denied: `echo`: the plan phase may not run programs")

    def test_tcp_probes_need_a_tcp_grant(self):
        host = MockHost().tcp("127.0.0.1", 5432, 250).tcp("127.0.0.1", 5433, Failure.unavailable("refused"))
        with host.enter("plan"):
            self.assertEqual(net.tcp_probe("127.0.0.1", 5432), 250)
            with self.assertRaises(Failure) as caught:
                net.tcp_probe("127.0.0.1", 5433)
            self.assertEqual(caught.exception.kind, FailureKind.UNAVAILABLE)
            with self.assertRaises(Failure) as caught:
                net.tcp_probe("10.0.0.1", 22)
            self.assertEqual(caught.exception.message, "http denied: tcp://10.0.0.1:22 is not in the step's http grant")

    def test_images_check_the_user_then_say_they_are_not_modelled(self):
        host = MockHost().store("backups").run_as("postgres", "postgres")
        with host.enter("apply"):
            with self.assertRaises(Failure) as caught:
                images.unpack("backups", "db", "v1", "data", user="root")
            self.assertEqual(caught.exception.kind, FailureKind.DENIED)
            with self.assertRaises(Failure) as caught:
                images.unpack("backups", "db", "v1", "data", user="postgres")
            self.assertEqual(caught.exception.kind, FailureKind.INTERNAL)

    def test_log_and_progress(self):
        host = MockHost()
        with host.enter():
            log.info("one")
            log.warn("two")
            progress.report(5, 10, "copying")
            with self.assertRaises(ValueError):
                log.log("loud", "x")
        self.assertEqual(host.logs, [("info", "one"), ("warn", "two")])
        self.assertEqual(host.log_messages(), ["one", "two"])
        self.assertEqual((host.progress[0].done, host.progress[0].total), (5, 10))


class HttpTest(unittest.TestCase):
    URL = "https://api.example.com/v1/items"

    def test_streams_a_response_in_chunks(self):
        body = bytes(range(256)) * 1000
        host = MockHost().http(self.URL, 200, body, {"Content-Type": "application/octet-stream", "X-A": "1"})
        with host.enter("plan"):
            with http.send("GET", self.URL) as r:
                self.assertTrue(r.ok)
                self.assertEqual(r.header("content-type"), "application/octet-stream")
                self.assertEqual(r.headers.get_all("x-a"), ["1"])
                first = r.read(10)
                rest = b"".join(r.iter_chunks(4096))
            self.assertEqual(first + rest, body)
            self.assertEqual(http.get(self.URL).body, body)

    def test_sends_headers_and_a_streamed_body(self):
        host = MockHost().http(self.URL, lambda call: http.Response(201, json.dumps({"got": len(call.body or b"")})))
        with host.enter("apply"):
            r = http.request("POST", self.URL, io.BytesIO(b"x" * 100_000), headers={"Authorization": "Bearer t"})
            self.assertEqual((r.status, r.json()), (201, {"got": 100_000}))
            r = http.send("PUT", self.URL, body=(b"ab" for _ in range(3)), length=6)
            self.assertEqual(r.status, 201)
        call = host.http_calls[1]
        self.assertEqual((call.method, call.body, call.header("content-length")), ("PUT", b"ababab", "6"))
        self.assertEqual(host.http_calls[0].header("authorization"), "Bearer t")

    def test_the_grant_and_the_plan_phase(self):
        host = MockHost().http(self.URL, 200, "ok")
        with host.enter("plan"):
            with self.assertRaises(Failure) as caught:
                http.request("DELETE", self.URL)
            self.assertEqual(caught.exception.kind, FailureKind.DENIED)
            self.assertTrue(caught.exception.message.startswith("http: DELETE"), caught.exception.message)
            self.assertEqual(host.denial().asked, "DELETE https://api.example.com:443/v1/items: the plan phase may only GET or HEAD")
            with self.assertRaises(Failure) as caught:
                http.get("https://evil.example.com/")
            self.assertEqual(caught.exception.kind, FailureKind.DENIED)
            with self.assertRaises(Failure) as caught:
                http.get("https://api.example.com/v1/other")
            self.assertEqual(caught.exception.kind, FailureKind.UNAVAILABLE)

    def test_statuses_map_to_failure_kinds(self):
        for status, kind in [(401, "denied"), (404, "not-found"), (409, "conflict"), (429, "unavailable"), (503, "unavailable"), (400, "invalid-input")]:
            f = MockHost().http(self.URL, status, '{"error":"no"}')
            with f.enter():
                failure = http.get(self.URL).failure("GET item")
            self.assertEqual(failure.kind.value, kind, status)
            self.assertEqual(failure.message, f'GET item: {self.URL}: HTTP {status}: {{"error":"no"}}')

    def test_bytes_refuses_a_body_past_its_max(self):
        host = MockHost().http(self.URL, 200, b"x" * 100)
        with host.enter():
            with self.assertRaises(Failure) as caught:
                http.send("GET", self.URL).bytes(max=99)
            self.assertEqual(caught.exception.kind, FailureKind.INVALID_INPUT)


if __name__ == "__main__":
    unittest.main()
