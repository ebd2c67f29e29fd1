"""Router, problem+json shapes, body limits and input validation, through the
real pipeline (entrypoint -> app.handle_fetch) in the local runtime."""

import json

import pytest

from clairvora.db import sql
from clairvora.ids import MIN_ID, new_id
from probe_routes import probe_routes  # noqa: F401 - the fixture
from support import Client, database, new_user

pytestmark = pytest.mark.usefixtures("probe_routes")
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


def assert_problem(r, status: int, code: str) -> dict:
    assert r.status == status, (r.status, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert PROBLEM_FIELDS <= body.keys(), body
    assert body["status"] == status and body["code"] == code, body
    assert body["type"].endswith("/" + code)
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


# --- routing ------------------------------------------------------------------


async def test_typed_id_param_matches_and_is_an_int():
    thing_id = new_id()
    r = await Client().get(f"/test/things/{thing_id}")
    assert r.status == 200, r.text
    assert r.json() == {"thing_id": str(thing_id)}


@pytest.mark.parametrize(
    "bad", ["abc", "-5", "12.5", "1e15", str(MIN_ID - 1), str(2**52 + 2**40), "%31%32", "0x10000000000", "9" * 17]
)
async def test_bad_id_is_a_plain_not_found(bad):
    r = await Client().get(f"/test/things/{bad}")
    body = assert_problem(r, 404, "not_found")
    assert bad not in body["detail"]


async def test_str_param_takes_one_segment():
    assert (await Client().get("/test/names/ann")).json() == {"name": "ann"}
    assert_problem(await Client().get("/test/names/ann/extra"), 404, "route_not_found")
    assert_problem(await Client().get("/test/names/" + "x" * 129), 404, "route_not_found")


async def test_unknown_route_is_a_404_problem_naming_the_route():
    body = assert_problem(await Client().get("/v1/nothing-here"), 404, "route_not_found")
    assert "GET /v1/nothing-here" in body["detail"]


async def test_wrong_method_is_405_with_allow():
    r = await Client().post("/health", json={})
    assert_problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, HEAD"
    r = await Client().put("/test/things/" + str(new_id()))
    assert_problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "DELETE, GET, HEAD"
    _sub, client = await new_user("allow")
    r = await client.put("/v1/me")  # DELETE /v1/me exists since the erasure (erasure.py)
    assert r.headers["allow"] == "DELETE, GET, HEAD, PATCH"


async def test_405_is_not_given_for_a_bad_id():
    # The id does not match, so no route matches: 404, not 405.
    assert_problem(await Client().put("/test/things/abc"), 404, "not_found")


async def test_head_on_get_routes_has_headers_and_no_body():
    # Over real HTTP too: tooling_tests/test_http_edges.py.
    get = await Client().get("/health")
    head = await Client().request("HEAD", "/health")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-type"] == get.headers["content-type"] == "application/json"
    assert "x-d1-bookmark" in head.headers and "server-timing" in head.headers


async def test_overlong_path_is_414():
    assert_problem(await Client().get("/test/names/" + "a" * 600), 414, "uri_too_long")


# --- error shapes -------------------------------------------------------------


async def test_problem_carries_extra_headers_and_no_request_id_below_500():
    body = assert_problem(await Client().get("/test/teapot"), 418, "teapot")
    assert "request_id" not in body


async def test_unhandled_exception_is_500_with_request_id_and_no_trace(capsys):
    r = await Client().get("/test/boom", headers={"cf-ray": "8f00aa11bb22cc33-AMS"})
    body = assert_problem(r, 500, "internal_error")
    assert body["request_id"] == r.headers["x-request-id"] == "8f00aa11bb22cc33-AMS"
    text = r.text
    for leak in ("Traceback", "RuntimeError", "boom", "line 12", "abc.def", "app.py"):
        assert leak not in text
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    record = next(rec for rec in logged if rec.get("event") == "unhandled_exception")
    assert record["request_id"] == "8f00aa11bb22cc33-AMS" and record["error_type"] == "RuntimeError"
    assert "abc.def.ghi" not in record["error"] and "ann@example.com" not in record["error"]


async def test_d1_error_is_500_with_generated_request_id():
    r = await Client().get("/test/d1-boom")
    body = assert_problem(r, 500, "internal_error")
    assert len(body["request_id"]) == 16 and body["request_id"] == r.headers["x-request-id"]
    assert "SELEC" not in r.text and "syntax" not in r.text


async def test_request_ids_differ_per_request():
    a = await Client().get("/test/boom")
    b = await Client().get("/test/boom")
    assert a.json()["request_id"] != b.json()["request_id"]


# --- bodies and validation ----------------------------------------------------


async def echo(body, *, query="", headers=None):
    return await Client().request(
        "POST", "/test/echo" + query, body=body, headers={"content-type": "application/json", **(headers or {})}
    )


async def test_valid_body_and_query_are_parsed():
    r = await echo(json.dumps({"n": 3, "tags": ["a", "b"], "inner": {"k": "x"}}), query="?limit=5")
    assert r.status == 200, r.text
    assert r.json() == {"body": {"n": 3, "tags": ["a", "b"], "inner": {"k": "x"}}, "query": {"limit": 5}}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"n": "3"}, "n"),
        ({"n": True}, "n"),
        ({"n": 3.0}, "n"),
        ({"n": 11}, "n"),
        ({}, "n"),
        ({"n": 1, "extra": 1}, "extra"),
        ({"n": 1, "tags": "a"}, "tags"),
        ({"n": 1, "tags": ["a", 2]}, "tags[1]"),
        ({"n": 1, "tags": ["toolong"]}, "tags[0]"),
        ({"n": 1, "tags": ["a", "a"]}, "tags"),
        ({"n": 1, "tags": ["a", "b", "c", "d"]}, "tags"),
        ({"n": 1, "inner": {"k": "x", "z": 1}}, "inner.z"),
        ({"n": 1, "inner": {"k": 5}}, "inner.k"),
        ({"n": 1, "inner": []}, "inner"),
        ({"n": 1, "tags": ["a\u0000"]}, "tags[0]"),
        ([1, 2], "body"),
    ],
)
async def test_wrong_shapes_are_400_naming_the_field(body, field):
    r = await echo(json.dumps(body))
    problem = assert_problem(r, 400, "invalid_request")
    assert problem["field"] == field, problem


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?limit=0", "limit"),
        ("?limit=abc", "limit"),
        ("?limit=1&limit=2", "limit"),
        ("?page=2", "page"),
        ("?limit=" + "9" * 20, "limit"),
    ],
)
async def test_bad_query_is_400_naming_the_parameter(query, field):
    r = await echo(json.dumps({"n": 1}), query=query)
    assert assert_problem(r, 400, "invalid_request")["field"] == field


@pytest.mark.parametrize("raw", [b"{", b"{'n': 1}", b'{"n": NaN}', b'{"n": Infinity}', b"nul", b'{"n": 1}x'])
async def test_invalid_json_is_400(raw):
    problem = assert_problem(await echo(raw), 400, "invalid_request")
    assert problem["field"] == "body" and "JSON" in problem["detail"]


async def test_invalid_utf8_is_400():
    problem = assert_problem(await echo(b'{"n": 1, "tags": ["\xff\xfe"]}'), 400, "invalid_request")
    assert "UTF-8" in problem["detail"]


async def test_too_deep_json_is_400():
    deep = {"n": 1, "inner": {"k": [[[[[[[["x"]]]]]]]]}}
    problem = assert_problem(await echo(json.dumps(deep)), 400, "invalid_request")
    assert "deeper" in problem["detail"]
    # Far deeper than Python's recursion limit, still under the body limit.
    problem = assert_problem(await echo(b"[" * 60000), 400, "invalid_request")
    assert problem["field"] == "body"


async def test_empty_body_and_wrong_media_type():
    assert assert_problem(await echo(b""), 400, "invalid_request")["field"] == "body"
    r = await echo(json.dumps({"n": 1}), headers={"content-type": "text/plain"})
    assert_problem(r, 415, "unsupported_media_type")


async def test_body_over_the_limit_by_content_length_is_413():
    # Declared size over the limit: refused before the body is read.
    r = await echo(json.dumps({"n": 1}), headers={"content-length": "70000"})
    body = assert_problem(r, 413, "body_too_large")
    assert "65536" in body["detail"]


async def test_body_over_the_limit_by_actual_size_is_413():
    padding = "x" * 65600
    raw = json.dumps({"n": 1, "inner": {"k": padding}})
    # In-process the request carries no Content-Length: the actual size decides. (A real
    # Content-Length over HTTP: tooling_tests/test_http_edges.py.)
    assert_problem(await echo(raw), 413, "body_too_large")
    # Exactly at the limit is accepted; one byte more is not.
    at_limit = json.dumps({"n": 1, "inner": {"k": ""}})
    at_limit = at_limit[:-2] + " " * (65536 - len(at_limit)) + "}}"
    assert len(at_limit.encode()) == 65536
    assert (await echo(at_limit)).status == 200
    assert_problem(await echo(at_limit + " "), 413, "body_too_large")


async def _me(client) -> dict:
    r = await client.get("/v1/me")
    assert r.status == 200, r.text
    return r.json()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (json.dumps({"display_name": 5}), "display_name"),
        (json.dumps({"display_name": "ok", "nickname": "x"}), "nickname"),
        (json.dumps({"time_zone": None}), "time_zone"),
        (json.dumps({"display_name": ""}), "display_name"),
        (json.dumps({}), "body"),
        (b'{"display_name": "\xc3\x28"}', "body"),
        (b'{"display_name": ', "body"),
        (json.dumps({"display_name": [[[[[[[[["x"]]]]]]]]]}), "body"),
    ],
)
async def test_bad_patch_me_body_is_400_and_writes_nothing(raw, field):
    _sub, client = await new_user("bad")
    before = await _me(client)
    r = await client.request(
        "PATCH", "/v1/me", body=raw, headers={"content-type": "application/json", "if-match": f'"{before["version"]}"'}
    )
    assert assert_problem(r, 400, "invalid_request")["field"] == field
    assert "rows_written=0" in r.headers["server-timing"]
    after = await _me(client)
    assert after == before
    row = await database().first(
        sql("SELECT version, display_name, time_zone FROM users WHERE id = ?", int(before["id"]))
    )
    assert row == {"version": before["version"], "display_name": None, "time_zone": "UTC"}


# --- replies are always UTF-8 --------------------------------------------------


def test_a_reply_holding_a_lone_surrogate_is_still_utf8_json():
    """validation.py refuses lone surrogates on the way in; should one reach a reply anyway
    (an older stored row), the JSON is written with \\u escapes, never as invalid UTF-8."""
    from clairvora.responses import encode_json

    assert encode_json({"a": "caf\u00e9 \U0001f600"}) == '{"a":"caf\u00e9 \U0001f600"}'  # non-ASCII kept as is
    text = encode_json({"a": "x\ud800y"})
    assert text == '{"a":"x\\ud800y"}'
    text.encode("utf-8")


async def test_an_unknown_field_named_with_a_lone_surrogate_is_echoed_escaped():
    _sub, client = await new_user("surr")
    r = await client.request(
        "PATCH", "/v1/me", body=b'{"\\ud800x": 1}', headers={"if-match": '"1"', "content-type": "application/json"}
    )
    body = assert_problem(r, 400, "invalid_request")
    assert body["field"] == "\\ud800x", body  # the six characters \ud800, then x
