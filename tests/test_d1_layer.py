"""clairvora.db on real local D1: batches, Sessions bookmarks, D1's error texts
mapped to types, the 100-parameter limit, exact integers, cost counters."""

import math
import re

import local_runtime
import pytest
from workers import _EnvWrapper

from clairvora import users
from clairvora.db import (
    CheckViolation,
    D1Error,
    Database,
    ForeignKeyViolation,
    LimitExceeded,
    NotNullViolation,
    Statement,
    TooManyVariables,
    TransientD1Error,
    TriggerAbort,
    UniqueViolation,
    chunked,
    classify,
    placeholders,
    sql,
)
from clairvora.ids import new_id
from dispatch import fetch_with_vars
from probe_routes import probe_routes  # noqa: F401 - the fixture
from support import Client, database, new_user, unique

BOOKMARK_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{32}$")
FAR_FUTURE_BOOKMARK = "7fffffff-7fffffff-00000000-" + "0" * 32
INSERT_USER = "INSERT INTO users (id, clerk_user_id, created_at_ms, updated_at_ms) VALUES (?, ?, 1, 1)"


def raw_binding():
    """The D1 binding as the SDK wraps it for the Worker, without our layer."""
    return _EnvWrapper(local_runtime.makeEnv()).DB


async def user_exists(sub: str) -> bool:
    return await database().first(sql("SELECT 1 AS x FROM users WHERE clerk_user_id = ?", sub)) is not None


# --- batches ------------------------------------------------------------------


async def test_batch_failing_third_statement_rolls_back_the_first_two():
    a, b = unique("batch_a"), unique("batch_b")
    db = database()
    with pytest.raises(UniqueViolation) as err:
        await db.batch([sql(INSERT_USER, new_id(), a), sql(INSERT_USER, new_id(), b), sql(INSERT_USER, new_id(), a)])
    assert err.value.columns == ("users.clerk_user_id",)
    assert not await user_exists(a) and not await user_exists(b)
    # The same batch without the failing statement commits both.
    await db.batch([sql(INSERT_USER, new_id(), a), sql(INSERT_USER, new_id(), b)])
    assert await user_exists(a) and await user_exists(b)


async def test_batch_is_one_call_and_its_size_is_capped():
    db = database()
    results = await db.batch([sql("SELECT ? AS n", i) for i in range(100)])
    assert [r.rows[0]["n"] for r in results] == list(range(100)) and db.counters.calls == 1
    with pytest.raises(LimitExceeded):
        await db.batch([sql("SELECT 1")] * 101)
    with pytest.raises(LimitExceeded):
        await db.batch([])
    assert db.counters.calls == 1


# --- Sessions bookmarks -------------------------------------------------------


async def test_every_d1_response_carries_a_wellformed_bookmark_and_it_round_trips():
    first = await Client().get("/health")
    bookmark = first.headers["x-d1-bookmark"]
    assert BOOKMARK_RE.match(bookmark)
    again = await Client().get("/health", headers={"x-d1-bookmark": bookmark})
    assert again.status == 200
    assert BOOKMARK_RE.match(again.headers["x-d1-bookmark"]) and again.headers["x-d1-bookmark"] >= bookmark


async def test_the_session_starts_from_the_clients_bookmark():
    # A session reports the newest bookmark it has seen; one started from a
    # bookmark ahead of the database keeps reporting that bookmark.
    db = Database(raw_binding(), bookmark=FAR_FUTURE_BOOKMARK)
    await db.first(sql("SELECT 1 AS one"))
    assert db.bookmark() == FAR_FUTURE_BOOKMARK
    r = await Client().get("/health", headers={"x-d1-bookmark": FAR_FUTURE_BOOKMARK})
    assert r.status == 200 and r.headers["x-d1-bookmark"] == FAR_FUTURE_BOOKMARK
    plain = await Client().get("/health")
    assert plain.headers["x-d1-bookmark"] < FAR_FUTURE_BOOKMARK


async def test_a_request_without_d1_calls_hands_the_bookmark_back():
    bookmark = (await Client().get("/health")).headers["x-d1-bookmark"]
    r = await Client().get("/openapi.json", headers={"x-d1-bookmark": bookmark})
    assert r.status == 200 and r.headers["x-d1-bookmark"] == bookmark
    assert "calls=0" in r.headers["server-timing"]


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        "'; DROP TABLE users; --",
        "00000000-00000001-00000000-" + "0" * 31,
        "00000000-00000001-00000000-" + "0" * 32 + "0",
        "0000000G-00000001-00000000-" + "0" * 32,
        "00000000-00000001-00000000-" + "A" * 32,
        "x" * 5000,
        " ",
        "first-primary",
    ],
)
async def test_malformed_bookmarks_are_ignored_safely(bad):
    r = await Client().get("/health", headers={"x-d1-bookmark": bad})
    assert r.status == 200, r.text
    assert BOOKMARK_RE.match(r.headers["x-d1-bookmark"]) and r.headers["x-d1-bookmark"] != bad
    r = await Client().get("/openapi.json", headers={"x-d1-bookmark": bad})
    assert r.status == 200 and "x-d1-bookmark" not in r.headers


# --- D1's error texts -> typed exceptions ---------------------------------------


async def test_unique_violation_names_the_columns():
    sub = unique("dup")
    db = database()
    await db.run(sql(INSERT_USER, new_id(), sub))
    with pytest.raises(UniqueViolation) as err:
        await db.run(sql(INSERT_USER, new_id(), sub))
    assert err.value.columns == ("users.clerk_user_id",) and "UNIQUE constraint failed" in err.value.message


async def test_foreign_key_violation():
    with pytest.raises(ForeignKeyViolation) as err:
        await database().run(
            sql(
                "INSERT INTO accounts (id, kind, owner_user_id, created_at_ms) VALUES (?, 'client_wallet', ?, 1)",
                new_id(),
                new_id(),
            )
        )
    assert "FOREIGN KEY constraint failed" in err.value.message


async def test_check_violation():
    with pytest.raises(CheckViolation) as err:
        await database().run(
            sql(
                "INSERT INTO users (id, clerk_user_id, is_admin, created_at_ms, updated_at_ms) VALUES (?, ?, 2, 1, 1)",
                new_id(),
                unique("chk"),
            )
        )
    assert "is_admin IN (0, 1)" in err.value.message


async def test_not_null_violation():
    with pytest.raises(NotNullViolation) as err:
        await database().run(
            sql("INSERT INTO users (id, clerk_user_id, created_at_ms) VALUES (?, ?, 1)", new_id(), unique("nn"))
        )
    assert "users.updated_at_ms" in err.value.message


async def test_trigger_raise_code():
    from clairvora import ledger

    _sub, client = await new_user("trig")
    user_id = int((await client.get("/v1/me")).json()["id"])
    db = database()
    transfer_id = new_id()
    legs = [ledger.Leg(ledger.wallet_of(user_id), 100), ledger.Leg(ledger.GATEWAY_CLEARING, -100)]
    await db.batch(
        ledger.transfer(transfer_id=transfer_id, key=f"t:{transfer_id}", kind="deposit", legs=legs, now_ms=1)
    )
    with pytest.raises(TriggerAbort) as err:
        await db.run(sql("DELETE FROM transfers WHERE id = ?", transfer_id))
    assert err.value.code == "ledger_append_only"
    overdraft = [ledger.Leg(ledger.wallet_of(user_id), -101), ledger.Leg(ledger.PLATFORM_REVENUE, 101)]
    with pytest.raises(TriggerAbort) as err:
        await db.batch(
            ledger.transfer(transfer_id=new_id(), key=f"t:{new_id()}", kind="reading_charge", legs=overdraft, now_ms=2)
        )
    assert err.value.code == "insufficient_funds"


async def test_other_d1_errors_stay_plain_d1errors():
    with pytest.raises(D1Error) as err:
        await database().run(sql("SELEC 1"))
    assert type(err.value) is D1Error and "syntax error" in err.value.message and not err.value.retryable


def _transient_texts() -> list[str]:
    from clairvora.faults import TRANSIENT_D1_ERRORS

    return list(TRANSIENT_D1_ERRORS)


def test_transient_texts_are_classified_retryable():
    texts = _transient_texts()
    assert len(texts) == 3
    for text in [*texts, "Error: D1_ERROR: Network connection lost."]:
        exc = classify(text)
        assert isinstance(exc, TransientD1Error) and exc.retryable, text
    assert not isinstance(classify("D1_ERROR: no such table: nope: SQLITE_ERROR"), TransientD1Error)


@pytest.mark.parametrize("fault", ["1", "1;after"])
async def test_injected_transient_error_is_a_503_with_retry_after(fault):
    _sub, client = await new_user("fault")
    assert (await client.get("/v1/me")).status == 200
    r = await client.get("/v1/me", headers={"x-test-d1-fault": fault})
    assert r.status == 503 and r.headers["retry-after"] == "1"
    body = r.json()
    assert body["code"] == "temporarily_unavailable" and body["request_id"] == r.headers["x-request-id"]


async def test_transient_errors_before_and_after_a_write():
    # A new user's first GET /v1/me makes two calls (look-up, create batch):
    # failing either leaves no user behind; PATCH's second call is the UPDATE.
    _sub, client = await new_user("fault3")
    for fault in ("1", "2"):
        assert (await client.get("/v1/me", headers={"x-test-d1-fault": fault})).status == 503
        assert not await user_exists(_sub)
    me = await client.get("/v1/me")
    r = await client.patch(
        "/v1/me", json={"display_name": "X"}, headers={"if-match": me.headers["etag"], "x-test-d1-fault": "2;after"}
    )
    assert r.status == 503
    # The ambiguous case: the write happened though the caller saw a 503; the
    # retry with the same If-Match is refused, and the profile moved once.
    retry = await client.patch("/v1/me", json={"display_name": "X"}, headers={"if-match": me.headers["etag"]})
    assert retry.status == 412
    after = (await client.get("/v1/me")).json()
    assert after["version"] == me.json()["version"] + 1 and after["display_name"] == "X"


# --- the 100-parameter limit ----------------------------------------------------

CATEGORIES = ["astrology", "career", "dreams", "love", "mediumship", "numerology", "spiritual", "tarot"]


def in_list_query(values) -> Statement:
    # Only a placeholder count enters the SQL text; the values are bound.
    return sql(f"SELECT slug FROM categories WHERE slug IN ({placeholders(len(values))})", *values)  # noqa: S608


@pytest.mark.parametrize("count", [99, 100, 101, 250])
async def test_chunked_in_lists_at_the_parameter_limit(count):
    values = [*CATEGORIES, *(f"none-{i}" for i in range(count - len(CATEGORIES)))]
    chunks = list(chunked(values))
    assert len(chunks) == math.ceil(count / 100) and sum(map(len, chunks)) == count
    assert all(len(c) <= 100 for c in chunks)
    db = database()
    found: list[str] = []
    for chunk in chunks:
        found += [r["slug"] for r in (await db.all(in_list_query(chunk))).rows]
    assert sorted(found) == CATEGORIES
    if count <= 100:
        assert len((await db.all(in_list_query(values))).rows) == len(CATEGORIES)
    else:
        with pytest.raises(AssertionError):
            placeholders(count)
        text = f"SELECT slug FROM categories WHERE slug IN ({', '.join('?' * count)})"  # noqa: S608
        with pytest.raises(LimitExceeded):
            sql(text, *values)
        # Past our guard, D1 itself refuses: the typed error says so.
        with pytest.raises(TooManyVariables):
            await db.all(Statement(text, tuple(values)))


async def test_chunks_leave_room_for_other_parameters():
    values = [*CATEGORIES, *(f"none-{i}" for i in range(192))]
    db = database()
    found = []
    for chunk in chunked(values, 99):
        text = f"SELECT slug FROM categories WHERE name <> ? AND slug IN ({placeholders(len(chunk))})"  # noqa: S608
        found += [r["slug"] for r in (await db.all(sql(text, "Tarot", *chunk))).rows]
    assert sorted(found) == [c for c in CATEGORIES if c != "tarot"]


def test_placeholders_bounds():
    assert placeholders(1) == "?" and placeholders(3) == "?, ?, ?" and placeholders(100).count("?") == 100
    for bad in (0, 101):
        with pytest.raises(AssertionError):
            placeholders(bad)


# --- integers -----------------------------------------------------------------


async def test_integers_outside_the_exact_range_never_reach_d1():
    db = database()
    for value in (2**53, -(2**53), 2**53 - 1, -(2**53 - 1), 2**63, 10**30):
        with pytest.raises(LimitExceeded):
            await db.all(sql("SELECT ? AS v", value))
    assert db.counters.calls == 0
    for value in (2**53 - 2, -(2**53 - 2), 0, 2**52 + 1):
        row = await db.first(sql("SELECT ? AS v", value))
        assert row == {"v": value} and type(row["v"]) is int
    # What the guard prevents: D1 refuses the BigInt Pyodide hands it.
    with pytest.raises(D1Error) as err:
        await db.all(Statement("SELECT ? AS v", (2**53 - 1,)))
    assert "bigint" in err.value.message


@pytest.mark.parametrize("value", [(1, 2), [1], {"a": 1}, object()])
def test_unbindable_values_are_refused(value):
    with pytest.raises(LimitExceeded):
        sql("SELECT ?", value)


@pytest.mark.usefixtures("probe_routes")
async def test_a_too_big_integer_in_a_request_is_a_400_not_a_500():
    r = await Client().post("/test/echo", json={"n": 2**53})
    assert r.status == 400 and r.json()["field"] == "n"


# --- counters and Server-Timing -------------------------------------------------


async def test_counters_match_d1_meta():
    raw = raw_binding()
    db = database()
    select = "SELECT slug FROM categories WHERE name <> ?"
    raw_meta = (await raw.prepare(select).bind("x").all())["meta"]
    await db.all(sql(select, "x"))
    assert (db.counters.rows_read, db.counters.rows_written) == (raw_meta["rows_read"], raw_meta["rows_written"])
    assert raw_meta["rows_read"] >= 8

    raw_write = (await raw.prepare(INSERT_USER).bind(new_id(), unique("meta")).run())["meta"]
    before = (db.counters.rows_read, db.counters.rows_written)
    result = await db.run(sql(INSERT_USER, new_id(), unique("meta")))
    assert raw_write["rows_written"] >= 2  # the row and its UNIQUE index
    assert (result.rows_read, result.rows_written) == (raw_write["rows_read"], raw_write["rows_written"])
    assert db.counters.rows_written - before[1] == raw_write["rows_written"]
    assert db.counters.calls == 2


def server_timing(headers) -> dict[str, int]:
    m = re.search(
        r'd1(?:;dur=[0-9.]+)?;desc="calls=(\d+) rows_read=(\d+) rows_written=(\d+)"', headers["server-timing"]
    )
    assert m, headers.get("server-timing")
    return dict(zip(("calls", "rows_read", "rows_written"), map(int, m.groups()), strict=True))


@pytest.mark.usefixtures("probe_routes")
async def test_server_timing_reports_the_requests_d1_cost():
    r = await Client().post(f"/test/write-user?sub={unique('st')}")
    assert r.status == 201, r.text
    meta = r.json()["meta"]
    assert server_timing(r.headers) == {
        "calls": 1,
        "rows_read": sum(m["rows_read"] for m in meta),
        "rows_written": sum(m["rows_written"] for m in meta),
    }
    assert meta[0]["rows_written"] >= 2


async def test_server_timing_of_get_me_matches_d1_meta_of_its_query():
    sub, client = await new_user("stme")
    assert (await client.get("/v1/me")).status == 200  # first sight creates the user
    r = await client.get("/v1/me")
    raw_meta = (await raw_binding().prepare(users._SELECT_USER).bind(sub).all())["meta"]
    assert server_timing(r.headers) == {"calls": 1, "rows_read": raw_meta["rows_read"], "rows_written": 0}


async def test_server_timing_var_switches_the_header():
    off = await fetch_with_vars("/health", SERVER_TIMING="off")
    assert off.status == 200 and "server-timing" not in off.headers
    assert BOOKMARK_RE.match(off.headers["x-d1-bookmark"])
    on = await fetch_with_vars("/health", SERVER_TIMING="on")
    assert server_timing(on.headers)["calls"] == 1 and "dur=" not in on.headers["server-timing"]
    timed = await fetch_with_vars("/health", SERVER_TIMING="timing")
    assert re.search(r"d1;dur=[0-9.]+;desc=", timed.headers["server-timing"])
    assert "py;dur=" in timed.headers["server-timing"]
