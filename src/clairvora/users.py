"""Users: identity from Clerk, rows and roles in D1, `/v1/me`."""

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import auth, limits
from .clock import rfc3339
from .db import ConstraintError, Database, Result, Statement, sql
from .errors import Problem, forbidden, unauthorized
from .ids import new_id
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import Obj, Str

_USER_COLUMNS = (
    "id, clerk_user_id, display_name, time_zone, is_admin, version, created_at_ms, updated_at_ms, "
    + ", ".join(limits.COLUMNS)
)
_SELECT_USER = (
    "SELECT "
    + ", ".join(f"u.{c}" for c in _USER_COLUMNS.split(", "))
    + """, a.user_id IS NOT NULL AS is_advisor
FROM users u LEFT JOIN advisors a ON a.user_id = u.id
WHERE u.clerk_user_id = ?"""
)

_TIME_ZONE_RE = re.compile(r"^(UTC|[A-Z][A-Za-z_]+(/[A-Za-z0-9_+\-]+){1,2})$")


# Awaited on first sight of a `sub`, before the row is written; it may raise a
# Problem (app.py: the per-IP limit on new users, ratelimits.py).
BeforeCreate = Callable[[], Awaitable[None]]


def _create_statements(clerk_user_id: str, now_ms: int) -> list[Statement]:
    """First sight of a `sub`: the user and its wallet (race-free: both inserts
    are conditional, so two first requests at once make one user)."""
    return [
        sql(
            """INSERT INTO users (id, clerk_user_id, created_at_ms, updated_at_ms)
           VALUES (?, ?, ?, ?) ON CONFLICT (clerk_user_id) DO NOTHING""",
            new_id(),
            clerk_user_id,
            now_ms,
            now_ms,
        ),
        sql(
            """INSERT INTO accounts (id, kind, owner_user_id, created_at_ms)
           SELECT ?, 'client_wallet', id, ? FROM users WHERE clerk_user_id = ?
           ON CONFLICT DO NOTHING""",
            new_id(),
            now_ms,
            clerk_user_id,
        ),
    ]


async def ensure_user(
    db: Database, clerk_user_id: str, now_ms: int, before_create: BeforeCreate | None = None
) -> dict[str, Any]:
    """The caller's row, created on first sight of a `sub`."""
    row = await db.first(sql(_SELECT_USER, clerk_user_id))
    if row is not None:
        return row
    if before_create is not None:
        await before_create()
    results = await db.batch([*_create_statements(clerk_user_id, now_ms), sql(_SELECT_USER, clerk_user_id)])
    rows = results[-1].rows
    assert len(rows) == 1, "user row must exist after the conditional insert"
    return rows[0]


async def _caller_batch(
    rc: RequestContext, sub: str, statements: Sequence[Statement], before_create: BeforeCreate | None
) -> tuple[dict[str, Any], list[Result]]:
    """The caller's row and `statements` (which name the caller by `sub`), in ONE
    batch. On first sight they come again, in the batch that creates the user
    (before_create first: it may refuse the request before anything is written):
    for an unknown `sub` they found nothing and wrote nothing."""
    now_ms = rc.clock.now_ms()
    try:
        results = await rc.db.batch([sql(_SELECT_USER, sub), *statements])
        if results[0].rows:
            return results[0].rows[0], results[1:]
        if before_create is not None:
            await before_create()
            before_create = None  # counted once, whatever follows
        created = _create_statements(sub, now_ms)
        results = await rc.db.batch([*created, sql(_SELECT_USER, sub), *statements])
    except ConstraintError:
        # A statement refused the batch (a trigger, a constraint): nothing was written
        # or read. The handler still answers for a known caller, so load it (or make
        # it), then let the handler handle the refusal it expects.
        rc.user = await ensure_user(rc.db, sub, now_ms, before_create)
        require_role(rc)
        raise
    rows = results[len(created)].rows
    assert len(rows) == 1, "user row must exist after the conditional insert"
    return rows[0], results[len(created) + 1 :]


async def with_caller(rc: RequestContext, statements: Sequence[Statement]) -> list[Result]:
    """Route(caller_batch=True): the handler's first batch, with the caller lookup
    in front, so the lookup costs no round trip of its own. `statements` name the
    caller by `caller_sub(rc)` (its id is not known yet). Sets rc.user (and checks
    an admin route's role) before returning their results."""
    assert rc.identity is not None and rc.user is None, "with_caller: once, on a caller_batch route"
    rc.user, results = await _caller_batch(rc, rc.identity.sub, statements, rc.before_create)
    require_role(rc)
    return results


def caller_sub(rc: RequestContext) -> str:
    """The verified Clerk `sub` of a caller_batch route, for statements sent with the lookup."""
    assert rc.identity is not None, "caller_batch routes only"
    return str(rc.identity.sub)


def require_role(rc: RequestContext) -> None:
    """An admin route answers 403 to anyone else."""
    if rc.route.auth == "admin" and not (rc.user or {}).get("is_admin"):
        raise forbidden("Admins only.")


async def authenticate(rc: RequestContext, before_create: BeforeCreate | None = None) -> dict[str, Any]:
    """The caller's users row: `identify` (no D1), then `load_caller`."""
    return await load_caller(rc, await identify(rc), before_create)


async def identify(rc: RequestContext) -> auth.Identity:
    """The verified Clerk identity of the request (the CSRF rule for cookie
    sessions, then the token); reads nothing from D1."""
    token, source = auth.credentials(rc.header("authorization"), rc.header("cookie"))
    if token is None:
        raise unauthorized("Authentication required.")
    if source == "cookie":
        # CSRF: checked before the token, so a forged request costs no verification and makes no user.
        refusal = auth.cookie_session_refusal(
            rc.method,
            rc.header("origin"),
            lambda name: rc.header(name) is not None,
            rc.settings.clerk_authorized_parties,
        )
        if refusal is not None:
            raise refusal
    pem = rc.settings.clerk_jwt_key_pem
    if not pem:
        raise Problem(500, "misconfigured", "Server misconfigured", "CLERK_JWT_KEY is not set.")
    return await auth.verify_token(
        token,
        public_key_pem=pem,
        issuer=rc.settings.clerk_issuer,
        authorized_parties=rc.settings.clerk_authorized_parties,
        now_s=rc.clock.now_ms() // 1000,
        clock_skew_s=rc.settings.clock_skew_s,
        max_lifetime_s=rc.settings.max_token_lifetime_s,
    )


async def load_caller(
    rc: RequestContext, identity: auth.Identity, before_create: BeforeCreate | None = None
) -> dict[str, Any]:
    """The users row of a verified identity, created on first sight (after
    `before_create`, which may refuse the request before anything is written)."""
    preload = getattr(rc.route, "preload", None)
    if preload is None:
        return await ensure_user(rc.db, identity.sub, rc.clock.now_ms(), before_create)
    # Reads only, in one round trip: the caller and the handler's first read,
    # which names the caller by `sub` (its own subquery on users).
    user, (preloaded,) = await _caller_batch(rc, identity.sub, [preload(rc.params, identity.sub)], before_create)
    rc.set_preloaded(preloaded.rows)
    return user


def roles(user: dict[str, Any]) -> list[str]:
    out = ["client"]
    if user.get("is_advisor"):
        out.append("advisor")
    if user.get("is_admin"):
        out.append("admin")
    return out


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(value: str | None) -> int:
    """`If-Match: "3"`, `W/"3"` or `3` -> 3; missing is 428."""
    if value is None:
        raise Problem(
            428, "precondition_required", "Precondition required", "Send If-Match with the version you last read."
        )
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit() or len(text) > 15:
        raise Problem(412, "version_conflict", "Precondition failed", "If-Match does not name a version.")
    return int(text)


def user_view(user: dict[str, Any], now_ms: int) -> dict[str, Any]:
    return {
        "id": str(user["id"]),
        "display_name": user["display_name"],
        "time_zone": user["time_zone"],
        "roles": roles(user),
        "version": int(user["version"]),
        "created_at": rfc3339(user["created_at_ms"]),
        "updated_at": rfc3339(user["updated_at_ms"]),
        "spending_limits": limits.view(user, now_ms),
    }


async def get_me(rc: RequestContext) -> Reply:
    assert rc.user is not None
    return Reply(user_view(rc.user, rc.clock.now_ms()), headers={"etag": etag(int(rc.user["version"]))})


ME_PATCH = Obj(
    {
        "display_name": Str(min_len=1, max_len=80, nullable=True, description="Shown to advisors and in reviews."),
        "time_zone": Str(
            min_len=1, max_len=64, pattern=_TIME_ZONE_RE.pattern, description="IANA time zone name, e.g. Europe/Paris."
        ),
        **limits.PATCH_FIELDS,
    },
    min_fields=1,
)


async def patch_me(rc: RequestContext) -> Reply:
    assert rc.user is not None
    expected_version = parse_if_match(rc.header("if-match"))
    changes = await rc.parsed_body()
    if "time_zone" in changes and not _TIME_ZONE_RE.match(changes["time_zone"]):
        raise Problem(
            400,
            "invalid_request",
            "Invalid request",
            "'time_zone' must be an IANA zone name.",
            extra={"field": "time_zone"},
        )
    now_ms = rc.clock.now_ms()
    set_display = "display_name" in changes
    # The spending limits are planned on the row as the caller read it: that is
    # the version If-Match names (else 412), and the UPDATE is conditional on it.
    stale = int(rc.user["version"]) != expected_version
    planned = limits.plan(rc.user, changes, now_ms)
    row = None
    if not stale:
        row = await rc.db.first(
            sql(
                """UPDATE users
               SET display_name = CASE WHEN ? THEN ? ELSE display_name END,
                   time_zone = coalesce(?, time_zone),
                   daily_deposit_limit_cents = ?, daily_deposit_limit_pending_cents = ?,
                   daily_deposit_limit_pending_at_ms = ?,
                   monthly_deposit_limit_cents = ?, monthly_deposit_limit_pending_cents = ?,
                   monthly_deposit_limit_pending_at_ms = ?,
                   self_excluded_until_ms = ?, self_exclusion_pending_until_ms = ?, self_exclusion_pending_at_ms = ?,
                   version = version + 1,
                   updated_at_ms = ?
               WHERE id = ? AND version = ?
               RETURNING """  # noqa: S608 - constant column names
                + _USER_COLUMNS,
                set_display,
                changes.get("display_name"),
                changes.get("time_zone"),
                *(planned[c] for c in limits.COLUMNS),
                now_ms,
                rc.user_id,
                expected_version,
            )
        )
    if row is None:
        raise Problem(
            412, "version_conflict", "Precondition failed", "The profile changed since you read it; fetch it again."
        )
    row["is_advisor"] = rc.user.get("is_advisor")
    rc.user = row
    return Reply(user_view(row, now_ms), headers={"etag": etag(int(row["version"]))})


ROUTES = [
    Route("GET", "/v1/me", get_me, "Your own profile", responses={200: "User"}, tag="users"),
    Route(
        "PATCH",
        "/v1/me",
        patch_me,
        "Edit your profile and your spending limits (If-Match: <version>); lowering a limit or starting "
        "self-exclusion applies at once, raising or shortening after 24 h",
        primary=True,
        body=ME_PATCH,
        if_match=True,
        responses={200: "User"},
        problems=(412, 428),
        tag="users",
    ),
]
