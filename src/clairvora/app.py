"""The route table and the request pipeline:
request -> route -> D1 session -> caller's token -> rate limits -> caller's row
-> handler -> response (+ bookmark, Server-Timing); any error ->
application/problem+json."""

import secrets
from typing import Any

from . import (
    advisors,
    blocks,
    chargebacks,
    earnings,
    limits,
    logs,
    messages,
    payments,
    payout_methods,
    payout_webhooks,
    payouts,
    period_routes,
    photos,
    privacy,
    promo_codes,
    promo_redemptions,
    ratelimits,
    reading_routes,
    readings,
    reconcile,
    refund_views,
    refunds,
    reviews,
    satisfaction,
    search,
    system,
    users,
    wallet,
    wallet_refunds,
    webhooks,
)
from . import db as db_layer
from .clock import MAX_SAFE_INTEGER, Clock
from .config import Settings
from .db import D1Error, Database, LimitExceeded, TransientD1Error, TriggerAbort, valid_bookmark
from .errors import Problem, bad_request, service_unavailable
from .faults import REQUEST_HEADER as FAULT_REQUEST_HEADER
from .faults import RESPONSE_HEADER as FAULT_RESPONSE_HEADER
from .faults import FaultHeaderError, FaultPlan, plan_from_header
from .openapi import document
from .requests import Headers, RequestContext
from .responses import encode_payload, problem_reply, to_response
from .routing import Route, Router

ROUTES: list[Route] = [
    *system.ROUTES,
    *users.ROUTES,
    *privacy.ROUTES,
    *advisors.ROUTES,
    *search.ROUTES,
    *wallet.ROUTES,
    *payments.ROUTES,
    *wallet_refunds.ROUTES,
    *chargebacks.ROUTES,
    *webhooks.ROUTES,
    *refunds.ROUTES,
    *reconcile.ROUTES,
    *period_routes.ROUTES,
    *photos.ROUTES,
    *reading_routes.ROUTES,
    *messages.ROUTES,
    *reviews.ROUTES,
    *earnings.ROUTES,
    *blocks.ROUTES,
    *promo_codes.ROUTES,
    *promo_redemptions.ROUTES,
    *satisfaction.ROUTES,
    *payout_methods.ROUTES,
    *payouts.ROUTES,
    *payout_webhooks.ROUTES,
]
SCHEMAS: dict[str, Any] = {
    **privacy.SCHEMAS,
    **advisors.SCHEMAS,
    **search.SCHEMAS,
    **blocks.SCHEMAS,
    **limits.SCHEMAS,
    **wallet.SCHEMAS,
    **payments.SCHEMAS,
    **refund_views.SCHEMAS,
    **chargebacks.SCHEMAS,
    **webhooks.SCHEMAS,
    **refunds.SCHEMAS,
    **reconcile.SCHEMAS,
    **period_routes.SCHEMAS,
    **readings.SCHEMAS,
    **messages.SCHEMAS,
    **reviews.SCHEMAS,
    **earnings.SCHEMAS,
    **promo_codes.SCHEMAS,
    **promo_redemptions.SCHEMAS,
    **satisfaction.SCHEMAS,
    **payout_methods.SCHEMAS,
    **payouts.SCHEMAS,
    **payout_webhooks.SCHEMAS,
}

ROUTER = Router(ROUTES)
# Each route's rate limits (ratelimits.py), decided once from the route table.
LIMITS = ratelimits.plan(ROUTES)
_OPENAPI: dict[str, Any] | None = None


def openapi_document() -> dict[str, Any]:
    global _OPENAPI
    if _OPENAPI is None:
        _OPENAPI = document(ROUTES, SCHEMAS, LIMITS)
    return _OPENAPI


def _clock(headers: Headers, settings: Settings) -> Clock:
    """Local test hook: x-test-now-ms fixes the clock for one request."""
    if not settings.test_hooks_allowed:
        return Clock()
    raw = headers.get("x-test-now-ms")
    if raw is None or not raw.isdigit() or int(raw) > MAX_SAFE_INTEGER:
        return Clock()
    return Clock(int(raw))


def _fault_plan(headers: Headers, settings: Settings) -> FaultPlan | None:
    """Local test hook: x-test-d1-fault fails chosen D1 calls of this request
    (faults.py). Outside local configuration the header is never read."""
    if not settings.test_hooks_allowed:
        return None
    try:
        return plan_from_header(headers.get(FAULT_REQUEST_HEADER))
    except FaultHeaderError as exc:
        raise bad_request(str(exc), FAULT_REQUEST_HEADER) from None


def _request_id(headers: Headers) -> str:
    ray = headers.get("cf-ray")
    if ray and len(ray) <= 64 and ray.replace("-", "").isalnum():
        return ray
    return secrets.token_hex(8)


async def handle_fetch(request: Any, env: Any, ctx: Any) -> Any:
    started = db_layer.timing_clock()
    headers = Headers(request)
    request_id = _request_id(headers)
    method = str(getattr(request.method, "value", request.method))
    db: Database | None = None
    settings: Settings | None = None
    faults: FaultPlan | None = None
    try:
        settings = Settings.of(env)
        faults = _fault_plan(headers, settings)
        path = request.url.split("?", 1)[0].split("://", 1)[-1]
        path = "/" + path.split("/", 1)[1] if "/" in path else "/"
        route, params = ROUTER.match(method, path)
        bookmark = valid_bookmark(headers.get("x-d1-bookmark"))
        db = Database(
            env.DB,
            bookmark=bookmark,
            primary=route.primary,
            timing=settings.server_timing_durations,
            faults=faults,
        )
        rc = RequestContext(
            request=request,
            env=env,
            ctx=ctx,
            settings=settings,
            db=db,
            clock=_clock(headers, settings),
            request_id=request_id,
            params=params,
            route=route,
            headers=headers,
        )
        # Rate limits before the first write (and before any D1 call): per caller once the
        # token is verified, per client IP without a caller, and per IP on a first sight
        # just before the new user is inserted (ratelimits.py).
        limiter = ratelimits.Limiter(env, settings, rc.header(ratelimits.IP_HEADER), request_id)
        limits = LIMITS.get((route.method, route.pattern)) or ratelimits.limits_for(route)
        if route.auth in ("user", "admin"):
            identity = await users.identify(rc)
            await limiter.check(limits, sub=identity.sub)
            if route.caller_batch:
                # The handler sends the caller lookup with its first batch (users.with_caller).
                rc.identity, rc.before_create = identity, limiter.new_user
            else:
                rc.user = await users.load_caller(rc, identity, before_create=limiter.new_user)
                users.require_role(rc)
        else:
            await limiter.check(limits)
        reply = await route.handler(rc)
    except Problem as problem:
        reply = problem_reply(problem, request_id)
    except TransientD1Error as exc:
        logs.warning("d1_transient", request_id=request_id, error=exc.message)
        reply = problem_reply(service_unavailable("The database is briefly unavailable; retry."), request_id)
    except LimitExceeded as exc:
        reply = problem_reply(Problem(400, "limit_exceeded", "Limit exceeded", str(exc)), request_id)
    except TriggerAbort as exc:
        if exc.code == "chargeback_hold":
            # An open chargeback (migration 0092's triggers on the reading and deposit INSERTs).
            reply = problem_reply(chargebacks.hold_problem(), request_id)
        elif exc.code != "user_erased":
            logs.error("d1_error", request_id=request_id, error=exc.message, kind=type(exc).__name__)
            reply = problem_reply(Problem(500, "internal_error", "Internal error", "Something went wrong."), request_id)
        else:
            # The caller's account was erased while this request was under way (migration 0080's triggers).
            reply = problem_reply(
                Problem(409, "account_erased", "Conflict", "This account was erased; sign in again for a new one."),
                request_id,
            )
    except D1Error as exc:
        logs.error("d1_error", request_id=request_id, error=exc.message, kind=type(exc).__name__)
        reply = problem_reply(Problem(500, "internal_error", "Internal error", "Something went wrong."), request_id)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: log, never leak a trace
        logs.error("unhandled_exception", request_id=request_id, error_type=type(exc).__name__, error=str(exc))
        reply = problem_reply(Problem(500, "internal_error", "Internal error", "Something went wrong."), request_id)
    payload = encode_payload(reply)  # before the headers, so py;dur includes the JSON encoding
    out_headers = _response_headers(db, settings, faults, request_id, started, reply.status)
    return to_response(reply, out_headers, head=method == "HEAD", payload=payload)


def _response_headers(
    db: Database | None,
    settings: Settings | None,
    faults: FaultPlan | None,
    request_id: str,
    started: float,
    status: int,
) -> dict[str, str]:
    headers = {"x-request-id": request_id}
    if faults is not None:
        # What the fault switch did (calls counted over every Database of the request).
        headers[FAULT_RESPONSE_HEADER] = faults.report()
    if db is not None:
        bookmark = db.bookmark()
        if bookmark:
            headers["x-d1-bookmark"] = bookmark
        if settings is not None and settings.server_timing:
            if status == 404:
                # No existence oracle: someone else's object answers 404 like a missing one,
                # but the scoped lookup that met it read its row before the scope filtered it
                # out (rows_read 4 vs 3), and took longer doing so. A 404 therefore withholds
                # its row counts (written as 0, so the header keeps the shape every parser
                # reads) and its durations; `calls` stays exact, since a scoped miss takes the
                # same path whoever's row it would have been (tests/test_existence_oracle.py
                # compares every header). The bench measures answers that found their object,
                # whose figures are untouched.
                entries = [db_layer.Counters(calls=db.counters.calls).server_timing()]
            else:
                entries = [db.counters.server_timing()]
                if settings.server_timing_durations:
                    # The request's own time (routing, auth, handler, JSON encoding)
                    # without the time spent awaiting D1.
                    total_ms = (db_layer.timing_clock() - started) * 1000
                    entries.append(f"py;dur={max(total_ms - db.counters.d1_ms, 0.0):.3f}")
            headers["server-timing"] = ", ".join(entries)
    return headers


async def handle_scheduled(controller: Any, env: Any, ctx: Any) -> None:
    from . import cron

    await cron.run(controller, env, ctx)
