"""Advisors: becoming one, editing the profile, the public profile (the list
and search: search.py).

The reply for an advisor is built in one place (`advisor_view`, from the
columns in `ADVISOR_COLUMNS`), so every route answers the same shape.
"""

import json
from typing import Any

from . import config
from .clock import rfc3339
from .db import Database, UniqueViolation, sql
from .errors import Problem, bad_request, not_found
from .ids import new_id
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .users import etag, parse_if_match
from .validation import Int, ListOf, Obj, Str

# The fixed list in migrations/0001_identity.sql (a test keeps the two equal).
CATEGORIES: tuple[str, ...] = (
    "astrology",
    "career",
    "dreams",
    "love",
    "mediumship",
    "numerology",
    "spiritual",
    "tarot",
)
STATUSES: tuple[str, ...] = ("online", "offline", "busy")
MAX_CATEGORIES = len(CATEGORIES)

# Everything an advisor reply is made of: one row per advisor. Categories
# come as a JSON array from the (advisor_id) index, already sorted.
ADVISOR_COLUMNS = """
  a.user_id, a.headline, a.bio, a.rate_cents_per_minute, a.status, a.rating_count, a.rating_sum,
  a.rating_milli, a.version, a.created_at_ms, a.updated_at_ms, a.photo_sha256, u.display_name,
  (SELECT json_group_array(category) FROM
     (SELECT category FROM advisor_categories WHERE advisor_id = a.user_id ORDER BY category)) AS categories_json"""

_SELECT_ADVISOR = f"SELECT {ADVISOR_COLUMNS} FROM advisors a JOIN users u ON u.id = a.user_id WHERE a.user_id = ?"  # noqa: S608 - constant text
SELECT_ADVISOR = _SELECT_ADVISOR  # for other modules' batches (photos.py)


def rating_average(rating_sum: int, rating_count: int) -> float | None:
    return None if rating_count == 0 else round(rating_sum / rating_count, 2)


# The photo's URL carries a prefix of its SHA-256, so a new photo gets a new
# URL and the bytes behind one URL never change (photos.py serves such a
# request as immutable). Only the hash column is read: no join, no R2 call.
PHOTO_URL_HASH_CHARS = 16


def photo_url(advisor_id: int, photo_sha256: str | None) -> str | None:
    if photo_sha256 is None:
        return None
    return f"/v1/advisors/{advisor_id}/photo?v={photo_sha256[:PHOTO_URL_HASH_CHARS]}"


def advisor_view(row: dict[str, Any]) -> dict[str, Any]:
    """The one advisor reply shape (public profile, list items, own profile)."""
    return {
        "id": str(row["user_id"]),
        "display_name": row["display_name"],
        "headline": row["headline"],
        "bio": row["bio"],
        "categories": json.loads(row["categories_json"] or "[]"),
        "rate_cents_per_minute": int(row["rate_cents_per_minute"]),
        "status": row["status"],
        "rating_average": rating_average(int(row["rating_sum"]), int(row["rating_count"])),
        "rating_count": int(row["rating_count"]),
        "photo_url": photo_url(int(row["user_id"]), row["photo_sha256"]),
        "version": int(row["version"]),
        "created_at": rfc3339(row["created_at_ms"]),
        "updated_at": rfc3339(row["updated_at_ms"]),
    }


async def load_advisor(db: Database, advisor_id: int) -> dict[str, Any] | None:
    return await db.first(sql(_SELECT_ADVISOR, advisor_id))


def _check_rate(rc: RequestContext, rate: int) -> None:
    low, high = rc.settings.rate_min_cents_per_minute, rc.settings.rate_max_cents_per_minute
    if not low <= rate <= high:
        raise bad_request(f"'rate_cents_per_minute' must be between {low} and {high}.", "rate_cents_per_minute")


_CATEGORY_LIST = ListOf(
    Str(min_len=1, max_len=32, choices=CATEGORIES),
    min_items=1,
    max_items=MAX_CATEGORIES,
    description="Reading categories from the fixed list.",
)
_RATE = Int(
    low=config.RATE_MIN_CENTS_PER_MINUTE,
    high=config.RATE_MAX_CENTS_PER_MINUTE,
    description="Price per minute in cents (the configured bounds).",
)

ADVISOR_CREATE = Obj(
    {
        "headline": Str(min_len=1, max_len=120),
        "bio": Str(max_len=4000),
        "categories": _CATEGORY_LIST,
        "rate_cents_per_minute": _RATE,
    },
    required=("headline", "bio", "categories", "rate_cents_per_minute"),
)

ADVISOR_PATCH = Obj(
    {
        "headline": Str(min_len=1, max_len=120),
        "bio": Str(max_len=4000),
        "categories": _CATEGORY_LIST,
        "rate_cents_per_minute": _RATE,
        "status": Str(max_len=8, choices=STATUSES),
    },
    min_fields=1,
)


async def create_advisor(rc: RequestContext) -> Reply:
    body = await rc.parsed_body()
    _check_rate(rc, body["rate_cents_per_minute"])
    now_ms = rc.clock.now_ms()
    uid = rc.user_id
    # One batch: the profile, its categories and its earnings account exist
    # together or not at all. A second attempt fails on advisors' primary key.
    statements = [
        sql(
            """INSERT INTO advisors (user_id, headline, bio, rate_cents_per_minute, status, created_at_ms, updated_at_ms)
               VALUES (?, ?, ?, ?, 'offline', ?, ?)""",
            uid,
            body["headline"],
            body["bio"],
            body["rate_cents_per_minute"],
            now_ms,
            now_ms,
        ),
        sql(
            """INSERT INTO advisor_categories (category, advisor_id)
               SELECT value, ? FROM json_each(?)""",
            uid,
            json.dumps(body["categories"]),
        ),
        # (an earnings account left from earlier is kept: it may hold money)
        sql(
            """INSERT INTO accounts (id, kind, owner_user_id, created_at_ms)
               VALUES (?, 'advisor_earnings', ?, ?) ON CONFLICT DO NOTHING""",
            new_id(),
            uid,
            now_ms,
        ),
        sql(_SELECT_ADVISOR, uid),
    ]
    try:
        results = await rc.db.batch(statements)
    except UniqueViolation as exc:
        if "advisors.user_id" in exc.columns:
            raise Problem(409, "already_advisor", "Conflict", "You are already an advisor.") from None
        raise
    row = results[-1].rows[0]
    return Reply(advisor_view(row), 201, {"etag": etag(int(row["version"])), "location": f"/v1/advisors/{uid}"})


async def get_own_advisor(rc: RequestContext) -> Reply:
    row = await load_advisor(rc.db, rc.user_id)
    if row is None:
        raise not_found("advisor profile (become an advisor with POST /v1/advisors)")
    return Reply(advisor_view(row), headers={"etag": etag(int(row["version"]))})


_VERSION_IS = "EXISTS (SELECT 1 FROM advisors WHERE user_id = ? AND version = ?)"


async def patch_advisor(rc: RequestContext) -> Reply:
    expected = parse_if_match(rc.header("if-match"))
    changes = await rc.parsed_body()
    if "rate_cents_per_minute" in changes:
        _check_rate(rc, changes["rate_cents_per_minute"])
    uid = rc.user_id
    now_ms = rc.clock.now_ms()
    statements = []
    if "categories" in changes:
        # Guarded by the expected version and placed BEFORE the version bump:
        # the batch is one transaction, so they apply exactly when the UPDATE does.
        # Only the categories dropped and the ones added are written: each one
        # moves a row of the search listing (migration 0094's triggers).
        chosen = json.dumps(changes["categories"])
        statements += [
            sql(
                f"""DELETE FROM advisor_categories
                    WHERE advisor_id = ? AND category NOT IN (SELECT value FROM json_each(?)) AND {_VERSION_IS}""",  # noqa: S608 - constant
                uid,
                chosen,
                uid,
                expected,
            ),
            sql(
                f"""INSERT INTO advisor_categories (category, advisor_id)
                    SELECT value, ? FROM json_each(?) WHERE {_VERSION_IS}
                    ON CONFLICT DO NOTHING""",  # noqa: S608 - constant
                uid,
                chosen,
                uid,
                expected,
            ),
        ]
    statements += [
        sql(
            """UPDATE advisors
               SET headline = coalesce(?, headline), bio = coalesce(?, bio),
                   rate_cents_per_minute = coalesce(?, rate_cents_per_minute), status = coalesce(?, status),
                   version = version + 1, updated_at_ms = ?
               WHERE user_id = ? AND version = ?""",
            changes.get("headline"),
            changes.get("bio"),
            changes.get("rate_cents_per_minute"),
            changes.get("status"),
            now_ms,
            uid,
            expected,
        ),
        sql(_SELECT_ADVISOR, uid),
    ]
    results = await rc.db.batch(statements)
    row = results[-1].rows[0] if results[-1].rows else None
    if row is None:
        raise not_found("advisor profile (become an advisor with POST /v1/advisors)")
    if results[-2].changes == 0:  # (changes counts the listing rows its triggers wrote too)
        raise Problem(
            412,
            "version_conflict",
            "Precondition failed",
            "The advisor profile changed since you read it; fetch it again.",
        )
    return Reply(advisor_view(row), headers={"etag": etag(int(row["version"]))})


async def get_advisor(rc: RequestContext) -> Reply:
    row = await load_advisor(rc.db, rc.params["advisor_id"])
    if row is None:
        raise not_found("advisor")
    return Reply(advisor_view(row), headers={"etag": etag(int(row["version"]))})


SCHEMAS: dict[str, Any] = {
    "Advisor": {
        "type": "object",
        "required": [
            "id",
            "headline",
            "bio",
            "categories",
            "rate_cents_per_minute",
            "status",
            "rating_average",
            "rating_count",
            "photo_url",
            "version",
            "created_at",
            "updated_at",
        ],
        "properties": {
            "id": {"type": "string", "description": "The advisor's user id."},
            "display_name": {"type": ["string", "null"]},
            "headline": {"type": "string"},
            "bio": {"type": "string"},
            "categories": {"type": "array", "items": {"type": "string", "enum": list(CATEGORIES)}},
            "rate_cents_per_minute": {"type": "integer"},
            "status": {"type": "string", "enum": list(STATUSES)},
            "rating_average": {"type": ["number", "null"], "description": "Mean rating (1-5), null before any review."},
            "rating_count": {"type": "integer"},
            "photo_url": {
                "type": ["string", "null"],
                "description": "Path of the profile photo (GET it; changes when the photo does), null without one.",
            },
            "version": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
}

ROUTES = [
    Route(
        "POST",
        "/v1/advisors",
        create_advisor,
        "Become an advisor",
        primary=True,
        body=ADVISOR_CREATE,
        responses={201: "Advisor"},
        problems=(409,),
        tag="advisors",
    ),
    Route(
        "GET",
        "/v1/advisors/me",
        get_own_advisor,
        "Your own advisor profile (with ETag)",
        primary=True,
        responses={200: "Advisor"},
        tag="advisors",
    ),
    Route(
        "PATCH",
        "/v1/advisors/me",
        patch_advisor,
        "Edit your advisor profile, rate or status (If-Match: <version>)",
        primary=True,
        body=ADVISOR_PATCH,
        if_match=True,
        responses={200: "Advisor"},
        problems=(412, 428),
        tag="advisors",
    ),
    Route(
        "GET",
        "/v1/advisors/{advisor_id:id}",
        get_advisor,
        "An advisor's public profile",
        auth="none",
        responses={200: "Advisor"},
        tag="advisors",
    ),
]
