"""Export and erasure of one's own data: the routes and their reply schemas.
`GET /v1/me/export` is data_export.py (its items: export_views.py), `DELETE
/v1/me` is erasure.py; docs/PRIVACY.md says what each holds, removes and keeps,
and why."""

from typing import Any

from .data_export import FORMAT, SECTIONS, export_me
from .erasure import erase_me
from .routing import Route

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
            *SECTIONS,
            "readings",
            "payout_method",
        ],
        "properties": {
            "format": {"type": "string", "enum": [FORMAT]},
            "generated_at": {"type": "string", "format": "date-time"},
            "truncated": {"type": "boolean"},
            "limits": {"type": "object", "additionalProperties": {"type": "integer"}},
            "profile": {"type": "object"},
            "advisor": {"type": ["object", "null"]},
            "accounts": {"type": "array", "items": {"type": "object"}},
            **{name: _SECTION for name in SECTIONS},
            "payout_method": {
                "type": ["object", "null"],
                "description": "as GET /v1/advisors/me/payout-method shows it (masked); null without an advisor profile",
            },
            "readings": {
                "type": "object",
                "required": ["as_client", "as_advisor"],
                "properties": {"as_client": _SECTION, "as_advisor": _SECTION},
            },
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
