"""Reviews: one per ended, paid reading, by its client; the advisor's rating
aggregates move in the same batch, conditionally in SQL.

"Paid" means paid with real money: at least one minute the wallet paid some
of. Minutes paid wholly by promo credit (free minutes, promo codes,
satisfaction credit) do not count, so a free reading cannot be reviewed and
reviews stay the word of clients who paid."""

from typing import Any

from .clock import rfc3339
from .db import UniqueViolation, sql
from .errors import Problem, conflict, forbidden, not_found
from .ids import new_id
from .openapi import page_schema
from .readings import load_participant, parse_time_cursor, time_cursor
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import Int, Obj, Str, page_query

MAX_COMMENT_CHARS = 2000
DEFAULT_PAGE = 20
MAX_PAGE = 100

REVIEW_CREATE = Obj(
    {
        "rating": Int(low=1, high=5, description="1 (poor) to 5 (excellent)."),
        "comment": Str(max_len=MAX_COMMENT_CHARS, nullable=True),
    },
    required=("rating",),
)

# Inserted only for the caller's own ended reading with at least one minute the
# wallet paid (some of).
_INSERT_REVIEW = """
INSERT INTO reviews (id, reading_id, client_id, advisor_id, rating, comment, created_at_ms)
SELECT ?, r.id, r.client_id, r.advisor_id, ?, ?, ?
FROM readings r
WHERE r.id = ? AND r.client_id = ? AND r.status = 'ended' AND r.billed_minutes >= 1
  AND EXISTS (SELECT 1 FROM reading_charges c WHERE c.reading_id = r.id AND c.promo_cents < c.amount_cents)"""

# Moves only if the review above was inserted (its id names the advisor). The
# right-hand sides see the row before the update, so the average is exact. D1
# binds a number as REAL, so the rating is cast: the division stays an integer
# one (a REAL quotient would store 4666.67 in rating_milli, and the search sorts
# and pages on it).
_ADD_RATING = """
UPDATE advisors
SET rating_count = rating_count + 1,
    rating_sum = rating_sum + ?,
    rating_milli = (rating_sum + CAST(? AS INTEGER)) * 1000 / (rating_count + 1)
WHERE user_id = (SELECT advisor_id FROM reviews WHERE id = ?)"""


_COLUMNS = """v.id, v.reading_id, v.advisor_id, v.rating, v.comment, v.created_at_ms,
  u.display_name AS client_display_name"""
_ONE = f"SELECT {_COLUMNS} FROM reviews v JOIN users u ON u.id = v.client_id WHERE v.id = ?"  # noqa: S608 - constant


def review_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "reading_id": str(row["reading_id"]),
        "advisor_id": str(row["advisor_id"]),
        "rating": int(row["rating"]),
        "comment": row["comment"],
        "client_display_name": row.get("client_display_name"),
        "created_at": rfc3339(row["created_at_ms"]),
    }


async def post_review(rc: RequestContext) -> Reply:
    body = await rc.parsed_body()
    reading_id, uid = rc.params["reading_id"], rc.user_id
    review_id = new_id()
    now_ms = rc.clock.now_ms()
    comment = body.get("comment") or None
    try:
        inserted, rated, created = await rc.db.batch(
            [
                sql(_INSERT_REVIEW, review_id, body["rating"], comment, now_ms, reading_id, uid),
                sql(_ADD_RATING, body["rating"], body["rating"], review_id),
                sql(_ONE, review_id),
            ]
        )
    except UniqueViolation as exc:
        if "reviews.reading_id" in exc.columns:
            raise conflict("already_reviewed", "This reading has already been reviewed.") from None
        raise
    if inserted.changes != 1:
        reading = await load_participant(rc.db, reading_id, uid)  # 404 for anyone else
        if int(reading["client_id"]) != uid:
            raise forbidden("Only the reading's client may review it.")
        if reading["status"] != "ended":
            raise Problem(
                409,
                "reading_not_ended",
                "Conflict",
                f"The reading is {reading['status']}; reviews come after an ended reading.",
                extra={"reading_status": reading["status"]},
            )
        raise Problem(
            409,
            "reading_not_paid",
            "Conflict",
            "Only a reading with at least one minute paid from the wallet can be reviewed "
            "(minutes paid by promo credit do not count).",
        )
    assert rated.changes >= 1, "the rating aggregates move with the review"  # (+ the listing rows it moved)
    return Reply(review_view(created.rows[0]), 201)


_PAGE = """
SELECT v.id, v.reading_id, v.advisor_id, v.rating, v.comment, v.created_at_ms, u.display_name AS client_display_name
FROM reviews v JOIN users u ON u.id = v.client_id
WHERE v.advisor_id = ? AND (v.created_at_ms, v.id) < (?, ?)
ORDER BY v.created_at_ms DESC, v.id DESC
LIMIT ?"""

REVIEW_LIST_QUERY = page_query(cursor_max_chars=40, max_page=MAX_PAGE, default_page=DEFAULT_PAGE)


async def list_reviews(rc: RequestContext) -> Reply:
    query = rc.parsed_query()
    limit = query.get("limit", DEFAULT_PAGE)
    before_ms, before_id = parse_time_cursor(query.get("cursor"))
    advisor_id = rc.params["advisor_id"]
    result = await rc.db.all(sql(_PAGE, advisor_id, before_ms, before_id, limit + 1))
    if not result.rows and await rc.db.first(sql("SELECT 1 FROM advisors WHERE user_id = ?", advisor_id)) is None:
        raise not_found("advisor")
    rows = result.rows[:limit]
    next_cursor = None
    if len(result.rows) > limit:
        next_cursor = time_cursor(int(rows[-1]["created_at_ms"]), int(rows[-1]["id"]))
    return Reply({"items": [review_view(r) for r in rows], "next_cursor": next_cursor})


_REVIEW_PROPS = {
    "id": {"type": "string"},
    "reading_id": {"type": "string"},
    "advisor_id": {"type": "string"},
    "rating": {"type": "integer", "minimum": 1, "maximum": 5},
    "comment": {"type": ["string", "null"], "maxLength": MAX_COMMENT_CHARS},
    "client_display_name": {"type": ["string", "null"]},
    "created_at": {"type": "string", "format": "date-time"},
}

SCHEMAS: dict[str, Any] = {
    "Review": {"type": "object", "required": list(_REVIEW_PROPS), "properties": _REVIEW_PROPS},
    "ReviewList": page_schema("Review"),
}

ROUTES = [
    Route(
        "POST",
        "/v1/readings/{reading_id:id}/review",
        post_review,
        "Client: review an ended, paid reading (once)",
        primary=True,
        body=REVIEW_CREATE,
        responses={201: "Review"},
        problems=(403, 409),
        tag="reviews",
    ),
    Route(
        "GET",
        "/v1/advisors/{advisor_id:id}/reviews",
        list_reviews,
        "An advisor's reviews, newest first",
        auth="none",
        query=REVIEW_LIST_QUERY,
        responses={200: "ReviewList"},
        tag="reviews",
    ),
]
