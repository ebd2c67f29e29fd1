"""Server-Timing: D1 counts always (SERVER_TIMING=on), local durations only when
asked for (SERVER_TIMING=timing), nothing when off. The bench reads these."""

import re

import js
import local_runtime
from pyodide.ffi import to_js

from support import new_user

_D1 = re.compile(r'd1(?:;dur=(?P<d1>[0-9.]+))?;desc="calls=(?P<calls>\d+) rows_read=(\d+) rows_written=(\d+)"')
_PY = re.compile(r"(?:^|, )py;dur=(?P<py>[0-9.]+)")


async def _fetch(path: str, server_timing: str, token: str | None = None) -> dict[str, str]:
    """One request through the Worker's entrypoint with SERVER_TIMING overridden."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    init = to_js(
        {"headers": to_js(headers, dict_converter=js.Object.fromEntries)}, dict_converter=js.Object.fromEntries
    )
    request = js.Request.new(local_runtime.baseUrl + path, init)
    response = (await local_runtime.dispatchFetch(request, {"SERVER_TIMING": server_timing})).response
    assert int(response.status) == 200
    return {k.lower(): v for k, v in response.headers.entries()}


async def test_timing_mode_reports_d1_and_python_durations():
    _sub, client = await new_user("st")
    headers = await _fetch("/v1/me", "timing", client.token)
    timing = headers["server-timing"]
    d1 = _D1.search(timing)
    py = _PY.search(timing)
    assert d1 and py, timing
    assert int(d1["calls"]) == 2  # first sight of the caller: lookup, then the creating batch
    assert float(d1["d1"]) > 0
    assert float(py["py"]) >= 0


async def test_counts_only_by_default_and_nothing_when_off():
    headers = await _fetch("/health", "on")
    d1 = _D1.search(headers["server-timing"])
    assert d1 and d1["d1"] is None and int(d1["calls"]) == 1
    assert not _PY.search(headers["server-timing"])
    assert "server-timing" not in await _fetch("/health", "off")
