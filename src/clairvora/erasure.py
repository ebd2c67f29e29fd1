"""`DELETE /v1/me`: erase the caller's personal data (docs/PRIVACY.md says what
it removes, what it keeps, and why).

One D1 batch. Its first statement reads why it could be refused, its second
tombstones the user row only if nothing is open (no requested/active reading
on either side, no payment waiting for the gateway) and the If-Match version
still holds; every later statement runs only if that tombstone is this
batch's (`erased_at_ms = <now>`), so the check and the erasure are one
transaction and a reading requested at the same instant either makes the
erasure refuse or is itself refused (migration 0080's triggers). The money
records stay under the pseudonymous user id (ledger, payments, readings,
charges, refunds, chargebacks, promo grants and claims, payouts): entries are
append-only and every invariant holds; their free text goes (a claim's reason,
a chargeback's notes: migration 0098 lets exactly that change through), and the
payout receiver with it (0093's trigger on the tombstone). The advisor photo
is removed from R2 after the batch (a failure leaves an orphan the cron's
sweep removes). The user's messages in archived transcripts are hidden from
that commit on and rewritten out of the objects in waitUntil, else by the cron
(chat_archive_job.py)."""

from . import chat_archive, chat_archive_job, logs
from .clock import rfc3339
from .db import sql
from .errors import Problem
from .photos import _delete_objects, _media
from .requests import RequestContext
from .responses import Reply
from .users import etag, parse_if_match

# What an erased advisor profile shows (headline must be 1..120 characters).
ERASED_HEADLINE = "Deleted account"
# What erased free text of a kept money record reads (NOT NULL columns; migration
# 0098's triggers accept exactly this value, and only for an erased user).
ERASED_TEXT = "[erased]"
OPEN_READING = "('requested', 'active')"
PENDING_PAYMENT = "('pending', 'unknown')"

# Why the erasure would be refused, read in the same transaction as the
# conditional tombstone that follows it; and what goes with the tombstone.
_BLOCKERS = f"""SELECT u.version,
  EXISTS (SELECT 1 FROM readings WHERE client_id = ? AND status IN {OPEN_READING})
    OR EXISTS (SELECT 1 FROM readings WHERE advisor_id = ? AND status IN {OPEN_READING}) AS reading_open,
  EXISTS (SELECT 1 FROM payments WHERE user_id = ? AND status IN {PENDING_PAYMENT}) AS payment_pending,
  (SELECT photo_key FROM advisors WHERE user_id = ?) AS photo_key,
  EXISTS (SELECT 1 FROM payout_methods WHERE user_id = ?) AS payout_method
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
# The claims the user made (as client): the amount and policy stay, the words go.
_ERASE_CLAIM_REASONS = (
    f"UPDATE satisfaction_claims SET reason = ? WHERE client_id = ? AND reason IS NOT ? AND {_ERASED_NOW}"  # noqa: S608
)
# Chargebacks on the user's deposits: an admin's notes from the processor's notice.
_ERASE_CHARGEBACK_NOTES = f"""UPDATE chargebacks
SET note = ?, resolution_note = CASE WHEN resolution_note IS NULL THEN NULL ELSE ? END
WHERE user_id = ? AND note IS NOT ? AND {_ERASED_NOW}"""  # noqa: S608 - constant text
_AFTER = """SELECT u.erased_at_ms,
  (SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet') AS wallet_cents,
  (SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'advisor_earnings') AS earnings_cents
FROM users u WHERE u.id = ?"""

KEPT = (
    "user id (pseudonymous: no name, no Clerk subject, no role)",
    "accounts and ledger entries (wallet, promo credit, pending and cleared earnings)",
    "payments (gateway transaction id, amount, status; never card data)",
    "deposit attempts for the card-testing counters (without the client IP)",
    "refunds of unused funds and their parts (amounts, gateway transaction ids)",
    "chargebacks (amount, reason code, state; the notes are erased)",
    "readings and their charges and refunds",
    "promo grants, promo code redemptions, free-minute offers",
    "satisfaction claims (amount and policy; the reason text is erased)",
    "payouts (amount, status, PayPal ids; the receiver is erased) and earnings clearances",
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
            sql(_BLOCKERS, uid, uid, uid, uid, uid, uid),
            sql(_TOMBSTONE, now_ms, now_ms, uid, sub, expected, uid, uid, uid),
            sql(_ERASE_ADVISOR, ERASED_HEADLINE, now_ms, uid, uid, now_ms),  # 2
            sql(_ERASE_CATEGORIES, uid, uid, now_ms),
            sql(_ERASE_MESSAGES, uid, uid, now_ms),  # 4
            sql(_ERASE_REVIEW_TEXT, uid, uid, now_ms),  # 5
            sql(_ERASE_IDEMPOTENCY, uid, uid, now_ms),
            sql(_ERASE_ATTEMPT_IPS, uid, uid, now_ms),
            sql(_ERASE_CLAIM_REASONS, ERASED_TEXT, uid, ERASED_TEXT, uid, now_ms),  # 8
            sql(_ERASE_CHARGEBACK_NOTES, ERASED_TEXT, ERASED_TEXT, uid, ERASED_TEXT, uid, now_ms),  # 9
            *chat_archive.erasure_statements(uid, _ERASED_NOW, now_ms),  # results[10:13]
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
    archived_sent, archives_marked = int(results[10].rows[0]["sent"]), results[11].changes + results[12].changes
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
                "satisfaction_claim_reasons": results[8].changes,
                "chargeback_notes": results[9].changes,
                "advisor_profile": results[2].changes >= 1,
                "photo": photo_key is not None,
                # Deleted by migration 0093's trigger on the tombstone, with the receiver on the payouts.
                "payout_method": bool(blockers[0]["payout_method"]),
            },
            "kept": list(KEPT),
            "wallet_balance_cents": int(after["wallet_cents"] or 0),
            "earnings_balance_cents": int(after["earnings_cents"] or 0),
        },
        headers={"etag": etag(int(rc.user["version"]) + 1), "cache-control": "no-store"},
    )
