"""Typed settings from the Worker's vars and secrets, read once per env object.

workerd hands every request of an isolate the same env object, and vars and
secrets only change with a new deployment (new isolates), so `Settings.of(env)`
parses them once per env and keeps the result (reading 29 values through the
SDK's env wrapper took ~0.12 ms a request; bench/py_profile.py). A request whose
env is another object (the tests' per-request var overrides) gets its own."""

from dataclasses import dataclass
from typing import Any

from .errors import Problem


def _var(env: Any, name: str, default: str | None = None) -> str | None:
    value = getattr(env, name, None)
    if value is None or not isinstance(value, str):
        return default
    return value


def _int(env: Any, name: str, default: int, low: int, high: int) -> int:
    raw = _var(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem(500, "misconfigured", "Server misconfigured", f"var {name} is not an integer") from None
    if not low <= value <= high:
        raise Problem(500, "misconfigured", "Server misconfigured", f"var {name} is outside {low}..{high}")
    return value


# Policy bounds that bodies are validated against. The OpenAPI document
# publishes these numbers (the shapes use them), so every environment's vars
# must equal them (tooling_tests/test_config_contract.py): a schema-valid amount
# is then never refused.
DEPOSIT_MIN_CENTS = 500
DEPOSIT_MAX_CENTS = 50000
RATE_MIN_CENTS_PER_MINUTE = 50
RATE_MAX_CENTS_PER_MINUTE = 2000


# The longest a session token may live (exp - iat, and exp - now), when the var
# is not set. Clerk session tokens live 60 s (refreshed every 50 s); a day is
# generous for any Clerk JWT template and still refuses a token made to last
# forever. Each environment sets MAX_TOKEN_LIFETIME_SECONDS in wrangler.toml.
MAX_TOKEN_LIFETIME_SECONDS = 86400
MAX_TOKEN_LIFETIME_BOUNDS = (60, 366 * 86400)

# RATE_LIMITS: "enforce" refuses a request over a limit (429); "observe" counts it
# through the same bindings and lets it through, and is honoured in local
# configuration only (ratelimits.py). Anything else is a misconfiguration.
RATE_LIMIT_MODES = ("enforce", "observe")

# Who bears a chargeback's advisor side (chargebacks.py): "platform" (the
# platform covers the advisors' share of the disputed money) or "clawback"
# (taken back from the advisors' pending earnings, at most what they hold).
CHARGEBACK_ADVISOR_SIDES = ("platform", "clawback")
# Authorize.Net refunds a settled transaction within 120 days of its settlement
# (docs/PAYMENTS.md); merchants with Expanded Credit-Return Capabilities get longer.
REFUND_WINDOW_DAYS = 120
REFUND_WINDOW_DAYS_BOUNDS = (1, 180)


def _choice(env: Any, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _var(env, name, default) or default
    if value not in choices:
        raise Problem(500, "misconfigured", "Server misconfigured", f"var {name} is not one of {choices}")
    return value


def _switch(env: Any, name: str, default: bool) -> bool:
    raw = _var(env, name)
    if raw is None:
        return default
    if raw not in ("on", "off"):
        raise Problem(500, "misconfigured", "Server misconfigured", f"var {name} is neither 'on' nor 'off'")
    return raw == "on"


def _rate_limits_enforced(env: Any, environment: str) -> bool:
    mode = _var(env, "RATE_LIMITS", "enforce")
    if mode not in RATE_LIMIT_MODES:
        raise Problem(500, "misconfigured", "Server misconfigured", f"var RATE_LIMITS is not one of {RATE_LIMIT_MODES}")
    return environment != "local" or mode == "enforce"


# js_id of an env object -> (that object, its Settings). Holding the object keeps its
# id from being reused by another; a few entries cover the tests' var overrides.
_BY_ENV: dict[int, tuple[Any, "Settings"]] = {}
MAX_CACHED_ENVS = 8


@dataclass(frozen=True, slots=True)
class Settings:
    environment: str
    test_hooks_allowed: bool
    server_timing: bool
    server_timing_durations: bool
    max_body_bytes: int
    clerk_issuer: str
    clerk_authorized_parties: tuple[str, ...]
    clerk_jwt_key_pem: str | None
    clock_skew_s: int
    max_token_lifetime_s: int
    billing_period_s: int
    platform_fee_bps: int
    heartbeat_timeout_s: int
    request_timeout_s: int
    deposit_min_cents: int
    deposit_max_cents: int
    rate_min_cents_per_minute: int
    rate_max_cents_per_minute: int
    anet_endpoint: str
    anet_timeout_ms: int
    anet_login_id: str | None
    anet_transaction_key: str | None
    anet_signature_key: str | None
    message_keys: str | None
    rate_limits_enforced: bool
    # Card-testing defence (deposit_attempts.py, migration 0060): failures per user / per
    # client IP within the window that start a cool-off of deposits.
    deposit_failures_per_user: int
    deposit_failures_per_ip: int
    deposit_failure_window_s: int
    deposit_cooloff_s: int
    # The cron opens the close of last month's ledger period by itself (periods.py);
    # "manual": only an admin opens one (locally: the test suite shares one D1).
    ledger_period_close_auto: bool
    # Chat of an ended reading moves to R2 this long after the end (chat_archive_job.py).
    message_archive_delay_s: int
    # Promotional credit (promo.py, migration 0091).
    # The advisor's share of a promo-paid minute, in bps of the rate (unset: the
    # normal share, 10000 - PLATFORM_FEE_BPS); the rest of a promo-paid cent goes
    # back to the promotions account: the platform bears the promotion.
    promo_advisor_share_bps: int
    promo_refund_credit_days: int  # how long promo credit a reading refund gave back stays valid
    # The new-client offer: this many free minutes on the first accepted reading
    # (0: off), each worth the reading's rate but at most the cap; with
    # requires_deposit only for a client who made a card deposit.
    new_client_free_minutes: int
    new_client_max_cents_per_minute: int
    new_client_offer_requires_deposit: bool
    # Satisfaction credit (satisfaction.py): a claim within the window after the
    # reading ended, at most max_cents and claims_per_period per period_days,
    # paid as promo credit valid credit_days; clawback from pending earnings.
    satisfaction_window_s: int
    satisfaction_max_cents: int
    satisfaction_claims_per_period: int
    satisfaction_period_days: int
    satisfaction_credit_days: int
    satisfaction_clawback: bool
    # Refunds of unused funds (wallet_refunds.py) and chargebacks (chargebacks.py).
    refund_window_days: int
    chargeback_advisor_side: str
    # Advisor payouts through PayPal Payouts (paypal.py, payouts.py, clearance.py).
    paypal_endpoint: str
    paypal_timeout_ms: int
    paypal_client_id: str | None
    paypal_client_secret: str | None
    paypal_webhook_id: str | None
    payout_keys: str | None
    # Earnings stay pending this long before they can be paid out (refunds and chargebacks).
    earnings_hold_days: int
    # The smallest payout an advisor may ask for.
    payout_min_cents: int
    # Automatic payouts: the whole cleared balance once it reaches this, at most
    # once per interval since the advisor's last payout.
    payout_auto_min_cents: int
    payout_auto_interval_days: int

    @classmethod
    def of(cls, env: Any) -> "Settings":
        """`from_env`, once per env object (the JS env under the SDK's wrapper)."""
        raw = getattr(env, "_env", env)
        key = getattr(raw, "js_id", None)
        if not isinstance(key, int):
            return cls.from_env(env)
        cached = _BY_ENV.get(key)
        if cached is not None:
            return cached[1]
        settings = cls.from_env(env)
        if len(_BY_ENV) >= MAX_CACHED_ENVS:
            del _BY_ENV[next(iter(_BY_ENV))]
        _BY_ENV[key] = (raw, settings)
        return settings

    @classmethod
    def from_env(cls, env: Any) -> "Settings":
        environment = _var(env, "ENVIRONMENT", "local") or "local"
        platform_fee_bps = _int(env, "PLATFORM_FEE_BPS", 3000, 0, 10000)
        parties = _var(env, "CLERK_AUTHORIZED_PARTIES", "") or ""
        return cls(
            environment=environment,
            # Test hooks (injected clock, D1 faults) exist only in local configuration.
            test_hooks_allowed=environment == "local" and _var(env, "TEST_HOOKS") == "allowed",
            # "on": D1 calls and rows; "timing": also local durations (d1;dur, py;dur); "off": nothing.
            server_timing=_var(env, "SERVER_TIMING", "on") in ("on", "timing"),
            server_timing_durations=_var(env, "SERVER_TIMING", "on") == "timing",
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 65536, 1024, 4 * 1024 * 1024),
            clerk_issuer=_var(env, "CLERK_ISSUER", "") or "",
            clerk_authorized_parties=tuple(p.strip() for p in parties.split(",") if p.strip()),
            clerk_jwt_key_pem=_var(env, "CLERK_JWT_KEY"),
            clock_skew_s=_int(env, "CLOCK_SKEW_SECONDS", 5, 0, 60),
            max_token_lifetime_s=_int(
                env, "MAX_TOKEN_LIFETIME_SECONDS", MAX_TOKEN_LIFETIME_SECONDS, *MAX_TOKEN_LIFETIME_BOUNDS
            ),
            billing_period_s=_int(env, "BILLING_PERIOD_SECONDS", 60, 1, 3600),
            platform_fee_bps=platform_fee_bps,
            heartbeat_timeout_s=_int(env, "HEARTBEAT_TIMEOUT_SECONDS", 120, 1, 3600),
            request_timeout_s=_int(env, "REQUEST_TIMEOUT_SECONDS", 120, 1, 86400),
            deposit_min_cents=_int(env, "DEPOSIT_MIN_CENTS", DEPOSIT_MIN_CENTS, 1, 10_000_000),
            deposit_max_cents=_int(env, "DEPOSIT_MAX_CENTS", DEPOSIT_MAX_CENTS, 1, 10_000_000),
            rate_min_cents_per_minute=_int(env, "RATE_MIN_CENTS_PER_MINUTE", RATE_MIN_CENTS_PER_MINUTE, 1, 100_000),
            rate_max_cents_per_minute=_int(env, "RATE_MAX_CENTS_PER_MINUTE", RATE_MAX_CENTS_PER_MINUTE, 1, 100_000),
            anet_endpoint=_var(env, "ANET_ENDPOINT", "") or "",
            anet_timeout_ms=_int(env, "ANET_TIMEOUT_MS", 8000, 100, 30000),
            anet_login_id=_var(env, "ANET_API_LOGIN_ID"),
            anet_transaction_key=_var(env, "ANET_TRANSACTION_KEY"),
            anet_signature_key=_var(env, "ANET_SIGNATURE_KEY"),
            message_keys=_var(env, "MESSAGE_KEYS"),
            rate_limits_enforced=_rate_limits_enforced(env, environment),
            deposit_failures_per_user=_int(env, "DEPOSIT_FAILURES_PER_USER", 5, 1, 1000),
            deposit_failures_per_ip=_int(env, "DEPOSIT_FAILURES_PER_IP", 10, 1, 10000),
            deposit_failure_window_s=_int(env, "DEPOSIT_FAILURE_WINDOW_SECONDS", 3600, 60, 30 * 86400),
            deposit_cooloff_s=_int(env, "DEPOSIT_COOLOFF_SECONDS", 3600, 60, 30 * 86400),
            ledger_period_close_auto=_choice(env, "LEDGER_PERIOD_CLOSE", "auto", ("auto", "manual")) == "auto",
            message_archive_delay_s=_int(env, "MESSAGE_ARCHIVE_DELAY_SECONDS", 3600, 0, 30 * 86400),
            promo_advisor_share_bps=_int(env, "PROMO_ADVISOR_SHARE_BPS", 10000 - platform_fee_bps, 0, 10000),
            promo_refund_credit_days=_int(env, "PROMO_REFUND_CREDIT_DAYS", 30, 1, 366),
            new_client_free_minutes=_int(env, "NEW_CLIENT_FREE_MINUTES", 0, 0, 60),
            new_client_max_cents_per_minute=_int(env, "NEW_CLIENT_MAX_CENTS_PER_MINUTE", 300, 1, 100_000),
            new_client_offer_requires_deposit=_switch(env, "NEW_CLIENT_OFFER_REQUIRES_DEPOSIT", True),
            satisfaction_window_s=_int(env, "SATISFACTION_WINDOW_SECONDS", 72 * 3600, 60, 90 * 86400),
            satisfaction_max_cents=_int(env, "SATISFACTION_MAX_CENTS", 2500, 1, 100_000),
            satisfaction_claims_per_period=_int(env, "SATISFACTION_CLAIMS_PER_PERIOD", 1, 1, 100),
            satisfaction_period_days=_int(env, "SATISFACTION_PERIOD_DAYS", 30, 1, 366),
            satisfaction_credit_days=_int(env, "SATISFACTION_CREDIT_DAYS", 30, 1, 366),
            satisfaction_clawback=_switch(env, "SATISFACTION_CLAWBACK", False),
            refund_window_days=_int(env, "REFUND_WINDOW_DAYS", REFUND_WINDOW_DAYS, *REFUND_WINDOW_DAYS_BOUNDS),
            chargeback_advisor_side=_choice(env, "CHARGEBACK_ADVISOR_SIDE", "platform", CHARGEBACK_ADVISOR_SIDES),
            paypal_endpoint=(_var(env, "PAYPAL_ENDPOINT", "") or "").rstrip("/"),
            paypal_timeout_ms=_int(env, "PAYPAL_TIMEOUT_MS", 8000, 100, 30000),
            paypal_client_id=_var(env, "PAYPAL_CLIENT_ID"),
            paypal_client_secret=_var(env, "PAYPAL_CLIENT_SECRET"),
            paypal_webhook_id=_var(env, "PAYPAL_WEBHOOK_ID"),
            payout_keys=_var(env, "PAYOUT_KEYS"),
            earnings_hold_days=_int(env, "EARNINGS_HOLD_DAYS", 7, 0, 365),
            payout_min_cents=_int(env, "PAYOUT_MIN_CENTS", 1000, 1, 10_000_000),
            payout_auto_min_cents=_int(env, "PAYOUT_AUTO_MIN_CENTS", 5000, 1, 10_000_000),
            payout_auto_interval_days=_int(env, "PAYOUT_AUTO_INTERVAL_DAYS", 7, 1, 365),
        )
