"""The seed's own designs (docs/database-architecture.md), on the same data.

- `wallet_transactions`: an append-only list of signed amounts per user; the
  balance is `SUM(amount)` over the user's rows; a charge is ONE conditional
  `INSERT ... SELECT ... WHERE (SELECT SUM(amount) ...) >= amount`. The seed's
  Drizzle table declares no index besides the primary key, so it is measured as
  written and again with an index on `user_id` (its best case).
- `wallets`: the "hybrid" mutable balance, `UPDATE wallets SET balance = balance - x
  WHERE user_id = ? AND balance >= x` (one row, but no audit trail).

These tables live only in the bench's scratch D1 (no migration creates them).
"""

from clairvora.db import Database, sql

SCHEMA = [
    # drizzle: integer('id').primaryKey({ autoIncrement: true }) -> AUTOINCREMENT
    """CREATE TABLE IF NOT EXISTS seed_wallet_transactions (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         user_id INTEGER NOT NULL,
         amount INTEGER NOT NULL,
         type TEXT NOT NULL,
         reference_id INTEGER,
         created_at INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS seed_wallets (
         user_id INTEGER PRIMARY KEY,
         balance INTEGER NOT NULL)""",
]

INDEX = "CREATE INDEX IF NOT EXISTS seed_wallet_transactions_by_user ON seed_wallet_transactions (user_id)"


async def create(db: Database) -> None:
    await db.batch([sql(s) for s in SCHEMA])


async def add_user_index(db: Database) -> None:
    await db.run(sql(INDEX))


async def fill_wallets(db: Database) -> None:
    """The hybrid design's balances, from the same history."""
    await db.run(
        sql("""INSERT OR REPLACE INTO seed_wallets (user_id, balance)
                        SELECT user_id, SUM(amount) FROM seed_wallet_transactions GROUP BY user_id""")
    )


def balance(user_id: int):
    return sql("SELECT COALESCE(SUM(amount), 0) AS balance FROM seed_wallet_transactions WHERE user_id = ?", user_id)


def conditional_charge(user_id: int, amount_cents: int, reading_id: int, now_s: int):
    return sql(
        """INSERT INTO seed_wallet_transactions (user_id, amount, type, reference_id, created_at)
           SELECT ?, ?, 'reading_charge', ?, ?
           WHERE (SELECT COALESCE(SUM(amount), 0) FROM seed_wallet_transactions WHERE user_id = ?) >= ?""",
        user_id,
        -amount_cents,
        reading_id,
        now_s,
        user_id,
        amount_cents,
    )


def hybrid_charge(user_id: int, amount_cents: int):
    return sql(
        "UPDATE seed_wallets SET balance = balance - ? WHERE user_id = ? AND balance >= ?",
        amount_cents,
        user_id,
        amount_cents,
    )
