"""What only a real HTTP connection to workerd shows (the runtime suite dispatches
in-process): HEAD answers headers without a body, an unknown route is problem+json
with a request id, and a declared Content-Length over the limit is refused with 413."""

import json


def test_head_on_a_get_route_has_headers_and_no_body(scratch):
    status, get_headers, _body = scratch.request("GET", "/health")
    assert status == 200
    status, headers, body = scratch.request("HEAD", "/health")
    assert status == 200 and body == b""
    assert headers["content-type"] == get_headers["content-type"] == "application/json"
    assert "x-d1-bookmark" in headers and "server-timing" in headers


def test_unknown_route_over_http_is_problem_json(scratch):
    status, headers, body = scratch.request("GET", "/nope")
    assert status == 404 and headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "route_not_found"
    assert headers["x-request-id"]


def test_a_body_over_the_limit_is_refused_by_its_content_length(scratch):
    client = scratch.world["clients"][0]
    raw = json.dumps({"display_name": "x" * 70_000}).encode()
    status, headers, body = scratch.request_bytes(
        "PATCH", "/v1/me", raw, token=client["token"], headers={"content-type": "application/json", "if-match": '"1"'}
    )
    assert status == 413, body
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "body_too_large"
