"""The promo operations the bench measures (issue 14 items 1-3): promo codes,
redemptions, the balance with promo credit, minutes paid by promo credit, a
satisfaction credit (the client's claim and an admin's grant), a refund of a
promo-paid reading and one expiry of the cron's sweep. Each money movement is
marked `money` (target: its transfer in exactly one D1 call)."""

import time
from typing import Any

from measure import Row, sample_request, sample_statements
from operations import MINUTE_MS, Clock, User, World, log, measure_api, new_client

from clairvora import promo
from clairvora.clock import rfc3339
from clairvora.db import sql
from support import database, unique

DAY_MS = 86_400_000


async def _admin() -> User:
    admin = await new_client("bench_promo_admin_")
    await database().run(sql("UPDATE users SET is_admin = 1 WHERE id = ?", admin.id))
    return admin


def _code_body(**fields: Any) -> dict[str, Any]:
    body = {
        "code": unique("BENCH").upper()[:32],
        "valid_until": rfc3339(int(time.time() * 1000) + 30 * DAY_MS),
        "max_redemptions": 100_000,
        "per_client_limit": 100,
        **fields,
    }
    if "free_minutes" not in body:
        body.setdefault("credit_cents", 300)
    return body


async def _code(admin: User, **fields: Any) -> dict[str, Any]:
    r = await admin.client.post("/v1/admin/promo-codes", _code_body(**fields), headers={"idempotency-key": unique()})
    assert r.status == 201, r.text
    return r.json()


def _redeem(user: User, code: str, headers: dict[str, str] | None = None, key: str | None = None) -> Any:
    return user.client.post(
        "/v1/promo-codes/redeem", {"code": code}, headers={**(headers or {}), "idempotency-key": key or unique()}
    )


async def promo_ops(world: World) -> list[Row]:
    if not world.has("POST", "/v1/promo-codes/redeem"):
        return []
    admin = await _admin()
    reps = world.sizes.reps
    rows = await measure_api(
        world,
        "promo",
        "POST /v1/admin/promo-codes (create)",
        "—",
        "POST",
        "/v1/admin/promo-codes",
        lambda i: admin.client.post("/v1/admin/promo-codes", _code_body(), headers={"idempotency-key": unique()}),
        expect=(201,),
    )
    code = await _code(admin)
    rows += await measure_api(
        world,
        "promo",
        "GET /v1/admin/promo-codes?limit=25",
        "all bench codes",
        "GET",
        "/v1/admin/promo-codes",
        lambda i: admin.client.get("/v1/admin/promo-codes?limit=25"),
    )
    rows += await measure_api(
        world,
        "promo",
        "GET /v1/admin/promo-codes/{id}",
        "—",
        "GET",
        "/v1/admin/promo-codes/{code_id:id}",
        lambda i: admin.client.get(f"/v1/admin/promo-codes/{code['id']}"),
    )
    spare = [await _code(admin) for _ in range(reps + 1)]
    rows += await measure_api(
        world,
        "promo",
        "POST /v1/admin/promo-codes/{id}/disable",
        "—",
        "POST",
        "/v1/admin/promo-codes/{code_id:id}/disable",
        lambda i: admin.client.post(
            f"/v1/admin/promo-codes/{spare[i]['id']}/disable", headers={"idempotency-key": unique()}
        ),
    )
    client = await new_client("bench_promo_client_")
    rows += await measure_api(
        world,
        "promo",
        "POST /v1/promo-codes/redeem (credit: grant)",
        "one code, one client",
        "POST",
        "/v1/promo-codes/redeem",
        lambda i: _redeem(client, code["code"]),
        money=True,
        expect=(201,),
    )
    key = unique("bench_redeem_replay_")
    rows += await measure_api(
        world,
        "promo",
        "POST /v1/promo-codes/redeem (same Idempotency-Key: replay)",
        "—",
        "POST",
        "/v1/promo-codes/redeem",
        lambda i: _redeem(client, code["code"], key=key),
        expect=(201,),
    )
    rows += await measure_api(
        world,
        "promo",
        "GET /v1/wallet (with promo credit)",
        f"{reps + 2} grants",
        "GET",
        "/v1/wallet",
        lambda i: client.client.get("/v1/wallet"),
    )
    minutes_code = await _code(admin, free_minutes=2, max_cents_per_minute=100)
    offers = await new_client("bench_promo_offers_")
    rows += await measure_api(
        world,
        "promo",
        "POST /v1/promo-codes/redeem (free minutes: offer)",
        "—",
        "POST",
        "/v1/promo-codes/redeem",
        lambda i: _redeem(offers, minutes_code["code"]),
        expect=(201,),
    )
    rows += await _promo_readings(world, admin, minutes_code["code"])
    rows += await _expiry(world, admin)
    return rows


async def _promo_readings(world: World, admin: User, minutes_code: str) -> list[Row]:
    """Per cycle a fresh client with 2 free minutes and a funded wallet: accept (the
    offer's grant + minute 1), a promo-paid minute, a wallet-paid one, the end, a
    satisfaction claim, a refund; then readings for admins' satisfaction credits."""
    from market_support import fund

    advisor = await new_client("bench_promo_advisor_")
    made = await advisor.client.post(
        "/v1/advisors", {"headline": "Promo bench", "bio": "", "categories": ["tarot"], "rate_cents_per_minute": 100}
    )
    online = await advisor.client.patch(
        "/v1/advisors/me", json={"status": "online"}, headers={"if-match": made.headers["etag"]}
    )
    assert online.status == 200, online.text
    clock = Clock()
    ops = {
        "accept": Row(
            "promo",
            "POST /v1/readings/{id}/accept (free-minutes offer: grant + minute 1)",
            "—",
            route=("POST", "/v1/readings/{reading_id:id}/accept"),
            money=True,
        ),
        "promo_minute": Row(
            "promo",
            "POST /v1/readings/{id}/heartbeat (bills a promo-paid minute)",
            "—",
            route=("POST", "/v1/readings/{reading_id:id}/heartbeat"),
            money=True,
        ),
        "wallet_minute": Row(
            "promo",
            "POST /v1/readings/{id}/heartbeat (bills a wallet minute, promo spent)",
            "—",
            route=("POST", "/v1/readings/{reading_id:id}/heartbeat"),
            money=True,
        ),
        "claim": Row(
            "promo",
            "POST /v1/readings/{id}/satisfaction-claim",
            "—",
            route=("POST", "/v1/readings/{reading_id:id}/satisfaction-claim"),
            money=True,
        ),
        "refund": Row(
            "promo",
            "POST /v1/admin/readings/{id}/refund (1 cent, promo-paid reading)",
            "—",
            route=("POST", "/v1/admin/readings/{reading_id:id}/refund"),
            money=True,
        ),
        "grant": Row(
            "promo",
            "POST /v1/admin/readings/{id}/satisfaction-credit",
            "—",
            route=("POST", "/v1/admin/readings/{reading_id:id}/satisfaction-credit"),
            money=True,
        ),
    }

    async def timed(name: str, record: bool, request: Any, expect: int = 200) -> Any:
        """`request`: the coroutine of the request to time (awaited here, once)."""
        sample, resp = await sample_request(lambda: request)
        if sample.status != expect:
            ops[name].note = f"unexpected HTTP {sample.status}: {resp.text[:200]}"
            log(f"{ops[name].operation}: {ops[name].note}")
        if record:
            ops[name].samples.append(sample)
        return resp

    for cycle in range(world.sizes.reps + 1):
        record = cycle > 0
        client = await new_client("bench_promo_reader_")
        await fund(client.id, 1000)
        assert (await _redeem(client, minutes_code, clock.at(1000))).status == 201
        body = {"advisor_id": str(advisor.id)}
        r = await client.client.post("/v1/readings", body, headers={**clock.at(1000), "idempotency-key": unique()})
        rid = r.json()["id"]
        start = clock.at(1000)
        await timed("accept", record, advisor.client.post(f"/v1/readings/{rid}/accept", headers=start))
        beat = clock.at(MINUTE_MS)
        await advisor.client.post(f"/v1/readings/{rid}/heartbeat", headers=beat)
        await timed("promo_minute", record, client.client.post(f"/v1/readings/{rid}/heartbeat", headers=beat))
        beat = clock.at(MINUTE_MS)
        await advisor.client.post(f"/v1/readings/{rid}/heartbeat", headers=beat)
        await timed("wallet_minute", record, client.client.post(f"/v1/readings/{rid}/heartbeat", headers=beat))
        await client.client.post(f"/v1/readings/{rid}/end", headers=clock.at(1000))
        claim = {"reason": "bench"}
        await timed(
            "claim",
            record,
            client.client.post(
                f"/v1/readings/{rid}/satisfaction-claim", claim, headers={**clock.at(1000), "idempotency-key": unique()}
            ),
            201,
        )
        refund = {"amount_cents": 1, "reason": "bench"}
        await timed(
            "refund",
            record,
            admin.client.post(f"/v1/admin/readings/{rid}/refund", refund, headers={"idempotency-key": unique()}),
            201,
        )
        other = await new_client("bench_promo_goodwill_")
        await fund(other.id, 1000)
        r = await other.client.post("/v1/readings", body, headers={**clock.at(1000), "idempotency-key": unique()})
        gid = r.json()["id"]
        await advisor.client.post(f"/v1/readings/{gid}/accept", headers=clock.at(1000))
        await other.client.post(f"/v1/readings/{gid}/end", headers=clock.at(1000))
        credit = {"amount_cents": 50, "reason": "bench"}
        await timed(
            "grant",
            record,
            admin.client.post(
                f"/v1/admin/readings/{gid}/satisfaction-credit",
                credit,
                headers={**clock.at(1000), "idempotency-key": unique()},
            ),
            201,
        )
    return list(ops.values())


async def _expiry(world: World, admin: User) -> list[Row]:
    """One expiry of the cron's sweep (one batch per grant), statement level."""
    short = await _code(admin, credit_cents=100, credit_valid_days=1)
    client = await new_client("bench_promo_expiring_")
    for _ in range(world.sizes.reps + 1):
        assert (await _redeem(client, short["code"])).status == 201
    later = int(time.time() * 1000) + 2 * DAY_MS
    due = await database().all(
        sql(
            "SELECT id, client_id, remaining_cents, expires_at_ms FROM promo_grants WHERE client_id = ? AND "
            "remaining_cents > 0",
            client.id,
        )
    )
    row = Row("promo", "cron: promo expiry of one grant (one batch, statement level)", "—")
    for i, grant in enumerate(due.rows):
        sample, _ = await sample_statements(database(), promo.expiry_statements(grant, later))
        if i:
            row.samples.append(sample)
    return [row]
