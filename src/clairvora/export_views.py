"""The export's items (data_export.py): each row as the route that shows that
object shows it, plus what only the export tells (an entry's place in its
account, a deposit's gateway answer). Objects no route shows to their owner
(promo grants, free-minute offers) get their shape here."""

from typing import Any

from .advisors import advisor_view
from .chargebacks import chargeback_view
from .clock import rfc3339
from .deposit_outcomes import deposit_view
from .errors import Problem
from .messages import additional_data, open_sealed, parse_keyring
from .requests import RequestContext
from .wallet import entry_view


def section(rows: list[dict[str, Any]], limit: int, view: Any) -> dict[str, Any]:
    """The first `limit` rows (the read asked for limit + 1), and whether more exist."""
    return {"items": [view(r) for r in rows[:limit]], "truncated": len(rows) > limit}


def _time(ms: Any) -> str | None:
    return None if ms is None else rfc3339(int(ms))


def entry(row: dict[str, Any]) -> dict[str, Any]:
    """The wallet/earnings entry shape, plus its place in the account."""
    return {**entry_view(row), "sequence": int(row["sequence"])}


def account(row: dict[str, Any], entries: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """An account and its newest entries. Sequences run 1..n without gaps, so the
    entries are complete exactly when they number n: fewer means more beyond the
    cap, or older ones a closed ledger period moved to R2 (periods.py), which the
    paged history routes read."""
    shown = [entry(e) for e in entries[:limit]]
    count = int(row["last_sequence"])
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "currency": row["currency"],
        "balance_cents": int(row["balance_cents"]),
        "entry_count": count,
        "created_at": rfc3339(row["created_at_ms"]),
        "entries": {"items": shown, "truncated": len(shown) < count},
    }


def payment(row: dict[str, Any]) -> dict[str, Any]:
    """The deposit shape, plus what the gateway answered and what went back."""
    return {
        **deposit_view(row),
        "currency": row["currency"],
        "gateway_response_code": row["gateway_response_code"],
        "reversed_cents": int(row["reversed_cents"]),
        "refunded_cents": int(row["refunded_cents"]),
        "charged_back_cents": int(row["charged_back_cents"]),
        "updated_at": rfc3339(row["updated_at_ms"]),
    }


def reading(row: dict[str, Any]) -> dict[str, Any]:
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


def review(row: dict[str, Any]) -> dict[str, Any]:
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


def advisor(row: dict[str, Any] | None, display_name: str | None) -> dict[str, Any] | None:
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


def chargeback(row: dict[str, Any]) -> dict[str, Any]:
    """The admin routes' chargeback, without the per-advisor clawbacks: those are
    the advisors' earnings (the total, clawback_cents, stays)."""
    view = chargeback_view(row, {})
    del view["clawbacks"]
    return view


def grant(row: dict[str, Any]) -> dict[str, Any]:
    """A promo grant: where the credit came from, what is left of it, when it lapses."""
    return {
        "id": str(row["id"]),
        "source": row["source"],
        "amount_cents": int(row["amount_cents"]),
        "remaining_cents": int(row["remaining_cents"]),
        "expired_cents": int(row["expired_cents"]),
        "reading_id": None if row["reading_id"] is None else str(row["reading_id"]),
        "redemption_id": None if row["redemption_id"] is None else str(row["redemption_id"]),
        "offer_id": None if row["offer_id"] is None else str(row["offer_id"]),
        "claim_id": None if row["claim_id"] is None else str(row["claim_id"]),
        "granted_at": rfc3339(int(row["granted_at_ms"])),
        "expires_at": rfc3339(int(row["expires_at_ms"])),
    }


def offer(row: dict[str, Any]) -> dict[str, Any]:
    """A free-minute offer: the new-client one or a promo code's, used on a reading or not."""
    return {
        "id": str(row["id"]),
        "source": row["source"],
        "redemption_id": None if row["redemption_id"] is None else str(row["redemption_id"]),
        "minutes": int(row["minutes"]),
        "max_cents_per_minute": int(row["max_cents_per_minute"]),
        "reading_id": None if row["reading_id"] is None else str(row["reading_id"]),
        "created_at": rfc3339(int(row["created_at_ms"])),
        "expires_at": rfc3339(int(row["expires_at_ms"])),
        "used_at": _time(row["used_at_ms"]),
    }


async def messages(rc: RequestContext, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The caller's own messages, decrypted; one that cannot be opened says so."""
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
