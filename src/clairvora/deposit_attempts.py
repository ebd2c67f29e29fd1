"""The card-testing defence of deposits (migration 0060), apart from the deposit
route (payments.py) because it is a rule of its own over its own tables
(`deposit_attempts`, `deposit_cooloffs`): the statements the route puts in its
claim batch (the attempt, refused in SQL) and in its settle batch (the
attempt's state, the cool-off), and the 429 of a refused claim.

Every attempt is a `deposit_attempts`
row written in the claim batch with the caller and the client IP
(`CF-Connecting-IP`, normalised as the rate limits do: IPv4, or the IPv6 /64;
NULL without the header, which only in-process tests lack). Its INSERT ...
SELECT computes `refused` in SQL, and a trigger aborts the whole claim batch
(no key, no payment, no gateway call) with `deposit_cooloff` when
- the user or the IP is in a cool-off (`deposit_cooloffs.until_ms` > now), or
- its failed attempts in the window plus its attempts still in flight (claimed,
  answer not yet recorded, younger than the gateway timeout plus a minute)
  reach the threshold: concurrent attempts cannot pass the threshold together,
  since D1 runs batches one at a time and each claim counts the ones before it.
The settle batch records the attempt's state: `failed` for a decline or a
transaction error (responseCode 3: the card was tried and refused), `done` for
everything else (approved, held, a spent token, a duplicate, no answer). A
failure that brings the count in the window to the threshold starts (upserts)
the subject's cool-off in that same batch. Refused: 429 `deposit_cooloff`,
`Retry-After` = seconds until the cool-off ends (for a spent budget: until its
oldest counted attempt leaves the window, an estimate). Vars:
DEPOSIT_FAILURES_PER_USER (5), DEPOSIT_FAILURES_PER_IP (10),
DEPOSIT_FAILURE_WINDOW_SECONDS (3600), DEPOSIT_COOLOFF_SECONDS (3600). Admins
see active cool-offs in `GET /v1/admin/ledger/check` (`deposit_cooloffs`).
A replay of an existing key is answered from the key (its claim fails on the
key first), whatever the cool-off.
"""

from . import anet, logs, ratelimits
from .config import Settings
from .db import Statement, sql
from .errors import Problem
from .requests import RequestContext

# A claim older than the gateway timeout plus this belongs to a request that died:
# its attempt no longer counts as in flight, and payments.py recovers its key.
STALE_CLAIM_MARGIN_MS = 60_000


def attempt_ip(rc: RequestContext) -> str | None:
    """The client IP key counted against DEPOSIT_FAILURES_PER_IP, None when unknown."""
    ip = ratelimits.client_ip(rc.header(ratelimits.IP_HEADER))
    return None if ip == ratelimits.UNKNOWN_IP else ip


def is_failure(result: anet.GatewayResult) -> bool:
    """A card the gateway tried and refused: a decline, or a transaction error
    (responseCode 3). API-level errors (bad credentials, schema) say nothing
    about the card, and a spent token, a duplicate or no answer are not refusals."""
    return result.outcome == "declined" or (result.outcome == "error" and result.response_code == "3")


_COUNTED = """(state = 'failed' OR (state = 'in_flight' AND created_at_ms > ?))"""


def attempt_statement(settings: Settings, *, payment_id: int, ip: str | None, now_ms: int) -> Statement:
    """The claim's guard: record the attempt, `refused` computed in SQL (the trigger
    aborts the batch). Written for the payment row the claim just inserted (its
    user is the caller), so nothing is recorded when the claim yielded to a key."""
    window_start = now_ms - settings.deposit_failure_window_s * 1000
    in_flight_after = now_ms - settings.anet_timeout_ms - STALE_CLAIM_MARGIN_MS
    return sql(
        f"""INSERT INTO deposit_attempts (payment_id, user_id, client_ip, state, refused, created_at_ms)
            SELECT p.id, p.user_id, ?, 'in_flight',
              EXISTS (SELECT 1 FROM deposit_cooloffs
                      WHERE scope = 'user' AND subject = CAST(p.user_id AS TEXT) AND until_ms > ?)
              OR (? IS NOT NULL AND EXISTS
                   (SELECT 1 FROM deposit_cooloffs WHERE scope = 'ip' AND subject = ? AND until_ms > ?))
              OR (SELECT count(*) FROM deposit_attempts
                   WHERE user_id = p.user_id AND created_at_ms > ? AND {_COUNTED}) >= ?
              OR (? IS NOT NULL AND (SELECT count(*) FROM deposit_attempts
                   WHERE client_ip = ? AND created_at_ms > ? AND {_COUNTED}) >= ?),
              ?
            FROM payments p WHERE p.id = ?""",  # noqa: S608 - constant text
        ip,
        now_ms,
        ip,
        ip,
        now_ms,
        window_start,
        in_flight_after,
        settings.deposit_failures_per_user,
        ip,
        ip,
        window_start,
        in_flight_after,
        settings.deposit_failures_per_ip,
        now_ms,
        payment_id,
    )


def attempt_settled_statements(
    settings: Settings, *, payment_id: int, user_id: int, ip: str | None, failed: bool, now_ms: int
) -> list[Statement]:
    """The settle's part: the attempt's state and, for a failure that reaches a
    threshold, the subject's cool-off (an active one is not extended)."""
    statements = [
        sql(
            """UPDATE deposit_attempts SET state = ?, settled_at_ms = ?
               WHERE payment_id = ? AND state = 'in_flight'""",
            "failed" if failed else "done",
            now_ms,
            payment_id,
        )
    ]
    if not failed:
        return statements
    window_start = now_ms - settings.deposit_failure_window_s * 1000
    until_ms = now_ms + settings.deposit_cooloff_s * 1000
    subjects: list[tuple[str, str, str, int | str, int]] = [
        ("user", str(user_id), "user_id", user_id, settings.deposit_failures_per_user)
    ]
    if ip is not None:
        subjects.append(("ip", ip, "client_ip", ip, settings.deposit_failures_per_ip))
    for scope, subject, column, value, limit in subjects:
        statements.append(
            sql(
                f"""INSERT INTO deposit_cooloffs (scope, subject, failures, started_at_ms, until_ms, trips)
                    SELECT ?, ?, n, ?, ?, 1 FROM
                      (SELECT count(*) AS n FROM deposit_attempts
                       WHERE {column} = ? AND created_at_ms > ? AND state = 'failed')
                    WHERE n >= ?
                    ON CONFLICT (scope, subject) DO UPDATE
                    SET failures = excluded.failures, started_at_ms = excluded.started_at_ms,
                        until_ms = excluded.until_ms, trips = deposit_cooloffs.trips + 1
                    WHERE deposit_cooloffs.until_ms <= excluded.started_at_ms""",  # noqa: S608 - column from a constant
                scope,
                subject,
                now_ms,
                until_ms,
                value,
                window_start,
                limit,
            )
        )
    return statements


async def cooloff_refusal(rc: RequestContext, user_id: int, ip: str | None, now_ms: int) -> Problem:
    """The 429 of a refused claim; one read (no money moved) for Retry-After."""
    settings = rc.settings
    window_ms = settings.deposit_failure_window_s * 1000
    row = await rc.db.first(
        sql(
            """SELECT
                 (SELECT max(until_ms) FROM deposit_cooloffs
                  WHERE ((scope = 'user' AND subject = ?) OR (scope = 'ip' AND subject = ?)) AND until_ms > ?)
                   AS until_ms,
                 (SELECT min(created_at_ms) FROM deposit_attempts
                  WHERE (user_id = ? OR client_ip = ?) AND created_at_ms > ? AND state IN ('failed', 'in_flight'))
                   AS oldest_ms""",
            str(user_id),
            ip,
            now_ms,
            user_id,
            ip,
            now_ms - window_ms,
        )
    )
    retry_at = None
    if row is not None and row["until_ms"] is not None:
        retry_at = int(row["until_ms"])
    elif row is not None and row["oldest_ms"] is not None:
        retry_at = int(row["oldest_ms"]) + window_ms
    retry_after_s = max(1, -(-((retry_at if retry_at is not None else now_ms + 60_000) - now_ms) // 1000))
    logs.warning("deposit_cooloff", request_id=rc.request_id, user_id=user_id, retry_after_s=retry_after_s)
    return Problem(
        429,
        "deposit_cooloff",
        "Deposits paused",
        f"Too many declined or failed card payments recently; deposits are paused. Retry in {retry_after_s} s.",
        headers={"retry-after": str(retry_after_s)},
        extra={"retry_after_s": retry_after_s},
    )
