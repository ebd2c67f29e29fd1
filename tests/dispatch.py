"""One request through the real entrypoint with some Worker vars changed
(e.g. SERVER_TIMING=off, ENVIRONMENT=production), on the same local D1."""

from typing import Any

import js
import local_runtime
from pyodide.ffi import to_js

from support import Resp


async def fetch_with_vars(path: str, *, headers: dict[str, str] | None = None, **overrides: str) -> Resp:
    init: dict[str, Any] = {"headers": to_js(headers or {}, dict_converter=js.Object.fromEntries)}
    request = js.Request.new(local_runtime.baseUrl + path, to_js(init, dict_converter=js.Object.fromEntries))
    result = await local_runtime.dispatchFetch(request, overrides)
    response = result.response
    body = (await response.arrayBuffer()).to_bytes()
    return Resp(int(response.status), {k.lower(): v for k, v in response.headers.entries()}, body)
