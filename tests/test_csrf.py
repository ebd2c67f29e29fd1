"""Cookie sessions are CSRF-safe.

Clerk puts the session token in the `__session` cookie on the app's own
origin, and a browser attaches that cookie to requests other sites make it
send. A cross-origin page can send, WITHOUT a CORS preflight, a "simple"
request: GET/HEAD/POST with only CORS-safelisted headers and a body of type
text/plain, multipart/form-data or application/x-www-form-urlencoded (a form
post, an <img>, fetch(..., {mode: "no-cors", credentials: "include"})). So a
state-changing request (POST, PUT, PATCH, DELETE) authenticated by the cookie
must come from an allowed Origin (CLERK_AUTHORIZED_PARTIES), or, without an
Origin, carry a header only a preflighted request can have. Else: 403
problem+json `csrf_origin_refused`, before the token is even verified, and
nothing changes. Bearer-token requests are not affected (a page cannot make a
browser attach an Authorization header to another site's request)."""

import pytest

from market_support import active_reading, at, market_pair, now_ms, request_reading
from support import AUTHORIZED_PARTY, Client, database, new_user, token_for, unique
from world import row_counts

EVIL = "https://evil.example.com"
SIMPLE_BODIES = (
    ("text/plain", b'{"body": "hello"}'),
    ("text/plain;charset=UTF-8", b"anything"),
    ("application/x-www-form-urlencoded", b"body=hello"),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=body\r\n\r\nhi\r\n--x--\r\n"),
    (None, None),
)


def _cookie(token: str) -> dict[str, str]:
    return {"cookie": f"theme=dark; __session={token}"}


async def _reading_state(reading_id: str, bearer: Client, t_ms: int) -> tuple[str, int]:
    r = await bearer.get(f"/v1/readings/{reading_id}", headers=at(t_ms))
    assert r.status == 200, r.text
    return r.json()["status"], r.json()["version"]


def _assert_csrf_refused(r) -> None:
    assert r.status == 403, (r.status, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "csrf_origin_refused" and body["status"] == 403, body


async def test_a_cross_origin_simple_post_with_the_cookie_cannot_end_a_reading():
    client, _cid, advisor, advisor_id = await market_pair(funds=10_000)
    t = now_ms()
    reading = await active_reading(client, advisor, advisor_id, t)
    path = f"/v1/readings/{reading['id']}/end"
    before, state = await row_counts(), await _reading_state(reading["id"], client, t + 1)
    for origin in (EVIL, "null", AUTHORIZED_PARTY + ".evil.example.com", AUTHORIZED_PARTY + "/", None):
        for content_type, body in SIMPLE_BODIES:
            headers = {**at(t + 2), **_cookie(client.token)}
            if origin is not None:
                headers["origin"] = origin
            if content_type is not None:
                headers["content-type"] = content_type
            r = await Client().request("POST", path, body=body, headers=headers)
            _assert_csrf_refused(r)
    assert await row_counts() == before
    assert await _reading_state(reading["id"], client, t + 3) == state == ("active", state[1])


async def test_a_cross_origin_simple_post_with_the_cookie_cannot_accept_a_reading():
    client, _cid, advisor, advisor_id = await market_pair(funds=10_000)
    t = now_ms()
    r = await request_reading(client, advisor_id, t)
    assert r.status == 201, r.text
    path = f"/v1/readings/{r.json()['id']}/accept"
    before = await row_counts()
    for origin in (EVIL, None):
        headers = {**at(t + 1), **_cookie(advisor.token), "content-type": "text/plain"}
        if origin:
            headers["origin"] = origin
        _assert_csrf_refused(await Client().request("POST", path, body=b"x", headers=headers))
    assert await row_counts() == before
    # From the app's own origin the same cookie request goes through.
    r = await Client().request(
        "POST", path, headers={**at(t + 2), **_cookie(advisor.token), "origin": AUTHORIZED_PARTY}
    )
    assert r.status == 200 and r.json()["status"] == "active", r.text


@pytest.mark.parametrize("method", ["PATCH", "PUT", "DELETE"])
async def test_other_unsafe_methods_from_a_foreign_origin_are_refused(method):
    path = {"PATCH": "/v1/me", "PUT": "/v1/advisors/me/photo", "DELETE": "/v1/advisors/me/photo"}[method]
    _sub, bearer = await new_user("csm")
    before = await row_counts()
    headers = {**_cookie(bearer.token), "origin": EVIL, "if-match": '"1"', "content-type": "application/json"}
    _assert_csrf_refused(await Client().request(method, path, body=b'{"display_name": "Pwned"}', headers=headers))
    assert await row_counts() == before
    assert (await bearer.get("/v1/me")).json()["display_name"] is None


async def test_the_cookie_from_an_allowed_origin_works_for_every_method():
    _sub, bearer = await new_user("csok")
    cookie = _cookie(bearer.token)
    r = await Client().request(
        "PATCH",
        "/v1/me",
        body=b'{"display_name": "Ann"}',
        headers={**cookie, "origin": AUTHORIZED_PARTY, "if-match": '"1"', "content-type": "application/json"},
    )
    assert r.status == 200 and r.json()["display_name"] == "Ann", r.text


async def test_without_an_origin_a_preflight_only_header_is_proof_enough():
    """A request that carries a header no simple request may (a preflight our Worker never
    approves) cannot come from another site's page; non-browser clients send such headers."""
    _sub, bearer = await new_user("cshd")
    cookie = _cookie(bearer.token)
    base = {**cookie, "content-type": "application/json"}
    # If-Match is not CORS-safelisted: enough by itself.
    r = await Client().request("PATCH", "/v1/me", body=b'{"display_name": "Bo"}', headers={**base, "if-match": '"1"'})
    assert r.status == 200, r.text
    # X-Requested-With, Idempotency-Key likewise (a deposit needs the key anyway).
    body = (
        b'{"amount_cents": 1000, "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", '
        b'"data_value": "tok_approved.' + unique("csrf").encode() + b'"}}'
    )
    r = await Client().request("POST", "/v1/wallet/deposits", body=body, headers={**base, "idempotency-key": unique()})
    assert r.status == 201, r.text


async def test_a_json_content_type_alone_is_not_proof():
    """application/json does need a preflight in today's browsers, but sendBeacon() sent a
    Blob's type without one for years: the check does not rest on the body's declared type."""
    client, _cid, advisor, advisor_id = await market_pair(funds=10_000)
    t = now_ms()
    reading = await active_reading(client, advisor, advisor_id, t)
    headers = {**at(t + 1), **_cookie(client.token), "content-type": "application/json"}
    r = await Client().request("POST", f"/v1/readings/{reading['id']}/heartbeat", body=b"{}", headers=headers)
    _assert_csrf_refused(r)


async def test_a_foreign_origin_is_refused_even_with_a_preflight_only_header():
    _sub, bearer = await new_user("csfo")
    headers = {**_cookie(bearer.token), "origin": EVIL, "x-requested-with": "XMLHttpRequest", "if-match": '"1"'}
    r = await Client().request("PATCH", "/v1/me", body=b'{"display_name": "X"}', headers=headers)
    _assert_csrf_refused(r)


async def test_bearer_requests_are_not_affected():
    client, _cid, advisor, advisor_id = await market_pair(funds=10_000)
    t = now_ms()
    reading = await active_reading(client, advisor, advisor_id, t)
    r = await client.request(
        "POST",
        f"/v1/readings/{reading['id']}/end",
        body=b"x",
        headers={**at(t + 1), "origin": EVIL, "content-type": "text/plain"},
    )
    assert r.status == 200 and r.json()["status"] == "ended", r.text


async def test_safe_methods_with_the_cookie_need_no_origin():
    _sub, bearer = await new_user("csget")
    for origin in (None, EVIL):
        headers = {**_cookie(bearer.token), **({"origin": origin} if origin else {})}
        assert (await Client().get("/v1/me", headers=headers)).status == 200
        assert (await Client().request("HEAD", "/v1/me", headers=headers)).status == 200


async def test_a_refused_cookie_request_does_not_create_the_user():
    """The check runs before the token is verified: a first-sight user is not made either."""
    from clairvora.db import sql

    sub = f"user_{unique('csnew')}"
    token = await token_for(sub)
    r = await Client().request("POST", "/v1/readings", body=b"{}", headers={**_cookie(token), "origin": EVIL})
    _assert_csrf_refused(r)
    row = await database().first(sql("SELECT count(*) AS n FROM users WHERE clerk_user_id = ?", sub))
    assert row["n"] == 0


async def test_every_state_changing_route_refuses_a_cross_site_cookie_request():
    """The whole route table: a new route is covered as soon as it exists. The check comes
    before any lookup, so ids in the path need not exist."""
    from clairvora.app import ROUTES
    from clairvora.ids import new_id

    _sub, bearer = await new_user("csall")
    assert (await bearer.get("/v1/me")).status == 200
    before = await row_counts()
    checked = []
    for route in ROUTES:
        if route.auth not in ("user", "admin") or route.method in ("GET", "HEAD"):
            continue
        path = "/".join(
            str(new_id()) if part.startswith("{") and part.endswith("}") else part for part in route.pattern.split("/")
        )
        for origin in (EVIL, None):
            headers = {**_cookie(bearer.token), "content-type": "text/plain"}
            if origin:
                headers["origin"] = origin
            r = await Client().request(route.method, path, body=b"{}", headers=headers)
            assert r.status == 403 and r.json()["code"] == "csrf_origin_refused", (route.method, path, r.text)
        checked.append(f"{route.method} {route.pattern}")
    assert await row_counts() == before
    assert len(checked) >= 10, checked
