"""Rate limits through the Workers Rate Limiting binding (ratelimits.py).

Every request here is sent with RATE_LIMITS=enforce (locally the limits only
count by default, since the suites send hundreds of requests per user), through
the real bindings wrangler dev gives the Worker, so the numbers checked are the
ones in wrangler.toml. Keys are fresh per test (new users, random client IPs),
so nothing else the suite sends touches them.

No test waits for a window to pass. wrangler dev's limiter counts in fixed
windows of its period (Date.now() // period): a scenario that a window boundary
cut in two is run again with fresh keys (`_in_one_window`), and the second run
cannot be cut as well (each takes a few seconds, the windows are 60 s).

Exhausting 600 requests with real requests would be slow, so a scenario may
first spend all but one of a key's budget by calling the binding itself with the
key the pipeline uses; the next request must pass and the one after be refused,
which pins both the key and the exact number."""

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import js
import local_runtime
from pyodide.ffi import to_js
from workers import _EnvWrapper

from clairvora import ratelimits
from clairvora.app import LIMITS, ROUTES
from clairvora.db import sql
from support import SENSITIVE_VALUES, Resp, database, new_user, token_for, unique
from world import actor, row_counts

ENFORCE = {"RATE_LIMITS": "enforce"}


async def send(
    method: str,
    path: str,
    *,
    token: str | None = None,
    ip: str | None = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    env: dict[str, Any] | None = None,
) -> Resp:
    """One request through the entrypoint with the limits enforced (or `env`'s vars)."""
    all_headers: dict[str, str] = {}
    if token is not None:
        SENSITIVE_VALUES.add(token)
        all_headers["authorization"] = f"Bearer {token}"
    if ip is not None:
        all_headers["cf-connecting-ip"] = ip
    init: dict[str, Any] = {"method": method}
    if json_body is not None:
        init["body"] = json.dumps(json_body)
        all_headers["content-type"] = "application/json"
    all_headers.update(headers or {})
    init["headers"] = to_js(all_headers, dict_converter=js.Object.fromEntries)
    request = js.Request.new(local_runtime.baseUrl + path, to_js(init, dict_converter=js.Object.fromEntries))
    response = (await local_runtime.dispatchFetch(request, env if env is not None else ENFORCE)).response
    body = (await response.arrayBuffer()).to_bytes()
    return Resp(int(response.status), {k.lower(): v for k, v in response.headers.entries()}, body)


def fresh_ip() -> str:
    """A client address no other test uses (TEST-NET-3 would give only 254)."""
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{1 + secrets.randbelow(254)}"


def fresh_ipv6_prefix() -> str:
    return f"2001:db8:{secrets.randbelow(65536):x}:{secrets.randbelow(65536):x}"


def binding(limit: ratelimits.Limit) -> Any:
    return getattr(_EnvWrapper(local_runtime.makeEnv()), limit.binding)


async def spend(limit: ratelimits.Limit, key: str, times: int) -> None:
    """Uses `times` of the key's budget, as that many requests would."""
    rl = binding(limit)
    for _ in range(times):
        outcome = await rl.limit({"key": key})
        assert outcome["success"] is True, f"{limit.binding} refused {key} early"


async def _in_one_window(scenario: Callable[[], Awaitable[Any]], period_s: int = 60) -> Any:
    """`scenario()`'s result, from a run that one limiter window held entirely."""
    for _attempt in range(2):
        window = int(js.Date.now()) // (period_s * 1000)
        result = await scenario()
        if int(js.Date.now()) // (period_s * 1000) == window:
            return result
    raise AssertionError("two runs in a row were cut by a window boundary")


def assert_rate_limited(r: Resp, limit: ratelimits.Limit) -> None:
    assert r.status == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == str(limit.period_s)
    problem = r.json()
    assert problem["code"] == "rate_limited" and problem["status"] == 429
    assert problem["retry_after_s"] == limit.period_s
    assert f"Too many {limit.refusal}" in problem["detail"]


def d1_calls(r: Resp) -> int:
    timing = r.headers["server-timing"]
    return int(timing.split("calls=", 1)[1].split()[0].rstrip('"'))


def deposit_body(amount_cents: int = 1000) -> dict[str, Any]:
    return {
        "amount_cents": amount_cents,
        "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": "tok_approved"},
    }


def gateway_requests() -> int:
    return len(json.loads(str(local_runtime.anetControl.received())))


# --- the plan: every route has its limits, the numbers are the configured ones --------------


def test_every_route_but_the_signed_webhook_is_limited():
    for route in ROUTES:
        limits = LIMITS[(route.method, route.pattern)]
        if (route.method, route.pattern) == ("POST", "/v1/webhooks/authorizenet"):
            assert limits == ()
            continue
        assert limits, f"{route.method} {route.pattern} has no rate limit"
        if route.auth in ("none", "webhook"):
            # The PayPal webhook too: each one naming a payout costs a call to PayPal's verification.
            assert limits == (ratelimits.PUBLIC_READS,), route.pattern
        elif route.method in ("GET", "HEAD"):
            assert limits[-1] is ratelimits.USER_READS, route.pattern
        else:
            assert limits[-1] is ratelimits.USER_WRITES, route.pattern
    assert LIMITS[("POST", "/v1/wallet/deposits")] == (
        ratelimits.DEPOSITS,
        ratelimits.DEPOSITS_PER_IP,
        ratelimits.USER_WRITES,
    )


def test_client_ip_keys():
    assert ratelimits.client_ip("203.0.113.7") == "203.0.113.7"
    assert ratelimits.client_ip(" 203.0.113.7 ") == "203.0.113.7"
    # An IPv6 subscriber usually holds a whole /64: it counts as one client.
    assert ratelimits.client_ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64"
    assert ratelimits.client_ip("2001:DB8:1:2::1") == "2001:db8:1:2::/64"
    assert ratelimits.client_ip("::ffff:203.0.113.7") == "203.0.113.7"
    # No header (never from the internet: Cloudflare always sets it) or not an address: one shared key.
    assert ratelimits.client_ip(None) == "unknown"
    assert ratelimits.client_ip("") == "unknown"
    assert ratelimits.client_ip("203.0.113.7, 10.0.0.1") == "unknown"


async def test_every_limited_route_documents_its_429_with_retry_after():
    paths = (await send("GET", "/openapi.json", ip=fresh_ip())).json()["paths"]
    for route in ROUTES:
        path = "/".join(p.split(":")[0] + "}" if p.startswith("{") else p for p in route.pattern.split("/"))
        responses = paths[path][route.method.lower()]["responses"]
        if LIMITS[(route.method, route.pattern)]:
            assert "Retry-After" in responses["429"]["headers"], route.pattern
            assert "application/problem+json" in responses["429"]["content"], route.pattern
        else:
            assert "429" not in responses, route.pattern
    deposits = paths["/v1/wallet/deposits"]["post"]["responses"]["429"]["description"]
    assert "5 per 60 s per caller" in deposits and "20 per 60 s per client IP" in deposits


# --- deposits ---------------------------------------------------------------------------------


async def test_deposit_attempts_are_limited_per_caller_and_the_refused_one_writes_nothing():
    assert ratelimits.DEPOSITS.limit == 5

    async def scenario() -> dict[str, Any]:
        ip = fresh_ip()
        ann, other = await actor("rlda"), await actor("rldb")
        statuses = []
        for _ in range(ratelimits.DEPOSITS.limit):
            r = await send(
                "POST",
                "/v1/wallet/deposits",
                token=ann.token,
                ip=ip,
                json_body=deposit_body(),
                headers={"idempotency-key": unique("rld")},
            )
            statuses.append(r.status)
        before, sent_before = await row_counts(), gateway_requests()
        refused = await send(
            "POST",
            "/v1/wallet/deposits",
            token=ann.token,
            ip=ip,
            json_body=deposit_body(),
            headers={"idempotency-key": unique("rld")},
        )
        after, sent_after = await row_counts(), gateway_requests()
        # Another caller from the same address, and the refused caller's reads, are not affected.
        other_deposit = await send(
            "POST",
            "/v1/wallet/deposits",
            token=other.token,
            ip=ip,
            json_body=deposit_body(),
            headers={"idempotency-key": unique("rld")},
        )
        wallet = await send("GET", "/v1/wallet", token=ann.token, ip=ip)
        return {
            "statuses": statuses,
            "refused": refused,
            "unchanged": before == after,
            "gateway_calls": sent_after - sent_before,
            "other": other_deposit.status,
            "wallet": wallet.status,
        }

    seen = await _in_one_window(scenario)
    assert seen["statuses"] == [201] * ratelimits.DEPOSITS.limit
    assert_rate_limited(seen["refused"], ratelimits.DEPOSITS)
    # Refused before the caller's row was read: no D1 call, no gateway call, no row anywhere.
    assert d1_calls(seen["refused"]) == 0
    assert seen["unchanged"], "a refused deposit changed D1"
    assert seen["gateway_calls"] == 0
    assert seen["other"] == 201 and seen["wallet"] == 200


async def test_deposit_attempts_are_limited_per_client_ip():
    limit = ratelimits.DEPOSITS_PER_IP
    assert limit.limit == 20

    async def scenario() -> dict[str, Any]:
        ip = fresh_ip()
        callers = [await actor("rldi") for _ in range(2)]
        # 19 attempts from this address already (as many callers' would count), then the 20th passes.
        await spend(limit, f"ip:{ip}", limit.limit - 1)
        last = await send(
            "POST",
            "/v1/wallet/deposits",
            token=callers[0].token,
            ip=ip,
            json_body=deposit_body(),
            headers={"idempotency-key": unique("rldi")},
        )
        before = await row_counts()
        refused = await send(
            "POST",
            "/v1/wallet/deposits",
            token=callers[1].token,
            ip=ip,
            json_body=deposit_body(),
            headers={"idempotency-key": unique("rldi")},
        )
        after = await row_counts()
        elsewhere = await send(
            "POST",
            "/v1/wallet/deposits",
            token=callers[1].token,
            ip=fresh_ip(),
            json_body=deposit_body(),
            headers={"idempotency-key": unique("rldi")},
        )
        return {"last": last.status, "refused": refused, "unchanged": before == after, "elsewhere": elsewhere.status}

    seen = await _in_one_window(scenario)
    assert seen["last"] == 201
    assert_rate_limited(seen["refused"], limit)
    assert seen["unchanged"]
    assert seen["elsewhere"] == 201


# --- first sight of a new user ----------------------------------------------------------------


async def _user_exists(sub: str) -> bool:
    row = await database().first(sql("SELECT count(*) AS n FROM users WHERE clerk_user_id = ?", sub))
    return row is not None and int(row["n"]) == 1


async def test_new_users_are_limited_per_client_ip_and_the_refused_one_is_not_created():
    limit = ratelimits.NEW_USERS
    assert limit.limit == 10

    async def scenario() -> dict[str, Any]:
        ip = fresh_ip()
        known = await actor("rlnk")  # made earlier, from elsewhere
        statuses = []
        for _ in range(limit.limit):
            _sub, client = await new_user("rln")
            statuses.append((await send("GET", "/v1/me", token=client.token, ip=ip)).status)
        sub, client = await new_user("rln")
        before = await row_counts()
        refused = await send("GET", "/v1/me", token=client.token, ip=ip)
        after = await row_counts()
        created = await _user_exists(sub)
        # A known user from the same address is not a first sight; the new one elsewhere is let in.
        known_here = await send("GET", "/v1/me", token=known.token, ip=ip)
        elsewhere = await send("GET", "/v1/me", token=client.token, ip=fresh_ip())
        return {
            "statuses": statuses,
            "refused": refused,
            "unchanged": before == after,
            "created": created,
            "known_here": known_here.status,
            "elsewhere": elsewhere.status,
            "created_elsewhere": await _user_exists(sub),
        }

    seen = await _in_one_window(scenario)
    assert seen["statuses"] == [200] * limit.limit
    assert_rate_limited(seen["refused"], limit)
    # The caller lookup ran (1 call: that is how a first sight is known), the insert did not.
    assert d1_calls(seen["refused"]) == 1
    assert seen["unchanged"] and not seen["created"]
    assert seen["known_here"] == 200
    assert seen["elsewhere"] == 200 and seen["created_elsewhere"]


async def test_new_users_on_a_preloaded_route_are_limited_too():
    """Reading routes read the caller in one batch with their first read; a first sight there
    goes through the same check before the user is inserted."""
    limit = ratelimits.NEW_USERS

    async def scenario() -> dict[str, Any]:
        ip = fresh_ip()
        await spend(limit, f"ip:{ip}", limit.limit)
        sub, client = await new_user("rlnp")
        before = await row_counts()
        r = await send("GET", "/v1/readings/1234567890123", token=client.token, ip=ip)
        return {"refused": r, "unchanged": before == await row_counts(), "created": await _user_exists(sub)}

    seen = await _in_one_window(scenario)
    assert_rate_limited(seen["refused"], limit)
    assert seen["unchanged"] and not seen["created"]


# --- authenticated writes and reads -----------------------------------------------------------


async def test_caller_writes_are_limited_per_caller_and_refused_before_any_d1_call():
    limit = ratelimits.USER_WRITES
    assert limit.limit == 120

    async def scenario() -> dict[str, Any]:
        ip = fresh_ip()
        ann, ben = await actor("rlwa"), await actor("rlwb")
        await spend(limit, f"user:{ann.sub}", limit.limit - 1)
        patch = {"display_name": "Rate Limited Ann"}
        last = await send("PATCH", "/v1/me", token=ann.token, ip=ip, json_body=patch, headers={"if-match": '"1"'})
        before = await row_counts()
        refused = await send("PATCH", "/v1/me", token=ann.token, ip=ip, json_body=patch, headers={"if-match": '"2"'})
        # A POST to another route shares the caller's budget.
        refused_post = await send("POST", "/v1/readings/1234567890123/heartbeat", token=ann.token, ip=ip)
        after = await row_counts()
        return {
            "last": last.status,
            "refused": refused,
            "refused_post": refused_post,
            "unchanged": before == after,
            "read": (await send("GET", "/v1/me", token=ann.token, ip=ip)).json(),
            "ben": (
                await send("PATCH", "/v1/me", token=ben.token, ip=ip, json_body=patch, headers={"if-match": '"1"'})
            ).status,
        }

    seen = await _in_one_window(scenario)
    assert seen["last"] == 200
    assert_rate_limited(seen["refused"], limit)
    assert_rate_limited(seen["refused_post"], limit)
    assert d1_calls(seen["refused"]) == 0
    assert seen["unchanged"]
    assert seen["read"]["version"] == 2, "reads have their own budget; the refused PATCH changed nothing"
    assert seen["ben"] == 200


async def test_caller_reads_are_limited_per_caller():
    limit = ratelimits.USER_READS
    assert limit.limit == 600

    async def scenario() -> dict[str, Any]:
        ip = fresh_ip()
        # Not made through actor(): its GET /v1/me would be one of the reads counted.
        ann_sub, ann = await new_user("rlra")
        ben = await actor("rlrb")
        await spend(limit, f"user:{ann_sub}", limit.limit - 2)
        head = await send("HEAD", "/v1/me", token=ann.token, ip=ip)  # a HEAD is a read
        last = await send("GET", "/v1/wallet", token=ann.token, ip=ip)
        refused = await send("GET", "/v1/me", token=ann.token, ip=ip)
        return {
            "head": head.status,
            "last": last.status,
            "refused": refused,
            "ben": (await send("GET", "/v1/me", token=ben.token, ip=ip)).status,
        }

    seen = await _in_one_window(scenario)
    assert seen["head"] == 200 and seen["last"] == 200
    assert_rate_limited(seen["refused"], limit)
    assert seen["ben"] == 200


async def test_an_unauthenticated_request_is_refused_by_its_token_first():
    """The caller's limit needs a verified caller: a request without a valid token is a 401,
    whatever the budget of the `sub` it claims."""
    limit = ratelimits.USER_WRITES

    async def scenario() -> Resp:
        sub = f"user_{unique('rlu')}"
        await spend(limit, f"user:{sub}", limit.limit)
        forged = await token_for(sub, iss="https://evil.example.com")
        return await send("PATCH", "/v1/me", token=forged, ip=fresh_ip(), json_body={"display_name": "x"})

    r = await _in_one_window(scenario)
    assert r.status == 401, r.text


# --- public reads -----------------------------------------------------------------------------


async def test_public_reads_are_limited_per_client_ip_across_public_routes():
    limit = ratelimits.PUBLIC_READS
    assert limit.limit == 600

    async def scenario() -> dict[str, Any]:
        ip = fresh_ip()
        await spend(limit, f"ip:{ip}", limit.limit - 1)
        last = await send("GET", "/v1/advisors", ip=ip)
        refused = await send("GET", "/health", ip=ip)
        refused_head = await send("HEAD", "/v1/advisors", ip=ip)
        return {
            "last": last.status,
            "refused": refused,
            "refused_head": refused_head.status,
            "elsewhere": (await send("GET", "/v1/advisors", ip=fresh_ip())).status,
        }

    seen = await _in_one_window(scenario)
    assert seen["last"] == 200
    assert_rate_limited(seen["refused"], limit)
    assert seen["refused_head"] == 429
    assert seen["elsewhere"] == 200


async def test_an_ipv6_client_counts_as_its_slash_64():
    limit = ratelimits.PUBLIC_READS

    async def scenario() -> dict[str, Any]:
        prefix = fresh_ipv6_prefix()
        await spend(limit, f"ip:{prefix}::/64", limit.limit)
        return {
            "same_64": (await send("GET", "/v1/advisors", ip=f"{prefix}:1:2:3:4")).status,
            "next_64": (await send("GET", "/v1/advisors", ip=f"{prefix}1::1")).status,
        }

    seen = await _in_one_window(scenario)
    assert seen == {"same_64": 429, "next_64": 200}


async def test_the_signed_webhook_is_not_limited():
    async def scenario() -> Resp:
        ip = fresh_ip()
        await spend(ratelimits.PUBLIC_READS, f"ip:{ip}", ratelimits.PUBLIC_READS.limit)
        # Unsigned: refused by its signature (401), not by a limit.
        return await send("POST", "/v1/webhooks/authorizenet", ip=ip, json_body={"eventType": "x"})

    r = await _in_one_window(scenario)
    assert r.status == 401, r.text


# --- modes and configuration ------------------------------------------------------------------


async def test_observe_counts_without_refusing_locally_and_other_environments_always_enforce():
    limit = ratelimits.PUBLIC_READS

    async def scenario() -> dict[str, Any]:
        ip = fresh_ip()
        await spend(limit, f"ip:{ip}", limit.limit - 1)
        observed = await send("GET", "/v1/advisors", ip=ip, env={"RATE_LIMITS": "observe"})
        # That request was counted: the budget is gone now.
        counted = (await binding(limit).limit({"key": f"ip:{ip}"}))["success"] is False
        still_observed = await send("GET", "/v1/advisors", ip=ip, env={"RATE_LIMITS": "observe"})
        production = await send("GET", "/health", ip=ip, env={"RATE_LIMITS": "observe", "ENVIRONMENT": "production"})
        return {
            "observed": observed.status,
            "counted": counted,
            "still_observed": still_observed.status,
            "production": production,
        }

    seen = await _in_one_window(scenario)
    assert seen["observed"] == 200 and seen["counted"] and seen["still_observed"] == 200
    assert_rate_limited(seen["production"], limit)


async def test_a_missing_binding_or_an_unknown_mode_is_a_misconfiguration():
    missing = await send("GET", "/v1/advisors", ip=fresh_ip(), env={**ENFORCE, "RL_PUBLIC": None})
    assert missing.status == 500 and missing.json()["code"] == "misconfigured", missing.text
    assert "RL_PUBLIC" in missing.json()["detail"]
    unknown = await send("GET", "/v1/advisors", ip=fresh_ip(), env={"RATE_LIMITS": "off"})
    assert unknown.status == 500 and unknown.json()["code"] == "misconfigured", unknown.text


async def test_every_binding_is_configured_with_the_documented_numbers():
    """The local bindings (the top of wrangler.toml, which the test Worker runs) allow exactly
    what ratelimits.py documents: a fresh key passes `limit` times and is then refused."""
    rl_all = ratelimits.ALL

    async def scenario() -> dict[str, tuple[int, bool]]:
        out = {}
        for limit in rl_all:
            key = f"probe:{unique('rlp')}"
            await spend(limit, key, limit.limit)
            out[limit.binding] = (limit.limit, (await binding(limit).limit({"key": key}))["success"])
        return out

    seen = await _in_one_window(scenario)
    assert all(success is False for _n, success in seen.values()), seen
