"""The per-isolate cache of verified token signatures: a hit skips only the
signature check; every claim is still checked, and the cache stays bounded."""

import time

import local_runtime

from clairvora import auth
from clairvora.errors import Problem
from support import AUTHORIZED_PARTY, ISSUER, claims_for, new_user, sign_token, unique


async def test_a_cached_token_still_expires():
    _sub, client = await new_user("ac")
    assert (await client.get("/v1/me")).status == 200
    assert (await client.get("/v1/me")).status == 200  # signature now cached
    late_ms = (int(time.time()) + 60 + 6) * 1000  # past exp + the 5 s skew
    resp = await client.get("/v1/me", headers={"x-test-now-ms": str(late_ms)})
    assert resp.status == 401 and resp.json()["code"] == "unauthorized", resp.text


async def test_cache_is_bounded_and_keyed_by_the_whole_token():
    pem = str(local_runtime.secrets.CLERK_JWT_KEY)
    saved_max, saved = auth.MAX_VERIFIED_TOKENS, dict(auth._VERIFIED)
    auth.MAX_VERIFIED_TOKENS = 2
    auth._VERIFIED.clear()
    try:
        tokens = [await sign_token(claims_for(f"user_{unique('ac')}")) for _ in range(3)]
        now_s = int(time.time())
        for token in tokens:
            identity = await auth.verify_token(
                token,
                public_key_pem=pem,
                issuer=ISSUER,
                authorized_parties=(AUTHORIZED_PARTY,),
                now_s=now_s,
                clock_skew_s=5,
            )
            assert identity.sub.startswith("user_ac")
        assert list(auth._VERIFIED) == [(pem, tokens[1]), (pem, tokens[2])]  # the oldest went first
        # A token differing from a cached one in its signature is checked, and refused.
        forged = tokens[2][:-4] + ("AAAA" if not tokens[2].endswith("AAAA") else "BBBB")
        try:
            await auth.verify_token(
                forged,
                public_key_pem=pem,
                issuer=ISSUER,
                authorized_parties=(AUTHORIZED_PARTY,),
                now_s=now_s,
                clock_skew_s=5,
            )
        except Problem as problem:
            assert problem.status == 401
        else:
            raise AssertionError("a forged signature was accepted")
        assert (pem, forged) not in auth._VERIFIED
    finally:
        auth.MAX_VERIFIED_TOKENS = saved_max
        auth._VERIFIED.clear()
        auth._VERIFIED.update(saved)
