"""Chat inside a reading, encrypted at rest.

Bodies are sealed with AES-GCM through WebCrypto under a key from the
MESSAGE_KEYS secret ("version:base64key" comma-separated; the highest version
encrypts, every listed version decrypts, so keys rotate by adding a version).
Each message gets a fresh 12-byte IV (generated in the handler) and the key
version is stored beside the ciphertext. The additional data binds a
ciphertext to its reading, message id and sender, so rows cannot be swapped.
Bodies never reach a log. The chat of an ended reading moves to R2 a delay
after the end (chat_archive.py), ciphertexts as they are; its pages are then
read from there with the same replies.
"""

from typing import Any

from . import chat_archive, sealing
from .clock import rfc3339
from .db import sql
from .errors import Problem, not_found
from .ids import new_id
from .openapi import page_schema
from .readings import not_in_status, parse_time_cursor, time_cursor
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .sealing import Keyring, seal
from .validation import Obj, Str, page_query

MAX_BODY_CHARS = 2000
DEFAULT_PAGE = 50
MAX_PAGE = 100
KEYRING_NAME = "MESSAGE_KEYS"


def parse_keyring(secret: str | None) -> Keyring:
    return sealing.parse_keyring(secret, KEYRING_NAME)


def additional_data(reading_id: int, message_id: int, sender_id: int) -> bytes:
    return f"clairvora:message:v1:{reading_id}:{message_id}:{sender_id}".encode()


async def open_sealed(keyring: Keyring, version: int, iv_b64: str, ciphertext_b64: str, aad: bytes) -> bytes:
    unreadable = Problem(500, "message_unreadable", "Internal error", "A stored message failed authentication.")
    return await sealing.open_sealed(
        keyring, version, iv_b64, ciphertext_b64, aad, what="Message", unreadable=unreadable
    )


MESSAGE_CREATE = Obj({"body": Str(min_len=1, max_len=MAX_BODY_CHARS)}, required=("body",))

_INSERT = """
INSERT INTO messages (id, reading_id, sender_id, key_version, iv_b64, ciphertext_b64, created_at_ms)
SELECT ?, r.id, ?, ?, ?, ?, ?
FROM readings r
WHERE r.id = ? AND r.status = 'active' AND (r.client_id = ? OR r.advisor_id = ?)"""


def message_view(row: dict[str, Any], body: str, client_id: int) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "reading_id": str(row["reading_id"]),
        "sender_id": str(row["sender_id"]),
        "sender_role": "client" if int(row["sender_id"]) == client_id else "advisor",
        "body": body,
        "created_at": rfc3339(row["created_at_ms"]),
    }


async def post_message(rc: RequestContext) -> Reply:
    text = (await rc.parsed_body())["body"]
    if not text.strip():
        raise Problem(400, "invalid_request", "Invalid request", "'body' is blank.", extra={"field": "body"})
    keyring = parse_keyring(rc.settings.message_keys)
    reading_id, uid = rc.params["reading_id"], rc.user_id
    message_id = new_id()
    now_ms = rc.clock.now_ms()
    version, iv_b64, ct_b64 = await seal(keyring, text.encode(), additional_data(reading_id, message_id, uid))
    # Written only into an active reading the caller takes part in; the same
    # round trip reads the reading back (scoped to the caller) for the reply.
    inserted, scope = await rc.db.batch(
        [
            sql(_INSERT, message_id, uid, version, iv_b64, ct_b64, now_ms, reading_id, uid, uid),
            sql(
                "SELECT client_id, status FROM readings WHERE id = ? AND (client_id = ? OR advisor_id = ?)",
                reading_id,
                uid,
                uid,
            ),
        ]
    )
    if not scope.rows:
        raise not_found("reading")
    reading = scope.rows[0]
    if inserted.changes != 1:
        raise not_in_status(reading, "active", "post a message to")
    row = {"id": message_id, "reading_id": reading_id, "sender_id": uid, "created_at_ms": now_ms}
    return Reply(message_view(row, text, int(reading["client_id"])), 201)


_PAGE = """
SELECT id, reading_id, sender_id, key_version, iv_b64, ciphertext_b64, created_at_ms
FROM messages
WHERE reading_id = ? AND (created_at_ms, id) > (?, ?)
ORDER BY created_at_ms, id
LIMIT ?"""

MESSAGE_LIST_QUERY = page_query(cursor_max_chars=40, max_page=MAX_PAGE, default_page=DEFAULT_PAGE)


async def list_messages(rc: RequestContext) -> Reply:
    query = rc.parsed_query()
    limit = query.get("limit", DEFAULT_PAGE)
    after_ms, after_id = parse_time_cursor(query.get("cursor")) if "cursor" in query else (-1, -1)
    reading = await chat_archive.transcript_reading(rc)
    headers: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    if not chat_archive.is_archived(reading):
        # The page and the archive state in one transaction: a chat archived
        # since the first read is gone from D1 and is read from R2 instead.
        page, again = await rc.db.batch(
            [sql(_PAGE, reading["id"], after_ms, after_id, limit + 1), chat_archive.archive_of(reading["id"])]
        )
        rows = page.rows
        if again.rows and chat_archive.is_archived(again.rows[0]):
            reading = again.rows[0]
    if chat_archive.is_archived(reading):
        unchanged = chat_archive.not_modified(rc, reading)
        if unchanged is not None:
            return unchanged
        rows, headers = await chat_archive.archived_page(rc, reading, (after_ms, after_id), limit + 1)
    keyring = parse_keyring(rc.settings.message_keys)
    items = []
    for row in rows[:limit]:
        aad = additional_data(int(row["reading_id"]), int(row["id"]), int(row["sender_id"]))
        body = await open_sealed(keyring, int(row["key_version"]), row["iv_b64"], row["ciphertext_b64"], aad)
        items.append(message_view(row, body.decode(), int(reading["client_id"])))
    next_cursor = None
    if len(rows) > limit:
        next_cursor = time_cursor(int(rows[limit - 1]["created_at_ms"]), int(rows[limit - 1]["id"]))
    return Reply({"items": items, "next_cursor": next_cursor}, headers=headers)


_MESSAGE_PROPS = {
    "id": {"type": "string"},
    "reading_id": {"type": "string"},
    "sender_id": {"type": "string"},
    "sender_role": {"type": "string", "enum": ["client", "advisor"]},
    "body": {"type": "string", "maxLength": MAX_BODY_CHARS},
    "created_at": {"type": "string", "format": "date-time"},
}

SCHEMAS: dict[str, Any] = {
    "Message": {"type": "object", "required": list(_MESSAGE_PROPS), "properties": _MESSAGE_PROPS},
    "MessageList": page_schema("Message"),
}

ROUTES = [
    Route(
        "POST",
        "/v1/readings/{reading_id:id}/messages",
        post_message,
        "Send a chat message (participants, while the reading is active)",
        primary=True,
        body=MESSAGE_CREATE,
        responses={201: "Message"},
        problems=(409,),
        tag="chat",
    ),
    Route(
        "GET",
        "/v1/readings/{reading_id:id}/messages",
        list_messages,
        "The chat, oldest first (participants); an ended reading's chat is read from R2 (ETag, If-None-Match -> 304)",
        primary=True,
        query=MESSAGE_LIST_QUERY,
        responses={200: "MessageList", 304: ""},
        tag="chat",
        preload=chat_archive.preload_transcript,
    ),
]
