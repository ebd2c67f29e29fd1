"""What the tests know about the run they are part of, inside the test Worker.

The test Worker runs on real workerd (`wrangler dev`), with the project's own
code, the vendored SDK and real local D1/R2. This module gives the tests:
- `makeEnv()`: the Worker's real env (D1, R2, vars, this run's secrets);
- `dispatchFetch()` / `dispatchScheduled()`: one event through the project's
  entrypoint class `entry.Default`, in this isolate, as workerd would call it;
- the host side of the run (`control_url`): wrangler d1 execute, the Worker's
  console output, the Authorize.Net stand-in's records and clock, the PayPal
  stand-in's webhooks and controls.

`configure()` is called by the harness with the run's description before any
test module is imported.
"""

import asyncio
import hashlib
import hmac
import inspect
import json
import sys
from dataclasses import dataclass
from typing import Any

import js
from pyodide.ffi import run_sync, to_js
from workers import python_from_rpc, python_to_rpc

_state: dict[str, Any] = {}

# Names the tests read as attributes (kept from the previous harness's API).
baseUrl = ""
persistDir = ""
vars: Any = None
secrets: Any = None
overrides: Any = None
anetControl: Any = None
paypalControl: Any = None
_env: Any = None


class _Attrs:
    """A read-only attribute view of a dict (tests read `vars.CLERK_ISSUER`)."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def keys(self) -> list[str]:
        return list(self._values)


def configure(run: dict[str, Any], env: Any) -> None:
    global baseUrl, persistDir, vars, secrets, overrides, anetControl, paypalControl, _env
    _state.update(run)
    baseUrl = run["base_url"]
    persistDir = run["persist_dir"]
    vars = _Attrs(run["vars"])
    secrets = _Attrs(run["secrets"])
    overrides = _Attrs(run["overrides"])
    anetControl = AnetControl(run["anet_endpoint"], run["secrets"]["ANET_SIGNATURE_KEY"])
    paypalControl = PaypalControl(run.get("paypal_endpoint", ""))
    _env = env


def makeEnv() -> Any:
    """The test Worker's env as workerd built it (a JS object)."""
    assert _env is not None, "local_runtime.configure() has not run"
    return _env


def _control(path: str, payload: dict[str, Any]) -> Any:
    """A synchronous call to the host side of the run (JSPI lets a test block on it)."""
    init = to_js(
        {"method": "POST", "headers": {"content-type": "application/json"}, "body": json.dumps(payload)},
        dict_converter=js.Object.fromEntries,
    )

    async def call() -> Any:
        response = await js.fetch(_state["control_url"] + path, init)
        text = await response.text()
        if not response.ok:
            raise RuntimeError(f"host control {path} failed: {response.status} {text[:500]}")
        return json.loads(text)

    return run_sync(call())


def wranglerD1Execute(sql_text: str) -> str:
    """`wrangler d1 execute --local --json` on this run's D1 (run by the host)."""
    return _control("/d1-execute", {"sql": sql_text})["stdout"]


def readWorkerLog() -> str:
    """Everything workerd printed during the run, outside pytest's capture."""
    return _control("/worker-log", {})["text"]


class AnetControl:
    """The Authorize.Net stand-in's test controls (served by the host)."""

    def __init__(self, endpoint: str, signature_key: str) -> None:
        self.endpoint = endpoint
        self._signature_key = signature_key

    def received(self, invoice_number: str | None = None) -> str:
        """JSON text of the requests received (all, or one invoice's)."""
        return json.dumps(_control("/anet/received", {"invoice": invoice_number})["requests"])

    def advanceClock(self, seconds: float) -> None:
        _control("/anet/advance-clock", {"seconds": seconds})

    def planRefunds(self, trans_id: str, behaviours: list[str]) -> None:
        """What the next refunds of one original meet: fail, refuse, timeout, lost (anet_refunds.mjs)."""
        _control("/anet/plan-refunds", {"trans_id": trans_id, "behaviours": behaviours})

    def ageTransaction(self, trans_id: str, seconds: float) -> None:
        """An unsettled transaction submitted `seconds` earlier (the cut-offs it passed settle it)."""
        _control("/anet/age-transaction", {"trans_id": trans_id, "seconds": seconds})

    def settleNow(self) -> int:
        """A cut-off now: every unsettled transaction settles."""
        return int(_control("/anet/settle-now", {})["settled"])

    def signWebhook(self, body_text: str, key: str | None = None) -> str:
        """The X-ANET-Signature Authorize.Net sends: HMAC-SHA512 of the body, hex upper case."""
        secret = (key if key is not None else self._signature_key).encode("ascii")
        return "sha512=" + hmac.new(secret, body_text.encode(), hashlib.sha512).hexdigest().upper()


class PaypalControl:
    """The PayPal stand-in's test controls (served by the host)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def takeWebhooks(self) -> list[dict[str, Any]]:
        """The signed webhook deliveries made since the last call: [{headers, body}]."""
        return list(_control("/paypal/take-webhooks", {})["deliveries"])

    def signEvent(self, event: dict[str, Any]) -> dict[str, Any]:
        """A crafted event signed as PayPal signs: {headers, body}."""
        return dict(_control("/paypal/sign-event", {"event": event}))

    def nextCreate(self, mode: str | None) -> None:
        """The next create call: "hang", "drop" or "error500" (see paypal_standin.mjs)."""
        _control("/paypal/next-create", {"mode": mode})

    def returnItem(self, sender_batch_id: str) -> bool:
        return bool(_control("/paypal/return-item", {"sender_batch_id": sender_batch_id})["ok"])

    def revokeTokens(self) -> None:
        _control("/paypal/revoke-tokens", {})

    def counts(self) -> dict[str, Any]:
        return dict(_control("/paypal/counts", {}))

    def received(self, path: str = "") -> list[dict[str, Any]]:
        return list(_control("/paypal/received", {"path": path})["requests"])


class TestContext:
    """The ExecutionContext of one dispatched event: waitUntil work is kept and
    awaited before the dispatch returns, as the tests expect to see its effects."""

    def __init__(self) -> None:
        self._pending: list[asyncio.Future[Any]] = []

    def waitUntil(self, awaitable: Any) -> None:
        self._pending.append(asyncio.ensure_future(awaitable))

    def passThroughOnException(self) -> None:
        pass

    async def settle(self) -> int:
        for outcome in await asyncio.gather(*self._pending, return_exceptions=True):
            if isinstance(outcome, BaseException):
                print(f"waitUntil task failed: {type(outcome).__name__}", file=sys.stderr)
        return len(self._pending)


@dataclass
class Dispatched:
    response: Any
    injected: int
    calls: int


def _entrypoint() -> Any:
    import entry

    return entry.Default


def env_with(env_overrides: Any = None) -> Any:
    """The real env with some vars replaced for one event (bindings stay the real objects).
    Without overrides, the env itself: workerd hands every event of an isolate the same env
    object, which the Worker relies on to parse its Settings once (config.Settings.of)."""
    if env_overrides is None:
        return makeEnv()
    env = js.Object.assign(js.Object.new(), makeEnv())
    if isinstance(env_overrides, dict):
        env_overrides = to_js(env_overrides, dict_converter=js.Object.fromEntries)
    js.Object.assign(env, env_overrides)
    return env


def _fault_counts(response: Any) -> tuple[int, int]:
    value = response.headers.get("x-test-d1-faults")
    if not value:
        return 0, 0
    fields = dict(part.split("=", 1) for part in str(value).split())
    return int(fields.get("injected", 0)), int(fields.get("calls", 0))


async def dispatchFetch(request: Any, env_overrides: Any = None) -> Dispatched:
    """One fetch event through `entry.Default`, waitUntil work awaited."""
    ctx = TestContext()
    instance = _entrypoint()(ctx, env_with(env_overrides))
    result = instance.fetch(python_from_rpc(request))
    if inspect.isawaitable(result):
        result = await result
    response = python_to_rpc(result)
    await ctx.settle()
    injected, calls = _fault_counts(response)
    return Dispatched(response, injected, calls)


async def dispatchScheduled(
    cron: str = "* * * * *", scheduled_time_ms: float | None = None, env_overrides: Any = None
) -> None:
    """One scheduled event, with workerd's calling convention scheduled(controller, env, ctx)."""
    ctx = TestContext()
    env = env_with(env_overrides)
    when_ms = float(js.Date.now()) if scheduled_time_ms is None else float(scheduled_time_ms)
    controller = to_js(
        {"cron": cron, "scheduledTime": when_ms, "type": "scheduled"}, dict_converter=js.Object.fromEntries
    )
    instance = _entrypoint()(ctx, env)
    await instance.scheduled(controller, env, ctx)
    await ctx.settle()
