"""Export and erasure of one's own data: `GET /v1/me/export`, `DELETE /v1/me`
(docs/PRIVACY.md says what each holds, removes and keeps, and why).

Export: one D1 batch (one call) of caller-scoped reads, each an index walk
capped at a fixed number of rows (EXPORT_LIMITS); a section that holds more
says `truncated: true`, and so does the whole reply. Messages are the caller's
own, decrypted; someone else's words are not theirs to take. Those of ended
readings are read from their R2 transcripts (chat_archive.py, bounded).

Erasure: one D1 batch. Its first statement reads why it could be refused, its
second tombstones the user row only if nothing is open (no requested/active
reading on either side, no payment waiting for the gateway) and the If-Match
version still holds; every later statement runs only if that tombstone is this
batch's (`erased_at_ms = <now>`), so the check and the erasure are one
transaction and a reading requested at the same instant either makes the
erasure refuse or is itself refused (migration 0080's triggers). The ledger,
payments, readings and charges stay, under the pseudonymous user id: entries
are append-only and every invariant holds. The advisor photo is removed from
R2 after the batch (a failure leaves an orphan the cron's sweep removes). The
user's messages in archived transcripts are hidden from that commit on and
rewritten out of the objects in waitUntil, else by the cron (chat_archive_job.py)."""

from typing import Any

from . import chat_archive, chat_archive_job, logs
from .advisors import advisor_view
from .clock import rfc3339
from .db import sql
from .errors import Problem
from .messages import additional_data, open_sealed, parse_keyring
from .payments import deposit_view
from .photos import _delete_objects, _media
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .users import etag, parse_if_match, user_view
from .wallet import entry_view

FORMAT = "clairvora.export.v1"

# Rows per section, newest first. Each read is an index walk that stops at its
# limit (+1 to know whether more exist), so the export costs one D1 call and
# at most sum(EXPORT_LIMITS) + sections rows read, however old the account.
EXPORT_LIMITS: dict[str, int] = {
    "ledger_entries_per_account": 500,
    "payments": 200,
    "readings_as_client": 200,
    "readings_as_advisor": 200,
    "messages_sent": 500,
    "reviews_written": 200,
    "reviews_received": 200,
}

# What an erased advisor profile shows (headline must be 1..120 characters).
ERASED_HEADLINE = "Deleted account"
OPEN_READING = "('requested', 'active')"
PENDING_PAYMENT = "('pending', 'unknown')"

# --- export ------------------------------------------------------------------

_ADVISOR = """SELECT user_id, headline, bio, rate_cents_per_minute, status, rating_count, rating_sum, version,
       created_at_ms, updated_at_ms, photo_content_type, photo_size_bytes, photo_sha256,
       (SELECT json_group_array(category) FROM
          (SELECT category FROM advisor_categories WHERE advisor_id = ? ORDER BY category)) AS categories_json
FROM advisors WHERE user_id = ?"""
_ACCOUNTS = """SELECT id, kind, currency, balance_cents, last_sequence, created_at_ms
FROM accounts WHERE owner_user_id = ? ORDER BY kind"""
# Per account kind, newest first along UNIQUE (account_id, sequence).
_ENTRIES = """SELECT e.id, e.sequence, t.kind, t.reference_type, t.reference_id, e.amount_cents,
       e.balance_after_cents, e.created_at_ms
FROM ledger_entries e JOIN transfers t ON t.id = e.transfer_id
WHERE e.account_id = (SELECT id FROM accounts WHERE owner_user_id = ? AND kind = ?)
ORDER BY e.sequence DESC LIMIT ?"""
_PAYMENTS = """SELECT id, amount_cents, currency, status, gateway_transaction_id, gateway_response_code,
       reversed_cents, created_at_ms, updated_at_ms
FROM payments WHERE user_id = ? ORDER BY created_at_ms DESC, id DESC LIMIT ?"""
_READING_COLUMNS = """id, client_id, advisor_id, channel, status, rate_cents_per_minute, billed_minutes, end_reason,
       requested_at_ms, accepted_at_ms, ended_at_ms"""
_READINGS_AS_CLIENT = f"""SELECT {_READING_COLUMNS} FROM readings
WHERE client_id = ? ORDER BY requested_at_ms DESC, id DESC LIMIT ?"""  # noqa: S608 - constant text
_READINGS_AS_ADVISOR = f"""SELECT {_READING_COLUMNS} FROM readings
WHERE advisor_id = ? ORDER BY requested_at_ms DESC, id DESC LIMIT ?"""  # noqa: S608 - constant text
_MESSAGES_SENT = """SELECT id, reading_id, sender_id, key_version, iv_b64, ciphertext_b64, created_at_ms
FROM messages WHERE sender_id = ? ORDER BY created_at_ms DESC, id DESC LIMIT ?"""
_REVIEWS_WRITTEN = """SELECT id, reading_id, advisor_id, rating, comment, created_at_ms
FROM reviews WHERE client_id = ? ORDER BY created_at_ms DESC, id DESC LIMIT ?"""
_REVIEWS_RECEIVED = """SELECT id, reading_id, rating, comment, created_at_ms
FROM reviews WHERE advisor_id = ? ORDER BY created_at_ms DESC, id DESC LIMIT ?"""


def _section(rows: list[dict[str, Any]], limit: int, view: Any) -> dict[str, Any]:
    return {"items": [view(r) for r in rows[:limit]], "truncated": len(rows) > limit}


def _time(ms: Any) -> str | None:
    return None if ms is None else rfc3339(int(ms))


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    """The wallet/earnings entry shape, plus its place in the account."""
    return {**entry_view(row), "sequence": int(row["sequence"])}


def _payment(row: dict[str, Any]) -> dict[str, Any]:
    """The deposit shape, plus what the gateway answered and what was reversed."""
    return {
        **deposit_view(row),
        "currency": row["currency"],
        "gateway_response_code": row["gateway_response_code"],
        "reversed_cents": int(row["reversed_cents"]),
        "updated_at": rfc3339(row["updated_at_ms"]),
    }


def _reading(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "client_id": str(row["client_id"]),
        "advisor_id": str(row["advisor_id"]),
        "channel": row["channel"],
        "status": row["status"],
        "rate_cents_per_minute": int(row["rate_cents_per_minute"]),
        "billed_minutes": int(row["billed_minutes"]),
        "end_reason": row["end_reason"],
        "requested_at": rfc3339(row["requested_at_ms"]),
        "accepted_at": _time(row["accepted_at_ms"]),
        "ended_at": _time(row["ended_at_ms"]),
    }


def _review(row: dict[str, Any]) -> dict[str, Any]:
    out = {
        "id": str(row["id"]),
        "reading_id": str(row["reading_id"]),
        "rating": int(row["rating"]),
        "comment": row["comment"],
        "created_at": rfc3339(row["created_at_ms"]),
    }
    if "advisor_id" in row:
        out["advisor_id"] = str(row["advisor_id"])
    return out


def _advisor(row: dict[str, Any] | None, display_name: str | None) -> dict[str, Any] | None:
    """The advisor reply shape every route uses, plus the stored photo's facts."""
    if row is None:
        return None
    view = advisor_view({**row, "display_name": display_name})
    view["photo"] = None
    if row["photo_sha256"] is not None:
        view["photo"] = {
            "content_type": row["photo_content_type"],
            "size_bytes": int(row["photo_size_bytes"]),
            "sha256": row["photo_sha256"],
        }
    return view


async def _messages(rc: RequestContext, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keyring = parse_keyring(rc.settings.message_keys) if rows else None
    out = []
    for row in rows:
        assert keyring is not None
        aad = additional_data(int(row["reading_id"]), int(row["id"]), int(row["sender_id"]))
        body: str | None
        try:
            body = (
                await open_sealed(keyring, int(row["key_version"]), row["iv_b64"], row["ciphertext_b64"], aad)
            ).decode()
        except Problem:
            # A retired key version or a damaged row: the rest of the export still goes out.
            body = None
        out.append(
            {
                "id": str(row["id"]),
                "reading_id": str(row["reading_id"]),
                "body": body,
                "readable": body is not None,
                "created_at": rfc3339(row["created_at_ms"]),
            }
        )
    return out


async def export_me(rc: RequestContext) -> Reply:
    assert rc.user is not None
    uid = rc.user_id
    lim = EXPORT_LIMITS
    per_account = lim["ledger_entries_per_account"]
    results = await rc.db.batch(
        [
            sql(_ADVISOR, uid, uid),
            sql(_ACCOUNTS, uid),
            sql(_ENTRIES, uid, "client_wallet", per_account + 1),
            sql(_ENTRIES, uid, "advisor_earnings", per_account + 1),
            sql(_PAYMENTS, uid, lim["payments"] + 1),
            sql(_READINGS_AS_CLIENT, uid, lim["readings_as_client"] + 1),
            sql(_READINGS_AS_ADVISOR, uid, lim["readings_as_advisor"] + 1),
            sql(_MESSAGES_SENT, uid, lim["messages_sent"] + 1),
            sql(_REVIEWS_WRITTEN, uid, lim["reviews_written"] + 1),
            sql(_REVIEWS_RECEIVED, uid, lim["reviews_received"] + 1),
            chat_archive.export_archives(uid, lim["readings_as_client"], lim["readings_as_advisor"]),
        ]
    )
    advisor, accounts, wallet_entries, earnings_entries, payments, as_client, as_advisor, sent, written, received = (
        r.rows for r in results[:-1]
    )
    archives = results[-1].rows
    entries_of = {"client_wallet": wallet_entries, "advisor_earnings": earnings_entries}
    account_views = []
    for account in accounts:
        account_views.append(
            {
                "id": str(account["id"]),
                "kind": account["kind"],
                "currency": account["currency"],
                "balance_cents": int(account["balance_cents"]),
                "entry_count": int(account["last_sequence"]),
                "created_at": rfc3339(account["created_at_ms"]),
                "entries": _section(entries_of.get(account["kind"], []), per_account, _entry),
            }
        )
    # Messages of ended readings live in R2 (chat_archive.py): merged newest first.
    archived, archives_left_out, archive_timing = await chat_archive.sent_in_archives(rc, archives, uid)
    sent = sorted(sent + archived, key=lambda m: (int(m["created_at_ms"]), int(m["id"])), reverse=True)
    messages = await _messages(rc, sent[: lim["messages_sent"]])
    user = rc.user
    body: dict[str, Any] = {
        "format": FORMAT,
        "generated_at": rfc3339(rc.clock.now_ms()),
        "limits": dict(lim),
        # The profile as GET /v1/me shows it (spending limits included), plus the Clerk subject.
        "profile": {**user_view(user, rc.clock.now_ms()), "clerk_user_id": user["clerk_user_id"]},
        "advisor": _advisor(advisor[0] if advisor else None, user["display_name"]),
        "accounts": account_views,
        "payments": _section(payments, lim["payments"], _payment),
        "readings": {
            "as_client": _section(as_client, lim["readings_as_client"], _reading),
            "as_advisor": _section(as_advisor, lim["readings_as_advisor"], _reading),
        },
        "messages_sent": {"items": messages, "truncated": len(sent) > lim["messages_sent"] or archives_left_out},
        "reviews_written": _section(written, lim["reviews_written"], _review),
        "reviews_received": _section(received, lim["reviews_received"], _review),
    }
    sections = [
        *(a["entries"] for a in account_views),
        body["payments"],
        *body["readings"].values(),
        body["messages_sent"],
        body["reviews_written"],
        body["reviews_received"],
    ]
    body["truncated"] = any(s["truncated"] for s in sections)
    return Reply(body, headers={"cache-control": "no-store", **archive_timing})


# --- erasure -------------------------------------------------------------------

# Why the erasure would be refused, read in the same transaction as the
# conditional tombstone that follows it.
_BLOCKERS = f"""SELECT u.version,
  EXISTS (SELECT 1 FROM readings WHERE client_id = ? AND status IN {OPEN_READING})
    OR EXISTS (SELECT 1 FROM readings WHERE advisor_id = ? AND status IN {OPEN_READING}) AS reading_open,
  EXISTS (SELECT 1 FROM payments WHERE user_id = ? AND status IN {PENDING_PAYMENT}) AS payment_pending,
  (SELECT photo_key FROM advisors WHERE user_id = ?) AS photo_key
FROM users u WHERE u.id = ?"""  # noqa: S608 - constant text

_TOMBSTONE = f"""UPDATE users
SET clerk_user_id = 'erased:' || id, display_name = NULL, time_zone = 'UTC', is_admin = 0,
    version = version + 1, updated_at_ms = ?, erased_at_ms = ?
WHERE id = ? AND clerk_user_id = ? AND version = ? AND erased_at_ms IS NULL
  AND NOT EXISTS (SELECT 1 FROM readings WHERE client_id = ? AND status IN {OPEN_READING})
  AND NOT EXISTS (SELECT 1 FROM readings WHERE advisor_id = ? AND status IN {OPEN_READING})
  AND NOT EXISTS (SELECT 1 FROM payments WHERE user_id = ? AND status IN {PENDING_PAYMENT})"""  # noqa: S608

# Every statement after the tombstone runs only if THIS batch wrote it.
_ERASED_NOW = "EXISTS (SELECT 1 FROM users WHERE id = ? AND erased_at_ms = ?)"

_ERASE_ADVISOR = f"""UPDATE advisors
SET headline = ?, bio = '', status = 'offline',
    photo_key = NULL, photo_content_type = NULL, photo_size_bytes = NULL, photo_sha256 = NULL,
    version = version + 1, updated_at_ms = ?
WHERE user_id = ? AND {_ERASED_NOW}"""  # noqa: S608 - constant text
_ERASE_CATEGORIES = f"DELETE FROM advisor_categories WHERE advisor_id = ? AND {_ERASED_NOW}"  # noqa: S608
_ERASE_MESSAGES = f"DELETE FROM messages WHERE sender_id = ? AND {_ERASED_NOW}"  # noqa: S608
_ERASE_REVIEW_TEXT = f"UPDATE reviews SET comment = NULL WHERE client_id = ? AND comment IS NOT NULL AND {_ERASED_NOW}"  # noqa: S608
_ERASE_IDEMPOTENCY = f"DELETE FROM idempotency_keys WHERE user_id = ? AND {_ERASED_NOW}"  # noqa: S608
# The card-testing counters keep the attempt (the per-user count must survive) but not the address.
_ERASE_ATTEMPT_IPS = (
    f"UPDATE deposit_attempts SET client_ip = NULL WHERE user_id = ? AND client_ip IS NOT NULL AND {_ERASED_NOW}"  # noqa: S608
)
_AFTER = """SELECT u.erased_at_ms,
  (SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet') AS wallet_cents,
  (SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'advisor_earnings') AS earnings_cents
FROM users u WHERE u.id = ?"""

KEPT = (
    "user id (pseudonymous: no name, no Clerk subject, no role)",
    "accounts and ledger entries",
    "payments (gateway transaction id, amount, status; never card data)",
    "deposit attempts for the card-testing counters (without the client IP)",
    "readings and their charges and refunds",
    "review ratings (the comment text is erased)",
    "advisor rate and rating aggregates",
)


def reading_open() -> Problem:
    return Problem(
        409,
        "erasure_reading_open",
        "Conflict",
        "A reading of yours is requested or active; end or cancel it, then erase the account.",
    )


def payment_pending() -> Problem:
    return Problem(
        409,
        "erasure_payment_pending",
        "Conflict",
        "A deposit of yours is still waiting for the payment gateway; retry once it is settled.",
    )


async def erase_me(rc: RequestContext) -> Reply:
    assert rc.user is not None
    expected = parse_if_match(rc.header("if-match"))
    uid = rc.user_id
    sub = rc.user["clerk_user_id"]
    now_ms = rc.clock.now_ms()
    results = await rc.db.batch(
        [
            sql(_BLOCKERS, uid, uid, uid, uid, uid),
            sql(_TOMBSTONE, now_ms, now_ms, uid, sub, expected, uid, uid, uid),
            sql(_ERASE_ADVISOR, ERASED_HEADLINE, now_ms, uid, uid, now_ms),
            sql(_ERASE_CATEGORIES, uid, uid, now_ms),
            sql(_ERASE_MESSAGES, uid, uid, now_ms),
            sql(_ERASE_REVIEW_TEXT, uid, uid, now_ms),
            sql(_ERASE_IDEMPOTENCY, uid, uid, now_ms),
            sql(_ERASE_ATTEMPT_IPS, uid, uid, now_ms),
            *chat_archive.erasure_statements(uid, _ERASED_NOW, now_ms),  # results[8:11]
            sql(_AFTER, uid, uid, uid),
        ]
    )
    blockers, tombstone = results[0].rows, results[1]
    # D1's `changes` also counts the rows the UPDATE's triggers wrote (migration 0093's
    # removal of the payout receiver): zero is the refusal, not "anything but one".
    if tombstone.changes == 0:
        if not blockers or int(blockers[0]["version"]) != expected:
            raise Problem(
                412, "version_conflict", "Precondition failed", "The profile changed since you read it; fetch it again."
            )
        if blockers[0]["reading_open"]:
            raise reading_open()
        if blockers[0]["payment_pending"]:
            raise payment_pending()
        raise Problem(412, "version_conflict", "Precondition failed", "The profile changed; fetch it again.")
    photo_key = blockers[0]["photo_key"]
    if photo_key is not None:
        # Awaited (not waitUntil): the reply says the photo is gone. A failure is
        # logged and leaves an orphan that the cron's sweep removes.
        await _delete_objects(_media(rc.env), [photo_key], "erased")
    archived_sent, archives_marked = int(results[8].rows[0]["sent"]), results[9].changes + results[10].changes
    if archives_marked:
        # Hidden from every reply from now on; rewritten without the user's
        # messages right after the reply, or by the cron if this does not finish.
        rc.wait_until(chat_archive_job.erasure_job(rc.db, rc.env, uid, now_ms), "chat_erasure")
    after = results[-1].rows[0]
    logs.info("account_erased", request_id=rc.request_id, user_id=uid)
    return Reply(
        {
            "id": str(uid),
            "erased": True,
            "erased_at": rfc3339(int(after["erased_at_ms"])),
            "removed": {
                "messages": results[4].changes + archived_sent,
                "review_comments": results[5].changes,
                "advisor_profile": results[2].changes >= 1,
                "photo": photo_key is not None,
            },
            "kept": list(KEPT),
            "wallet_balance_cents": int(after["wallet_cents"] or 0),
            "earnings_balance_cents": int(after["earnings_cents"] or 0),
        },
        headers={"etag": etag(int(rc.user["version"]) + 1), "cache-control": "no-store"},
    )


_SECTION = {
    "type": "object",
    "required": ["items", "truncated"],
    "properties": {"items": {"type": "array", "items": {"type": "object"}}, "truncated": {"type": "boolean"}},
}
SCHEMAS: dict[str, Any] = {
    "Export": {
        "type": "object",
        "required": [
            "format",
            "generated_at",
            "truncated",
            "limits",
            "profile",
            "advisor",
            "accounts",
            "payments",
            "readings",
            "messages_sent",
            "reviews_written",
            "reviews_received",
        ],
        "properties": {
            "format": {"type": "string", "enum": [FORMAT]},
            "generated_at": {"type": "string", "format": "date-time"},
            "truncated": {"type": "boolean"},
            "limits": {"type": "object", "additionalProperties": {"type": "integer"}},
            "profile": {"type": "object"},
            "advisor": {"type": ["object", "null"]},
            "accounts": {"type": "array", "items": {"type": "object"}},
            "payments": _SECTION,
            "readings": {
                "type": "object",
                "required": ["as_client", "as_advisor"],
                "properties": {"as_client": _SECTION, "as_advisor": _SECTION},
            },
            "messages_sent": _SECTION,
            "reviews_written": _SECTION,
            "reviews_received": _SECTION,
        },
    },
    "Erasure": {
        "type": "object",
        "required": ["id", "erased", "erased_at", "removed", "kept", "wallet_balance_cents", "earnings_balance_cents"],
        "properties": {
            "id": {"type": "string"},
            "erased": {"type": "boolean"},
            "erased_at": {"type": "string", "format": "date-time"},
            "removed": {"type": "object"},
            "kept": {"type": "array", "items": {"type": "string"}},
            "wallet_balance_cents": {"type": "integer"},
            "earnings_balance_cents": {"type": "integer"},
        },
    },
}

ROUTES = [
    Route(
        "GET",
        "/v1/me/export",
        export_me,
        "Everything stored about you, as JSON (sections capped, `truncated` says so)",
        primary=True,
        responses={200: "Export"},
        tag="users",
    ),
    Route(
        "DELETE",
        "/v1/me",
        erase_me,
        "Erase your personal data (If-Match: <version>); refused while a reading is open or a deposit pending",
        primary=True,
        if_match=True,
        responses={200: "Erasure"},
        problems=(409, 412, 428),
        problem_codes={409: ("erasure_reading_open", "erasure_payment_pending")},
        tag="users",
    ),
]
