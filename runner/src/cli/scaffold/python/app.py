"""The `__NAME__` respawn plugin. Build it with `./build.sh` (-> __NAME__.wasm); test it with
`python3 -m unittest`. See docs/writing-plugins-python.md of respawn.

This module must not be named `wit_world`: componentize-py generates the bindings under that name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

from respawn_plugin import Context, Failure, Phase, Plugin, http, log

plugin = Plugin("__NAME__", "0.1.0", capabilities=["http"])


@dataclass
class GreetParams:
    """Params of `__NAME__/greet`, from the step's `with:`. An unknown or missing key is `invalid-input`."""

    who: str


greet = plugin.operation("greet", "Say hello", GreetParams)


@greet.plan
def greet_plan(ctx: Context, p: GreetParams) -> dict:
    # Plan must have no side effects: say what apply would do.
    return {"greeting": f"would greet {p.who}"}


@greet.on(Phase.APPLY, Phase.VERIFY, Phase.DESTROY)
def greet_apply(ctx: Context, p: GreetParams) -> dict:
    # Apply is idempotent; destroy must succeed when there is nothing to undo.
    greeting = f"hello, {p.who}"
    log.info(greeting)
    return {"greeting": greeting}


@dataclass
class FetchParams:
    url: str
    expect_status: int = 200


fetch = plugin.operation("fetch", "GET a URL and check its status (needs an http grant)", FetchParams)


@fetch.on(Phase.PLAN, Phase.APPLY, Phase.VERIFY)
def fetch_check(ctx: Context, p: FetchParams) -> dict:
    # GET is allowed in the plan phase too; the body is hashed as it arrives, never held whole.
    digest, size = hashlib.sha256(), 0
    with http.send("GET", p.url) as r:
        for chunk in r.iter_chunks():
            digest.update(chunk)
            size += len(chunk)
        content_type: Optional[str] = r.header("content-type")
    if r.status != p.expect_status:
        raise Failure.verification_failed(f"GET {p.url}: expected HTTP {p.expect_status}, got {r.status}")
    return {"status": r.status, "bytes": size, "sha256": digest.hexdigest(), "content_type": content_type}


@fetch.destroy
def fetch_destroy(ctx: Context, p: FetchParams) -> dict:
    return {}  # fetching created nothing


# What componentize-py exports as the component's `describe` and `invoke`.
WitWorld = plugin.world()
