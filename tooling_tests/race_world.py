"""Setup script for the HTTP debit race (tooling_tests/test_http_debit_race.py).

Runs INSIDE the runtime before the scratch server is handed to the host test:
an admin, an online advisor at `argv[0]` cents a minute and one client with an
EMPTY wallet (the test funds it over HTTP, through the deposit route). Tokens
are signed with this run's private key and valid one hour."""

TOKEN_TTL_S = 3600


async def main(argv):
    from world import actor, make_admin, make_advisor

    rate_cents_per_minute = int(argv[0])
    admin = await make_admin(await actor("admin", ttl_s=TOKEN_TTL_S))
    advisor = await make_advisor(await actor("advisor", ttl_s=TOKEN_TTL_S), rate_cents_per_minute=rate_cents_per_minute)
    client = await actor("client", ttl_s=TOKEN_TTL_S)
    return {
        name: {"id": str(a.id), "token": a.token}
        for name, a in (("admin", admin), ("advisor", advisor), ("client", client))
    }
