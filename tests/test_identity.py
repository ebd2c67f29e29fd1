"""Clerk session tokens (RS256, verified with WebCrypto in the Worker), users
created on first sight, and /v1/me with optimistic concurrency."""

import asyncio
import base64
import hashlib
import hmac
import json
import time

import local_runtime
import pytest

from clairvora.db import sql
from dispatch import fetch_with_vars
from support import (
    ISSUER,
    Client,
    b64url,
    claims_for,
    database,
    generate_other_private_key,
    new_user,
    sign_token,
    unique,
)

NOW_S = int(time.time())
AT_NOW = {"x-test-now-ms": str(NOW_S * 1000)}
RS256 = {"alg": "RS256", "kid": "ins_test", "typ": "JWT"}


def new_sub(prefix: str = "id") -> str:
    return f"user_{unique(prefix)}"


async def get_me(token: str | None, headers: dict[str, str] | None = None):
    return await Client(token).get("/v1/me", headers={**AT_NOW, **(headers or {})})


async def users_with_sub(sub: str) -> int:
    row = await database().first(sql("SELECT count(*) AS n FROM users WHERE clerk_user_id = ?", sub))
    return int(row["n"])


async def assert_refused(token: str | None, sub: str | None, detail: str, headers: dict[str, str] | None = None):
    r = await get_me(token, headers)
    assert r.status == 401, (r.status, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"] == 'Bearer realm="clairvora"'
    body = r.json()
    assert body["code"] == "unauthorized" and detail in body["detail"], body
    if sub is not None:
        assert await users_with_sub(sub) == 0, "a refused token must not create a user"


async def token(sub: str, header: dict | None = None, key=None, **overrides) -> str:
    return await sign_token(claims_for(sub, now_s=NOW_S, **overrides), header or RS256, key)


# --- valid tokens and the time claims ---------------------------------------------


async def test_valid_token_gets_own_profile_and_creates_the_user():
    sub = new_sub()
    r = await get_me(await token(sub))
    assert r.status == 200, r.text
    body = r.json()
    assert body["roles"] == ["client"] and body["version"] == 1 and body["time_zone"] == "UTC"
    assert isinstance(body["id"], str) and body["id"].isdigit()
    assert await users_with_sub(sub) == 1


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        ({"exp": NOW_S - 4}, True),  # within the 5 s skew
        ({"exp": NOW_S - 6}, False),
        ({"nbf": NOW_S + 4}, True),
        ({"nbf": NOW_S + 6}, False),
        ({"iat": NOW_S + 6}, False),
        ({"iat": NOW_S + 4, "nbf": None}, True),
    ],
)
async def test_time_claims_with_small_skew(claims, ok):
    sub = new_sub("time")
    r = await get_me(await token(sub, **claims))
    assert (r.status == 200) is ok, (claims, r.text)


async def test_expired_not_yet_valid_and_future_issued_tokens_are_refused():
    sub = new_sub("exp")
    await assert_refused(await token(sub, exp=NOW_S - 60), sub, "expired")
    await assert_refused(await token(sub, nbf=NOW_S + 60), sub, "not yet valid")
    await assert_refused(await token(sub, iat=NOW_S + 60, nbf=None), sub, "issued in the future")
    await assert_refused(await token(sub, exp=None), sub, "no expiry")
    await assert_refused(await token(sub, exp="tomorrow"), sub, "'exp'")


async def test_wrong_or_missing_issuer_is_refused():
    sub = new_sub("iss")
    await assert_refused(await token(sub, iss="https://evil.example.com"), sub, "issuer")
    await assert_refused(await token(sub, iss=ISSUER + "/"), sub, "issuer")
    await assert_refused(await token(sub, iss=None), sub, "issuer")


async def test_azp_must_be_an_allowed_origin_when_present():
    sub = new_sub("azp")
    await assert_refused(await token(sub, azp="https://evil.example.com"), sub, "authorized party")
    await assert_refused(await token(sub, azp=["http://localhost:5173"]), sub, "authorized party")
    allowed = str(local_runtime.vars.CLERK_AUTHORIZED_PARTIES).split(",")
    for origin in allowed:
        assert (await get_me(await token(new_sub("azp"), azp=origin.strip()))).status == 200
    # Clerk omits azp for some token kinds: accepted.
    assert (await get_me(await token(new_sub("azp"), azp=None))).status == 200


@pytest.mark.parametrize("sub", [None, "", "x" * 65, "user_\u00e9", "user\n1", 42])
async def test_subject_is_required_and_sane(sub):
    claims = claims_for("placeholder", now_s=NOW_S)
    claims["sub"] = sub
    if sub is None:
        del claims["sub"]
    r = await get_me(await sign_token(claims, RS256))
    assert r.status == 401 and "subject" in r.json()["detail"]


# --- signatures and algorithms ---------------------------------------------------


async def test_token_signed_with_another_key_is_refused():
    sub = new_sub("key")
    await assert_refused(await token(sub, key=await generate_other_private_key()), sub, "signature")


async def test_tampered_payload_is_refused():
    sub, other = new_sub("tamper"), new_sub("tamper")
    head, _payload, sig = (await token(sub)).split(".")
    forged = b64url(json.dumps(claims_for(other, now_s=NOW_S)).encode())
    await assert_refused(f"{head}.{forged}.{sig}", other, "signature")


async def test_alg_none_is_refused_with_or_without_a_signature():
    sub = new_sub("none")
    claims = b64url(json.dumps(claims_for(sub, now_s=NOW_S)).encode())
    for alg in ("none", "None", "NONE"):
        head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        await assert_refused(f"{head}.{claims}.", sub, "algorithm")
    # A genuine RS256 signature does not rescue a header that says none.
    _h, _c, real_sig = (await token(sub)).split(".")
    head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    await assert_refused(f"{head}.{claims}.{real_sig}", sub, "algorithm")


async def test_hs256_signed_with_the_public_key_is_refused():
    sub = new_sub("hs")
    pem = str(local_runtime.secrets.CLERK_JWT_KEY)
    der = base64.b64decode("".join(line for line in pem.strip().splitlines() if not line.startswith("-----")))
    claims = b64url(json.dumps(claims_for(sub, now_s=NOW_S)).encode())
    for alg in ("HS256", "RS256"):
        head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        for secret in (pem.encode(), pem.strip().encode(), der):
            mac = hmac.new(secret, f"{head}.{claims}".encode(), hashlib.sha256).digest()
            await assert_refused(f"{head}.{claims}.{b64url(mac)}", sub, "algorithm" if alg == "HS256" else "signature")


async def test_other_algorithms_and_types_are_refused():
    sub = new_sub("alg")
    await assert_refused(await token(sub, header={"alg": "RS512", "typ": "JWT"}), sub, "algorithm")
    await assert_refused(await token(sub, header={"alg": "ES256", "typ": "JWT"}), sub, "algorithm")
    await assert_refused(await token(sub, header={"alg": "RS256", "typ": "JWE"}), sub, "type")


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "a.b",
        "a.b.c",
        "!!!.!!!.!!!",
        "..",
        "e30.e30.",
        "W10.e30.c2ln",
        "e30.W10.c2ln",
        b64url(b"not json") + "." + b64url(b"{}") + ".c2ln",
        "\u00e9.\u00e9.\u00e9",
    ],
)
async def test_malformed_tokens_are_refused(bad):
    await assert_refused(bad, None, "")


async def test_missing_or_badly_presented_credentials_are_refused():
    await assert_refused(None, None, "Authentication required")
    sub = new_sub("scheme")
    good = await token(sub)
    for authorization in (f"Basic {good}", "Bearer", "Bearer   ", f"Token {good}", good):
        r = await Client().get("/v1/me", headers={**AT_NOW, "authorization": authorization})
        assert r.status == 401, authorization
    assert await users_with_sub(sub) == 0


async def test_extra_segments_are_refused():
    sub = new_sub("seg")
    good = await token(sub)
    await assert_refused(good + ".extra", sub, "Malformed")
    await assert_refused(good + ".", sub, "Malformed")
    await assert_refused(".".join([*good.split("."), "a", "b"]), sub, "Malformed")


async def test_overlong_token_is_refused():
    sub = new_sub("long")
    await assert_refused(await token(sub, pad="x" * 5000), sub, "too long")


# --- the __session cookie ------------------------------------------------------


async def test_session_cookie_is_accepted_without_a_header():
    sub = new_sub("cookie")
    good = await token(sub)
    for cookie in (f"__session={good}", f"theme=dark; __session={good}", f"__session_Xy12AbCd={good}; a=b"):
        r = await Client().get("/v1/me", headers={**AT_NOW, "cookie": cookie})
        assert r.status == 200, (cookie, r.text)
    assert await users_with_sub(sub) == 1


async def test_other_cookies_do_not_authenticate_and_the_header_wins():
    sub = new_sub("cookie2")
    good = await token(sub)
    await assert_refused(None, sub, "Authentication required", {"cookie": f"session={good}; __client={good}"})
    await assert_refused(None, sub, "", {"cookie": f"__session={good}", "authorization": "Bearer nope.nope.nope"})


# --- first sight ----------------------------------------------------------------


async def test_first_sight_race_creates_one_user_and_one_wallet():
    sub = new_sub("race")
    client = Client(await token(sub))
    responses = await asyncio.gather(*(client.get("/v1/me", headers=AT_NOW) for _ in range(3)))
    assert [r.status for r in responses] == [200, 200, 200], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    # The requests really overlapped: each missed the user and ran the create batch.
    assert all("calls=2" in r.headers["server-timing"] for r in responses), [
        r.headers["server-timing"] for r in responses
    ]
    db = database()
    assert await users_with_sub(sub) == 1
    wallets = await db.first(
        sql(
            """SELECT count(*) AS n FROM accounts a JOIN users u ON u.id = a.owner_user_id
                                    WHERE u.clerk_user_id = ? AND a.kind = 'client_wallet'""",
            sub,
        )
    )
    assert wallets["n"] == 1


# --- PATCH /v1/me ----------------------------------------------------------------


async def _me(client: Client):
    r = await client.get("/v1/me")
    assert r.status == 200, r.text
    return r


async def test_get_me_carries_etag_and_version():
    _sub, client = await new_user("etag")
    r = await _me(client)
    assert r.headers["etag"] == '"1"' and r.json()["version"] == 1
    head = await client.request("HEAD", "/v1/me")
    assert head.status == 200 and head.headers["etag"] == '"1"' and head.body == b""


async def test_patch_without_if_match_is_428_and_changes_nothing():
    _sub, client = await new_user("p428")
    before = (await _me(client)).json()
    r = await client.patch("/v1/me", json={"display_name": "Ann"})
    assert r.status == 428 and r.json()["code"] == "precondition_required"
    assert "rows_written=0" in r.headers["server-timing"]
    assert (await _me(client)).json() == before


async def test_patch_with_matching_version_updates_and_bumps_it():
    _sub, client = await new_user("p200")
    r = await client.patch(
        "/v1/me", json={"display_name": "Ann", "time_zone": "Europe/Paris"}, headers={"if-match": '"1"'}
    )
    assert r.status == 200, r.text
    body = r.json()
    assert body["display_name"] == "Ann" and body["time_zone"] == "Europe/Paris" and body["version"] == 2
    assert r.headers["etag"] == '"2"'
    # Weak and bare forms of the version are accepted too; null clears the name.
    r = await client.patch("/v1/me", json={"display_name": None}, headers={"if-match": 'W/"2"'})
    assert r.status == 200 and r.json()["display_name"] is None and r.json()["time_zone"] == "Europe/Paris"
    r = await client.patch("/v1/me", json={"time_zone": "UTC"}, headers={"if-match": "3"})
    assert r.status == 200 and r.json()["version"] == 4
    got = await _me(client)
    assert got.json()["version"] == 4 and got.headers["etag"] == '"4"'


@pytest.mark.parametrize("if_match", ['"0"', '"2"', '"999"', "*", '"abc"', '"1", "2"'])
async def test_stale_or_unusable_if_match_is_412_and_changes_nothing(if_match):
    _sub, client = await new_user("p412")
    before = (await _me(client)).json()
    r = await client.patch("/v1/me", json={"display_name": "Mallory"}, headers={"if-match": if_match})
    assert r.status == 412 and r.json()["code"] == "version_conflict", r.text
    assert (await _me(client)).json() == before


async def test_invalid_time_zone_is_400():
    _sub, client = await new_user("tz")
    r = await client.patch("/v1/me", json={"time_zone": "not a zone"}, headers={"if-match": '"1"'})
    assert r.status == 400 and r.json()["field"] == "time_zone"
    assert (await _me(client)).json()["version"] == 1


async def test_two_concurrent_patches_with_the_same_version_one_wins():
    _sub, client = await new_user("prace")
    await _me(client)
    a, b = await asyncio.gather(
        client.patch("/v1/me", json={"display_name": "Alpha"}, headers={"if-match": '"1"'}),
        client.patch("/v1/me", json={"display_name": "Beta"}, headers={"if-match": '"1"'}),
    )
    assert sorted([a.status, b.status]) == [200, 412], (a.text, b.text)
    winner = a if a.status == 200 else b
    now = (await _me(client)).json()
    assert now["version"] == 2 and now["display_name"] == winner.json()["display_name"]


# --- test hooks exist only in local configuration ------------------------------


@pytest.mark.parametrize(
    ("overrides", "accepted"),
    [
        ({}, True),
        ({"ENVIRONMENT": "production", "TEST_HOOKS": "allowed"}, False),
        ({"ENVIRONMENT": "staging"}, False),
        ({"TEST_HOOKS": "forbidden"}, False),
    ],
)
async def test_the_clock_hook_is_ignored_outside_local_configuration(overrides, accepted):
    # A token that expired an hour ago, valid at the instant x-test-now-ms names:
    # only a local configuration with TEST_HOOKS=allowed may move the clock.
    then_s = NOW_S - 3650
    sub = new_sub("hook")
    old = await sign_token(claims_for(sub, now_s=then_s), RS256)
    r = await fetch_with_vars(
        "/v1/me", headers={"authorization": f"Bearer {old}", "x-test-now-ms": str(then_s * 1000)}, **overrides
    )
    assert (r.status == 200) is accepted, r.text
    if not accepted:
        assert "expired" in r.json()["detail"] and await users_with_sub(sub) == 0


# --- a bounded lifetime (MAX_TOKEN_LIFETIME_SECONDS) ------------------------------


def _max_lifetime() -> int:
    return int(str(local_runtime.vars.MAX_TOKEN_LIFETIME_SECONDS))


async def test_a_token_that_practically_never_expires_is_refused():
    far = _max_lifetime() + 3600
    sub = new_sub("life")
    await assert_refused(await token(sub, exp=NOW_S + far), sub, "lifetime")  # iat = now
    await assert_refused(await token(sub, exp=NOW_S + far, iat=None), sub, "lifetime")  # exp - now alone
    await assert_refused(await token(sub, exp=NOW_S + 60, iat=NOW_S - far, nbf=NOW_S - far), sub, "lifetime")
    await assert_refused(await token(sub, exp=2**52, iat=None, nbf=None), sub, "lifetime")
    await assert_refused(await token(sub, exp=NOW_S + 100 * 365 * 86400), sub, "lifetime")


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        ({"iat": NOW_S, "exp": NOW_S + 300}, True),  # exactly the maximum
        ({"iat": NOW_S, "exp": NOW_S + 301}, False),
        ({"iat": NOW_S - 200, "exp": NOW_S + 101}, False),  # 301 s in all, 101 s left
        ({"iat": NOW_S - 200, "exp": NOW_S + 100}, True),
        ({"iat": None, "exp": NOW_S + 305}, True),  # no iat: what is left counts, with the 5 s skew
        ({"iat": None, "exp": NOW_S + 306}, False),
    ],
)
async def test_the_lifetime_limit_is_the_configured_var(claims, ok):
    """With MAX_TOKEN_LIFETIME_SECONDS=300: exp - iat and exp - now are both bounded by it."""
    sub = new_sub("lvar")
    good = await token(sub, nbf=None, **claims)
    r = await fetch_with_vars(
        "/v1/me", headers={"authorization": f"Bearer {good}", **AT_NOW}, MAX_TOKEN_LIFETIME_SECONDS="300"
    )
    assert (r.status == 200) is ok, (claims, r.status, r.text)
    if not ok:
        assert r.status == 401 and "lifetime" in r.json()["detail"], r.text
        assert await users_with_sub(sub) == 0


@pytest.mark.parametrize("value", ["0", "-5", "abc", str(10**12)])
async def test_an_unusable_lifetime_var_is_a_configuration_error(value):
    sub = new_sub("lbad")
    r = await fetch_with_vars(
        "/v1/me", headers={"authorization": f"Bearer {await token(sub)}", **AT_NOW}, MAX_TOKEN_LIFETIME_SECONDS=value
    )
    assert r.status == 500 and r.json()["code"] == "misconfigured", r.text


async def test_clerk_shaped_tokens_pass_in_every_environment_lifetime():
    """A real Clerk session token (60 s) is far inside the limit configured anywhere."""
    assert 3600 <= _max_lifetime()
    sub = new_sub("clerk")
    assert (await get_me(await token(sub, iat=NOW_S, exp=NOW_S + 60))).status == 200
