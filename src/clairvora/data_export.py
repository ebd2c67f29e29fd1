"""`GET /v1/me/export`: everything stored about the caller, as one JSON document
(docs/PRIVACY.md says what each section holds, and what is left out and why).

One D1 batch (one call after the caller lookup) of caller-scoped reads, each an
index walk capped at a fixed number of rows (EXPORT_LIMITS, +1 to know of
more); a section that holds more says `truncated: true`, and so does the whole
reply. Messages are the caller's own, decrypted; someone else's words are not
theirs to take. Those of ended readings are read from their R2 transcripts
(chat_archive.py, bounded). Each object is shown by its own route's view
function where it has one (refunds, payouts, the payout method, claims,
redemptions, chargebacks), so the export and the API agree on its shape."""

from typing import Any

from . import chat_archive, export_views, payout_flow, refund_views
from .clock import rfc3339
from .db import Statement, sql
from .payout_methods import method_view
from .promo_redemptions import redemption_view
from .requests import RequestContext
from .responses import Reply
from .satisfaction import claim_view
from .users import user_view

FORMAT = "clairvora.export.v1"

# Rows per section, newest first. Each read is an index walk that stops at its
# limit (+1 to know whether more exist), so the export costs one D1 call and
# at most sum(EXPORT_LIMITS) (entries: per account, parts: 5 per refund) +
# sections rows read, however old the account.
EXPORT_LIMITS: dict[str, int] = {
    "ledger_entries_per_account": 500,
    "payments": 200,
    "wallet_refunds": 100,
    "chargebacks": 100,
    "readings_as_client": 200,
    "readings_as_advisor": 200,
    "messages_sent": 500,
    "reviews_written": 200,
    "reviews_received": 200,
    "promo_grants": 200,
    "promo_redemptions": 200,
    "free_minute_offers": 100,
    "satisfaction_claims": 100,
    "payouts": 200,
}

# The top-level capped sections (besides each account's entries and the readings' two sides).
SECTIONS = (
    "payments",
    "wallet_refunds",
    "chargebacks",
    "messages_sent",
    "reviews_written",
    "reviews_received",
    "promo_grants",
    "promo_redemptions",
    "free_minute_offers",
    "satisfaction_claims",
    "payouts",
)

# Every account a user can own (migration 0090); each has its entries read.
ACCOUNT_KINDS = ("client_wallet", "client_promo", "advisor_earnings", "advisor_cleared")

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
       reversed_cents, refunded_cents, charged_back_cents, created_at_ms, updated_at_ms
FROM payments WHERE user_id = ? ORDER BY created_at_ms DESC, id DESC LIMIT ?"""
_CHARGEBACKS = """SELECT id, payment_id, user_id, amount_cents, reason_code, note, advisor_side, clawback_cents, state,
       created_at_ms, resolved_at_ms, resolution_note
FROM chargebacks WHERE user_id = ? ORDER BY created_at_ms DESC, id DESC LIMIT ?"""
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
# Migration 0098's (owner, time, id) indexes carry these four.
_GRANTS = """SELECT id, source, amount_cents, remaining_cents, expired_cents, reading_id, redemption_id, offer_id,
       claim_id, granted_at_ms, expires_at_ms
FROM promo_grants WHERE client_id = ? ORDER BY granted_at_ms DESC, id DESC LIMIT ?"""
# The code's terms, not its admin note. CROSS JOIN: the client's redemptions drive.
_REDEMPTIONS = """SELECT d.id, d.redeemed_at_ms, c.code, c.credit_cents, c.free_minutes, c.max_cents_per_minute,
       c.credit_valid_days
FROM promo_redemptions d CROSS JOIN promo_codes c ON c.id = d.promo_code_id
WHERE d.client_id = ? ORDER BY d.redeemed_at_ms DESC, d.id DESC LIMIT ?"""
_OFFERS = """SELECT id, source, redemption_id, minutes, max_cents_per_minute, reading_id, created_at_ms,
       expires_at_ms, used_at_ms
FROM free_minute_offers WHERE client_id = ? ORDER BY created_at_ms DESC, id DESC LIMIT ?"""
# The claims the caller made (as the claimant, with its words; on the advisor's
# side the reason is the client's, not exported: the clawback is in its ledger).
# Every claim has its grant (one batch), whose expiry is the credit's.
_CLAIMS = """SELECT c.id, c.reading_id, c.origin, c.amount_cents, c.clawback_cents, c.reason, c.created_at_ms,
       g.expires_at_ms AS credit_expires_at_ms
FROM satisfaction_claims c CROSS JOIN promo_grants g ON g.claim_id = c.id AND g.client_id = ?
WHERE c.client_id = ? ORDER BY c.created_at_ms DESC, c.id DESC LIMIT ?"""
_PAYOUTS = f"""SELECT {payout_flow.PAYOUT_COLUMNS} FROM payouts
WHERE advisor_id = ? ORDER BY created_at_ms DESC, id DESC LIMIT ?"""  # noqa: S608 - constant text
# The stored mask only (never the sealed receiver), as GET /v1/advisors/me/payout-method reads it.
_PAYOUT_METHOD = "SELECT recipient_type, receiver_masked, version, updated_at_ms FROM payout_methods WHERE user_id = ?"


def _reads(uid: int) -> dict[str, Statement]:
    """The export's batch, by name, in order (the R2 archives' facts go last)."""
    lim = EXPORT_LIMITS
    per_account = lim["ledger_entries_per_account"] + 1
    refunds, parts = refund_views.page_statements(
        uid, refund_views.NO_CURSOR, refund_views.NO_CURSOR, lim["wallet_refunds"]
    )
    return {
        "advisor": sql(_ADVISOR, uid, uid),
        "accounts": sql(_ACCOUNTS, uid),
        **{f"entries:{kind}": sql(_ENTRIES, uid, kind, per_account) for kind in ACCOUNT_KINDS},
        "payments": sql(_PAYMENTS, uid, lim["payments"] + 1),
        "wallet_refunds": refunds,
        "refund_parts": parts,
        "chargebacks": sql(_CHARGEBACKS, uid, lim["chargebacks"] + 1),
        "readings_as_client": sql(_READINGS_AS_CLIENT, uid, lim["readings_as_client"] + 1),
        "readings_as_advisor": sql(_READINGS_AS_ADVISOR, uid, lim["readings_as_advisor"] + 1),
        "messages_sent": sql(_MESSAGES_SENT, uid, lim["messages_sent"] + 1),
        "reviews_written": sql(_REVIEWS_WRITTEN, uid, lim["reviews_written"] + 1),
        "reviews_received": sql(_REVIEWS_RECEIVED, uid, lim["reviews_received"] + 1),
        "promo_grants": sql(_GRANTS, uid, lim["promo_grants"] + 1),
        "promo_redemptions": sql(_REDEMPTIONS, uid, lim["promo_redemptions"] + 1),
        "free_minute_offers": sql(_OFFERS, uid, lim["free_minute_offers"] + 1),
        "satisfaction_claims": sql(_CLAIMS, uid, uid, lim["satisfaction_claims"] + 1),
        "payouts": sql(_PAYOUTS, uid, lim["payouts"] + 1),
        "payout_method": sql(_PAYOUT_METHOD, uid),
        "archives": chat_archive.export_archives(uid, lim["readings_as_client"], lim["readings_as_advisor"]),
    }


async def export_me(rc: RequestContext) -> Reply:
    assert rc.user is not None
    uid, lim = rc.user_id, EXPORT_LIMITS
    reads = _reads(uid)
    rows = dict(zip(reads, (r.rows for r in await rc.db.batch(list(reads.values()))), strict=True))
    per_account = lim["ledger_entries_per_account"]
    accounts = [export_views.account(a, rows[f"entries:{a['kind']}"], per_account) for a in rows["accounts"]]
    # Messages of ended readings live in R2 (chat_archive.py): merged newest first.
    archived, archives_left_out, archive_timing = await chat_archive.sent_in_archives(rc, rows["archives"], uid)
    sent = sorted(rows["messages_sent"] + archived, key=lambda m: (int(m["created_at_ms"]), int(m["id"])), reverse=True)
    messages = await export_views.messages(rc, sent[: lim["messages_sent"]])
    user, now_ms = rc.user, rc.clock.now_ms()
    advisor = rows["advisor"][0] if rows["advisor"] else None

    def part(name: str, view: Any) -> dict[str, Any]:
        return export_views.section(rows[name], lim[name], view)

    refunds = rows["wallet_refunds"]
    limit = lim["wallet_refunds"]
    body: dict[str, Any] = {
        "format": FORMAT,
        "generated_at": rfc3339(now_ms),
        "limits": dict(lim),
        # The profile as GET /v1/me shows it (spending limits included), plus the Clerk subject.
        "profile": {**user_view(user, now_ms), "clerk_user_id": user["clerk_user_id"]},
        "advisor": export_views.advisor(advisor, user["display_name"]),
        "accounts": accounts,
        "payments": part("payments", export_views.payment),
        "wallet_refunds": {
            "items": refund_views.views(refunds, rows["refund_parts"], limit),
            "truncated": len(refunds) > limit,
        },
        "chargebacks": part("chargebacks", export_views.chargeback),
        "readings": {
            "as_client": part("readings_as_client", export_views.reading),
            "as_advisor": part("readings_as_advisor", export_views.reading),
        },
        "messages_sent": {"items": messages, "truncated": len(sent) > lim["messages_sent"] or archives_left_out},
        "reviews_written": part("reviews_written", export_views.review),
        "reviews_received": part("reviews_received", export_views.review),
        "promo_grants": part("promo_grants", export_views.grant),
        "promo_redemptions": part("promo_redemptions", redemption_view),
        "free_minute_offers": part("free_minute_offers", export_views.offer),
        "satisfaction_claims": part("satisfaction_claims", claim_view),
        "payouts": part("payouts", payout_flow.payout_view),
        # As GET /v1/advisors/me/payout-method shows it (masked); null without an advisor profile.
        "payout_method": method_view(rows["payout_method"][0] if rows["payout_method"] else None) if advisor else None,
    }
    sections = [*(a["entries"] for a in accounts), *(body[k] for k in SECTIONS), *body["readings"].values()]
    body["truncated"] = any(s["truncated"] for s in sections)
    return Reply(body, headers={"cache-control": "no-store", **archive_timing})
