"""After a request the Worker refuses without reading its body of more than 64 KiB,
wrangler dev's proxy holds a dead connection to workerd (scratch.py). Whatever comes
next, a write or a read, still reaches the Worker and gets the Worker's own answer,
promptly: the scratch client sends the proxy's 503 again and nudges a parked read."""

import json
import time

UNREAD_BODY = b"x" * 70_000  # over workerd's 64 KiB discard allowance; MAX_BODY_BYTES refuses it unread


def _refused_unread(scratch, token: str) -> None:
    status, headers, body = scratch.request_bytes(
        "PATCH", "/v1/me", UNREAD_BODY, token=token, headers={"content-type": "application/json"}
    )
    assert status in (413, 428), body  # the Worker's refusal, before it reads the body
    assert headers["content-type"].startswith("application/problem+json")


def test_next_request_after_an_unread_upload_reaches_the_worker(scratch):
    client = scratch.world["clients"][0]["token"]
    for method, path, body, expected in (
        ("GET", "/v1/me", None, 200),
        ("HEAD", "/health", None, 200),
        ("POST", "/v1/advisors", {}, 400),
        ("PATCH", "/v1/me", {"display_name": "Proxy"}, 428),
    ):
        _refused_unread(scratch, client)
        started = time.monotonic()
        status, headers, raw = scratch.request(method, path, body, token=client, timeout_s=20)
        elapsed_s = time.monotonic() - started
        assert status == expected, (method, path, raw)
        assert elapsed_s < 15, (method, path, elapsed_s)
        if status >= 400:
            assert headers["content-type"].startswith("application/problem+json"), raw
            assert json.loads(raw)["status"] == status
