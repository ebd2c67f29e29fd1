"""Actors for the hardening tests (authorization matrix, faults, bad input,
fuzzing): users made through the Worker's own routes where they exist, with
roles and money set up directly in D1 where no route grants them (admin is a
D1 flag; a test wallet credit is a balanced 'deposit' transfer, as the money
tests fund wallets).

Shared by the runtime suite and the scratch server's setup script
(tooling_tests/scratch_world.py), so host-side tests see the same world."""

import time
from dataclasses import dataclass
from typing import Any

from clairvora import ledger
from clairvora.app import ROUTES
from clairvora.db import Database, sql
from clairvora.ids import new_id
from clairvora.schema import migrated_schema
from support import Client, database, token_for, unique

ROUTE_KEYS = {(r.method, r.pattern) for r in ROUTES}


def has_route(method: str, pattern: str) -> bool:
    return (method, pattern) in ROUTE_KEYS


@dataclass
class Actor:
    sub: str
    id: int
    token: str
    client: Client


async def actor(prefix: str = "w", *, ttl_s: int = 3600) -> Actor:
    """A user row (created on first sight through GET /v1/me) and a client for it."""
    sub = f"user_{unique(prefix)}"
    token = await token_for(sub, exp=int(time.time()) + ttl_s)
    client = Client(token)
    r = await client.get("/v1/me")
    assert r.status == 200, r.text
    return Actor(sub, int(r.json()["id"]), token, client)


async def make_admin(a: Actor) -> Actor:
    await database().run(sql("UPDATE users SET is_admin = 1 WHERE id = ?", a.id))
    return a


async def make_advisor(a: Actor, rate_cents_per_minute: int = 100) -> Actor:
    """An online advisor: through POST /v1/advisors when that route exists."""
    if has_route("POST", "/v1/advisors"):
        r = await a.client.post(
            "/v1/advisors",
            json={
                "headline": "Tarot and clarity",
                "bio": "Ten years of readings.",
                "categories": ["tarot"],
                "rate_cents_per_minute": rate_cents_per_minute,
            },
        )
        assert r.status in (200, 201), r.text
        if has_route("PATCH", "/v1/advisors/me"):
            version = r.json().get("version", 1)
            r = await a.client.patch("/v1/advisors/me", json={"status": "online"}, headers={"if-match": f'"{version}"'})
            assert r.status == 200, r.text
        return a
    now_ms = int(time.time() * 1000)
    await database().batch(
        [
            sql(
                """INSERT INTO advisors (user_id, headline, bio, rate_cents_per_minute, status, created_at_ms,
                                     updated_at_ms) VALUES (?, 'Tarot', '', ?, 'online', ?, ?)""",
                a.id,
                rate_cents_per_minute,
                now_ms,
                now_ms,
            ),
            sql(
                """INSERT INTO accounts (id, kind, owner_user_id, created_at_ms)
               VALUES (?, 'advisor_earnings', ?, ?) ON CONFLICT DO NOTHING""",
                new_id(),
                a.id,
                now_ms,
            ),
        ]
    )
    return a


async def credit(user_id: int, cents: int) -> None:
    """Funds a wallet with one balanced transfer from gateway clearing."""
    transfer_id = new_id()
    legs = [ledger.Leg(ledger.wallet_of(user_id), cents), ledger.Leg(ledger.GATEWAY_CLEARING, -cents)]
    await database().batch(
        ledger.transfer(
            transfer_id=transfer_id,
            key=f"test:credit:{transfer_id}",
            kind="deposit",
            legs=legs,
            now_ms=int(time.time() * 1000),
        )
    )


async def balance(user_id: int) -> int:
    value = await ledger.balance_cents(database(), ledger.wallet_of(user_id))
    assert value is not None
    return value


# Columns an UPDATE moves (versions, balances, states, timestamps): their totals
# join each table's row count in the snapshot, so equal snapshots mean
# "changed nothing" for inserts, deletes and these updates alike.
_MOVING_COLUMNS = (
    "version",
    "updated_at_ms",
    "balance_cents",
    "last_sequence",
    "posted",
    "reversed_cents",
    "billed_minutes",
    "status",
    "state",
    "ended_at_ms",
    "last_heartbeat_at_ms",
    "photo_key",
)
_snapshot_sql: dict[str, str] = {}


async def _snapshot_statements(db: Database) -> dict[str, str]:
    """One SELECT per table of the migrated schema (new tables are picked up by themselves)."""
    if not _snapshot_sql:
        for table, columns in sorted((await migrated_schema(db)).items()):
            moving = [c for c in _MOVING_COLUMNS if c in columns]
            parts = ["count(*)"] + [f"total(length(coalesce({c}, '')) + coalesce({c}, 0))" for c in moving]
            # Identifiers come from D1's own catalog of our migrated tables, never from input.
            _snapshot_sql[table] = f"SELECT {' + '.join(parts)} AS v, count(*) AS n FROM {table}"  # noqa: S608
    return _snapshot_sql


async def row_counts(db: Database | None = None) -> dict[str, tuple[int, float]]:
    """{table: (rows, total of the moving columns)} for every table, in one batch."""
    db = db or database()
    statements = await _snapshot_statements(db)
    results = await db.batch([sql(s) for s in statements.values()])
    return {t: (int(r.rows[0]["n"]), float(r.rows[0]["v"])) for t, r in zip(statements, results, strict=True)}


async def ledger_check(admin: Actor) -> dict[str, Any] | None:
    """GET /v1/admin/ledger/check when that route exists (None before)."""
    if not has_route("GET", "/v1/admin/ledger/check"):
        return None
    r = await admin.client.get("/v1/admin/ledger/check")
    assert r.status == 200, r.text
    return r.json()


# The ledger's invariants, checked directly in SQL (a second opinion beside
# GET /v1/admin/ledger/check): each query counts violations.
# Closed ledger periods (periods.py) leave D1 with their entries; each account
# then continues from its row in account_closings, and a transfer without entries
# is one whose entries went to R2.
_OPEN = "e.id > coalesce((SELECT max(last_entry_id) FROM ledger_segments), 0)"
_CLOSING_BALANCE = "coalesce((SELECT balance_cents FROM account_closings c WHERE c.account_id = a.id), 0)"
_CLOSING_SEQUENCE = "coalesce((SELECT sequence FROM account_closings c WHERE c.account_id = a.id), 0)"
INVARIANTS = {
    "transfers_balance": """SELECT count(*) AS n FROM (SELECT transfer_id FROM ledger_entries
                            GROUP BY transfer_id HAVING sum(amount_cents) <> 0)""",
    "transfers_posted": "SELECT count(*) AS n FROM transfers WHERE posted = 0",
    "transfers_have_two_legs": """SELECT count(*) AS n FROM transfers t WHERE
                                  (SELECT count(*) FROM ledger_entries e WHERE e.transfer_id = t.id)
                                  IN (1, CASE WHEN EXISTS (SELECT 1 FROM ledger_segments) THEN 1 ELSE 0 END)""",
    "balances_match_entries": f"""SELECT count(*) AS n FROM accounts a WHERE a.balance_cents <> {_CLOSING_BALANCE} +
                                 coalesce((SELECT sum(amount_cents) FROM ledger_entries e
                                           WHERE e.account_id = a.id AND {_OPEN}), 0)""",  # noqa: S608 - constant
    "sequences_dense": f"""SELECT count(*) AS n FROM accounts a WHERE a.last_sequence - {_CLOSING_SEQUENCE} <>
                          (SELECT count(*) FROM ledger_entries e WHERE e.account_id = a.id AND {_OPEN})""",  # noqa: S608
    "books_sum_to_zero": "SELECT abs(coalesce(sum(balance_cents), 0)) AS n FROM accounts",
    "charges_match_transfers": """SELECT count(*) AS n FROM reading_charges c LEFT JOIN transfers t
                                  ON t.id = c.transfer_id WHERE t.id IS NULL OR t.kind <> 'reading_charge'""",
    "billed_minutes_match_charges": """SELECT count(*) AS n FROM readings r WHERE r.billed_minutes <>
                                       (SELECT count(*) FROM reading_charges c WHERE c.reading_id = r.id)""",
}


async def invariant_violations() -> dict[str, int]:
    """{name: violations}; all zeros means the books are clean."""
    names = list(INVARIANTS)
    results = await database().batch([sql(INVARIANTS[n]) for n in names])
    return {n: int(r.rows[0]["n"]) for n, r in zip(names, results, strict=True)}


async def assert_books_clean(admin: Actor | None = None) -> None:
    violations = {k: v for k, v in (await invariant_violations()).items() if v}
    assert not violations, f"ledger invariants violated: {violations}"
    if admin is not None:
        report = await ledger_check(admin)
        if report is not None:
            assert report["ok"] is True, report


async def ended_reading(client_id: int, advisor_id: int, minutes: int, rate: int = 100) -> dict[str, Any]:
    """A reading that ran `minutes` paid minutes and ended (each minute one balanced transfer)."""
    from money_support import charge_minute_statements, start_reading

    db = database()
    now_ms = int(time.time() * 1000)
    reading = await start_reading(db, client_id, advisor_id, rate, now_ms=now_ms)
    for minute in range(1, minutes + 1):
        await db.batch(charge_minute_statements(reading, minute, now_ms))
    await db.run(
        sql(
            """UPDATE readings SET status = 'ended', end_reason = 'client_ended', ended_at_ms = ?
                        WHERE id = ?""",
            now_ms,
            reading["id"],
        )
    )
    return reading
