"""The bench's world (users, wallets, advisors, readings) and the operations it measures.

Each API operation is guarded by the route table: a route that is not on main
yet is listed under "Not measured" in the report instead of failing the run.
"""

import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import dataset
import seed_design
from measure import Row, Sample, sample_request, sample_statements

from clairvora import ledger
from clairvora.app import ROUTES
from clairvora.db import sql
from support import Client, database, token_for, unique

TOKEN_LIFETIME_S = 24 * 3600  # the bench moves the injected clock forward by hours

# The API contract's routes (docs/product.md), path parameters written `{}`.
CONTRACT = [
    "GET /health",
    "GET /openapi.json",
    "GET /v1/me",
    "PATCH /v1/me",
    "POST /v1/advisors",
    "PATCH /v1/advisors/me",
    "GET /v1/advisors",
    "GET /v1/advisors/{}",
    "GET /v1/advisors/{}/reviews",
    "PUT /v1/advisors/me/photo",
    "DELETE /v1/advisors/me/photo",
    "GET /v1/advisors/{}/photo",
    "GET /v1/wallet",
    "GET /v1/wallet/transactions",
    "POST /v1/wallet/deposits",
    "POST /v1/webhooks/authorizenet",
    "POST /v1/readings",
    "POST /v1/readings/{}/accept",
    "POST /v1/readings/{}/decline",
    "POST /v1/readings/{}/cancel",
    "POST /v1/readings/{}/heartbeat",
    "POST /v1/readings/{}/end",
    "GET /v1/readings",
    "GET /v1/readings/{}",
    "POST /v1/readings/{}/messages",
    "GET /v1/readings/{}/messages",
    "POST /v1/readings/{}/review",
    "GET /v1/advisors/me/earnings",
    "POST /v1/admin/readings/{}/refund",
    "GET /v1/admin/ledger/check",
]


def route_key(method: str, pattern: str) -> str:
    return f"{method} " + re.sub(r"\{[^}]*\}", "{}", pattern)


def log(line: str) -> None:
    print(f"[bench] {line}", file=sys.stderr)


@dataclass
class User:
    sub: str
    id: int
    client: Client


async def new_client(prefix: str) -> User:
    sub = f"user_{unique(prefix)}"
    client = Client(await token_for(sub, exp=int(time.time()) + TOKEN_LIFETIME_S))
    resp = await client.get("/v1/me")
    assert resp.status == 200, resp.text
    return User(sub, int(resp.json()["id"]), client)


async def db_size_bytes() -> int:
    """The database's size as D1 reports it (meta.size_after), in bytes."""
    import local_runtime
    from workers import _EnvWrapper

    raw = await _EnvWrapper(local_runtime.makeEnv()).DB.prepare("SELECT 1").all()
    meta = raw["meta"] if isinstance(raw, dict) else raw.meta
    return int(meta["size_after"] if isinstance(meta, dict) else meta.size_after)


@dataclass
class World:
    ids: dataset.Ids
    sizes: Any
    routes: set[tuple[str, str]]
    wallets: dict[int, User] = field(default_factory=dict)
    advisor_base: int = 0
    charged_readings: dict[int, int] = field(default_factory=dict)  # wallet size -> ended reading with charges
    storage: list[tuple[str, int, int]] = field(default_factory=list)  # (what, count, bytes added)

    @classmethod
    async def create(cls, ids: dataset.Ids, sizes: Any) -> "World":
        world = cls(ids, sizes, {(r.method, r.pattern) for r in ROUTES})
        before = await db_size_bytes()
        for size in sizes.ledger:
            user = await new_client(f"bench_wallet_{size}_")
            await dataset.top_up(database(), ids, user.id)  # entry 1; the history follows
            started = time.perf_counter()
            await dataset.load_wallet_history(database(), ids, user.id, size, seed_copy=False)
            log(f"wallet with {size:,} entries loaded in {time.perf_counter() - started:.1f} s")
            world.wallets[size] = user
        middle = await db_size_bytes()
        for size, user in world.wallets.items():
            await dataset.load_seed_history(database(), user.id, size)
        after = await db_size_bytes()
        world.storage.append(
            (
                "ledger: one wallet movement (1 transfer + 2 entries, indexes included)",
                sum(sizes.ledger),
                middle - before,
            )
        )
        world.storage.append(
            ("seed design: one `wallet_transactions` row (no index)", sum(sizes.ledger), after - middle)
        )
        started = time.perf_counter()
        world.advisor_base = await dataset.load_advisors(database(), ids, sizes.advisors, int(time.time() * 1000))
        log(f"{sizes.advisors:,} advisors loaded in {time.perf_counter() - started:.1f} s")
        world.storage.append(
            (
                "advisor (users row, profile, 1-2 categories, earnings account, with indexes)",
                sizes.advisors,
                await db_size_bytes() - after,
            )
        )
        await seed_design.fill_wallets(database())
        return world

    def has(self, method: str, pattern: str) -> bool:
        return (method, pattern) in self.routes

    def not_measured(self, measured: set[str]) -> list[str]:
        """Contract routes absent from main, and routes on main the bench did not measure."""
        on_main = {route_key(m, p) for m, p in self.routes}
        absent = [f"`{r}`: not on main" for r in CONTRACT if r not in on_main]
        unmeasured = [f"`{r}`: on main, no bench scenario" for r in sorted(on_main - measured)]
        return absent + unmeasured


async def measure_api(
    world: World,
    group: str,
    operation: str,
    size: str,
    method: str,
    pattern: str,
    send: Callable[[int], Awaitable[Any]],
    *,
    reps: int | None = None,
    warmup: int = 1,
    money: bool = False,
    expect: tuple[int, ...] = (200,),
    series: str | None = None,
    limit: int | None = None,
) -> list[Row]:
    """`send(i)` issues the i-th request (warm-up ones first, not recorded)."""
    if not world.has(method, pattern):
        return []
    row = Row(group, operation, size, route=(method, pattern), money=money, series=series, limit=limit)
    count = reps if reps is not None else world.sizes.reps
    for i in range(warmup + count):
        sample, resp = await sample_request(lambda i=i: send(i))
        if sample.status not in expect:
            row.note = f"unexpected HTTP {sample.status}: {resp.text[:200]}"
            log(f"{operation} [{size}]: {row.note}")
        if i >= warmup:
            row.samples.append(sample)
    return [row]


# --- the seed's designs against ours, statement level ----------------------------

_OUR_BALANCE = "SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'"


async def seed_vs_ours(world: World) -> list[Row]:
    rows: list[Row] = []
    reps = world.sizes.reps
    for label, indexed in (("seed as written (no index)", False), ("seed + index on user_id", True)):
        if indexed:
            await seed_design.add_user_index(database())
        for size, user in world.wallets.items():
            rows.append(
                await _statement_row(
                    f"{label}", "balance: SUM(amount)", size, reps, lambda u=user: [seed_design.balance(u.id)]
                )
            )
            rows.append(
                await _statement_row(
                    f"{label}",
                    "charge: conditional INSERT",
                    size,
                    reps,
                    lambda i, u=user: [seed_design.conditional_charge(u.id, 1, 1, i)],
                    indexed_arg=True,
                )
            )
    for size, user in world.wallets.items():
        rows.append(
            await _statement_row(
                "seed hybrid (mutable wallets row)",
                "charge: conditional UPDATE",
                size,
                reps,
                lambda u=user: [seed_design.hybrid_charge(u.id, 1)],
            )
        )
    advisor_id = world.advisor_base + 1
    size_before, charges = await db_size_bytes(), 0
    for size, user in world.wallets.items():
        rows.append(
            await _statement_row(
                "ours (ledger)",
                "balance: accounts row",
                size,
                reps,
                lambda u=user: [sql(_OUR_BALANCE, u.id)],
                series="balance (statement)",
            )
        )
        reading_id = await _synthetic_reading(world, user.id, advisor_id)
        world.charged_readings[size] = reading_id
        rows.append(
            await _statement_row(
                "ours (ledger)",
                "charge: one minute (transfer batch)",
                size,
                reps,
                lambda i, u=user, r=reading_id: _minute_charge(world, u.id, advisor_id, r, i + 1),
                indexed_arg=True,
                series="one-minute charge (statement)",
            )
        )
        charges += reps + 1
        # Ended, so the client may open readings through the API later (one open reading each).
        await database().run(
            sql(
                """UPDATE readings SET status = 'ended', end_reason = 'client_ended', ended_at_ms = ?
                                    WHERE id = ? AND status = 'active'""",
                int(time.time() * 1000),
                reading_id,
            )
        )
    world.storage.append(
        (
            "ledger: one billed minute (transfer, 3 entries, reading_charges row; 5 readings rows)",
            charges,
            await db_size_bytes() - size_before,
        )
    )
    return rows


async def _statement_row(
    group: str,
    operation: str,
    size: int,
    reps: int,
    make: Callable[..., list[Any]],
    indexed_arg: bool = False,
    series: str | None = None,
) -> Row:
    row = Row(group, operation, f"{size:,} entries", series=series)
    for i in range(reps + 1):
        db = database()
        sample: Sample
        sample, _ = await sample_statements(db, make(i) if indexed_arg else make())
        if i:
            row.samples.append(sample)
    return row


async def _synthetic_reading(world: World, client_id: int, advisor_id: int) -> int:
    """An active reading row to hang statement-level minute charges on (ended after them)."""
    reading_id = world.ids.take(1) + 1
    now_ms = int(time.time() * 1000)
    await database().run(
        sql(
            """INSERT INTO readings (id, client_id, advisor_id, status, rate_cents_per_minute, advisor_cents_per_minute,
                                 platform_cents_per_minute, billing_period_seconds, requested_at_ms,
                                 accepted_at_ms, last_heartbeat_at_ms)
           VALUES (?, ?, ?, 'active', 100, 70, 30, 60, ?, ?, ?)""",
            reading_id,
            client_id,
            advisor_id,
            now_ms,
            now_ms,
            now_ms,
        )
    )
    return reading_id


def _minute_charge(world: World, client_id: int, advisor_id: int, reading_id: int, minute: int) -> list[Any]:
    """The statements of one billed minute as the ledger design makes it: a
    balanced 3-leg transfer + the (reading, minute) row, one batch (on main
    since 0020, a trigger on reading_charges checks the reading and moves its
    billed_minutes)."""
    transfer_id = world.ids.take(1) + 1
    now_ms = int(time.time() * 1000)
    statements = ledger.transfer(
        transfer_id=transfer_id,
        key=f"reading:{reading_id}:minute:{minute}",
        kind="reading_charge",
        legs=[
            ledger.Leg(ledger.wallet_of(client_id), -100),
            ledger.Leg(ledger.earnings_of(advisor_id), 70),
            ledger.Leg(ledger.PLATFORM_REVENUE, 30),
        ],
        now_ms=now_ms,
        reference_type="reading",
        reference_id=reading_id,
    )
    statements.append(
        sql(
            """INSERT INTO reading_charges (reading_id, minute, transfer_id, amount_cents, charged_at_ms)
                             VALUES (?, ?, ?, 100, ?)""",
            reading_id,
            minute,
            transfer_id,
            now_ms,
        )
    )
    return statements


# --- the API, route by route ----------------------------------------------------------


async def api_operations(world: World) -> list[Row]:
    rows: list[Row] = []
    for scenario in (system_ops, user_ops, wallet_ops, deposit_ops, webhook_ops, advisor_ops, readings_ops, admin_ops):
        rows += await scenario(world)
    return rows


async def system_ops(world: World) -> list[Row]:
    anonymous = Client()
    rows = await measure_api(world, "system", "GET /health", "—", "GET", "/health", lambda i: anonymous.get("/health"))
    rows += await measure_api(
        world,
        "system",
        "GET /openapi.json",
        f"{len(ROUTES)} routes",
        "GET",
        "/openapi.json",
        lambda i: anonymous.get("/openapi.json"),
    )
    return rows


async def user_ops(world: World) -> list[Row]:
    user = await new_client("bench_me_")
    rows = await measure_api(
        world, "users", "GET /v1/me", "known user", "GET", "/v1/me", lambda i: user.client.get("/v1/me")
    )
    version = {"v": int((await user.client.get("/v1/me")).json()["version"])}

    async def patch(i: int) -> Any:
        resp = await user.client.patch(
            "/v1/me", json={"display_name": f"Bench {i}"}, headers={"if-match": f'"{version["v"]}"'}
        )
        if resp.status == 200:
            version["v"] = int(resp.json()["version"])
        return resp

    rows += await measure_api(world, "users", "PATCH /v1/me", "If-Match", "PATCH", "/v1/me", patch)
    reps = world.sizes.reps
    fresh = [Client(await token_for(f"user_{unique('bench_first_')}")) for _ in range(reps + 1)]
    rows += await measure_api(
        world,
        "users",
        "GET /v1/me (first sight: creates user + wallet)",
        "new user",
        "GET",
        "/v1/me",
        lambda i: fresh[i].get("/v1/me"),
    )
    return rows


async def wallet_ops(world: World) -> list[Row]:
    rows: list[Row] = []
    for size, user in world.wallets.items():
        label = f"{size:,} entries"
        rows += await measure_api(
            world,
            "wallet",
            "GET /v1/wallet",
            label,
            "GET",
            "/v1/wallet",
            lambda i, u=user: u.client.get("/v1/wallet"),
            series="GET /v1/wallet",
        )
        rows += await measure_api(
            world,
            "wallet",
            "GET /v1/wallet/transactions?limit=25",
            label,
            "GET",
            "/v1/wallet/transactions",
            lambda i, u=user: u.client.get("/v1/wallet/transactions?limit=25"),
            # a history shorter than the page cannot fill it: not part of the series
            series="GET /v1/wallet/transactions (first page)" if size >= 25 else None,
        )
    return rows


def _deposit_body(amount_cents: int) -> dict[str, Any]:
    # The local Authorize.Net stand-in approves this Accept.js token.
    return {
        "amount_cents": amount_cents,
        "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": "tok_approved"},
    }


async def deposit_ops(world: World) -> list[Row]:
    rows: list[Row] = []
    for size, user in world.wallets.items():
        rows += await measure_api(
            world,
            "wallet",
            "POST /v1/wallet/deposits (approved)",
            f"{size:,} entries",
            "POST",
            "/v1/wallet/deposits",
            lambda i, u=user: u.client.post(
                "/v1/wallet/deposits", _deposit_body(1000), headers={"idempotency-key": unique("bench_dep_")}
            ),
            money=True,
            expect=(201,),
            series="POST /v1/wallet/deposits",
        )
    user = world.wallets[min(world.wallets)]
    key = unique("bench_dep_replay_")
    rows += await measure_api(
        world,
        "wallet",
        "POST /v1/wallet/deposits (same Idempotency-Key: replay)",
        "—",
        "POST",
        "/v1/wallet/deposits",
        lambda i: user.client.post("/v1/wallet/deposits", _deposit_body(1000), headers={"idempotency-key": key}),
        expect=(201,),
    )
    return rows


async def webhook_ops(world: World) -> list[Row]:
    if not world.has("POST", "/v1/webhooks/authorizenet"):
        return []
    from webhook_support import event, post_event

    rows: list[Row] = []
    for size, user in world.wallets.items():
        deposits = []
        for _ in range(world.sizes.reps + 1):
            resp = await user.client.post(
                "/v1/wallet/deposits", _deposit_body(2000), headers={"idempotency-key": unique("bench_wh_")}
            )
            assert resp.status == 201, resp.text
            deposits.append(resp.json()["deposit"]["id"])
        refunds = [
            event(
                "net.authorize.payment.refund.created", trans_id=str(world.ids.take(1) + 1), invoice=d, amount_cents=500
            )
            for d in deposits
        ]
        rows += await measure_api(
            world,
            "webhooks",
            "POST /v1/webhooks/authorizenet (refund -> reversal)",
            f"{size:,} entries",
            "POST",
            "/v1/webhooks/authorizenet",
            lambda i, r=refunds: post_event(r[i]),
            money=True,
            series="POST /v1/webhooks/authorizenet (refund)",
        )
    duplicate = refunds[0]
    rows += await measure_api(
        world,
        "webhooks",
        "POST /v1/webhooks/authorizenet (duplicate notification)",
        "—",
        "POST",
        "/v1/webhooks/authorizenet",
        lambda i: post_event(duplicate),
    )
    ignored = [event("net.authorize.customer.created", trans_id=str(i)) for i in range(world.sizes.reps + 1)]
    rows += await measure_api(
        world,
        "webhooks",
        "POST /v1/webhooks/authorizenet (ignored event type)",
        "—",
        "POST",
        "/v1/webhooks/authorizenet",
        lambda i: post_event(ignored[i]),
    )
    return rows


_SEARCHES = [
    ("default (sort=rating)", "", 20),
    ("limit=100", "limit=100", 100),
    ("status=online", "status=online", 20),
    ("status=online&sort=price", "status=online&sort=price", 20),
    ("min_rate=100&max_rate=500&sort=price", "min_rate=100&max_rate=500&sort=price", 20),
    ("min_rate=100&max_rate=500 (sort=rating)", "min_rate=100&max_rate=500", 20),
    ("category=tarot", "category=tarot", 20),
    ("category=tarot&status=online", "category=tarot&status=online", 20),
    ("category=tarot,love&sort=price", "category=tarot,love&sort=price", 20),
]


async def advisor_ops(world: World) -> list[Row]:
    rows: list[Row] = []
    anonymous = Client()
    size = f"{world.sizes.advisors:,} advisors"
    for label, query, limit in _SEARCHES:
        path = "/v1/advisors" + (f"?{query}" if query else "")
        rows += await measure_api(
            world,
            "advisors search",
            f"GET /v1/advisors?{label}",
            size,
            "GET",
            "/v1/advisors",
            lambda i, p=path: anonymous.get(p),
            limit=limit,
        )
    if world.has("GET", "/v1/advisors"):
        first = await anonymous.get("/v1/advisors?status=online")
        cursor = first.json()["next_cursor"]
        rows += await measure_api(
            world,
            "advisors search",
            "GET /v1/advisors?status=online (page 2, cursor)",
            size,
            "GET",
            "/v1/advisors",
            lambda i: anonymous.get(f"/v1/advisors?status=online&cursor={cursor}"),
            limit=20,
        )
    advisor_id = world.advisor_base + 7
    rows += await measure_api(
        world,
        "advisors",
        "GET /v1/advisors/{id}",
        size,
        "GET",
        "/v1/advisors/{advisor_id:id}",
        lambda i: anonymous.get(f"/v1/advisors/{advisor_id}"),
    )
    hopefuls = [await new_client("bench_adv_") for _ in range(world.sizes.reps + 1)]
    rows += await measure_api(
        world,
        "advisors",
        "POST /v1/advisors (become one)",
        "—",
        "POST",
        "/v1/advisors",
        lambda i: hopefuls[i].client.post(
            "/v1/advisors",
            {
                "headline": "Tarot and clarity",
                "bio": "Bench advisor.",
                "categories": ["tarot", "love"],
                "rate_cents_per_minute": 150,
            },
        ),
        expect=(201,),
    )
    me = hopefuls[0]
    if world.has("GET", "/v1/advisors/me"):
        rows += await measure_api(
            world,
            "advisors",
            "GET /v1/advisors/me",
            "—",
            "GET",
            "/v1/advisors/me",
            lambda i: me.client.get("/v1/advisors/me"),
        )
        version = {"v": int((await me.client.get("/v1/advisors/me")).json()["version"])}

        async def patch(i: int) -> Any:
            resp = await me.client.patch(
                "/v1/advisors/me",
                json={"status": "online" if i % 2 else "offline"},
                headers={"if-match": f'"{version["v"]}"'},
            )
            if resp.status == 200:
                version["v"] = int(resp.json()["version"])
            return resp

        rows += await measure_api(
            world, "advisors", "PATCH /v1/advisors/me (status)", "—", "PATCH", "/v1/advisors/me", patch
        )
    return rows


async def admin_ops(world: World) -> list[Row]:
    admin = await new_client("bench_admin_")
    await database().run(sql("UPDATE users SET is_admin = 1 WHERE id = ?", admin.id))
    rows: list[Row] = []
    for size, reading_id in world.charged_readings.items():
        path = f"/v1/admin/readings/{reading_id}/refund"
        rows += await measure_api(
            world,
            "admin",
            "POST /v1/admin/readings/{id}/refund (1 cent)",
            f"{size:,} entries",
            "POST",
            "/v1/admin/readings/{reading_id:id}/refund",
            lambda i, p=path: admin.client.post(
                p, {"amount_cents": 1, "reason": "bench"}, headers={"idempotency-key": unique("bench_refund_")}
            ),
            money=True,
            expect=(201,),
            series="POST /v1/admin/readings/{id}/refund",
        )
    entries = (await database().first(sql("SELECT count(*) AS n FROM ledger_entries")))["n"]
    rows += await measure_api(
        world,
        "admin",
        "GET /v1/admin/ledger/check",
        f"{entries:,} ledger entries in all",
        "GET",
        "/v1/admin/ledger/check",
        lambda i: admin.client.get("/v1/admin/ledger/check"),
        reps=3,
    )
    return rows


# --- readings: request, accept, per-minute heartbeats, chat, end, review ------------------

MINUTE_MS = 60_000


class Clock:
    """The injected clock (x-test-now-ms): readings move minutes forward without sleeping."""

    def __init__(self) -> None:
        self.now_ms = int(time.time() * 1000)

    def at(self, delta_ms: int = 0) -> dict[str, str]:
        self.now_ms += delta_ms
        return {"x-test-now-ms": str(self.now_ms)}


async def readings_ops(world: World) -> list[Row]:
    needed = [
        ("POST", "/v1/readings"),
        ("POST", "/v1/readings/{reading_id:id}/accept"),
        ("POST", "/v1/readings/{reading_id:id}/heartbeat"),
        ("POST", "/v1/readings/{reading_id:id}/end"),
    ]
    if not all(world.has(m, p) for m, p in needed):
        return []
    advisor = await new_client("bench_reader_")
    made = await advisor.client.post(
        "/v1/advisors",
        {"headline": "Live bench readings", "bio": "Bench.", "categories": ["tarot"], "rate_cents_per_minute": 100},
    )
    assert made.status == 201, made.text
    online = await advisor.client.patch(
        "/v1/advisors/me", json={"status": "online"}, headers={"if-match": made.headers["etag"]}
    )
    assert online.status == 200, online.text
    clock = Clock()
    rows: dict[str, Row] = {}

    def row(group: str, op: str, size: str, pattern: str, method: str = "POST", **kw: Any) -> Row:
        key = f"{op}|{size}"
        if key not in rows:
            rows[key] = Row(group, op, size, route=(method, pattern), **kw)
        return rows[key]

    async def timed(target: Row, send: Callable[[], Awaitable[Any]], expect: tuple[int, ...] = (200,)) -> Any:
        sample, resp = await sample_request(send)
        if sample.status not in expect:
            target.note = f"unexpected HTTP {sample.status}: {resp.text[:200]}"
            log(f"{target.operation} [{target.size}]: {target.note}")
        target.samples.append(sample)
        return resp

    last_reading = None
    for size, user in world.wallets.items():
        label = f"{size:,} entries"
        for cycle in range(world.sizes.reps + 1):
            record = cycle > 0  # the first cycle warms up
            body = {"advisor_id": str(advisor.id)}
            send_create = lambda u=user, b=body: u.client.post(  # noqa: E731
                "/v1/readings", b, headers={**clock.at(1000), "idempotency-key": unique("bench_rd_")}
            )
            if record:
                resp = await timed(
                    row("readings", "POST /v1/readings (request)", label, "/v1/readings", series="POST /v1/readings"),
                    send_create,
                    (201,),
                )
            else:
                resp = await send_create()
            assert resp.status == 201, resp.text
            rid = resp.json()["id"]
            base = f"/v1/readings/{rid}"
            steps = [
                ("POST /v1/readings/{id}/accept (charges minute 1)", "/accept", advisor, 1000, True),
                ("POST /v1/readings/{id}/heartbeat (no minute due)", "/heartbeat", user, 20_000, False),
                ("POST /v1/readings/{id}/heartbeat (bills minute 2)", "/heartbeat", user, MINUTE_MS - 19_000, True),
                # The advisor's side stays live (presence: a minute begun after both sides' earlier
                # last heartbeat is not billed once that is older than the timeout); its heartbeat
                # bills nothing: no minute is due, and the advisor never bills past the client's.
                ("POST /v1/readings/{id}/heartbeat (advisor, no minute due)", "/heartbeat", advisor, 1000, False),
                ("POST /v1/readings/{id}/heartbeat (bills minute 3)", "/heartbeat", user, MINUTE_MS - 1000, True),
            ]
            for op, suffix, who, advance, money in steps:
                send = lambda w=who, s=suffix, a=advance, b=base: w.client.post(b + s, None, headers=clock.at(a))  # noqa: E731
                if record:
                    series = op.replace("(bills minute 3)", "(bills minute 2)") if "bills" in op else op
                    resp = await timed(
                        row("readings", op, label, "/v1/readings/{reading_id:id}" + suffix, money=money, series=series),
                        send,
                    )
                else:
                    resp = await send()
                assert resp.status == 200, resp.text
            if world.has("POST", "/v1/readings/{reading_id:id}/messages"):
                send = lambda u=user, b=base: u.client.post(  # noqa: E731
                    b + "/messages", {"body": "Is the tower card bad news?"}, headers=clock.at(500)
                )
                resp = await (
                    timed(
                        row("chat", "POST /v1/readings/{id}/messages", label, "/v1/readings/{reading_id:id}/messages"),
                        send,
                        (201,),
                    )
                    if record
                    else send()
                )
            send = lambda u=user, b=base: u.client.post(b + "/end", None, headers=clock.at(1000))  # noqa: E731
            # No minute is due at this end (the last heartbeat billed minute 3), so it moves no money.
            resp = await (
                timed(
                    row(
                        "readings",
                        "POST /v1/readings/{id}/end (no minute due)",
                        label,
                        "/v1/readings/{reading_id:id}/end",
                    ),
                    send,
                )
                if record
                else send()
            )
            assert resp.status == 200, resp.text
            if world.has("POST", "/v1/readings/{reading_id:id}/review"):
                send = lambda u=user, b=base: u.client.post(  # noqa: E731
                    b + "/review", {"rating": 5, "comment": "Spot on."}, headers=clock.at(1000)
                )
                resp = await (
                    timed(
                        row("reviews", "POST /v1/readings/{id}/review", label, "/v1/readings/{reading_id:id}/review"),
                        send,
                        (201,),
                    )
                    if record
                    else send()
                )
            last_reading = (user, rid)
        # request then cancel (the client's one open reading is free again after each)
        if world.has("POST", "/v1/readings/{reading_id:id}/cancel"):
            for cycle in range(world.sizes.reps + 1):
                resp = await user.client.post(
                    "/v1/readings",
                    {"advisor_id": str(advisor.id)},
                    headers={**clock.at(1000), "idempotency-key": unique("bench_rc_")},
                )
                assert resp.status == 201, resp.text
                rid = resp.json()["id"]
                send = lambda u=user, r=rid: u.client.post(f"/v1/readings/{r}/cancel", None, headers=clock.at(500))  # noqa: E731
                await (
                    timed(
                        row("readings", "POST /v1/readings/{id}/cancel", label, "/v1/readings/{reading_id:id}/cancel"),
                        send,
                    )
                    if cycle
                    else send()
                )
    out = list(rows.values())
    out += await _reading_reads(world, advisor, last_reading, clock)
    return out


async def _reading_reads(world: World, advisor: User, last: Any, clock: Clock) -> list[Row]:
    user, rid = last
    rows = await measure_api(
        world,
        "readings",
        "GET /v1/readings/{id}",
        "—",
        "GET",
        "/v1/readings/{reading_id:id}",
        lambda i: user.client.get(f"/v1/readings/{rid}"),
    )
    count = (await user.client.get("/v1/readings?limit=100")).json()
    rows += await measure_api(
        world,
        "readings",
        "GET /v1/readings?limit=20 (client)",
        f"{len(count['items'])}{'+' if count['next_cursor'] else ''} readings",
        "GET",
        "/v1/readings",
        lambda i: user.client.get("/v1/readings?limit=20"),
        limit=20,
    )
    rows += await measure_api(
        world,
        "readings",
        "GET /v1/readings?limit=20 (advisor)",
        "all bench readings",
        "GET",
        "/v1/readings",
        lambda i: advisor.client.get("/v1/readings?limit=20"),
        limit=20,
    )
    if world.has("GET", "/v1/readings/{reading_id:id}/messages"):
        # Both sizes fill the first page (limit 50), so the series compares a
        # full page over a short chat with a full page over a long one. An
        # ended reading takes no message (migration 0095), so the chat is filled
        # in a reading of its own while it is live (read from D1 either way
        # until the cron archives it: bench/chat_archive_cost.py measures R2).
        chat_rid = await _live_reading(user, advisor, clock)
        present = 0
        for total in (60, max(61, world.sizes.messages)):
            await _bulk_messages(world, chat_rid, user.id, total - present)
            present = total
            rows += await measure_api(
                world,
                "chat",
                "GET /v1/readings/{id}/messages?limit=50",
                f"{total:,} messages",
                "GET",
                "/v1/readings/{reading_id:id}/messages",
                lambda i: user.client.get(f"/v1/readings/{chat_rid}/messages?limit=50"),
                limit=50,
                series="GET /v1/readings/{id}/messages (first page)",
            )
        resp = await user.client.post(f"/v1/readings/{chat_rid}/end", None, headers=clock.at(1000))
        assert resp.status == 200, resp.text
    if world.has("GET", "/v1/advisors/{advisor_id:id}/reviews"):
        anonymous = Client()
        rows += await measure_api(
            world,
            "reviews",
            "GET /v1/advisors/{id}/reviews?limit=20",
            "bench reviews",
            "GET",
            "/v1/advisors/{advisor_id:id}/reviews",
            lambda i: anonymous.get(f"/v1/advisors/{advisor.id}/reviews?limit=20"),
            limit=20,
        )
    if world.has("GET", "/v1/advisors/me/earnings"):
        rows += await measure_api(
            world,
            "earnings",
            "GET /v1/advisors/me/earnings",
            "all bench readings",
            "GET",
            "/v1/advisors/me/earnings",
            lambda i: advisor.client.get("/v1/advisors/me/earnings"),
        )
    return rows


async def _live_reading(user: User, advisor: User, clock: Clock) -> str:
    resp = await user.client.post(
        "/v1/readings",
        {"advisor_id": str(advisor.id)},
        headers={**clock.at(1000), "idempotency-key": unique("bench_chat_")},
    )
    assert resp.status == 201, resp.text
    rid = resp.json()["id"]
    resp = await advisor.client.post(f"/v1/readings/{rid}/accept", None, headers=clock.at(0))
    assert resp.status == 200, resp.text
    return str(rid)


async def _bulk_messages(world: World, reading_id: str, sender_id: int, count: int) -> None:
    """`count` more messages, sealed as the Worker seals them (same key, AAD with
    each message's own id), inserted 14 rows per statement in one batch per 1,400."""
    import local_runtime

    from clairvora import messages as chat

    keyring = chat.parse_keyring(str(local_runtime.secrets.MESSAGE_KEYS))
    rid = int(reading_id)
    base_ms = int(time.time() * 1000)
    rows = []
    for k in range(count):
        mid = world.ids.take(1) + 1
        version, iv_b64, ct_b64 = await chat.seal(
            keyring, f"bench message {k}".encode(), chat.additional_data(rid, mid, sender_id)
        )
        rows.append((mid, rid, sender_id, version, iv_b64, ct_b64, base_ms + k))
    per = 14  # 7 columns: 98 bound parameters per statement
    statements = []
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        statements.append(
            sql(
                f"""INSERT INTO messages (id, reading_id, sender_id, key_version, iv_b64,
                                                         ciphertext_b64, created_at_ms) VALUES {values}""",
                *[v for r in chunk for v in r],
            )
        )
    before = await db_size_bytes()
    for start in range(0, len(statements), 100):
        await database().batch(statements[start : start + 100])
    world.storage.append(
        (
            "chat message (AES-GCM ciphertext of a ~17-byte text, base64; indexes included)",
            count,
            await db_size_bytes() - before,
        )
    )
