"""Free-minute offers: N free minutes, made promo credit when a reading is accepted.

- The new-client offer: NEW_CLIENT_FREE_MINUTES on the client's first accepted
  reading (0: off), only for a client who made a card deposit when
  NEW_CLIENT_OFFER_REQUIRES_DEPOSIT is on. Once per client: a partial UNIQUE
  index, and a trigger that re-checks "first accepted reading" and the deposit
  inside the accept's batch (migration 0091), so a racing second accept of
  another reading cannot take it twice.
- A free-minutes promo code (promo_redemptions.py): its redemption leaves a pending
  offer; the client's next accepted reading uses it while it is valid.

One offer per reading: the new-client offer when the client is eligible (it
exists only now), else the pending offer that expires first. The credit is the
offered minutes at the reading's rate, at most the offer's cap per minute, and
it expires when the offered minutes are over (accepted_at + minutes x period):
free minutes left unused when the reading ends do not carry over.

The accept batch (reading_transitions.py) holds, in order: the accept, the offer row (made
or used), the grant (promo.grant_statements) and minute 1, which draws on it
first. Any of it refused by the SQL rolls the whole accept back.
"""

import json
from dataclasses import dataclass
from typing import Any, Literal

from . import charges, promo
from .config import Settings
from .db import Statement, sql
from .ids import new_id

# Read with a reading only while it is requested (the CASE): what an accept needs
# to choose an offer. SQL fragments over the reading `r`, constant text.
OFFER_COLUMNS = """,
  CASE WHEN r.status = 'requested' THEN
    (SELECT json_group_array(json_array(o.id, o.minutes, o.max_cents_per_minute, o.expires_at_ms))
     FROM (SELECT id, minutes, max_cents_per_minute, expires_at_ms
           FROM free_minute_offers INDEXED BY free_minute_offers_pending
           WHERE client_id = r.client_id AND reading_id IS NULL ORDER BY expires_at_ms, id LIMIT 5) o) END AS offers_json,
  CASE WHEN r.status = 'requested' THEN json_array(
    EXISTS (SELECT 1 FROM readings p WHERE p.client_id = r.client_id AND p.accepted_at_ms IS NOT NULL),
    EXISTS (SELECT 1 FROM free_minute_offers o WHERE o.client_id = r.client_id AND o.source = 'new_client'),
    EXISTS (SELECT 1 FROM payments p WHERE p.user_id = r.client_id AND p.status IN ('approved', 'refunded')))
  END AS new_client_json"""


@dataclass(frozen=True, slots=True)
class Offer:
    id: int
    source: Literal["new_client", "promo_code"]
    minutes: int
    max_cents_per_minute: int


def choose(reading: dict[str, Any], settings: Settings, now_ms: int) -> Offer | None:
    """The offer an accept at `now_ms` applies (the SQL re-checks eligibility)."""
    if reading.get("new_client_json") and settings.new_client_free_minutes > 0:
        accepted_before, had_offer, deposited = json.loads(reading["new_client_json"])
        if not accepted_before and not had_offer and (deposited or not settings.new_client_offer_requires_deposit):
            return Offer(
                new_id(), "new_client", settings.new_client_free_minutes, settings.new_client_max_cents_per_minute
            )
    for offer_id, minutes, cap, expires_at_ms in json.loads(reading.get("offers_json") or "[]"):
        if int(expires_at_ms) > now_ms:
            return Offer(int(offer_id), "promo_code", int(minutes), int(cap))
    return None


def value_cents(offer: Offer, rate: int) -> int:
    return offer.minutes * min(rate, offer.max_cents_per_minute)


def accept_statements(offer: Offer, reading: dict[str, Any], settings: Settings, now_ms: int) -> promo.NewGrant:
    """The offer row (made or used) and its grant, for the accept's batch, after
    the accept itself (reading: as the accept leaves it)."""
    client_id, reading_id = int(reading["client_id"]), int(reading["id"])
    expires_at_ms = now_ms + offer.minutes * int(reading["billing_period_seconds"]) * 1000
    offer_row: Statement
    if offer.source == "new_client":
        offer_row = sql(
            """INSERT INTO free_minute_offers (id, client_id, source, minutes, max_cents_per_minute, requires_deposit,
                                               created_at_ms, expires_at_ms, reading_id, used_at_ms)
               VALUES (?, ?, 'new_client', ?, ?, ?, ?, ?, ?, ?)""",
            offer.id,
            client_id,
            offer.minutes,
            offer.max_cents_per_minute,
            1 if settings.new_client_offer_requires_deposit else 0,
            now_ms,
            expires_at_ms,
            reading_id,
            now_ms,
        )
    else:
        # Conditional: an offer used meanwhile stays as it is, and the grant below is refused for it.
        offer_row = sql(
            """UPDATE free_minute_offers SET reading_id = ?, used_at_ms = ?
               WHERE id = ? AND client_id = ? AND reading_id IS NULL""",
            reading_id,
            now_ms,
            offer.id,
            client_id,
        )
    grant = promo.grant_statements(
        client_id=client_id,
        amount_cents=value_cents(offer, int(reading["rate_cents_per_minute"])),
        now_ms=now_ms,
        expires_at_ms=expires_at_ms,
        source="free_minutes",
        offer_id=offer.id,
        reading_id=reading_id,
    )
    return promo.NewGrant(grant.grant, grant.transfer_id, [offer_row, *grant.statements])


# The codes an accept may meet when an offer was chosen from a stale read: the
# client's offer was taken or used meanwhile, or the grants moved.
RETRY_CODES = frozenset({"offer_not_eligible", "offer_not_usable", "promo_grant_mismatch"})


def accept_charges(reading: dict[str, Any], settings: Settings, now_ms: int, by_user_id: int) -> list[Statement]:
    """What an accept adds to its batch after the accept itself: the offer it
    applies (if any) with its grant, then minute 1, drawn on promo credit first.
    `reading` is the row as read, with the accept's changes applied."""
    offer = choose(reading, settings, now_ms)
    grants = promo.parse_grants(reading.get("promo_grants_json"))
    statements: list[Statement] = []
    if offer is not None:
        made = accept_statements(offer, reading, settings, now_ms)
        statements += made.statements
        grants.append(made.grant)
    pay = charges.first_minute_pay(reading, grants)
    return statements + charges.charge_statements(reading, 1, now_ms, by_user_id, pay)
