"""Idempotency-Key records: a retry with the same key and body replays the
first response; the same key with another body is 422. Keys are scoped per
user and kept at least 24 hours (the cron purges expired ones).

The record is written in the same batch as the effect it guards, so a retry
racing the first attempt fails on the primary key and replays instead."""

import json
from dataclasses import dataclass
from typing import Any

from .db import Database, Statement, UniqueViolation, sql
from .errors import Problem, bad_request
from .requests import RequestContext
from .responses import Reply, encode_json

KEY_MAX_CHARS = 255
# Tables whose new row a conditional idempotency record may depend on.
_EXISTS_SQL = {
    "readings": "EXISTS (SELECT 1 FROM readings WHERE id = ?)",
    "payouts": "EXISTS (SELECT 1 FROM payouts WHERE id = ?)",
}
RETENTION_MS = 24 * 3600 * 1000
# RequestKey.claim_pending_if_exists, followed by one of _EXISTS_SQL.
_CLAIM_PENDING_BY_SUB = """INSERT INTO idempotency_keys
  (user_id, idempotency_key, route, request_sha256, state, response_body, created_at_ms, expires_at_ms)
SELECT u.id, ?, ?, ?, 'pending', ?, ?, ? FROM users u WHERE u.clerk_user_id = ?"""


def _valid_key(raw: str | None) -> str | None:
    key = (raw or "").strip()
    return key if key and len(key) <= KEY_MAX_CHARS and key.isascii() and key.isprintable() else None


# A stored key by the caller's Clerk `sub` (Route(caller_batch=True): sent with the caller lookup).
STORED_BY_SUB = """SELECT route, request_sha256, state, response_status, response_body, created_at_ms
FROM idempotency_keys WHERE user_id = (SELECT id FROM users WHERE clerk_user_id = ?) AND idempotency_key = ?"""


@dataclass(frozen=True, slots=True)
class RequestKey:
    """A request's Idempotency-Key before its caller's id is known (the route sends
    the caller lookup with its first batch, users.with_caller): its statements
    name the caller by Clerk `sub`; `for_user` gives the IdempotencyKey after."""

    key: str
    route: str
    request_sha256: str
    now_ms: int

    @classmethod
    async def from_request(cls, rc: RequestContext) -> "RequestKey":
        raw = rc.header("idempotency-key")
        if raw is None or not raw.strip():
            raise bad_request(
                "This request moves money: send an Idempotency-Key header.",
                "Idempotency-Key",
                code="idempotency_key_required",
            )
        key = _valid_key(raw)
        if key is None:
            raise bad_request(
                f"Idempotency-Key must be 1-{KEY_MAX_CHARS} printable ASCII characters.", "Idempotency-Key"
            )
        route = f"{rc.route.method} {rc.path}"[:80]
        return cls(key, route, await rc.body_sha256(), rc.clock.now_ms())

    @staticmethod
    def peek(rc: RequestContext) -> str | None:
        """The header's key if it is a valid one, else None; never refuses (for a
        read sent before the checks that answer 403 must have run)."""
        return _valid_key(rc.header("idempotency-key"))

    @staticmethod
    def peek_stored(rc: RequestContext, caller_sub: str) -> Statement:
        """The stored reply of the header's key (if valid; else a read that finds
        nothing) for the caller named by `sub`: sent with the caller lookup before the
        role, body and key are checked, so an admin route's 403 reads the same rows."""
        return sql(STORED_BY_SUB, caller_sub, RequestKey.peek(rc) or "")

    def for_user(self, user_id: int) -> "IdempotencyKey":
        return IdempotencyKey(user_id, self.key, self.route, self.request_sha256, self.now_ms)

    def claim_pending(self, caller_sub: str, note: Any) -> Statement:
        """Claims the key (state 'pending') before an external call (deposits), for
        the caller named by `sub`. `note` (kept in response_body until the key is
        done) names what the claim is about, so a retry can recover a claim whose
        request died (payments.py). A key already there (a retry, or a request
        racing this one) is left as it is and this statement changes nothing, so
        the batch goes on and can read it."""
        return sql(
            _CLAIM_PENDING_BY_SUB + " ON CONFLICT (user_id, idempotency_key) DO NOTHING", *self._claim(note, caller_sub)
        )

    def stored(self, caller_sub: str) -> Statement:
        return sql(STORED_BY_SUB, caller_sub, self.key)

    def claim_pending_if_exists(self, caller_sub: str, note: Any, table_sql: str, row_id: int) -> Statement:
        """claim_pending, but only if row `row_id` of `table_sql` exists by then in the
        batch (payouts: the claim's INSERT ... SELECT made it): a claim that found
        nothing to do, a refusal, leaves no key behind. The INSERT before it is
        conditional on the key not being there, so this one cannot conflict.
        `table_sql` is one of the constant names of _EXISTS_SQL, never a value."""
        assert table_sql in _EXISTS_SQL, table_sql
        return sql(_CLAIM_PENDING_BY_SUB + " AND " + _EXISTS_SQL[table_sql], *self._claim(note, caller_sub), row_id)

    def _claim(self, note: Any, caller_sub: str) -> tuple[Any, ...]:
        """The bound values of _CLAIM_PENDING_BY_SUB, in its order."""
        return (
            self.key,
            self.route,
            self.request_sha256,
            encode_json(note),
            self.now_ms,
            self.now_ms + RETENTION_MS,
            caller_sub,
        )


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    user_id: int
    key: str
    route: str
    request_sha256: str
    now_ms: int

    @classmethod
    async def from_request(cls, rc: RequestContext) -> "IdempotencyKey":
        return (await RequestKey.from_request(rc)).for_user(rc.user_id)

    def record_done(self, status: int, body: Any) -> Any:
        """The statement that stores the final response (put it in the effect's batch)."""
        return sql(
            """INSERT INTO idempotency_keys
                 (user_id, idempotency_key, route, request_sha256, state, response_status, response_body,
                  created_at_ms, expires_at_ms)
               VALUES (?, ?, ?, ?, 'done', ?, ?, ?, ?)""",
            self.user_id,
            self.key,
            self.route,
            self.request_sha256,
            status,
            encode_json(body),
            self.now_ms,
            self.now_ms + RETENTION_MS,
        )

    def record_done_if_exists(self, status: int, body: Any, table_sql: str, row_id: int) -> Any:
        """record_done, but only if row `row_id` of `table_sql` exists by then in the
        batch: the record appears exactly when a conditional INSERT before it did.
        `table_sql` is one of the constant names below, never a value."""
        assert table_sql in _EXISTS_SQL, table_sql
        return sql(
            """INSERT INTO idempotency_keys
                 (user_id, idempotency_key, route, request_sha256, state, response_status, response_body,
                  created_at_ms, expires_at_ms)
               SELECT ?, ?, ?, ?, 'done', ?, ?, ?, ?
               WHERE """
            + _EXISTS_SQL[table_sql],
            self.user_id,
            self.key,
            self.route,
            self.request_sha256,
            status,
            encode_json(body),
            self.now_ms,
            self.now_ms + RETENTION_MS,
            row_id,
        )

    def record_pending(self, note: Any = None) -> Any:
        """Claims the key before an external call (wallet refunds, payouts). `note`
        (kept in response_body until the key is done) names what the claim is
        about, so a retry can recover a claim whose request died. Deposits claim
        by the caller's Clerk sub instead (RequestKey.claim_pending)."""
        return sql(
            """INSERT INTO idempotency_keys
                 (user_id, idempotency_key, route, request_sha256, state, response_body, created_at_ms, expires_at_ms)
               VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)""",
            self.user_id,
            self.key,
            self.route,
            self.request_sha256,
            None if note is None else encode_json(note),
            self.now_ms,
            self.now_ms + RETENTION_MS,
        )

    def complete(self, status: int, body: Any) -> Any:
        return sql(
            """UPDATE idempotency_keys SET state = 'done', response_status = ?, response_body = ?
               WHERE user_id = ? AND idempotency_key = ? AND state = 'pending'""",
            status,
            encode_json(body),
            self.user_id,
            self.key,
        )

    @staticmethod
    def is_key_conflict(error: UniqueViolation) -> bool:
        return any(c.startswith("idempotency_keys.") for c in error.columns)

    def stored_statement(self) -> Any:
        """The key's record, for a handler's first read batch (replay_row() answers from it)."""
        return sql(
            """SELECT route, request_sha256, state, response_status, response_body
               FROM idempotency_keys WHERE user_id = ? AND idempotency_key = ?""",
            self.user_id,
            self.key,
        )

    async def stored(self, db: Database) -> dict[str, Any] | None:
        return await db.first(self.stored_statement())

    async def replay(self, db: Database) -> Reply:
        """The stored answer for this key, or the reason it cannot be given."""
        return self.replay_row(await self.stored(db))

    def replay_row(self, row: dict[str, Any] | None) -> Reply:
        """replay() for a row already read (None: it vanished, e.g. purged)."""
        if row is None:
            raise Problem(409, "idempotency_conflict", "Conflict", "Retry the request.")
        if row["request_sha256"] != self.request_sha256 or row["route"] != self.route:
            raise Problem(
                422,
                "idempotency_key_reused",
                "Unprocessable request",
                "This Idempotency-Key was used with a different request.",
            )
        if row["state"] != "done":
            raise Problem(
                409,
                "request_in_progress",
                "Conflict",
                "A request with this Idempotency-Key is still in progress.",
                headers={"retry-after": "1"},
            )
        body = json.loads(row["response_body"])
        status = int(row["response_status"])
        content_type = "application/problem+json" if status >= 400 else "application/json"
        return Reply(body, status, {"idempotent-replayed": "true"}, content_type)
