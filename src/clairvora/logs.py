"""Structured JSON logs with one redaction step.

Everything logged goes through `redact`, which drops values of sensitive keys
and masks token-, card- and email-shaped strings anywhere in the record.
"""

import json
import re
from typing import Any

_SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "cookie",
        "set-cookie",
        "token",
        "access_token",
        "id_token",
        "jwt",
        "password",
        "secret",
        "signature",
        "x-anet-signature",
        "transaction_key",
        "transactionkey",
        "data_value",
        "datavalue",
        "opaque_data",
        "opaquedata",
        "card_number",
        "cardnumber",
        "body",
        "comment",
        "message",
        "messages",
        "email",
        "display_name",
        "idempotency-key",
        "card_code",
        "cardcode",
        "cvv",
        "cvc",
        "expiration_date",
        "expirationdate",
        "receiver",
        "client_secret",
        "paypal-transmission-sig",
    }
)
_PATTERNS = (
    (re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer [redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[redacted-email]"),
    (re.compile(r"(?i)sha512=[0-9a-f]{16,}"), "sha512=[redacted]"),
    (re.compile(r"\btok_[A-Za-z0-9_]+"), "[redacted-token]"),
)
# 13-19 digits, optionally grouped by spaces or dashes: a card number when the
# Luhn check passes (every real card number does). Our 52-bit ids and ms
# timestamps are 13-16 digits too; the check keeps ~90% of them readable.
_CARD_RE = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
MAX_LOG_STRING_CHARS = 500


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group())
    return "[redacted-card]" if luhn_valid(digits) else match.group()


def redact(value: Any, key: str | None = None) -> Any:
    if key is not None and key.lower() in _SENSITIVE_KEYS:
        return "[redacted]"
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
        value = _CARD_RE.sub(_mask_card, value)
        return value[:MAX_LOG_STRING_CHARS]
    return value


def log(level: str, event: str, **fields: Any) -> None:
    record = {"level": level, "event": event, **fields}
    print(json.dumps(redact(record), separators=(",", ":"), default=str))


def info(event: str, **fields: Any) -> None:
    log("info", event, **fields)


def warning(event: str, **fields: Any) -> None:
    log("warning", event, **fields)


def error(event: str, **fields: Any) -> None:
    log("error", event, **fields)
