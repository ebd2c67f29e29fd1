"""Advisor search: `GET /v1/advisors`, one D1 read of O(page) rows.

Everything is read from `advisor_listing` (migration 0094: one row per
(category, advisor) plus a '*' row per advisor, kept in step with advisors,
their categories and users by triggers). A query is a merge of index scans,
each already in the page's order:

- one scan per requested category ('*' without a category filter), in the
  index of the sort order, with the status after the category when filtered;
- under the rating sort with a price range, one scan per (category, price
  band) of the range's dyadic decomposition (`price_bands`): each band is an
  exact, rating-ordered index prefix, so no scan skips a row.

Several scans are one compound SELECT ordered like each of them: SQLite merges
them lazily (a scan is stepped only when its head is taken), the bands of a
category with UNION ALL (they are disjoint), the categories with UNION (which
drops an advisor met in two of them). Rows read <= (limit + 1) + scans +
repeats (each scan may read one row it does not give: a head never taken, or
the row just past its end), where a repeat is a returned advisor read once
more for each further requested category it holds (docs/BENCHMARKS.md, "Advisor search"). D1 allows
5 terms per compound SELECT, so larger merges nest (`_tree`, `_merge`); the
numbered `?N` parameters let every scan share the status, rate and cursor values.

The cursor is the last item's (sort key, id), as before the listing existed,
so old cursors keep working: `k` is the rate, or rating_milli for the rating sort.
"""

import base64
import json
from collections.abc import Sequence
from typing import Any

from .advisors import CATEGORIES, STATUSES, advisor_view
from .db import sql
from .errors import bad_request
from .openapi import page_schema
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .validation import Int, ListOf, Obj, Str

DEFAULT_PAGE = 20
MAX_PAGE = 100
MAX_CURSOR_CHARS = 200
MAX_RATE_QUERY = 100_000
ALL = "*"  # the listing's category of every advisor
# rating_key = RATING_KEY_BASE - rating_milli (0..5000), so "best first" is ascending.
RATING_KEY_BASE = 5000
# The price bands of migration 0094: levels 0..BAND_LEVELS-1 of min(rate, BAND_CAP) >> level.
BAND_CAP = 2047
BAND_LEVELS = 11
MAX_BANDS = 19  # the most price_bands() ever returns (for 2..2046; tests/test_search.py checks)
COMPOUND_TERMS = 5  # D1's limit of terms in one compound SELECT
_LOWEST_ID = -(2**53 - 2)  # below every id: "(rate, id) > (min_rate, _LOWEST_ID)" is "rate >= min_rate"

ADVISOR_LIST_QUERY = Obj(
    {
        "category": ListOf(
            Str(min_len=1, max_len=32, choices=CATEGORIES),
            min_items=1,
            max_items=len(CATEGORIES),
            description="One or more categories, comma-separated (any of them matches).",
        ),
        "status": Str(max_len=8, choices=STATUSES),
        "min_rate": Int(low=0, high=MAX_RATE_QUERY, description="Lowest rate_cents_per_minute."),
        "max_rate": Int(low=0, high=MAX_RATE_QUERY, description="Highest rate_cents_per_minute."),
        "sort": Str(
            max_len=8,
            choices=("rating", "price"),
            description="rating (best first, default) or price (cheapest first).",
        ),
        "cursor": Str(min_len=1, max_len=MAX_CURSOR_CHARS),
        "limit": Int(low=1, high=MAX_PAGE),
    }
)

# The columns of a list item, identical in every scan (UNION compares whole rows).
_COLUMNS = """advisor_id AS user_id, headline, bio, rate_cents_per_minute, status, rating_count, rating_sum,
  rating_key, version, created_at_ms, updated_at_ms, photo_sha256, display_name, categories_json"""
_ORDER = {"price": "rate_cents_per_minute, user_id", "rating": "rating_key, user_id"}


def encode_cursor(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """An opaque cursor back to its integer fields, or a 400."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw.decode())
    except (ValueError, UnicodeDecodeError):
        raise bad_request("The cursor is not valid; start again without it.", "cursor", code="invalid_cursor") from None
    if (
        not isinstance(value, dict)
        or set(value) != set(keys)
        or not all(isinstance(value[k], (int, str)) and not isinstance(value[k], bool) for k in keys)
    ):
        raise bad_request("The cursor is not valid; start again without it.", "cursor", code="invalid_cursor")
    return value


def price_bands(min_rate: int, max_rate: int) -> list[tuple[int, int]]:
    """[min_rate, max_rate] as the fewest aligned bands (level, band number) of
    min(rate, BAND_CAP) >> level: greedy from the low end, the largest aligned
    band that fits each time. At most MAX_BANDS bands. No rate is 0
    (advisors' CHECK), so a range from 0 or 1 starts at band 0 of the top level."""
    lo = 0 if min_rate <= 1 else min(min_rate, BAND_CAP)
    hi = min(max_rate, BAND_CAP)
    bands = []
    while lo <= hi:
        level = BAND_LEVELS - 1
        while level > 0 and (lo % (1 << level) or lo + (1 << level) - 1 > hi):
            level -= 1
        bands.append((level, lo >> level))
        lo += 1 << level
    return bands


class _Params:
    """Numbered parameters (`?N`), one per distinct value name, so every scan of
    a merge refers to the same status, rate and cursor values."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._numbers: dict[str, int] = {}

    def ref(self, name: str, value: Any) -> str:
        if name not in self._numbers:
            self.values.append(value)
            self._numbers[name] = len(self.values)
        return f"?{self._numbers[name]}"


def _tree(scans: Sequence[str], order: str) -> str:
    """Scans that cannot share an advisor (one category's price bands), as one
    ordered UNION ALL, nested COMPOUND_TERMS at a time: SQLite flattens the
    nesting into one lazy merge (a nested UNION would be materialised and sorted)."""
    if len(scans) <= COMPOUND_TERMS:
        return " UNION ALL ".join(scans)
    size = -(-len(scans) // COMPOUND_TERMS)
    return " UNION ALL ".join(
        f"SELECT * FROM ({_tree(scans[i : i + size], order)} ORDER BY {order})"  # noqa: S608 - constant fragments
        for i in range(0, len(scans), size)
    )


def _merge(per_category: Sequence[Sequence[str]], order: str) -> str:
    """The categories' scans as one ordered UNION: at most COMPOUND_TERMS arms at the
    top (two categories share an arm beyond five), each arm a flattened UNION ALL.
    The UNION's merge drops a row equal to the one it just gave, whichever arm it
    came from, so an advisor in several requested categories is given once."""
    arms = COMPOUND_TERMS if len(per_category) > COMPOUND_TERMS else len(per_category)
    groups: list[list[str]] = [[] for _ in range(arms)]
    for i, scans in enumerate(per_category):
        groups[i * arms // len(per_category)].extend(scans)
    if len(groups) == 1:
        return _tree(groups[0], order)
    return " UNION ".join(
        g[0] if len(g) == 1 else f"SELECT * FROM ({_tree(g, order)} ORDER BY {order})"  # noqa: S608 - constant fragments
        for g in groups
    )


def list_statement(query: dict[str, Any], limit: int) -> tuple[str, list[Any], int]:
    """The SQL, its values and the number of scans merged, for a parsed query
    and a row limit (the page plus one, to know whether another page follows)."""
    sort = query.get("sort", "rating")
    min_rate, max_rate = query.get("min_rate", 0), query.get("max_rate", MAX_RATE_QUERY)
    categories = sorted(set(query.get("category", [ALL])))
    status = query.get("status")
    after: tuple[int, int] | None = None
    if "cursor" in query:
        cursor = decode_cursor(query["cursor"], ("s", "k", "id"))
        if cursor["s"] != sort or not isinstance(cursor["k"], int):
            raise bad_request("The cursor belongs to another sort order.", "cursor", code="invalid_cursor")
        try:
            after = (cursor["k"], int(cursor["id"]))
        except ValueError:
            raise bad_request("The cursor is not valid.", "cursor", code="invalid_cursor") from None
    p = _Params()
    status_part = f" AND status = {p.ref('status', status)}" if status is not None else ""
    prefix = "status_" if status is not None else ""
    where: list[str] = []
    if sort == "price":
        # One row-value lower bound (the cursor or the range's start, whichever is later),
        # so the index seek starts there: a separate `rate >= ?` would be taken instead.
        low = max((min_rate, _LOWEST_ID), after) if after is not None else (min_rate, _LOWEST_ID)
        where.append(
            f"(rate_cents_per_minute, advisor_id) > ({p.ref('low_rate', low[0])}, {p.ref('low_id', low[1])})"
            f" AND rate_cents_per_minute <= {p.ref('max_rate', max_rate)}"
        )
        variants = [(f"listing_{prefix}price", "")]
    else:
        where.append(f"rate_cents_per_minute BETWEEN {p.ref('min_rate', min_rate)} AND {p.ref('max_rate', max_rate)}")
        if after is not None:
            # Clamped just outside 0..5000 (rating_key's range), so a forged k stays bindable
            # and still means "before everything" / "after everything" as it did.
            key = max(-1, min(RATING_KEY_BASE + 1, RATING_KEY_BASE - after[0]))
            where.append(f"(rating_key, advisor_id) > ({p.ref('after_key', key)}, {p.ref('after_id', after[1])})")
        if min_rate <= 1 and max_rate >= BAND_CAP:
            variants = [(f"listing_{prefix}rating", "")]
        else:
            variants = [
                (
                    f"listing_{prefix}band{level}",
                    f" AND (min(rate_cents_per_minute, {BAND_CAP}) >> {level}) = {p.ref(f'b{level}_{band}', band)}",
                )
                for level, band in price_bands(min_rate, max_rate)
            ]
    condition = " AND ".join(where)
    per_category = [
        [
            f"SELECT {_COLUMNS} FROM advisor_listing INDEXED BY {index}"  # noqa: S608 - constant fragments, `?N` only
            f" WHERE category = {p.ref(f'c_{category}', category)}{status_part}{band_part} AND {condition}"
            for index, band_part in variants
        ]
        for category in categories
    ]
    order = _ORDER[sort]
    text = f"{_merge(per_category, order)} ORDER BY {order} LIMIT {p.ref('limit', limit)}"
    return text, p.values, len(categories) * len(variants)


def sort_key(row: dict[str, Any], sort: str) -> int:
    """The cursor's `k` of a row: the rate, or rating_milli (as before the listing)."""
    # int() of the difference, as the old query took int(rating_milli): a rating
    # written as a fraction by hand (no API write makes one) pages as it did.
    return int(row["rate_cents_per_minute"]) if sort == "price" else int(RATING_KEY_BASE - row["rating_key"])


async def list_advisors(rc: RequestContext) -> Reply:
    query = rc.parsed_query()
    if query.get("min_rate", 0) > query.get("max_rate", MAX_RATE_QUERY):
        raise bad_request("'min_rate' is above 'max_rate'.", "min_rate")
    limit = query.get("limit", DEFAULT_PAGE)
    text, values, _scans = list_statement(query, limit + 1)
    result = await rc.db.all(sql(text, *values))
    rows = result.rows[:limit]
    next_cursor = None
    if len(result.rows) > limit:
        sort = query.get("sort", "rating")
        last = rows[-1]
        next_cursor = encode_cursor({"s": sort, "k": sort_key(last, sort), "id": str(last["user_id"])})
    return Reply({"items": [advisor_view(r) for r in rows], "next_cursor": next_cursor})


SCHEMAS: dict[str, Any] = {"AdvisorList": page_schema("Advisor")}

ROUTES = [
    Route(
        "GET",
        "/v1/advisors",
        list_advisors,
        "List and search advisors",
        auth="none",
        query=ADVISOR_LIST_QUERY,
        responses={200: "AdvisorList"},
        tag="advisors",
    ),
]
