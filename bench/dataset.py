"""Bench data, loaded with set-based SQL into the scratch D1.

Every loader is a handful of `INSERT ... WITH RECURSIVE` statements, so 100,000
ledger entries take about a second. The ledger's triggers stay on: each entry
is inserted with the sequence and balance-after its account expects, every
transfer gets its counter-leg, and posting (`UPDATE transfers SET posted = 1`)
runs the balance check per transfer. So the loaded ledger is one the app could
have written, and `GET /v1/admin/ledger/check` can still pass on it.

Ids are in ranges the app's random 52-bit ids practically never hit (a few
million ids out of 2**52), and valid for path parameters (>= 2**40).
"""

from dataclasses import dataclass

from clairvora import ledger
from clairvora.db import Database, sql

ID_BASE = 1 << 41
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: bench history starts here
CHUNK = 25_000  # rows per statement: far under D1's 30 s per query
PLATFORM_REVENUE = 1
GATEWAY_CLEARING = 2
DEPOSIT_CENTS = 1000
CHARGE_CENTS = 700

_RECURSIVE = "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?1)"


class Ids:
    """Disjoint id ranges for each loader."""

    def __init__(self) -> None:
        self._next = ID_BASE

    def take(self, count: int) -> int:
        """The base of a fresh range: ids base+1 .. base+count are yours."""
        base = self._next
        self._next += count + 1
        return base


@dataclass(frozen=True)
class Account:
    id: int
    balance_cents: int
    last_sequence: int


async def account(db: Database, account_id: int) -> Account:
    row = await db.first(sql("SELECT id, balance_cents, last_sequence FROM accounts WHERE id = ?", account_id))
    assert row is not None, account_id
    return Account(int(row["id"]), int(row["balance_cents"]), int(row["last_sequence"]))


async def wallet_id(db: Database, user_id: int) -> int:
    row = await db.first(sql("SELECT id FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'", user_id))
    assert row is not None, "the user must have been seen by the API first"
    return int(row["id"])


TOP_UP_CENTS = 1_000_000  # $10,000: pays for every charge the bench makes


async def top_up(db: Database, ids: Ids, user_id: int, cents: int = TOP_UP_CENTS) -> None:
    """One deposit transfer (gateway clearing -> wallet), as the app writes it."""
    transfer_id = ids.take(1) + 1
    await db.batch(
        ledger.transfer(
            transfer_id=transfer_id,
            key=f"bench:top-up:{transfer_id}",
            kind="deposit",
            legs=[ledger.Leg(ledger.wallet_of(user_id), cents), ledger.Leg(ledger.GATEWAY_CLEARING, -cents)],
            now_ms=T0_MS,
        )
    )


async def load_wallet_history(db: Database, ids: Ids, user_id: int, entries: int, seed_copy: bool = True) -> int:
    """`entries` balanced transfers on the user's wallet, alternating a deposit
    (+1000 from gateway clearing) and a charge (-700 to platform revenue), oldest
    first. Returns the wallet's balance afterwards. Also copies the same history
    into the seed design's `seed_wallet_transactions` (see seed_design.py)
    unless `seed_copy` is False (then `load_seed_history` does it)."""
    wallet = await account(db, await wallet_id(db, user_id))
    done = 0
    while done < entries:
        count = min(CHUNK, entries - done)
        await _load_chunk(db, ids, user_id, wallet.id, done, count, seed_copy)
        done += count
    after = await account(db, wallet.id)
    assert after.last_sequence == wallet.last_sequence + entries
    return after.balance_cents


# Deposits among entries 1..i of a chunk whose first entry is global index ?4 + 1
# (global entry g is a deposit when g is odd). The CAST keeps the division an
# integer one whichever way D1 binds the number.
_D = "((CAST(?4 AS INTEGER) + i + 1) / 2 - (CAST(?4 AS INTEGER) + 1) / 2)"


async def _load_chunk(
    db: Database, ids: Ids, user_id: int, wallet: int, offset: int, count: int, seed_copy: bool
) -> None:
    base = ids.take(count)
    w = await account(db, wallet)
    clearing = await account(db, GATEWAY_CLEARING)
    revenue = await account(db, PLATFORM_REVENUE)
    entry = "INSERT INTO ledger_entries (transfer_id, account_id, amount_cents, balance_after_cents, sequence, created_at_ms)"
    statements = [
        sql(
            f"""INSERT INTO transfers (id, transfer_key, kind, created_at_ms)
                {_RECURSIVE}
                SELECT ?2 + i, 'bench:' || ?3 || ':' || (?4 + i),
                       CASE WHEN (?4 + i) % 2 = 1 THEN 'deposit' ELSE 'reading_charge' END, ?5 + (?4 + i) * 1000
                FROM k""",
            count,
            base,
            user_id,
            offset,
            T0_MS,
        ),
        # Both legs of each transfer, one after the other (as the app's batches write
        # them: a closed ledger period cuts between transfers, periods.py): the wallet
        # +1000 / -700 alternately, the counter-leg on gateway clearing or platform
        # revenue, each account's balance-after and sequence in closed form.
        sql(
            f"""{entry}
                {_RECURSIVE}, legs(i, leg) AS (SELECT i, 0 FROM k UNION ALL SELECT i, 1 FROM k)
                SELECT ?2 + i,
                       CASE WHEN leg = 0 THEN ?3 WHEN (?4 + i) % 2 = 1 THEN ?10 ELSE ?13 END,
                       CASE WHEN leg = 0 THEN (CASE WHEN (?4 + i) % 2 = 1 THEN ?5 ELSE -?6 END)
                            WHEN (?4 + i) % 2 = 1 THEN -?5 ELSE ?6 END,
                       CASE WHEN leg = 0 THEN ?7 + {_D} * ?5 - (i - {_D}) * ?6
                            WHEN (?4 + i) % 2 = 1 THEN ?11 - {_D} * ?5 ELSE ?14 + (i - {_D}) * ?6 END,
                       CASE WHEN leg = 0 THEN ?8 + i WHEN (?4 + i) % 2 = 1 THEN ?12 + {_D} ELSE ?15 + (i - {_D}) END,
                       ?9 + (?4 + i) * 1000
                FROM legs ORDER BY i, leg""",
            count,
            base,
            wallet,
            offset,
            DEPOSIT_CENTS,
            CHARGE_CENTS,
            w.balance_cents,
            w.last_sequence,
            T0_MS,
            GATEWAY_CLEARING,
            clearing.balance_cents,
            clearing.last_sequence,
            PLATFORM_REVENUE,
            revenue.balance_cents,
            revenue.last_sequence,
        ),
        # Posting runs the balanced-transfer trigger on every transfer.
        sql("UPDATE transfers SET posted = 1 WHERE id BETWEEN ? AND ?", base + 1, base + count),
    ]
    if seed_copy:
        statements.append(_seed_rows(user_id, offset, count))
    # One batch: a chunk lands whole or not at all.
    await db.batch(statements)


def _seed_rows(user_id: int, offset: int, count: int):
    """The same history in the seed's design (seed_design.py creates the table)."""
    return sql(
        f"""INSERT INTO seed_wallet_transactions (user_id, amount, type, reference_id, created_at)
                   {_RECURSIVE}
                   SELECT ?2, CASE WHEN (?3 + i) % 2 = 1 THEN ?4 ELSE -?5 END,
                          CASE WHEN (?3 + i) % 2 = 1 THEN 'deposit' ELSE 'reading_charge' END, NULL,
                          ?6 + (?3 + i) * 1000
                   FROM k""",
        count,
        user_id,
        offset,
        DEPOSIT_CENTS,
        CHARGE_CENTS,
        T0_MS,
    )


async def load_seed_history(db: Database, user_id: int, entries: int) -> None:
    """The seed-design copy of a history loaded with `seed_copy=False`."""
    for offset in range(0, entries, CHUNK):
        await db.run(_seed_rows(user_id, offset, min(CHUNK, entries - offset)))


async def load_advisors(db: Database, ids: Ids, count: int, now_ms: int) -> int:
    """`count` advisors (users rows, profiles, 1-2 categories each, earnings
    accounts): 20% online, 10% busy, the rest offline; rates 50..2000 cents a
    minute; 0..39 ratings with averages 1..5. Returns the id base."""
    base = ids.take(count)
    account_base = ids.take(count)
    done = 0
    while done < count:
        n = min(CHUNK, count - done)
        lo = base + done
        await db.batch(
            [
                sql(
                    f"""INSERT INTO users (id, clerk_user_id, display_name, created_at_ms, updated_at_ms)
                    {_RECURSIVE}
                    SELECT ? + i, 'user_bench_advisor_' || (CAST(? AS INTEGER) + i), 'Advisor ' || (? + i), ?, ? FROM k""",
                    n,
                    lo,
                    lo,  # the id: unique over several loads (bench/search_cost.py loads in steps)
                    done,
                    now_ms,
                    now_ms,
                ),
                sql(
                    f"""INSERT INTO advisors (user_id, headline, bio, rate_cents_per_minute, status,
                                          rating_count, rating_sum, rating_milli, created_at_ms, updated_at_ms)
                    {_RECURSIVE}
                    SELECT ? + i, 'Readings by advisor ' || (? + i), 'A bench advisor.',
                           50 + ((? + i) * 37) % 1951,
                           CASE WHEN (? + i) % 10 < 2 THEN 'online' WHEN (? + i) % 10 = 2 THEN 'busy' ELSE 'offline' END,
                           (? + i) % 40, ((? + i) % 40) * (1 + ((? + i) * 7) % 5),
                           CASE WHEN (? + i) % 40 = 0 THEN 0 ELSE 1000 * (1 + ((? + i) * 7) % 5) END, ?, ?
                    FROM k""",
                    n,
                    lo,
                    done,
                    done,
                    done,
                    done,
                    done,
                    done,
                    done,
                    done,
                    done,
                    now_ms,
                    now_ms,
                ),
                sql(
                    f"""INSERT INTO advisor_categories (category, advisor_id)
                    {_RECURSIVE},
                    c(slug, n) AS (SELECT slug, row_number() OVER (ORDER BY slug) - 1 FROM categories)
                    SELECT DISTINCT c.slug, ? + k.i FROM k JOIN c ON c.n IN ((? + k.i) % 8, ((? + k.i) * 3 + 1) % 8)""",
                    n,
                    lo,
                    done,
                    done,
                ),
                sql(
                    f"""INSERT INTO accounts (id, kind, owner_user_id, created_at_ms)
                    {_RECURSIVE}
                    SELECT ? + i, 'advisor_earnings', ? + i, ? FROM k""",
                    n,
                    account_base + done,
                    lo,
                    now_ms,
                ),
            ]
        )
        done += n
    return base
