"""Row types of migration 0091 (promotional credit), joined into schema.TABLES
(kept apart so schema.py stays one screenful per part; same rules: the drift
test compares them with the migrated D1)."""

from typing import Literal, TypedDict


class PromoCodeRow(TypedDict):
    id: int
    code: str
    credit_cents: int | None
    free_minutes: int | None
    max_cents_per_minute: int | None
    credit_valid_days: int
    valid_from_ms: int
    valid_until_ms: int
    max_redemptions: int
    per_client_limit: int
    redemptions_count: int
    note: str | None
    disabled_at_ms: int | None
    created_by_user_id: int
    created_at_ms: int


class PromoRedemptionRow(TypedDict):
    id: int
    promo_code_id: int
    client_id: int
    redeemed_at_ms: int


class FreeMinuteOfferRow(TypedDict):
    id: int
    client_id: int
    source: Literal["new_client", "promo_code"]
    redemption_id: int | None
    minutes: int
    max_cents_per_minute: int
    requires_deposit: int
    created_at_ms: int
    expires_at_ms: int
    reading_id: int | None
    used_at_ms: int | None


class SatisfactionClaimRow(TypedDict):
    id: int
    reading_id: int
    client_id: int
    advisor_id: int
    origin: Literal["client", "admin"]
    amount_cents: int
    clawback_cents: int
    reason: str
    window_seconds: int | None
    max_cents: int | None
    period_days: int | None
    claims_per_period: int | None
    requested_by_user_id: int
    created_at_ms: int


class PromoGrantRow(TypedDict):
    id: int
    client_id: int
    source: Literal["promo_code", "free_minutes", "satisfaction", "reading_refund"]
    transfer_id: int
    redemption_id: int | None
    offer_id: int | None
    claim_id: int | None
    reading_id: int | None
    amount_cents: int
    remaining_cents: int
    expired_cents: int
    granted_at_ms: int
    expires_at_ms: int
    last_transfer_id: int


PROMO_TABLES: dict[str, type] = {
    "promo_codes": PromoCodeRow,
    "promo_redemptions": PromoRedemptionRow,
    "free_minute_offers": FreeMinuteOfferRow,
    "satisfaction_claims": SatisfactionClaimRow,
    "promo_grants": PromoGrantRow,
}
