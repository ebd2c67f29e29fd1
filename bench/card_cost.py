"""Card money going back: D1 calls, rows read and rows written of each refund
and chargeback operation (the Worker's own server-timing header), and how many
of the calls moved money (a batch carrying a ledger transfer).

    node runtime/cli.mjs run bench/card_cost.py [reps]

Runs inside the real workerd on a fresh scratch D1 with the Authorize.Net
stand-in; each client has real card deposits, settled at the stand-in. Prints
a markdown table for docs/BENCHMARKS.md ("Card money going back"). Every
operation is sampled `reps` times (default 5) on fresh objects; figures are
min-max over the samples."""

import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/ is on the path already (harness)

import measure

from card_support import deposit, plan, refund
from clairvora import refund_resolution
from clairvora.config import Settings
from clairvora.db import sql
from support import database, unique
from world import Actor, actor, ended_reading, make_admin, make_advisor

Send = Callable[[], Awaitable[Any]]


def _figures(resp: Any) -> tuple[int, int, int]:
    calls, read, written, _d1, _py = measure.parse_server_timing(resp.headers.get("server-timing"))
    return calls, read, written


def _span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}-{hi}"


class Table:
    def __init__(self) -> None:
        self.rows: list[str] = []

    async def add(self, name: str, status: int, reps: int, make: Callable[[], Awaitable[Send]]) -> None:
        samples, money, ms = [], [], []
        for _ in range(reps):
            send = await make()
            before = measure._MONEY["calls"]
            started = time.perf_counter()
            resp = await send()
            ms.append((time.perf_counter() - started) * 1000)
            assert resp.status == status, (name, resp.status, resp.text[:300])
            samples.append(_figures(resp))
            money.append(measure._MONEY["calls"] - before)
        calls, read, written = (_span([s[i] for s in samples]) for i in range(3))
        self.rows.append(
            f"| {name} | {status} | {calls} | {_span(money)} | {read} | {written} | {statistics.median(ms):.0f} |"
        )

    def text(self) -> str:
        head = (
            "| operation | status | D1 calls | of which money movements | rows_read | rows_written | "
            "median ms (incl. stand-in) |\n|---|---:|---:|---:|---:|---:|---:|"
        )
        return "\n".join([head, *self.rows])


async def _client_with(deposits: list[int]) -> Actor:
    a = await actor("bc")
    for cents in deposits:
        await deposit(a.client, cents)
    return a


async def main(argv: Any) -> None:
    reps = int(argv[0]) if len(argv) else 5
    measure.count_money_calls()
    admin = await make_admin(await actor("bcadm"))
    table = Table()

    async def one_part() -> Send:
        a = await _client_with([2000])
        return lambda: refund(a.client, {"amount_cents": 1500})

    async def three_parts() -> Send:
        a = await _client_with([1000, 1000, 1000])
        return lambda: refund(a.client, {"amount_cents": 2500})

    async def replay() -> Send:
        a = await _client_with([2000])
        key = unique("bk")
        assert (await refund(a.client, {"amount_cents": 500}, key)).status == 201
        return lambda: refund(a.client, {"amount_cents": 500}, key)

    async def resumed() -> Send:
        # The request died after its reservation (its settle batch and that batch's retry failed).
        a = await _client_with([2000])
        key = unique("bk")
        assert (await refund(a.client, {"amount_cents": 500}, key, **{"x-test-d1-fault": "3,4"})).status == 503
        return lambda: refund(a.client, {"amount_cents": 500}, key)

    async def unsettled() -> Send:
        a = await actor("bcu")
        await deposit(a.client, 2000, settled=False)
        return lambda: refund(a.client)

    async def refused() -> Send:
        a = await actor("bcr")
        dep = await deposit(a.client, 2000)
        plan(dep["gateway_transaction_id"], "refuse")
        return lambda: refund(a.client)

    async def listed() -> Send:
        a = await _client_with([5000])
        for _ in range(20):
            assert (await refund(a.client, {"amount_cents": 100})).status == 201
        return lambda: a.client.get("/v1/wallet/refunds?limit=20")

    async def one() -> Send:
        a = await _client_with([5000])
        rid = (await refund(a.client, {"amount_cents": 100})).json()["refund"]["id"]
        return lambda: a.client.get(f"/v1/wallet/refunds/{rid}")

    async def chargeback(side: str) -> Send:
        a = await _client_with([2000])
        for _ in range(2):
            advisor = await make_advisor(await actor("bca"))
            await ended_reading(a.id, advisor.id, minutes=5)
        dep_id = (await database().first(sql("SELECT id FROM payments WHERE user_id = ?", a.id)))["id"]
        path = f"/v1/admin/payments/{dep_id}/chargebacks"
        return lambda: _post_vars(admin, path, {"note": "bench"}, CHARGEBACK_ADVISOR_SIDE=side)

    async def resolve(outcome: str) -> Send:
        a = await _client_with([2000])
        dep_id = (await database().first(sql("SELECT id FROM payments WHERE user_id = ?", a.id)))["id"]
        r = await _post_vars(admin, f"/v1/admin/payments/{dep_id}/chargebacks", {"note": "b"})
        cb = r.json()["chargeback"]["id"]
        return lambda: _post_vars(admin, f"/v1/admin/chargebacks/{cb}/resolve", {"outcome": outcome, "note": "b"})

    async def on_hold() -> Send:
        a = await _client_with([2000, 2000])
        dep_id = (await database().first(sql("SELECT id FROM payments WHERE user_id = ? LIMIT 1", a.id)))["id"]
        assert (await _post_vars(admin, f"/v1/admin/payments/{dep_id}/chargebacks", {"note": "b"})).status == 201
        body = {
            "amount_cents": 1000,
            "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": f"tok_approved.{unique()}"},
        }
        return lambda: a.client.post("/v1/wallet/deposits", body, headers={"idempotency-key": unique()})

    await table.add("POST /v1/wallet/refunds, 1 part (settled)", 201, reps, one_part)
    await table.add("POST /v1/wallet/refunds, 3 parts (settled)", 201, reps, three_parts)
    await table.add("POST /v1/wallet/refunds, same Idempotency-Key (replay)", 201, reps, replay)
    await table.add("POST /v1/wallet/refunds, retry resuming a request that died (1 part)", 201, reps, resumed)
    await table.add("POST /v1/wallet/refunds, only unsettled deposits (409)", 409, reps, unsettled)
    await table.add("POST /v1/wallet/refunds, refused by the gateway (502, returned)", 502, reps, refused)
    await table.add("GET /v1/wallet/refunds (20 refunds)", 200, reps, listed)
    await table.add("GET /v1/wallet/refunds/{id}", 200, reps, one)
    await table.add("POST /v1/admin/payments/{id}/chargebacks (platform)", 201, reps, lambda: chargeback("platform"))
    await table.add(
        "POST /v1/admin/payments/{id}/chargebacks (clawback, 2 advisors)", 201, reps, lambda: chargeback("clawback")
    )
    await table.add("POST /v1/admin/chargebacks/{id}/resolve (won)", 200, reps, lambda: resolve("won"))
    await table.add("POST /v1/admin/chargebacks/{id}/resolve (lost)", 200, reps, lambda: resolve("lost"))
    await table.add("POST /v1/wallet/deposits while on hold (403)", 403, reps, on_hold)
    print(table.text())
    print()
    print(await _resolver_cost(reps))


async def _post_vars(a: Actor, path: str, body: Any, **overrides: str) -> Any:
    from test_chargebacks import post_with_vars

    return await post_with_vars(a, path, body, **overrides)


async def _resolver_cost(reps: int) -> str:
    """The cron's resolver deciding one part in transit (the gateway lost its answer)."""
    settings = Settings.from_env(__import__("local_runtime").makeEnv())
    later = int(time.time() * 1000) + refund_resolution.RESOLVE_AFTER_MS + 60_000
    for _ in range(30):  # what earlier operations left in transit
        if (await refund_resolution.resolve_refunds_in_transit(database(), settings, later)).get(
            "refunds_looked_up"
        ) == 0:
            break
    figures = []
    for _ in range(reps):
        a = await _client_with([2000])
        dep_id = await database().first(sql("SELECT gateway_transaction_id FROM payments WHERE user_id = ?", a.id))
        plan(dep_id["gateway_transaction_id"], "lost")
        assert (await refund(a.client, {"amount_cents": 500})).status == 202
        db = database()
        counts = await refund_resolution.resolve_refunds_in_transit(db, settings, later)
        assert counts["refunds_resolved"] == 1, counts
        figures.append((db.counters.calls, db.counters.rows_read, db.counters.rows_written))
    calls, read, written = (_span([f[i] for f in figures]) for i in range(3))
    return (
        "| operation | D1 calls | rows_read | rows_written |\n|---|---:|---:|---:|\n"
        f"| cron: resolve 1 refund part in transit (list read + 1 settle batch) | {calls} | {read} | {written} |"
    )
