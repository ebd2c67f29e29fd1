"""The D1 fault switch works in local configuration and nowhere else.

Local: a request carrying x-test-d1-fault fails its Nth D1 call with D1's own
transient text, and the client gets 503 + Retry-After (app.py's mapping).
Staging/production: Settings refuse every test hook whatever TEST_HOOKS says;
the Worker's own guard (app.py reads the header only when Settings allow test hooks) is
proven by booting those configurations, host-side (tooling_tests/test_fault_switch_guard.py)."""

import js
import local_runtime
from pyodide.ffi import to_js

from clairvora.config import Settings
from clairvora.db import TransientD1Error, classify


async def dispatch(method: str, path: str, headers: dict[str, str], body: str | None = None):
    init = {"method": method, "headers": to_js(headers, dict_converter=js.Object.fromEntries)}
    if body is not None:
        init["body"] = body
    request = js.Request.new(local_runtime.baseUrl + path, to_js(init, dict_converter=js.Object.fromEntries))
    result = await local_runtime.dispatchFetch(request)
    text = await result.response.text()
    return int(result.response.status), result.response.headers, text, int(result.injected), int(result.calls)


async def test_local_fault_switch_fails_the_nth_call_with_a_retryable_problem():
    status, headers, text, injected, calls = await dispatch("GET", "/health", {"x-test-d1-fault": "1"})
    assert (status, injected, calls) == (503, 1, 1), text
    assert headers.get("retry-after") == "1"
    assert headers.get("content-type") == "application/problem+json"
    # A call position the request never reaches injects nothing.
    status, _headers, _text, injected, calls = await dispatch("GET", "/health", {"x-test-d1-fault": "2"})
    assert (status, injected, calls) == (200, 0, 1)


async def test_every_injected_error_text_is_classified_transient():
    # The texts the Worker's fault switch raises (clairvora/faults.py) are D1's; each must map to 503, never 500.
    for text in (
        "D1_ERROR: Network connection lost.",
        "D1_ERROR: D1 DB is overloaded. Too many requests queued.",
        "D1_ERROR: Internal error while starting up D1 DB storage caused object to be reset.",
    ):
        assert isinstance(classify(f"Error: {text}"), TransientD1Error), text


class _Env:
    def __init__(self, **values: str) -> None:
        self.__dict__.update(values)


def test_settings_refuse_test_hooks_outside_local_configuration():
    for environment in ("staging", "production"):
        assert not Settings.from_env(_Env(ENVIRONMENT=environment, TEST_HOOKS="allowed")).test_hooks_allowed
    assert not Settings.from_env(_Env(ENVIRONMENT="local", TEST_HOOKS="forbidden")).test_hooks_allowed
    assert Settings.from_env(_Env(ENVIRONMENT="local", TEST_HOOKS="allowed")).test_hooks_allowed
