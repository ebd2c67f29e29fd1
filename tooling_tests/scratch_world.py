"""Setup script for `node runtime/cli.mjs serve-scratch --setup tooling_tests/scratch_world.py [N]`.

Runs INSIDE the runtime before the scratch server is handed to a host test:
makes an admin, N online advisors and N funded clients (default 2) and returns
their ids and bearer tokens (signed with this run's private key, valid one
hour), which the CLI writes into the info file for the host test."""

TOKEN_TTL_S = 3600
CLIENT_FUNDS_CENTS = 1_000_000


async def main(argv):
    from world import actor, credit, make_admin, make_advisor

    clients_wanted = int(argv[0]) if len(argv) else 2
    admin = await make_admin(await actor("admin", ttl_s=TOKEN_TTL_S))
    advisors = [
        await make_advisor(await actor("advisor", ttl_s=TOKEN_TTL_S), rate_cents_per_minute=100)
        for _ in range(max(1, clients_wanted))
    ]
    clients = []
    for _ in range(clients_wanted):
        c = await actor("client", ttl_s=TOKEN_TTL_S)
        await credit(c.id, CLIENT_FUNDS_CENTS)
        clients.append({"id": str(c.id), "token": c.token})
    return {
        "admin": {"id": str(admin.id), "token": admin.token},
        "advisor": {"id": str(advisors[0].id), "token": advisors[0].token},
        "advisors": [{"id": str(a.id), "token": a.token} for a in advisors],
        "clients": clients,
    }
