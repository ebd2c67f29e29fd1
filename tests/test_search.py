"""Advisor search on the listing (migration 0094, search.py): the same answers
as the old query (search_oracle.py) on random data, every plan an index walk,
rows read bounded by the page, and the listing in step with every write."""

import json
import time
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyodide.ffi import run_sync

import search_oracle
from clairvora import advisors, search
from clairvora.db import sql
from clairvora.ids import new_id
from support import Client, database, unique

# Rates around the band edges (powers of two, the 2047 cap) and past the API's
# bounds (a hand-written row may hold them): where an off-by-one would show.
RATES = [
    1,
    2,
    3,
    49,
    50,
    63,
    64,
    65,
    127,
    128,
    129,
    500,
    1023,
    1024,
    1025,
    2000,
    2046,
    2047,
    2048,
    5000,
    100000,
    100001,
]
STATUSES = list(advisors.STATUSES)
CATEGORIES = list(advisors.CATEGORIES)

advisor_spec = st.fixed_dictionaries(
    {
        "rate": st.sampled_from(RATES),
        "status": st.sampled_from(STATUSES),
        "categories": st.lists(st.sampled_from(CATEGORIES), max_size=5, unique=True),
        "ratings": st.integers(0, 4),
        "stars": st.integers(1, 5),
        "name": st.one_of(st.none(), st.sampled_from(["Ann", "Bo"])),
    }
)
# What happens to an advisor after it is listed, through plain SQL (the triggers
# must follow whatever writes the tables, not only the API).
change = st.one_of(
    st.tuples(st.just("status"), st.sampled_from(STATUSES)),
    st.tuples(st.just("rate"), st.sampled_from(RATES)),
    st.tuples(st.just("rating"), st.integers(1, 5)),
    st.tuples(st.just("drop_category"), st.sampled_from(CATEGORIES)),
    st.tuples(st.just("add_category"), st.sampled_from(CATEGORIES)),
    st.tuples(st.just("name"), st.one_of(st.none(), st.just("Cy"))),
    st.tuples(st.just("erase"), st.none()),
)
rate_bound = st.one_of(
    st.sampled_from([r for r in RATES if r <= search.MAX_RATE_QUERY]), st.integers(0, search.MAX_RATE_QUERY)
)
list_query = st.fixed_dictionaries(
    {},
    optional={
        "category": st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=8, unique=True),
        "status": st.sampled_from(STATUSES),
        "min_rate": rate_bound,
        "max_rate": rate_bound,
        "sort": st.sampled_from(["rating", "price"]),
        "limit": st.integers(1, 6),
    },
)


async def _insert(specs: list[dict[str, Any]], now_ms: int) -> list[int]:
    ids = [new_id() for _ in specs]
    statements = []
    for uid, spec in zip(ids, specs, strict=True):
        count, total = spec["ratings"], spec["ratings"] * spec["stars"]
        statements += [
            sql(
                """INSERT INTO users (id, clerk_user_id, display_name, created_at_ms, updated_at_ms)
                   VALUES (?, ?, ?, ?, ?)""",
                uid,
                f"user_{unique('srch')}",
                spec["name"],
                now_ms,
                now_ms,
            ),
            sql(
                """INSERT INTO advisors (user_id, headline, bio, rate_cents_per_minute, status, rating_count,
                                         rating_sum, rating_milli, created_at_ms, updated_at_ms)
                   VALUES (?, ?, 'bio', ?, ?, ?, ?, ?, ?, ?)""",
                uid,
                f"Advisor {uid}",
                spec["rate"],
                spec["status"],
                count,
                total,
                total * 1000 // count if count else 0,
                now_ms,
                now_ms,
            ),
            *[
                sql("INSERT INTO advisor_categories (category, advisor_id) VALUES (?, ?)", c, uid)
                for c in spec["categories"]
            ],
        ]
    await database().batch(statements)
    return ids


async def _apply(uid: int, what: str, value: Any, now_ms: int) -> None:
    db = database()
    if what == "status":
        await db.run(sql("UPDATE advisors SET status = ?, version = version + 1 WHERE user_id = ?", value, uid))
    elif what == "rate":
        await db.run(sql("UPDATE advisors SET rate_cents_per_minute = ? WHERE user_id = ?", value, uid))
    elif what == "rating":
        await db.run(
            sql(
                """UPDATE advisors SET rating_count = rating_count + 1, rating_sum = rating_sum + ?,
                       rating_milli = (rating_sum + ?) * 1000 / (rating_count + 1) WHERE user_id = ?""",
                value,
                value,
                uid,
            )
        )
    elif what == "drop_category":
        await db.run(sql("DELETE FROM advisor_categories WHERE advisor_id = ? AND category = ?", uid, value))
    elif what == "add_category":
        await db.run(
            sql(
                "INSERT INTO advisor_categories (category, advisor_id) VALUES (?, ?) ON CONFLICT DO NOTHING", value, uid
            )
        )
    elif what == "name":
        await db.run(sql("UPDATE users SET display_name = ? WHERE id = ? AND erased_at_ms IS NULL", value, uid))
    else:
        await db.run(
            sql(
                """UPDATE users SET clerk_user_id = 'erased:' || id, display_name = NULL, is_admin = 0, erased_at_ms = ?
                   WHERE id = ? AND erased_at_ms IS NULL""",
                now_ms,
                uid,
            )
        )


def _url(query: dict[str, Any]) -> str:
    params = {k: (",".join(v) if isinstance(v, list) else v) for k, v in query.items()}
    return "/v1/advisors?" + urlencode(params)


async def _compare_walk(query: dict[str, Any], pages: int = 3) -> None:
    """The route's pages and cursors equal the old query's, page after page."""
    query = dict(query)
    if query.get("min_rate", 0) > query.get("max_rate", search.MAX_RATE_QUERY):
        query["min_rate"], query["max_rate"] = query["max_rate"], query["min_rate"]
    for _ in range(pages):
        expected = await search_oracle.page(database(), query)
        r = await Client().get(_url(query))
        assert r.status == 200, (query, r.text)
        got = r.json()
        if got != expected:
            differ = [
                (a.get("id"), {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)})
                for a, b in zip(got["items"], expected["items"], strict=False)
                if a != b
            ]
            lengths = (len(got["items"]), len(expected["items"]))
            raise AssertionError((query, lengths, differ[:3], got["next_cursor"], expected["next_cursor"]))
        if expected["next_cursor"] is None:
            return
        query["cursor"] = expected["next_cursor"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(advisor_spec, min_size=1, max_size=8),
    changes=st.lists(st.tuples(st.integers(0, 7), change), max_size=6),
    queries=st.lists(list_query, min_size=1, max_size=5),
)
def test_the_listing_answers_exactly_as_the_old_query(specs, changes, queries):
    now_ms = int(time.time() * 1000)
    ids = run_sync(_insert(specs, now_ms))
    for index, (what, value) in changes:
        run_sync(_apply(ids[index % len(ids)], what, value, now_ms))
    for query in queries:
        run_sync(_compare_walk(query))


async def test_a_cursor_from_before_the_listing_still_pages_the_same():
    """Cursors carry (sort key, id) as they always did, including a forged key out
    of range, which means "before everything" or "after everything" in both."""
    for sort in ("rating", "price"):
        for k in (-5, 0, 4321, 5000, 9999, 2**40):
            cursor = search.encode_cursor({"s": sort, "k": k, "id": "1"})
            await _compare_walk({"sort": sort, "cursor": cursor, "limit": 3}, pages=1)
            await _compare_walk({"sort": sort, "cursor": cursor, "limit": 3, "min_rate": 60, "max_rate": 900}, pages=1)


# --- plans and rows read --------------------------------------------------------

_SHAPES = [
    {"category": cats, **status, **rates, "sort": sort, **cursor}
    for cats in ([], ["tarot"], ["tarot", "love", "career"])
    for status in ({}, {"status": "online"})
    for rates in ({}, {"min_rate": 100, "max_rate": 500}, {"min_rate": 1, "max_rate": 2046}, {"min_rate": 1900})
    for sort in ("rating", "price")
    for cursor in ({}, {"cursor": None})
]


def _query(shape: dict[str, Any]) -> dict[str, Any]:
    query = {k: v for k, v in shape.items() if v not in ([], None)}
    if "cursor" in shape:
        query["cursor"] = search.encode_cursor({"s": shape["sort"], "k": 300, "id": "1"})
    return query


async def test_every_combination_is_a_merge_of_index_walks():
    for shape in _SHAPES:
        text, values, scans = search.list_statement(_query(shape), 21)
        plan = [r["detail"] for r in (await database().all(sql("EXPLAIN QUERY PLAN " + text, *values))).rows]
        walks = [line for line in plan if line.startswith("SEARCH")]
        assert len(walks) == scans, (shape, plan)
        assert all(line.startswith("SEARCH advisor_listing USING INDEX listing_") for line in walks), (shape, plan)
        assert not any(line.startswith("SCAN") or "TEMP B-TREE" in line for line in plan), (shape, plan)


async def _load_crowd(count: int, now_ms: int) -> None:
    """`count` advisors in tarot and love, half online, at 100..499 cents, set-based."""
    base = new_id()
    recursive = "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < ? - 1)"
    await database().batch(
        [
            sql(
                f"""INSERT INTO users (id, clerk_user_id, created_at_ms, updated_at_ms)
                    {recursive} SELECT ? + i, 'user_crowd_' || (CAST(? AS INTEGER) + i), ?, ? FROM k""",  # noqa: S608 - constant
                count,
                base,
                base,
                now_ms,
                now_ms,
            ),
            sql(
                f"""INSERT INTO advisors (user_id, headline, bio, rate_cents_per_minute, status, rating_count,
                                          rating_sum, rating_milli, created_at_ms, updated_at_ms)
                    {recursive}
                    SELECT ? + i, 'Crowd', '', 100 + (i * 37) % 400, CASE WHEN i % 2 = 0 THEN 'online' ELSE 'offline' END,
                           1, 1 + i % 5, 1000 * (1 + i % 5), ?, ? FROM k""",  # noqa: S608 - constant
                count,
                base,
                now_ms,
                now_ms,
            ),
            sql(
                f"""INSERT INTO advisor_categories (category, advisor_id)
                    {recursive} SELECT c.value, ? + i FROM k, json_each('["love","tarot"]') c
                    WHERE c.value = 'tarot' OR i % 3 = 0""",  # noqa: S608 - constant
                count,
                base,
            ),
        ]
    )


async def _beyond_the_api(query: dict[str, Any]) -> int:
    """Rows a scan may pass over: rates above the top band (2047) and the range,
    which only hand-written rows hold (the API keeps rates within 50..2000; the
    oracle test above writes some on purpose)."""
    categories = query.get("category") or [search.ALL]
    row = await database().first(
        sql(
            """SELECT count(*) AS n FROM advisor_listing
               WHERE category IN (SELECT value FROM json_each(?)) AND (? IS NULL OR status = ?)
                 AND rate_cents_per_minute > ?""",
            json.dumps(categories),
            query.get("status"),
            query.get("status"),
            max(search.BAND_CAP, query.get("max_rate", search.MAX_RATE_QUERY)),
        )
    )
    return int(row["n"])


async def test_rows_read_are_bounded_by_the_page_not_the_advisors():
    """Each scan stops at the page: rows read <= rows returned + one row per scan
    (a head never taken, or the row past a scan that ran out) + an advisor's
    further copies in the other requested categories (+ rows no API write makes)."""
    await _load_crowd(1500, int(time.time() * 1000))
    for shape in _SHAPES:
        for limit in (1, 20):
            query = _query(shape)
            text, values, scans = search.list_statement(query, limit + 1)
            result = await database().all(sql(text, *values))
            wanted = set(query.get("category", []))
            copies = sum(len(wanted & set(json.loads(r["categories_json"]))) - 1 for r in result.rows if wanted)
            bound = len(result.rows) + copies + scans + await _beyond_the_api(query)
            assert result.rows_read <= bound, (query, limit, result.rows_read, bound, scans)


@settings(max_examples=500, deadline=None)
@given(low=st.integers(0, search.MAX_RATE_QUERY), high=st.integers(0, search.MAX_RATE_QUERY))
def test_price_bands_cover_the_range_exactly_and_are_few(low, high):
    low, high = min(low, high), max(low, high)
    bands = search.price_bands(low, high)
    assert len(bands) <= search.MAX_BANDS
    covered: list[int] = []
    for level, band in bands:
        assert 0 <= level < search.BAND_LEVELS
        covered += range(band << level, (band + 1) << level)
    capped = sorted({min(r, search.BAND_CAP) for r in range(max(low, 1), high + 1)})
    # Every rate of the range is in exactly one band; a band holds no rate outside
    # the range, except the capped ones (filtered by the exact rate) and 0 (no advisor has it).
    assert len(covered) == len(set(covered))
    assert set(capped) <= set(covered)
    assert set(covered) - set(capped) <= {0}


def test_the_widest_band_decomposition_is_the_documented_one():
    assert len(search.price_bands(2, 2046)) == search.MAX_BANDS
    assert max(len(search.price_bands(a, b)) for a in range(0, 2048, 7) for b in range(a, 2048, 5)) <= search.MAX_BANDS


async def test_the_largest_merge_fits_d1():
    """Eight categories, a status, the worst price range and a cursor: 152 scans,
    nested five to a compound, one statement under D1's limits."""
    query = {
        "category": CATEGORIES,
        "status": "online",
        "min_rate": 2,
        "max_rate": 2046,
        "sort": "rating",
        "cursor": search.encode_cursor({"s": "rating", "k": 4000, "id": "5"}),
    }
    text, values, scans = search.list_statement(query, 101)
    assert scans == len(CATEGORIES) * search.MAX_BANDS == 152
    assert len(values) < 100 and len(text.encode()) < 100_000
    expected = await search_oracle.page(database(), {**query, "limit": 100})
    r = await Client().get(_url({**query, "limit": 100}))
    assert r.status == 200 and r.json() == expected
