"""50 simultaneous debits against a balance that covers exactly 20.

Issued concurrently through the D1 layer (asyncio.gather of 50 one-batch
charges, each on its own D1 session, as 50 Worker invocations would), because
the per-minute billing routes belong to the readings feature: each is the
exact batch a charge is (transfer + reading_charges row), so the only thing
standing between them and an overdraft is the SQL in that batch."""

import asyncio

from clairvora.db import TriggerAbort, UniqueViolation, sql
from money_support import balance, charge_minute_statements, credit, make_advisor, start_reading, user_with_wallet
from support import database


async def test_fifty_concurrent_debits_exactly_twenty_succeed():
    db = database()
    client_id, _client = await user_with_wallet("cc")
    advisor_id, _advisor = await user_with_wallet("cca")
    rate = 150
    await make_advisor(db, advisor_id, rate)
    await credit(db, client_id, 20 * rate)
    reading = await start_reading(db, client_id, advisor_id, rate)

    async def debit(minute: int) -> str:
        try:
            await database().batch(charge_minute_statements(reading, minute))
            return "ok"
        except TriggerAbort as exc:
            return exc.code

    outcomes = await asyncio.gather(*(debit(minute) for minute in range(1, 51)))
    assert outcomes.count("ok") == 20
    assert outcomes.count("insufficient_funds") == 30
    assert await balance(client_id) == 0
    wallet = await db.first(
        sql("SELECT id FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'", client_id)
    )
    entries = (
        await db.all(
            sql(
                "SELECT amount_cents, balance_after_cents FROM ledger_entries WHERE account_id = ? ORDER BY sequence",
                wallet["id"],
            )
        )
    ).rows
    assert len(entries) == 21 and min(e["balance_after_cents"] for e in entries) == 0
    charges = await db.first(
        sql("SELECT count(*) AS n, sum(amount_cents) AS total FROM reading_charges WHERE reading_id = ?", reading["id"])
    )
    assert charges["n"] == 20 and charges["total"] == 20 * rate


async def test_the_same_minute_charged_concurrently_lands_once():
    db = database()
    client_id, _client = await user_with_wallet("cc")
    advisor_id, _advisor = await user_with_wallet("cca")
    await make_advisor(db, advisor_id, 100)
    await credit(db, client_id, 1000)
    reading = await start_reading(db, client_id, advisor_id, 100)

    async def charge_minute_one() -> bool:
        try:
            await database().batch(charge_minute_statements(reading, 1))
            return True
        except UniqueViolation:  # transfer_key / (reading_id, minute): the batch rolls back
            return False

    results = await asyncio.gather(*(charge_minute_one() for _ in range(10)))
    assert results.count(True) == 1
    assert await balance(client_id) == 900
