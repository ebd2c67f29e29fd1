"""The request pipeline's own mechanisms that bypass the SDK's wrappers for speed
(bench/py_profile.py measures each): they must behave exactly like the paths they replaced.

- config.Settings.of: Settings parsed once per env object, never shared between envs;
- requests.Headers: request headers read from the JS Headers object, as the SDK read them;
- responses.to_response: a JS Response with the status, headers and body the reply says;
- db.Database: parameters and results cross to and from D1 as JS values and JSON, exactly.
"""

import js
import local_runtime
import pytest
from pyodide.ffi import jsnull, to_js
from workers import Request, _EnvWrapper

from clairvora import responses
from clairvora.config import Settings
from clairvora.db import sql
from clairvora.requests import Headers
from dispatch import fetch_with_vars
from support import Client, database


def test_settings_are_parsed_once_per_env_object_and_never_shared_between_two():
    env = local_runtime.makeEnv()
    first = Settings.of(_EnvWrapper(env))
    assert Settings.of(_EnvWrapper(env)) is first  # a new wrapper per request, the same env object
    assert first == Settings.from_env(_EnvWrapper(env))
    other = local_runtime.env_with({"SERVER_TIMING": "off", "MAX_BODY_BYTES": "2048"})
    changed = Settings.of(_EnvWrapper(other))
    assert (changed.server_timing, changed.max_body_bytes) == (False, 2048)
    assert (first.server_timing, first.max_body_bytes) == (True, int(local_runtime.vars.MAX_BODY_BYTES))
    assert Settings.of(_EnvWrapper(env)) is first


async def test_a_per_request_var_override_still_applies_after_the_cached_env_answered():
    assert "server-timing" in (await Client().get("/health")).headers
    assert "server-timing" not in (await fetch_with_vars("/health", SERVER_TIMING="off")).headers
    assert "server-timing" in (await Client().get("/health")).headers


def test_settings_of_a_misconfigured_env_keep_failing_and_are_not_kept():
    bad = local_runtime.env_with({"MAX_BODY_BYTES": "1"})
    for _ in range(2):
        with pytest.raises(Exception, match="MAX_BODY_BYTES"):
            Settings.of(_EnvWrapper(bad))


def _request(headers: list[tuple[str, str]]) -> Request:
    js_headers = js.Headers.new(to_js(headers))
    init = to_js({"headers": js_headers}, dict_converter=js.Object.fromEntries)
    return Request(js.Request.new("http://x.local/v1/me", init))


def test_headers_read_from_the_js_request_match_the_sdks_copy():
    request = _request(
        [("X-Mixed-Case", "  padded  "), ("x-dup", "a"), ("x-dup", "b"), ("authorization", "Bearer t"), ("x-e", "")]
    )
    ours, sdk = Headers(request), request.headers
    for name in ("x-mixed-case", "X-MIXED-CASE", "x-dup", "authorization", "x-e", "absent"):
        assert ours.get(name) == sdk.get(name), name
    assert ours.get("x-dup") == "a, b" and ours.get("x-mixed-case") == "padded"
    assert ours.get("absent") is None and ours.get("absent", "fallback") == "fallback"
    assert ours.get("x-e") == ""


async def test_a_reply_becomes_a_js_response_with_its_status_headers_and_body():
    reply = responses.Reply({"a": "é", "n": 1}, 201, {"etag": '"3"'})
    response = responses.to_response(reply, {"x-request-id": "rid"})
    assert response.status == 201 and response.headers.get("etag") == '"3"'
    assert response.headers.get("x-request-id") == "rid" and response.headers.get("content-type") == "application/json"
    assert await response.text() == '{"a":"é","n":1}'

    raw = responses.to_response(responses.Reply(raw=b"\x00\xff\x10", content_type="image/png"), {})
    assert (await raw.arrayBuffer()).to_bytes() == b"\x00\xff\x10"
    assert raw.headers.get("content-type") == "image/png"

    empty = responses.to_response(responses.Reply(None, 204, {"x-a": "1"}), {"x-request-id": "rid"})
    assert empty.status == 204 and empty.body is jsnull and empty.headers.get("x-a") == "1"
    assert empty.headers.get("content-type") is jsnull

    head = responses.to_response(reply, {}, head=True)
    assert head.status == 201 and head.body is jsnull and head.headers.get("content-type") == "application/json"


async def test_values_cross_to_and_from_d1_exactly():
    big = 2**53 - 2
    row = await database().first(
        sql(
            "SELECT ? AS n, ? AS big, ? AS neg, ? AS f, ? AS t, ? AS nul, typeof(?) AS nul_type, ? AS yes,"
            " NULL AS db_null, 2.0 AS whole_real, 'x' || char(0) || 'y' AS nul_char",
            7,
            big,
            -big,
            1.5,
            'é✓ "q" \\ \n',
            None,
            None,
            True,
        )
    )
    assert row == {
        "n": 7,
        "big": big,
        "neg": -big,
        "f": 1.5,
        "t": 'é✓ "q" \\ \n',
        "nul": None,
        "nul_type": "null",
        "yes": 1,
        "db_null": None,
        "whole_real": 2,
        "nul_char": "x\x00y",
    }
    assert type(row["n"]) is int and type(row["big"]) is int and type(row["f"]) is float


async def test_a_batch_crosses_every_statements_rows_and_counts():
    results = await database().batch(
        [sql("SELECT ? AS a", 1), sql("SELECT slug FROM categories ORDER BY slug LIMIT 2"), sql("SELECT 1 WHERE 0")]
    )
    assert results[0].rows == [{"a": 1}]
    assert [r["slug"] for r in results[1].rows] == ["astrology", "career"] and results[1].rows_read >= 2
    assert results[2].rows == [] and results[2].changes == 0
