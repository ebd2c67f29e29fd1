"""Ledger cost: D1 calls, rows read and rows written for a balance read and for
one debit, as a wallet's history grows (10, 1,000, 100,000 entries), next to
the seed design on the same data.

    node runtime/cli.mjs run bench/ledger_cost.py            # 10, 1k, 100k entries
    node runtime/cli.mjs run bench/ledger_cost.py --quick    # 10, 1k
    node runtime/cli.mjs run bench/ledger_cost.py --write    # full, and the host rewrites its block
                                                             # of docs/BENCHMARKS.md and writes
                                                             # bench/results/ledger_cost.json (the pictures)

Runs inside the real workerd (wrangler dev) on a fresh scratch D1. The
histories are loaded set-based through the ledger's triggers by
bench/dataset.py (which also writes the same history into the seed's
`seed_wallet_transactions(id, user_id, amount, type, reference_id, created_at)`
table, bench/seed_design.py). The seed design is measured as the seed wrote it
(no index but the primary key) and with an index on user_id (its best case).
This prints figures; it asserts only what the design promises (the ledger's
rows read do not grow with the history).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/ is on the path already (harness)

import dataset
import harness
import seed_design

from clairvora import ledger
from clairvora.db import Database, sql
from clairvora.ids import new_id
from support import Client, database, new_user

RATE = 700  # one minute's charge, the same amount the seed design debits
FEE_BPS = 3000


def _timing(header: str) -> tuple[int, int, int]:
    desc = header.split('desc="', 1)[1].split('"', 1)[0]
    parts = dict(p.split("=") for p in desc.split())
    return int(parts["calls"]), int(parts["rows_read"]), int(parts["rows_written"])


def _span(samples: list[tuple[int, int, int]]) -> tuple[str, str, str]:
    """min-max of each figure over a few samples."""
    out = []
    for i in range(3):
        lo, hi = min(s[i] for s in samples), max(s[i] for s in samples)
        out.append(str(lo) if lo == hi else f"{lo}-{hi}")
    return out[0], out[1], out[2]


async def _measure(statements: list) -> tuple[int, int, int]:
    db = database()
    if len(statements) == 1:
        await db.run(statements[0])
    else:
        await db.batch(statements)
    return db.counters.calls, db.counters.rows_read, db.counters.rows_written


async def _setup_user(db: Database, ids: dataset.Ids, entries: int) -> dict:
    _sub, client = await new_user("bench")
    me = (await client.get("/v1/me")).json()
    user_id = int(me["id"])
    _asub, advisor_client = await new_user("benchadv")
    advisor_id = int((await advisor_client.get("/v1/me")).json()["id"])
    advisor_part, platform_part = ledger.split_rate(RATE, FEE_BPS)
    reading_id = new_id()
    await db.batch(
        [
            sql(
                """INSERT INTO advisors (user_id, headline, bio, rate_cents_per_minute, created_at_ms, updated_at_ms)
               VALUES (?, 'bench', '', ?, 0, 0)""",
                advisor_id,
                RATE,
            ),
            sql(
                "INSERT INTO accounts (id, kind, owner_user_id, created_at_ms) VALUES (?, 'advisor_earnings', ?, 0)",
                new_id(),
                advisor_id,
            ),
            sql(
                """INSERT INTO readings (id, client_id, advisor_id, status, rate_cents_per_minute, advisor_cents_per_minute,
                                     platform_cents_per_minute, billing_period_seconds, requested_at_ms, accepted_at_ms)
               VALUES (?, ?, ?, 'active', ?, ?, ?, 60, 0, 0)""",
                reading_id,
                user_id,
                advisor_id,
                RATE,
                advisor_part,
                platform_part,
            ),
        ]
    )
    wallet_balance = await dataset.load_wallet_history(db, ids, user_id, entries)
    assert wallet_balance >= RATE
    return {
        "user_id": user_id,
        "client": client,
        "advisor_id": advisor_id,
        "reading_id": reading_id,
        "advisor_part": advisor_part,
        "platform_part": platform_part,
    }


def _debit(u: dict, minute: int) -> list:
    """One minute's charge exactly as billing does it: transfer + reading_charges row, one batch."""
    transfer_id = new_id()
    legs = [
        ledger.Leg(ledger.wallet_of(u["user_id"]), -RATE),
        ledger.Leg(ledger.earnings_of(u["advisor_id"]), u["advisor_part"]),
        ledger.Leg(ledger.PLATFORM_REVENUE, u["platform_part"]),
    ]
    return [
        *ledger.transfer(
            transfer_id=transfer_id,
            key=f"reading:{u['reading_id']}:minute:{minute}",
            kind="reading_charge",
            legs=legs,
            now_ms=1,
            reference_type="reading",
            reference_id=u["reading_id"],
        ),
        sql(
            """INSERT INTO reading_charges (reading_id, minute, transfer_id, amount_cents, charged_at_ms)
               VALUES (?, ?, ?, ?, 1)""",
            u["reading_id"],
            minute,
            transfer_id,
            RATE,
        ),
    ]


DOC = "docs/BENCHMARKS.md"  # on the host, relative to the project
BEGIN = "<!-- bench:ledger_cost begin (generated by `cli.mjs run bench/ledger_cost.py --write`) -->"
END = "<!-- bench:ledger_cost end -->"
RESULTS = "bench/results/ledger_cost.json"  # drawn by bench/figures.py


async def main(argv):
    args = [str(a) for a in argv]
    for a in args:
        if a not in ("--quick", "--write"):
            raise SystemExit(f"unknown argument {a!r}: use --quick and/or --write")
    sizes = (10, 1_000) if "--quick" in args else (10, 1_000, 100_000)
    db = database()
    await seed_design.create(db)
    ids = dataset.Ids()
    users = {}
    for n in sizes:
        users[n] = await _setup_user(db, ids, n)
        print(f"loaded {n} entries", file=sys.stderr)

    rows: list[tuple[str, int, tuple]] = []
    for n in sizes:
        u = users[n]
        resp = await Client(u["client"].token).get("/v1/wallet")
        assert resp.status == 200
        rows.append(
            ("ledger: GET /v1/wallet (whole request, incl. caller look-up)", n, _timing(resp.headers["server-timing"]))
        )
        rows.append(
            (
                "ledger: balance read (accounts row)",
                n,
                await _measure(
                    [
                        sql(
                            "SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'",
                            u["user_id"],
                        )
                    ]
                ),
            )
        )
        # Two debits: rows_read varies by a row or two with where the new
        # random transfer id lands in the indexes, never with the history.
        debits = [await _measure(_debit(u, minute)) for minute in (1, 2)]
        rows.append(("ledger: one debit (transfer + charge row, 1 batch)", n, _span(debits)))
    # The seed, as written: no index but the primary key, so every query scans the table.
    for n in sizes:
        u = users[n]
        rows.append(("seed, no index: SUM(amount) balance", n, await _measure([seed_design.balance(u["user_id"])])))
        rows.append(
            (
                "seed, no index: conditional-insert charge",
                n,
                await _measure([seed_design.conditional_charge(u["user_id"], RATE, u["reading_id"], 1)]),
            )
        )
    await seed_design.add_user_index(db)
    for n in sizes:
        u = users[n]
        rows.append(
            ("seed + index(user_id): SUM(amount) balance", n, await _measure([seed_design.balance(u["user_id"])]))
        )
        rows.append(
            (
                "seed + index(user_id): conditional-insert charge",
                n,
                await _measure([seed_design.conditional_charge(u["user_id"], RATE, u["reading_id"], 2)]),
            )
        )

    total_seed_rows = (await db.first(sql("SELECT count(*) AS n FROM seed_wallet_transactions")))["n"]
    versions = (harness.run.get("host") or {}).get("versions") or {}
    lines = [
        BEGIN,
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} inside workerd {versions.get('workerd', '?')} "
        f"(wrangler dev {versions.get('wrangler', '?')}) on a fresh local D1; `seed_wallet_transactions` held "
        f"{total_seed_rows:,} rows in all (every user's history).",
        "",
        "| operation | entries in the account | D1 calls | rows_read | rows_written |",
        "|---|---:|---:|---:|---:|",
        *[f"| {name} | {n:,} | {calls} | {read} | {written} |" for name, n, (calls, read, written) in rows],
        "",
        END,
    ]
    print("\n".join(lines))

    # What the design promises: the ledger's cost does not grow with the history
    # (a few rows of index noise at most), while the seed's grows with it.
    for prefix in ("ledger: balance read", "ledger: one debit", "ledger: GET /v1/wallet"):
        reads = [int(part) for name, _n, c in rows if name.startswith(prefix) for part in str(c[1]).split("-")]
        assert max(reads) - min(reads) <= 4, (prefix, reads)
    seed_reads = {n: int(c[1]) for name, n, c in rows if name.startswith("seed + index(user_id): SUM")}
    assert seed_reads[sizes[-1]] >= sizes[-1], seed_reads
    if "--write" in args:
        return {
            "doc": {"file": DOC, "text": "\n".join(lines)},
            "results": {"file": RESULTS, "data": {"sizes": list(sizes), "rows": [_figure(*r) for r in rows]}},
        }
    return None


def _range(value: object) -> list[int]:
    """[lo, hi] of a figure printed as "44" or "43-45"."""
    parts = [int(p) for p in str(value).split("-")]
    return [parts[0], parts[-1]]


def _figure(name: str, entries: int, counts: tuple) -> dict:
    """One table row as bench/figures.py reads it (bench/results/ledger_cost.json)."""
    calls, read, written = counts
    return {
        "operation": name,
        "entries": entries,
        "calls": _range(calls),
        "rows_read": _range(read),
        "rows_written": _range(written),
    }
