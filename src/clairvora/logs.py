"""Structured JSON logs with one redaction step.

Everything logged goes through `redact`, which drops values of sensitive keys
and masks token-, card- and email-shaped strings anywhere in the record.
"""

import json
import re
from typing import Any

_SENSITIVE_KEYS = frozenset({
    "authorization", "cookie", "set-cookie", "token", "access_token", "id_token", "jwt",
    "password", "secret", "signature", "x-anet-signature", "transaction_key", "transactionkey",
    "data_value", "datavalue", "opaque_data", "opaquedata", "card_number", "cardnumber",
    "body", "comment", "message", "messages", "email", "display_name", "idempotency-key",
})
_PATTERNS = (
    (re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer [redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[redacted-email]"),
    (re.compile(r"\b(?:\d[ -]?){13,19}\b"), "[redacted-number]"),
    (re.compile(r"(?i)sha512=[0-9a-f]{16,}"), "sha512=[redacted]"),
    (re.compile(r"\btok_[A-Za-z0-9_]+"), "[redacted-token]"),
)
MAX_LOG_STRING_CHARS = 500


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
