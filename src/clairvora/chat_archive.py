"""The chat of an ended reading, as ONE object in R2 (binding CHAT_ARCHIVE).

Why: messages are most of what D1 would hold (docs/SCALING.md, "Chat in R2").
Once a reading has ended nothing can be added to its chat (migration 0095's
trigger), so the cron (chat_archive_job.py) writes it to R2 a delay after the
end and the rows leave D1. The end itself stays one D1 batch (a money movement);
it only queues the archive (a trigger), since an R2 write can be no part of a
D1 batch.

The object is JSON: the reading, its participants and every message exactly as
D1 held it (id, sender, key version, IV, AES-GCM ciphertext, time), oldest
first. Nothing is decrypted or re-encrypted, so messages.py's key versions and
rotation work unchanged, and the additional data (reading, message, sender)
still binds each ciphertext to its place. Its sha256 lives in D1
(message_archives); every read checks it.

This module: the object format and key, a counting wrapper of the binding, the
reading of an archived transcript page (GET /v1/readings/{id}/messages, same
replies, same scope, same cursor), and what export and erasure (data_export.py, erasure.py) need.
"""

import asyncio
import bisect
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pyodide.ffi import JsException

from . import logs
from .db import Statement, sql
from .errors import Problem, not_found, service_unavailable
from .photos import etag_matches
from .requests import RequestContext
from .responses import Reply

FORMAT = "clairvora.chat.v1"
KEY_PREFIX = "chat/"
CONTENT_TYPE = "application/json"
# The columns of a message, in D1 and in the object alike.
MESSAGE_FIELDS = ("id", "sender_id", "key_version", "iv_b64", "ciphertext_b64", "created_at_ms")
# Archived replies: the browser may keep them but asks again (If-None-Match);
# never a shared cache, it is someone's chat.
CACHE_CONTROL = "private, no-cache"
# Export: transcripts read per export (one R2 get each), newest first.
EXPORT_MAX_OBJECTS = 20


def object_key(reading_id: int, attempt: int) -> str:
    """One key per write attempt (migration 0095 checks the live one's form)."""
    return f"{KEY_PREFIX}{reading_id}/{attempt}.json"


def _misconfigured() -> Problem:
    return Problem(500, "misconfigured", "Server misconfigured", "The CHAT_ARCHIVE (R2) binding is missing.")


def unreadable() -> Problem:
    return Problem(500, "message_unreadable", "Internal error", "An archived chat failed its integrity check.")


@dataclass(frozen=True, slots=True)
class Stored:
    """What R2 answered to a put: its etag, the sha256 it computed, the size."""

    etag: str
    sha256: str
    size: int


class Bucket:
    """The CHAT_ARCHIVE binding with its operations counted (server-timing
    `r2;desc=...`, the cron's log). A missing key reads as None."""

    def __init__(self, binding: Any) -> None:
        self._binding = binding
        self.gets = 0
        self.puts = 0
        self.deletes = 0

    @classmethod
    def of(cls, env: Any) -> "Bucket":
        binding = getattr(env, "CHAT_ARCHIVE", None)
        if binding is None:
            raise _misconfigured()
        return cls(binding)

    @property
    def operations(self) -> int:
        return self.gets + self.puts + self.deletes

    def server_timing(self) -> str:
        return f'r2;desc="gets={self.gets} puts={self.puts} deletes={self.deletes}"'

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        found = await self._binding.get(key)
        if found is None:
            return None
        return bytes(await found.arrayBuffer())

    async def put(self, key: str, data: bytes, sha256: str, reading_id: int) -> Stored:
        """R2 checks `sha256` on its side and refuses a mismatch; the checksum
        it reports back is compared again by the caller."""
        self.puts += 1
        stored = await self._binding.put(
            key,
            data,
            httpMetadata={"contentType": CONTENT_TYPE},
            customMetadata={"reading_id": str(reading_id)},
            sha256=sha256,
        )
        reported = getattr(stored.checksums, "sha256", None)
        return Stored(str(stored.etag), bytes(reported).hex() if reported is not None else "", int(stored.size))

    async def delete(self, keys: list[str]) -> None:
        assert 1 <= len(keys) <= 1000, "R2 deletes at most 1000 keys per call"
        self.deletes += 1
        await self._binding.delete(keys if len(keys) > 1 else keys[0])


# --- the object ----------------------------------------------------------------


def encode(reading_id: int, client_id: int, advisor_id: int, rows: list[dict[str, Any]]) -> bytes:
    """The object's bytes: the same rows always give the same bytes (sorted
    keys, compact), so a retry writes what the first attempt wrote."""
    document = {
        "format": FORMAT,
        "reading_id": reading_id,
        "client_id": client_id,
        "advisor_id": advisor_id,
        "messages": [{f: row[f] for f in MESSAGE_FIELDS} for row in rows],
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


def decode(data: bytes, sha256: str, reading_id: int) -> list[dict[str, Any]]:
    """The message rows of a verified object, oldest first, in D1's row shape."""
    if hashlib.sha256(data).hexdigest() != sha256:
        logs.error("chat_archive_checksum_mismatch", reading_id=reading_id)
        raise unreadable()
    document = json.loads(data)
    if document.get("format") != FORMAT or document.get("reading_id") != reading_id:
        logs.error("chat_archive_wrong_object", reading_id=reading_id)
        raise unreadable()
    return [{**m, "reading_id": reading_id} for m in document["messages"]]


# --- reading an archived transcript (GET /v1/readings/{id}/messages) -----------

_TRANSCRIPT = """SELECT r.id, r.client_id, r.advisor_id, r.status,
  a.state AS archive_state, a.object_key AS archive_key, a.sha256 AS archive_sha256,
  CASE WHEN a.erasures > a.erasures_applied
       THEN (SELECT erased_at_ms FROM users WHERE id = r.client_id) IS NOT NULL ELSE 0 END AS client_erased,
  CASE WHEN a.erasures > a.erasures_applied
       THEN (SELECT erased_at_ms FROM users WHERE id = r.advisor_id) IS NOT NULL ELSE 0 END AS advisor_erased
FROM readings r LEFT JOIN message_archives a ON a.reading_id = r.id
WHERE r.id = ?"""
# Scoped to the caller as readings.py scopes its reads: by the Clerk subject
# while the caller lookup travels in the same batch, else by the user id.
_TRANSCRIPT_FOR_SUB = (
    _TRANSCRIPT  # noqa: S608 - constant text, `?` placeholders only
    + " AND (SELECT id FROM users WHERE clerk_user_id = ?) IN (r.client_id, r.advisor_id)"
)
_TRANSCRIPT_FOR_USER = _TRANSCRIPT + " AND (r.client_id = ? OR r.advisor_id = ?)"


def preload_transcript(params: dict[str, Any], caller_sub: str) -> Statement:
    """Route.preload of the chat list: the reading and its archive record."""
    return sql(_TRANSCRIPT_FOR_SUB, params["reading_id"], caller_sub)


def archive_of(reading_id: int) -> Statement:
    """The same facts again, for a reading the caller is known to take part in
    (read in the batch of the D1 page: an archive that committed in between
    shows here, and its rows are then gone from the page)."""
    return sql(_TRANSCRIPT, reading_id)


async def transcript_reading(rc: RequestContext) -> dict[str, Any]:
    """The reading of the path with its archive facts, if the caller takes part (else 404)."""
    rows = rc.take_preloaded()
    if rows is None:
        uid = rc.user_id
        rows = (await rc.db.all(sql(_TRANSCRIPT_FOR_USER, rc.params["reading_id"], uid, uid))).rows
    if not rows:
        raise not_found("reading")
    row = rows[0]
    assert int(row["id"]) == rc.params["reading_id"]
    assert rc.user_id in (int(row["client_id"]), int(row["advisor_id"])), "scoped to the caller"
    return row


def is_archived(row: dict[str, Any] | None) -> bool:
    return row is not None and row["archive_state"] == "archived"


def _hidden_senders(row: dict[str, Any]) -> set[int]:
    """Participants erased since the object was written (its rewrite is queued):
    their messages are never shown, whatever R2 still holds."""
    hidden = set()
    if row["client_erased"]:
        hidden.add(int(row["client_id"]))
    if row["advisor_erased"]:
        hidden.add(int(row["advisor_id"]))
    return hidden


def transcript_etag(row: dict[str, Any]) -> str:
    """Names one object's content and what is hidden of it: the reply for a
    given URL (cursor, limit) follows from those alone."""
    hidden = "".join(sorted(("c" if s == int(row["client_id"]) else "a") for s in _hidden_senders(row)))
    return f'"chat-{row["archive_sha256"][:40]}{"-" + hidden if hidden else ""}"'


def not_modified(rc: RequestContext, row: dict[str, Any]) -> Reply | None:
    """304 when the client holds this content already: answered from D1 alone."""
    tag = transcript_etag(row)
    if etag_matches(rc.header("if-none-match"), tag):
        return Reply(status=304, headers={"etag": tag, "cache-control": CACHE_CONTROL})
    return None


async def _fetch(rc: RequestContext, bucket: Bucket, row: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    try:
        data = await bucket.get(row["archive_key"])
        if data is None:
            # A rewrite (erasure) replaced the object after our read and the old
            # one is gone: read the record again from the primary, once.
            fresh = (await rc.db.new_session(primary=True).all(archive_of(int(row["id"])))).rows
            if not fresh or not is_archived(fresh[0]) or fresh[0]["archive_key"] == row["archive_key"]:
                logs.error("chat_archive_object_missing", reading_id=row["id"])
                raise unreadable()
            row = fresh[0]
            data = await bucket.get(row["archive_key"])
            if data is None:
                logs.error("chat_archive_object_missing", reading_id=row["id"])
                raise unreadable()
    except JsException as exc:
        logs.warning("chat_archive_get_failed", error=str(exc)[:200])
        raise service_unavailable("Chat storage is briefly unavailable; retry.") from None
    return row, data


async def archived_page(
    rc: RequestContext, row: dict[str, Any], after: tuple[int, int], count: int
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Up to `count` messages after the cursor, read from R2, in D1's order
    (created_at_ms, id); and the reply's headers (ETag, cache, R2 timing)."""
    bucket = Bucket.of(rc.env)
    row, data = await _fetch(rc, bucket, row)
    rid = int(row["id"])
    hidden = _hidden_senders(row)
    rows = [m for m in decode(data, row["archive_sha256"], rid) if int(m["sender_id"]) not in hidden]
    keys = [(int(m["created_at_ms"]), int(m["id"])) for m in rows]
    start = bisect.bisect_right(keys, after)
    headers = {"etag": transcript_etag(row), "cache-control": CACHE_CONTROL}
    if rc.settings.server_timing:
        headers["server-timing"] = bucket.server_timing()
    return rows[start : start + count], headers


# --- export (GET /v1/me/export) --------------------------------------------------

_MY_SENT = "CASE WHEN r.client_id = ? THEN a.client_message_count ELSE a.advisor_message_count END"
# Among the caller's newest readings on each side (the export's own reading
# caps), the archived ones that hold messages the caller sent, newest first.
_EXPORT_ARCHIVES = f"""SELECT a.reading_id, a.object_key, a.sha256, a.last_message_at_ms
FROM message_archives a JOIN readings r ON r.id = a.reading_id
WHERE a.reading_id IN (
    SELECT id FROM (SELECT id FROM readings WHERE client_id = ? ORDER BY requested_at_ms DESC, id DESC LIMIT ?)
    UNION ALL
    SELECT id FROM (SELECT id FROM readings WHERE advisor_id = ? ORDER BY requested_at_ms DESC, id DESC LIMIT ?))
  AND a.state = 'archived' AND {_MY_SENT} > 0
ORDER BY a.last_message_at_ms DESC, a.reading_id DESC
LIMIT ?"""  # noqa: S608 - constant text


def export_archives(user_id: int, as_client: int, as_advisor: int) -> Statement:
    """For the export's batch: the archives to read (EXPORT_MAX_OBJECTS + 1 to
    know of more) among the caller's newest `as_client` / `as_advisor` readings."""
    return sql(_EXPORT_ARCHIVES, user_id, as_client, user_id, as_advisor, user_id, EXPORT_MAX_OBJECTS + 1)


async def sent_in_archives(
    rc: RequestContext, archives: list[dict[str, Any]], user_id: int
) -> tuple[list[dict[str, Any]], bool, dict[str, str]]:
    """The messages `user_id` sent, from up to EXPORT_MAX_OBJECTS archives (R2
    gets in parallel), in D1's row shape; whether some were left out (more
    archives than that, or one that could not be read); the reply's R2 timing."""
    if not archives:
        return [], False, {}
    bucket = Bucket.of(rc.env)
    chosen = archives[:EXPORT_MAX_OBJECTS]

    async def one(archive: dict[str, Any]) -> list[dict[str, Any]] | None:
        rid = int(archive["reading_id"])
        try:
            data = await bucket.get(archive["object_key"])
            if data is None:
                logs.error("chat_archive_object_missing", reading_id=rid)
                return None
            return [m for m in decode(data, archive["sha256"], rid) if int(m["sender_id"]) == user_id]
        except (JsException, Problem):
            return None

    found = await asyncio.gather(*(one(a) for a in chosen))
    rows = [m for part in found if part is not None for m in part]
    headers = {"server-timing": bucket.server_timing()} if rc.settings.server_timing else {}
    return rows, len(archives) > len(chosen) or any(part is None for part in found), headers


# --- erasure (DELETE /v1/me) ------------------------------------------------------

_ARCHIVED_SENT = f"""SELECT coalesce(sum({_MY_SENT}), 0) AS sent
FROM message_archives a JOIN readings r ON r.id = a.reading_id
WHERE a.reading_id IN (SELECT id FROM readings WHERE client_id = ? UNION ALL SELECT id FROM readings WHERE advisor_id = ?)
  AND a.state = 'archived'"""  # noqa: S608 - constant text
# One more erasure for every archived object holding the user's messages; the
# cron (and the erasure's own waitUntil) rewrites them without those messages.
# `{erased_now}`: the erasure batch's condition that its own tombstone committed.
_COUNT_ERASURE_AS_CLIENT = """UPDATE message_archives SET erasures = erasures + 1
WHERE reading_id IN (SELECT id FROM readings WHERE client_id = ?) AND state = 'archived' AND client_message_count > 0
  AND {erased_now}"""
_COUNT_ERASURE_AS_ADVISOR = """UPDATE message_archives SET erasures = erasures + 1
WHERE reading_id IN (SELECT id FROM readings WHERE advisor_id = ?) AND state = 'archived' AND advisor_message_count > 0
  AND {erased_now}"""


def erasure_statements(user_id: int, erased_now: str, now_ms: int) -> list[Statement]:
    """For the erasure's batch, after its tombstone: [the user's archived message
    count, the marks as client, the marks as advisor]. `erased_now` is erasure.py's
    constant condition text (two `?`: the user id, the erasure time)."""
    marks = [
        sql(text.format(erased_now=erased_now), user_id, user_id, now_ms)
        for text in (_COUNT_ERASURE_AS_CLIENT, _COUNT_ERASURE_AS_ADVISOR)
    ]
    return [sql(_ARCHIVED_SENT, user_id, user_id, user_id), *marks]
