"""Idempotency-Key records: a retry with the same key and body replays the
first response; the same key with another body is 422. Keys are scoped per
user and kept at least 24 hours (the cron purges expired ones).

The record is written in the same batch as the effect it guards, so a retry
racing the first attempt fails on the primary key and replays instead."""

import json
from dataclasses import dataclass
from typing import Any

from .db import Database, UniqueViolation, sql
from .errors import Problem, bad_request
from .requests import RequestContext
from .responses import Reply, encode_json

KEY_MAX_CHARS = 255
# Tables whose new row a conditional idempotency record may depend on.
_EXISTS_SQL = {
    "readings": "EXISTS (SELECT 1 FROM readings WHERE id = ?)",
}
RETENTION_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    user_id: int
    key: str
    route: str
    request_sha256: str
    now_ms: int

    @classmethod
    async def from_request(cls, rc: RequestContext) -> "IdempotencyKey":
        key = rc.header("idempotency-key")
        if key is None or not key.strip():
            raise bad_request(
                "This request moves money: send an Idempotency-Key header.",
                "Idempotency-Key",
                code="idempotency_key_required",
            )
        key = key.strip()
        if len(key) > KEY_MAX_CHARS or not key.isascii() or not key.isprintable():
            raise bad_request(
                f"Idempotency-Key must be 1-{KEY_MAX_CHARS} printable ASCII characters.", "Idempotency-Key"
            )
        route = f"{rc.route.method} {rc.path}"[:80]
        return cls(rc.user_id, key, route, await rc.body_sha256(), rc.clock.now_ms())

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
        """Claims the key before an external call (deposits). `note` (kept in
        response_body until the key is done) names what the claim is about, so
        a retry can recover a claim whose request died (payments.py)."""
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
