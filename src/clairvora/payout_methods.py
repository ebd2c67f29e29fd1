"""Where an advisor's payouts go: `GET/PUT /v1/advisors/me/payout-method`.

The receiver (a PayPal account's email, or its 13-character payer id) is
personal data: it is sealed with AES-GCM under PAYOUT_KEYS before it reaches
D1 (sealing.py, the additional data binding it to its owner and type), never
logged, and shown back only masked (a***@example.com, *********6WLS). Every
advisor has a method at version 0 (none) until the first PUT; a PUT names the
version it replaces in If-Match (0 for the first), so two edits cannot
silently overwrite each other.
"""

import re
from typing import Any

from . import payout_flow, sealing, users
from .clock import rfc3339
from .db import TriggerAbort, UniqueViolation, sql
from .errors import Problem, not_found, unprocessable
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import Obj, Str

RECIPIENT_TYPES = ("EMAIL", "PAYPAL_ID")
MAX_EMAIL_CHARS = 127  # PayPal's receiver field
_PAYPAL_ID = "[A-Z0-9]{13}"
_NOT_SPACE = "[^@\\s\\u0000-\\u001f\\u007f]"
_EMAIL = f"{_NOT_SPACE}{{1,64}}@{_NOT_SPACE}+\\.{_NOT_SPACE}{{2,}}"
# Either form, published in the document; which one the type needs is checked after (422).
RECEIVER_PATTERN = f"^({_PAYPAL_ID}|{_EMAIL})$"
_EMAIL_RE = re.compile(f"^{_EMAIL}$")
_PAYPAL_ID_RE = re.compile(f"^{_PAYPAL_ID}$")

METHOD_BODY = Obj(
    {
        "recipient_type": Str(max_len=9, choices=RECIPIENT_TYPES, description="EMAIL or PAYPAL_ID (payer id)"),
        "receiver": Str(
            min_len=3,
            max_len=MAX_EMAIL_CHARS,
            pattern=RECEIVER_PATTERN,
            description="the PayPal account's email (EMAIL), or its 13-character payer id (PAYPAL_ID)",
        ),
    },
    required=("recipient_type", "receiver"),
)

_METHOD = """
SELECT m.recipient_type, m.receiver_masked, m.version, m.updated_at_ms
FROM payout_methods m WHERE m.user_id = ?"""
# The same two reads by the caller's Clerk sub, sent with the caller lookup (GET: one call).
_IS_ADVISOR_BY_SUB = "SELECT 1 AS ok FROM advisors WHERE user_id = (SELECT id FROM users WHERE clerk_user_id = ?)"
_METHOD_BY_SUB = """
SELECT m.recipient_type, m.receiver_masked, m.version, m.updated_at_ms
FROM payout_methods m WHERE m.user_id = (SELECT id FROM users WHERE clerk_user_id = ?)"""
_NOT_ADVISOR = "advisor profile (become an advisor with POST /v1/advisors)"


def mask(recipient_type: str, receiver: str) -> str:
    """The receiver as the advisor sees it: enough to recognise, not to use."""
    if recipient_type == "EMAIL":
        local, _, domain = receiver.partition("@")
        return f"{local[0]}***@{domain}"[:80]
    return "*" * (len(receiver) - 4) + receiver[-4:]


def _validated(recipient_type: str, receiver: str) -> str:
    if recipient_type == "EMAIL" and not _EMAIL_RE.fullmatch(receiver):
        raise unprocessable("receiver_type_mismatch", "'receiver' must be an email address for recipient_type EMAIL.")
    if recipient_type == "PAYPAL_ID" and not _PAYPAL_ID_RE.fullmatch(receiver):
        raise unprocessable(
            "receiver_type_mismatch", "'receiver' must be a 13-character PayPal payer id for recipient_type PAYPAL_ID."
        )
    return receiver


def method_view(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {"recipient_type": None, "receiver_masked": None, "version": 0, "updated_at": None}
    return {
        "recipient_type": row["recipient_type"],
        "receiver_masked": row["receiver_masked"],
        "version": int(row["version"]),
        "updated_at": rfc3339(row["updated_at_ms"]),
    }


def _reply(row: dict[str, Any] | None) -> Reply:
    view = method_view(row)
    return Reply(view, headers={"etag": users.etag(view["version"])})


async def get_method(rc: RequestContext) -> Reply:
    sub = users.caller_sub(rc)
    advisor, method = await users.with_caller(rc, [sql(_IS_ADVISOR_BY_SUB, sub), sql(_METHOD_BY_SUB, sub)])
    if not advisor.rows:
        raise not_found(_NOT_ADVISOR)
    return _reply(method.rows[0] if method.rows else None)


async def put_method(rc: RequestContext) -> Reply:
    # Two calls: the caller lookup, then the write. The sealed receiver's additional
    # data names the user id (payout_flow.receiver_aad), so it is sealed once the
    # lookup has given the id, before the one batch that writes and reads it back.
    expected = users.parse_if_match(rc.header("if-match"))
    body = await rc.parsed_body()
    recipient_type = body["recipient_type"]
    receiver = _validated(recipient_type, body["receiver"])
    uid, now_ms = rc.user_id, rc.clock.now_ms()
    version, iv_b64, ct_b64 = await sealing.seal(
        payout_flow.keyring(rc.settings), receiver.encode(), payout_flow.receiver_aad(uid, recipient_type)
    )
    masked = mask(recipient_type, receiver)
    if expected == 0:
        # The first method: refused by the primary key if one exists (412 below).
        write = sql(
            """INSERT INTO payout_methods (user_id, recipient_type, receiver_masked, key_version, iv_b64,
                                           ciphertext_b64, version, created_at_ms, updated_at_ms)
               VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)""",
            uid,
            recipient_type,
            masked,
            version,
            iv_b64,
            ct_b64,
            now_ms,
            now_ms,
        )
    else:
        write = sql(
            """UPDATE payout_methods
               SET recipient_type = ?, receiver_masked = ?, key_version = ?, iv_b64 = ?, ciphertext_b64 = ?,
                   version = version + 1, updated_at_ms = ?
               WHERE user_id = ? AND version = ?""",
            recipient_type,
            masked,
            version,
            iv_b64,
            ct_b64,
            now_ms,
            uid,
            expected,
        )
    stale = Problem(412, "version_conflict", "Precondition failed", "The payout method changed since you read it.")
    try:
        written, advisor, method = await rc.db.batch(
            [write, sql("SELECT 1 AS ok FROM advisors WHERE user_id = ?", uid), sql(_METHOD, uid)]
        )
    except TriggerAbort as exc:
        if exc.code == "payout_method_not_allowed":
            raise not_found(_NOT_ADVISOR) from None
        raise
    except UniqueViolation as exc:
        if "payout_methods.user_id" in exc.columns:
            raise stale from None
        raise
    if not advisor.rows:
        raise not_found(_NOT_ADVISOR)
    if written.changes != 1:
        raise stale
    return _reply(method.rows[0])


_METHOD_PROPS = {
    "recipient_type": {"type": ["string", "null"], "enum": [*RECIPIENT_TYPES, None]},
    "receiver_masked": {
        "type": ["string", "null"],
        "description": "e.g. a***@example.com; the receiver itself is never shown",
    },
    "version": {"type": "integer", "minimum": 0, "description": "0: no method yet"},
    "updated_at": {"type": ["string", "null"], "format": "date-time"},
}
SCHEMAS: dict[str, Any] = {
    "PayoutMethod": {"type": "object", "required": list(_METHOD_PROPS), "properties": _METHOD_PROPS},
}

ROUTES = [
    Route(
        "GET",
        "/v1/advisors/me/payout-method",
        get_method,
        "Advisor: where payouts go (the receiver masked); version 0 when none is set",
        primary=True,
        caller_batch=True,
        responses={200: "PayoutMethod"},
        tag="payouts",
    ),
    Route(
        "PUT",
        "/v1/advisors/me/payout-method",
        put_method,
        "Advisor: set the PayPal receiver of payouts (If-Match: <version>, 0 for the first); stored encrypted",
        primary=True,
        body=METHOD_BODY,
        if_match=True,
        responses={200: "PayoutMethod"},
        problems=(412, 422, 428),
        problem_codes={422: ("receiver_type_mismatch",)},
        tag="payouts",
    ),
]
