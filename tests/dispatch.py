"""One request through the real entrypoint with some Worker vars changed
(e.g. SERVER_TIMING=off, ENVIRONMENT=production), on the same local D1."""

import sys
from typing import Any

import _local_runtime
import js
import local_runtime
from pyodide.ffi import to_js

from support import Resp


async def fetch_with_vars(path: str, *, headers: dict[str, str] | None = None, **overrides: str) -> Resp:
    env = js.Object.assign(
        js.Object.new(), local_runtime.makeEnv(), to_js(overrides, dict_converter=js.Object.fromEntries)
    )
    ctx = js.eval("({ waitUntil() {}, passThroughOnException() {} })")
    init: dict[str, Any] = {"headers": to_js(headers or {}, dict_converter=js.Object.fromEntries)}
    request = js.Request.new(local_runtime.baseUrl + path, to_js(init, dict_converter=js.Object.fromEntries))
    response = await _local_runtime.call_entrypoint(sys.modules["entry"].Default, "fetch", ctx, env, [request])
    body = (await response.arrayBuffer()).to_bytes()
    return Resp(int(response.status), {k.lower(): v for k, v in response.headers.entries()}, body)
