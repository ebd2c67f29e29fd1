"""Rate limits through Cloudflare's Workers Rate Limiting binding.

Each limit is one `[[ratelimits]]` binding in wrangler.toml (the same numbers in
every environment, its own `namespace_id` in each: a shared id would share the
counters), called as `await env.<binding>.limit({"key": ...})` -> `{success}`.
The pipeline (app.py) checks every matched route before its first write:

| limit (binding)                  | counts                               | key                 | allows    |
|----------------------------------|--------------------------------------|---------------------|-----------|
| public reads (`RL_PUBLIC`)       | GET/HEAD of routes without a caller  | client IP           | 600 / 60 s |
| new users (`RL_NEW_USER`)        | first sight of a Clerk `sub`         | client IP           | 10 / 60 s |
| caller reads (`RL_USER_READ`)    | GET/HEAD of authenticated routes     | the caller's `sub`  | 600 / 60 s |
| caller writes (`RL_USER_WRITE`)  | POST/PUT/PATCH/DELETE, authenticated | the caller's `sub`  | 120 / 60 s |
| deposits (`RL_DEPOSIT`)          | `POST /v1/wallet/deposits` attempts  | the caller's `sub`  | 5 / 60 s  |
| deposits per IP (`RL_DEPOSIT_IP`)| `POST /v1/wallet/deposits` attempts  | client IP           | 20 / 60 s |

The Authorize.Net webhook is not limited: it is signed (a forged one costs one
HMAC and no D1 call), and a 429 would delay money events by a retry schedule
nobody has confirmed.

Order in a request: route match -> the caller's token (no D1) -> the route's
limits (tightest first; a deposit is a deposit attempt and a caller write) ->
the caller's row, where a first sight is checked against `RL_NEW_USER` before
the user is inserted -> the handler. Over a limit: 429 `rate_limited` with
`Retry-After` (the limit's period: the binding does not say when its window
ends), and nothing has been written.

Client IP is `CF-Connecting-IP`, which Cloudflare's edge always sets (a client
cannot choose it); an IPv6 address counts as its /64, which one subscriber
usually holds whole. Without the header (no request from the internet lacks it;
only in-process local tests do) every request shares one key, `ip:unknown`.

The binding's counters are per Cloudflare location and eventually consistent: a
limit holds approximately, never exactly. A limiter that throws lets the request
through (logged): the limits protect capacity, they are no authorization.
A missing binding is a misconfiguration (500), never a silent pass.

Locally (`ENVIRONMENT=local`) `RATE_LIMITS=observe` counts every request through
the same bindings but refuses none: the suites send hundreds of requests from one
user and, in process, without any client IP. `RATE_LIMITS=enforce` (what the
rate-limit tests set per request, and `RATE_LIMITS=enforce make dev`) refuses;
every other environment always enforces."""

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal

import js
from pyodide.ffi import to_js
from workers import python_to_rpc

from . import logs
from .config import Settings
from .errors import Problem
from .routing import Route

IP_HEADER = "cf-connecting-ip"
UNKNOWN_IP = "unknown"


@dataclass(frozen=True, slots=True)
class Limit:
    binding: str  # the env name of its [[ratelimits]] binding
    name: str  # in logs
    key: Literal["ip", "user"]
    limit: int  # as configured in wrangler.toml (documentation and tests; the binding enforces it)
    period_s: int  # 10 or 60, as configured
    refusal: str  # "Too many <refusal>"


PUBLIC_READS = Limit("RL_PUBLIC", "public_reads", "ip", 600, 60, "requests from your address")
NEW_USERS = Limit("RL_NEW_USER", "new_users", "ip", 10, 60, "new accounts from your address")
USER_READS = Limit("RL_USER_READ", "user_reads", "user", 600, 60, "requests")
USER_WRITES = Limit("RL_USER_WRITE", "user_writes", "user", 120, 60, "changes")
DEPOSITS = Limit("RL_DEPOSIT", "deposits", "user", 5, 60, "deposit attempts")
DEPOSITS_PER_IP = Limit("RL_DEPOSIT_IP", "deposits_per_ip", "ip", 20, 60, "deposit attempts from your address")
ALL = (PUBLIC_READS, NEW_USERS, USER_READS, USER_WRITES, DEPOSITS, DEPOSITS_PER_IP)

_READS = frozenset({"GET", "HEAD"})
# Routes with limits of their own, checked before their class's (tightest first).
_OWN: dict[tuple[str, str], tuple[Limit, ...]] = {
    ("POST", "/v1/wallet/deposits"): (DEPOSITS, DEPOSITS_PER_IP),
    # PayPal's notifications: the public per-IP limit. Each one that names a payout of
    # ours costs a call to PayPal's verification API, so a forger's flood is bounded.
    ("POST", "/v1/webhooks/paypal"): (),
}
_UNLIMITED: frozenset[tuple[str, str]] = frozenset({("POST", "/v1/webhooks/authorizenet")})


def limits_for(route: Route) -> tuple[Limit, ...]:
    """The limits a request to `route` is checked against, in order (any route: one
    that tests add to the router gets its class's limits too)."""
    key = (route.method, route.pattern)
    if key in _UNLIMITED:
        return ()
    own = _OWN.get(key, ())
    if route.auth in ("user", "admin"):
        return (*own, USER_READS if route.method in _READS else USER_WRITES)
    return (*own, PUBLIC_READS)


def plan(routes: list[Route]) -> dict[tuple[str, str], tuple[Limit, ...]]:
    """Every route's limits, decided once. The tables above must name real routes, and a
    route without a caller that is not a read (so far only the webhook) needs a decision
    of its own there, not the public reads' limit by default."""
    keys = {(r.method, r.pattern) for r in routes}
    assert set(_OWN) | _UNLIMITED <= keys, f"rate limits for unknown routes: {(set(_OWN) | _UNLIMITED) - keys}"
    for r in routes:
        undecided = r.auth not in ("user", "admin") and r.method not in _READS
        assert not undecided or (r.method, r.pattern) in set(_OWN) | _UNLIMITED, (
            f"{r.method} {r.pattern}: a route without a caller that is not a read needs its own limit here"
        )
    return {(r.method, r.pattern): limits_for(r) for r in routes}


def client_ip(header: str | None) -> str:
    """CF-Connecting-IP as a key: IPv4 as is, IPv6 as its /64 (IPv4-mapped as IPv4)."""
    if header is None:
        return UNKNOWN_IP
    try:
        address = ipaddress.ip_address(header.strip())
    except ValueError:
        return UNKNOWN_IP
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def key_for(limit: Limit, *, ip: str, sub: str | None) -> str:
    if limit.key == "user":
        assert sub is not None, f"{limit.name} is counted per caller"
        return f"user:{sub}"
    return f"ip:{ip}"


def rate_limited(limit: Limit) -> Problem:
    return Problem(
        429,
        "rate_limited",
        "Too many requests",
        f"Too many {limit.refusal}; retry in {limit.period_s} s.",
        headers={"retry-after": str(limit.period_s)},
        extra={"retry_after_s": limit.period_s},
    )


def _succeeded(outcome: Any) -> bool | None:
    """`{success}` from the binding: a dict (the SDK's wrapper) or a JS object."""
    value = outcome.get("success") if isinstance(outcome, dict) else getattr(outcome, "success", None)
    return value if isinstance(value, bool) else None


class Limiter:
    """One request's checks (app.py): `check` before the caller's row, `new_user`
    just before a first sight is inserted."""

    def __init__(self, env: Any, settings: Settings, ip_header: str | None, request_id: str) -> None:
        self._env = env
        self._enforce = settings.rate_limits_enforced
        self._request_id = request_id
        self.ip = client_ip(ip_header)

    async def check(self, limits: tuple[Limit, ...], sub: str | None = None) -> None:
        for limit in limits:
            await self._count(limit, key_for(limit, ip=self.ip, sub=sub))

    async def new_user(self) -> None:
        await self._count(NEW_USERS, key_for(NEW_USERS, ip=self.ip, sub=None))

    async def _count(self, limit: Limit, key: str) -> None:
        binding = getattr(self._env, limit.binding, None)
        if binding is None:
            raise Problem(
                500, "misconfigured", "Server misconfigured", f"Rate limit binding {limit.binding} is missing."
            )
        try:
            # Through the JS binding itself (the SDK's wrapper converted the call and its
            # answer through Python: ~0.19 ms vs ~0.07 ms a call, bench/py_profile.py).
            outcome = await python_to_rpc(binding).limit(to_js({"key": key}, dict_converter=js.Object.fromEntries))
        except Exception as exc:  # noqa: BLE001 - the limiter's own failure lets the request through
            logs.error(
                "rate_limit_unavailable", request_id=self._request_id, limit=limit.name, error_type=type(exc).__name__
            )
            return
        succeeded = _succeeded(outcome)
        if succeeded is None:
            logs.error("rate_limit_unreadable", request_id=self._request_id, limit=limit.name)
            return
        if succeeded or not self._enforce:
            return
        logs.warning("rate_limited", request_id=self._request_id, limit=limit.name)
        raise rate_limited(limit)
