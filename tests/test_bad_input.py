"""Bad input on every route that takes a body, a query or an id in its path:
oversized and deep bodies, invalid UTF-8, wrong types, out-of-range, fractional,
non-finite (1e999) and beyond-2**53 numbers, unknown fields (a lone UTF-16
surrogate for a name too), very long strings, control characters and NUL, lone
UTF-16 surrogates ("\\ud800" in the JSON text: no UTF-8 form, so nothing can
store, encrypt or echo it); SQL metacharacters and path traversal in every string field and
path parameter. Each answer is a 4xx problem that names the field and changes
nothing (every table's row count and version aggregate are unchanged).

The variants are derived from each route's own body/query shape, so a new
route is covered as soon as it has an authorization row (which says how to
reach it as a caller who may use it)."""

import json
from typing import Any

import pytest

from clairvora.app import ROUTES
from clairvora.config import Settings
from clairvora.ids import new_id
from clairvora.validation import MAX_JSON_DEPTH, Field, Int, ListOf, Obj, Str
from matrix import ROWS, Row, World, client_for, shared_world, world_for
from support import Client
from world import row_counts

ROUTES_BY_KEY = {(r.method, r.pattern): r for r in ROUTES}
BODY_ROWS = [row for row in ROWS if ROUTES_BY_KEY[(row.method, row.pattern)].body is not None]
QUERY_ROWS = [row for row in ROWS if ROUTES_BY_KEY[(row.method, row.pattern)].query is not None]
ID_ROUTES = [r for r in ROUTES if any(kind == "id" for _n, kind in r.path_params())]
HOSTILE_TEXT = ("'; DROP TABLE users; --", '" OR 1=1 --', "../../../../etc/passwd%00", "<script>${x}</script>")
BEYOND_53 = 2**53 + 1
# Lone UTF-16 surrogates: json.dumps writes them as "\ud800" escapes, as a client would.
LONE_SURROGATES = ("\ud800", "a\udfffb", "\udc00\ud83d")
# Number literals that Python's json reads without complaint: 1e999 becomes float('inf').
NON_FINITE_LITERALS = ("1e999", "-1e999", "1E400", "100000000000000000000000000000000000000")
_RAW = "__raw_literal__"


def _valid_value(f: Field) -> Any:
    """A value the field accepts, so a body is invalid only where a variant makes it so."""
    if isinstance(f, Str):
        if f.choices:
            return f.choices[0]
        return "UTC" if f.pattern is not None else "a" * max(1, f.min_len)
    if isinstance(f, Int):
        return max(f.low, min(f.high, 1))
    if isinstance(f, ListOf):
        return [_valid_value(f.item)] * f.min_items
    if isinstance(f, Obj):
        return {k: _valid_value(v) for k, v in f.fields.items() if k in f.required}
    raise AssertionError(type(f))


def _wrong_values(f: Field) -> list[Any]:
    if isinstance(f, Str):
        out: list[Any] = [12345, ["a"], {"a": 1}, True, "x" * (f.max_len + 1), "a\x00b", "a\x1bb", "\x00"]
        out += LONE_SURROGATES
        if f.min_len > 0:
            out.append("")
        return out
    if isinstance(f, Int):
        out = ["12", 1.5, 1e308, True, [1], BEYOND_53, -BEYOND_53, 2**63]
        if f.low > -(2**53 - 1):
            out.append(f.low - 1)
        if f.high < 2**53 - 1:
            out.append(f.high + 1)
        return out
    if isinstance(f, ListOf):
        return ["x", {"a": 1}, [_valid_value(f.item)] * (f.max_items + 1), [[]] * max(1, f.min_items)]
    if isinstance(f, Obj):
        return ["x", [], 7, {**_valid_value(f), "zz_unknown": 1}]
    raise AssertionError(type(f))


def _variants(shape: Obj, base: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(field path, body) pairs: the base body with exactly one field made invalid."""
    out = []
    for name, f in shape.fields.items():
        path = f"{prefix}{name}"
        for wrong in _wrong_values(f):
            out.append((path, {**base, name: wrong}))
        if isinstance(f, Obj):
            inner = base.get(name) if isinstance(base.get(name), dict) else _valid_value(f)
            out += [(p, {**base, name: b}) for p, b in _variants(f, inner, f"{path}.")]
    return out


def _literal_variants(shape: Obj, base: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any], str]]:
    """(field path, body with a marker, literal): a number literal put in the JSON TEXT of an
    integer field (json.dumps cannot write 1e999, it writes Infinity, which is refused earlier)."""
    out = []
    for name, f in shape.fields.items():
        path = f"{prefix}{name}"
        if isinstance(f, Int):
            out += [(path, {**base, name: _RAW}, literal) for literal in NON_FINITE_LITERALS]
        elif isinstance(f, Obj):
            inner = base.get(name) if isinstance(base.get(name), dict) else _valid_value(f)
            out += [(p, {**base, name: b}, lit) for p, b, lit in _literal_variants(f, inner, f"{path}.")]
    return out


def _hostile_variants(shape: Obj, base: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, {**base, name: text})
        for name, f in shape.fields.items()
        if isinstance(f, Str) and f.choices is None
        for text in HOSTILE_TEXT
        if len(text) <= f.max_len
    ]


async def _send(
    client: Client,
    row: Row,
    path: str,
    headers: dict[str, str],
    *,
    body: bytes | None = None,
    json_body: Any = None,
    content_type: str = "application/json",
) -> Any:
    headers = {**headers, "content-type": content_type}
    if ROUTES_BY_KEY[(row.method, row.pattern)].idempotency_key:
        headers["idempotency-key"] = f"bad-{new_id()}"
    if json_body is not None:
        body = json.dumps(json_body).encode()
    return await client.request(row.method, path, body=body, headers=headers)


async def _able_client(row: Row, world: World) -> Client:
    """A caller the matrix lets through (the owner, else the admin on admin routes; on an
    admin route whose matrix call is refused past authorization, e.g. a ledger period
    not yet ended, the admin: bad input is refused before that)."""
    able = [c for c in ("owner", "admin", "other_client") if 200 <= row.expect[c] < 300]
    caller = able[0] if able else next(c for c in ("admin",) if row.expect[c] not in (401, 403))
    return await client_for(caller, world, row.owner)


def _assert_problem(r: Any, statuses: tuple[int, ...], what: str, field: str | None = None) -> None:
    assert r.status in statuses, f"{what}: expected {statuses}, got {r.status} {r.text[:300]}"
    assert r.headers["content-type"] == "application/problem+json", what
    problem = r.json()
    assert problem["status"] == r.status and problem["code"], what
    if field is not None:  # the field itself, or a part of it ("categories[0]", "opaque_data.zz_unknown")
        named = str(problem.get("field"))
        assert named == field or named.startswith((f"{field}[", f"{field}.")), (
            f"{what}: the problem names {named!r}, not {field!r}"
        )


@pytest.mark.parametrize("row", BODY_ROWS, ids=[f"{r.method} {r.pattern}" for r in BODY_ROWS])
async def test_bad_bodies_are_refused_and_change_nothing(row: Row):
    world = await world_for(row)
    call = await row.prepare(world)
    route = ROUTES_BY_KEY[(row.method, row.pattern)]
    assert route.body is not None and isinstance(call.body, dict)
    client = await _able_client(row, world)
    limit = Settings.from_env(object()).max_body_bytes
    before = await row_counts()
    sent = 0

    raw_cases: list[tuple[str, bytes, str, tuple[int, ...]]] = [
        ("oversized", json.dumps({**call.body, "pad": "x" * limit}).encode(), "application/json", (413,)),
        ("deep", ("[" * (MAX_JSON_DEPTH * 4) + "]" * (MAX_JSON_DEPTH * 4)).encode(), "application/json", (400,)),
        ("invalid utf-8", b'{"a": "\xff\xfe"}', "application/json", (400,)),
        ("not json", b"{'single': quotes}", "application/json", (400,)),
        ("NaN", b'{"a": NaN}', "application/json", (400,)),
        ("array", b"[]", "application/json", (400,)),
        ("empty", b"", "application/json", (400,)),
        ("text/plain", json.dumps(call.body).encode(), "text/plain", (415,)),
        ("lone surrogate as a field name", b'{"\\ud800": 1}', "application/json", (400,)),
        ("NUL as a field name", b'{"\\u0000": 1}', "application/json", (400,)),
        ("Infinity", b'{"a": Infinity}', "application/json", (400,)),
    ]
    for what, body, content_type, statuses in raw_cases:
        r = await _send(client, row, call.path, call.headers, body=body, content_type=content_type)
        _assert_problem(r, statuses, f"{row.pattern} {what}")
        sent += 1

    r = await _send(client, row, call.path, call.headers, json_body={**call.body, "zz_unknown": 1})
    _assert_problem(r, (400,), f"{row.pattern} unknown field", "zz_unknown")
    for field, body in _variants(route.body, call.body):
        r = await _send(client, row, call.path, call.headers, json_body=body)
        _assert_problem(r, (400,), f"{row.pattern} {field}={json.dumps(body)[:120]}", field)
        sent += 1
    for field, body, literal in _literal_variants(route.body, call.body):
        text = json.dumps(body).replace(f'"{_RAW}"', literal).encode()
        r = await _send(client, row, call.path, call.headers, body=text)
        _assert_problem(r, (400,), f"{row.pattern} {field}={literal}", field)
        sent += 1
    assert await row_counts() == before, f"bad input changed rows on {row.method} {row.pattern}"

    # Hostile text in free-text fields is either refused, or stored as the literal text it is.
    for field, body in _hostile_variants(route.body, call.body):
        snapshot = await row_counts()
        r = await _send(client, row, call.path, call.headers, json_body=body)
        assert r.status < 500, f"{row.pattern} {field}: {r.status} {r.text[:300]}"
        if r.status >= 400:
            _assert_problem(r, (r.status,), f"{row.pattern} {field}")
            if r.status != 402:  # a declined card is recorded (payments row): that is its effect, not a leak
                assert await row_counts() == snapshot, f"{row.pattern} {field}: refused with {r.status} yet wrote"
        elif field in r.json():
            assert r.json()[field] == body[field], "hostile text was altered on its way through"
        sent += 1
    assert sent > len(raw_cases)


async def test_bad_queries_are_refused():
    """Every route with a query shape (one loop, so the test also stands while there are none)."""
    for row in QUERY_ROWS:
        world = await world_for(row)
        call = await row.prepare(world)
        route = ROUTES_BY_KEY[(row.method, row.pattern)]
        assert route.query is not None
        base = call.path.split("?", 1)[0]
        cases: list[tuple[str, str]] = [("zz_unknown=1", "zz_unknown")]
        for name, f in route.query.fields.items():
            if isinstance(f, Int):
                cases += [
                    (f"{name}=1.5", name),
                    (f"{name}=abc", name),
                    (f"{name}={BEYOND_53}", name),
                    (f"{name}={f.high + 1}", name),
                    (f"{name}=1&{name}=2", name),
                ]
            elif isinstance(f, Str):
                cases += [(f"{name}={'x' * (f.max_len + 1)}", name), (f"{name}=a%00b", name)]
        before = await row_counts()
        for query, field in cases:
            r = await (await _able_client(row, world)).request(row.method, f"{base}?{query}", headers=call.headers)
            _assert_problem(r, (400,), f"{row.pattern}?{query[:60]}", field)
        assert await row_counts() == before


async def test_hostile_path_ids_are_not_found():
    """Every route with an id in its path: traversal, SQL, out-of-range and malformed ids are 404."""
    world = await shared_world()
    before = await row_counts()
    for route in ID_ROUTES:
        client = world.admin.client if route.auth == "admin" else world.owner.client
        for bad in ("..%2F..%2Fetc%2Fpasswd", "1%20OR%201%3D1", str(BEYOND_53), "-1", "0x10", "1e5", "%00", "0"):
            path = "/".join(
                bad if part.startswith("{") and part.endswith(":id}") else part for part in route.pattern.split("/")
            )
            headers = {"idempotency-key": f"bad-{new_id()}", "content-type": "application/json"}
            r = await client.request(route.method, path, body=b"{}" if route.body else None, headers=headers)
            _assert_problem(r, (404,), f"{route.method} {path}")
    assert await row_counts() == before


# --- the chat body, explicitly -------------------------------------------------


async def test_a_lone_surrogate_in_a_chat_message_is_400_and_stores_nothing():
    from market_support import active_reading, at, market_pair, now_ms

    client, _cid, advisor, advisor_id = await market_pair(funds=10_000)
    t = now_ms()
    reading = await active_reading(client, advisor, advisor_id, t)
    path = f"/v1/readings/{reading['id']}/messages"
    before = await row_counts()
    for text in (b'{"body": "\\ud800"}', b'{"body": "hi \\udfff there"}', b'{"body": "\\ude00\\ud83d"}'):
        r = await client.request("POST", path, body=text, headers=at(t + 1, **{"content-type": "application/json"}))
        _assert_problem(r, (400,), f"chat {text!r}", "body")
    assert await row_counts() == before
    # A surrogate PAIR is one character (U+1F600) and is welcome.
    r = await client.request(
        "POST", path, body=b'{"body": "\\ud83d\\ude00"}', headers=at(t + 2, **{"content-type": "application/json"})
    )
    assert r.status == 201 and r.json()["body"] == "\U0001f600", r.text
    r = await advisor.get(path, headers=at(t + 3))
    assert [m["body"] for m in r.json()["items"]] == ["\U0001f600"]


# --- session tokens: time claims that are not finite integers -------------------

# Literals as they stand in the token's JSON text (json.dumps cannot write most of them).
BAD_TIME_LITERALS = (
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "-Infinity",
    '"1700000000"',
    "true",
    "false",
    "null",
    "[1]",
    "{}",
    str(2**53),
    str(2**53 + 1),
    str(2**64),
    "1" + "0" * 40,
    "1.5",
    "1e10",
    "-1",
)


async def _sign_text(claims_text: str) -> str:
    """A correctly signed token whose payload is exactly `claims_text`."""
    import js
    import local_runtime
    from pyodide.ffi import to_js

    from support import _private_key, b64url

    header = b64url(json.dumps({"alg": "RS256", "kid": "ins_test", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64url(claims_text.encode())}"
    key = await _private_key(str(local_runtime.secrets.CLERK_TEST_PRIVATE_KEY))
    algorithm = to_js({"name": "RSASSA-PKCS1-v1_5"}, dict_converter=js.Object.fromEntries)
    signature = await js.crypto.subtle.sign(algorithm, key, to_js(signing_input.encode()))
    return f"{signing_input}.{b64url(signature.to_bytes())}"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
async def test_time_claims_that_are_not_finite_integers_are_401(claim: str):
    from clairvora.db import sql
    from support import claims_for, database, unique

    for literal in BAD_TIME_LITERALS:
        if literal == "null" and claim != "exp":
            continue  # an absent or null nbf/iat is allowed (Clerk always sends them; the JWT spec makes them optional)
        sub = f"user_{unique('badt')}"
        text = json.dumps(claims_for(sub, **{claim: _RAW})).replace(f'"{_RAW}"', literal)
        r = await Client(await _sign_text(text)).get("/v1/me")
        _assert_problem(r, (401,), f"{claim}={literal}")
        assert r.json()["code"] == "unauthorized", r.text
        row = await database().first(sql("SELECT count(*) AS n FROM users WHERE clerk_user_id = ?", sub))
        assert row["n"] == 0, f"{claim}={literal}: a refused token created its user"


# --- erasure: the only input is If-Match -----------------------------------------


async def test_erasure_with_a_bad_if_match_is_refused_and_erases_nothing():
    """DELETE /v1/me has no body or query: its guard is If-Match (the caller's current version)."""
    from world import actor

    a = await actor("badx")
    before = await row_counts()
    for value, status in (
        ("*", 412),
        ('"1.5"', 412),
        ('W/"x"', 412),
        ('"' + "9" * 16 + '"', 412),
        ("'; DROP TABLE users; --", 412),
        ('"0"', 412),
        ('"2"', 412),
        ("", 412),
    ):
        r = await a.client.delete("/v1/me", headers={"if-match": value})
        _assert_problem(r, (status,), f"DELETE /v1/me If-Match {value!r}")
    r = await a.client.delete("/v1/me")
    _assert_problem(r, (428,), "DELETE /v1/me without If-Match")
    # A body is not read: the version alone decides (and here it is stale).
    r = await a.client.request("DELETE", "/v1/me", body=b'{"confirm": true}', headers={"if-match": '"9"'})
    _assert_problem(r, (412,), "DELETE /v1/me with a body")
    assert await row_counts() == before
    r = await a.client.get("/v1/me")
    assert r.status == 200 and r.json()["id"] == str(a.id), "the account is still there"
