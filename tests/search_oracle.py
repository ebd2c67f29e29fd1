"""The advisor search as it was before the listing (migration 0094), kept as
the reference the new one must agree with, page for page and cursor for
cursor (test_search.py). Copied from advisors.py as of the commit before the
listing: it joins advisors, users and advisor_categories and walks whole
categories, which is why it was replaced; it is still the definition of the
answer. Only the SQL and the paging; the reply shape is advisors.advisor_view."""

import base64
import json
from typing import Any

from clairvora.advisors import advisor_view
from clairvora.db import Database, sql

MAX_RATE_QUERY = 100_000

ADVISOR_COLUMNS = """
  a.user_id, a.headline, a.bio, a.rate_cents_per_minute, a.status, a.rating_count, a.rating_sum,
  a.rating_milli, a.version, a.created_at_ms, a.updated_at_ms, a.photo_sha256, u.display_name,
  (SELECT json_group_array(category) FROM
     (SELECT category FROM advisor_categories WHERE advisor_id = a.user_id ORDER BY category)) AS categories_json"""

_FROM_PLAIN = "FROM advisors a JOIN users u ON u.id = a.user_id"
_FROM_CATEGORY = """FROM advisor_categories c CROSS JOIN advisors a ON a.user_id = c.advisor_id
  JOIN users u ON u.id = a.user_id"""
_CATEGORY_WHERE = "c.category IN (SELECT value FROM json_each(:categories))"
_STATUS_WHERE = "a.status = :status"
_RATE_WHERE = {
    "price": "a.rate_cents_per_minute BETWEEN :min_rate AND :max_rate",
    "rating": "+a.rate_cents_per_minute BETWEEN :min_rate AND :max_rate",
}
_AFTER = {
    "price": "(a.rate_cents_per_minute, a.user_id) > (:after_key, :after_id)",
    "rating": "a.rating_milli <= :after_key AND (a.rating_milli < :after_key OR a.user_id > :after_id)",
}
_ORDER = {
    "price": "ORDER BY a.rate_cents_per_minute, a.user_id",
    "rating": "ORDER BY a.rating_milli DESC, a.user_id",
}
_SORT_KEY = {"price": "rate_cents_per_minute", "rating": "rating_milli"}
_NOT_ERASED = "u.erased_at_ms IS NULL"


def _list_sql(category: bool, status: bool, sort: str, after: bool) -> str:
    where = [_RATE_WHERE[sort], _NOT_ERASED]
    if category:
        where.append(_CATEGORY_WHERE)
    if status:
        where.append(_STATUS_WHERE)
    if after:
        where.append(_AFTER[sort])
    select = "SELECT DISTINCT" if category else "SELECT"
    frm = _FROM_CATEGORY if category else _FROM_PLAIN
    return f"{select} {ADVISOR_COLUMNS} {frm} WHERE {' AND '.join(where)} {_ORDER[sort]} LIMIT :limit"


def encode_cursor(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> dict[str, Any]:
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return json.loads(raw.decode())


def named(text: str, params: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    out: list[Any] = []
    pieces = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ":" and i + 1 < len(text) and (text[i + 1].isalpha() or text[i + 1] == "_"):
            j = i + 1
            while j < len(text) and (text[j].isalnum() or text[j] == "_"):
                j += 1
            out.append(params[text[i + 1 : j]])
            pieces.append("?")
            i = j
        else:
            pieces.append(ch)
            i += 1
    return "".join(pieces), tuple(out)


async def page(db: Database, query: dict[str, Any]) -> dict[str, Any]:
    """The old reply body for a parsed query (`category` a list, the rest as parsed)."""
    sort = query.get("sort", "rating")
    limit = query.get("limit", 20)
    params: dict[str, Any] = {
        "min_rate": query.get("min_rate", 0),
        "max_rate": query.get("max_rate", MAX_RATE_QUERY),
        "limit": limit + 1,
    }
    if "category" in query:
        params["categories"] = json.dumps(query["category"])
    if "status" in query:
        params["status"] = query["status"]
    after = "cursor" in query
    if after:
        cursor = decode_cursor(query["cursor"])
        params["after_key"], params["after_id"] = cursor["k"], int(cursor["id"])
    text, values = named(_list_sql("category" in query, "status" in query, sort, after), params)
    result = await db.all(sql(text, *values))
    rows = result.rows[:limit]
    next_cursor = None
    if len(result.rows) > limit:
        last = rows[-1]
        next_cursor = encode_cursor({"s": sort, "k": int(last[_SORT_KEY[sort]]), "id": str(last["user_id"])})
    return {"items": [advisor_view(r) for r in rows], "next_cursor": next_cursor}
