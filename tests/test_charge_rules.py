"""The per-minute charge's rules in SQL (migration 0097: one trigger on the charge
row, one aggregate at the posting): each refusal by its code, on a real active
reading, with nothing written; and the batch's rows read (bench/charge_rows.py
has the account of every row)."""

import time
from typing import Any

import pytest

from clairvora import billing, charges, ledger
from clairvora.db import Statement, TriggerAbort, sql
from clairvora.ids import new_id
from market_support import active_reading, market_pair
from support import database


async def _reading() -> dict[str, Any]:
    """An active reading at rate 100 with minute 1 charged, as the Worker reads it."""
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    accepted = await active_reading(client, advisor, advisor_id, t0)
    row = await database().first(sql(billing.SELECT_READING, int(accepted["id"])))
    assert row is not None and int(row["billed_minutes"]) == 1
    return row


def _minute_with_legs(
    reading: dict[str, Any],
    minute: int,
    legs: list[ledger.Leg],
    kind: ledger.TransferKind = "reading_charge",
    reference_id: int | None = None,
    key: str | None = None,
) -> list[Statement]:
    """Minute `minute` of the reading, paid by a (balanced) transfer with `legs`, under the
    key billing gives minute k (the suite's ledger checks expect it of every charge made)."""
    transfer_id = new_id()
    return [
        *ledger.transfer(
            transfer_id=transfer_id,
            key=key or f"reading:{int(reading['id'])}:minute:{minute}",
            kind=kind,
            legs=legs,
            now_ms=int(reading["accepted_at_ms"]) + 60_000,
            reference_type="reading",
            reference_id=int(reading["id"]) if reference_id is None else reference_id,
        ),
        sql(
            """INSERT INTO reading_charges (reading_id, minute, transfer_id, amount_cents, promo_cents, charged_at_ms)
               VALUES (?, ?, ?, ?, 0, ?)""",
            int(reading["id"]),
            minute,
            transfer_id,
            int(reading["rate_cents_per_minute"]),
            int(reading["accepted_at_ms"]) + 60_000,
        ),
    ]


async def _refused(statements: list[Statement]) -> str:
    with pytest.raises(TriggerAbort) as refused:
        await database().batch(statements)
    return refused.value.code


async def _billed(reading: dict[str, Any]) -> tuple[int, int]:
    row = await database().first(sql(billing.SELECT_READING, int(reading["id"])))
    assert row is not None
    return int(row["billed_minutes"]), int(row["wallet_cents"])


async def test_a_charge_whose_legs_are_not_the_split_is_refused():
    reading = await _reading()
    before = await _billed(reading)
    client, advisor = int(reading["client_id"]), int(reading["advisor_id"])
    share = int(reading["advisor_cents_per_minute"])
    wrong_split = [
        ledger.Leg(ledger.wallet_of(client), -100),
        ledger.Leg(ledger.earnings_of(advisor), share - 1),
        ledger.Leg(ledger.PLATFORM_REVENUE, 100 - share + 1),
    ]
    assert await _refused(_minute_with_legs(reading, 2, wrong_split)) == "reading_charge_transfer_mismatch"
    _stranger, stranger_id, _advisor, _advisor_id = await market_pair(rate=100, funds=1000)
    stray = [  # someone else's wallet pays half: a stray leg
        ledger.Leg(ledger.wallet_of(client), -50),
        ledger.Leg(ledger.wallet_of(stranger_id), -50),
        ledger.Leg(ledger.earnings_of(advisor), share),
        ledger.Leg(ledger.PLATFORM_REVENUE, 100 - share),
    ]
    assert await _refused(_minute_with_legs(reading, 2, stray)) == "reading_charge_transfer_mismatch"
    right = charges.minute_legs(reading, 0)
    assert await _refused(_minute_with_legs(reading, 2, right, kind="adjustment")) == "reading_charge_transfer_mismatch"
    other = await _reading()
    assert (
        await _refused(_minute_with_legs(reading, 2, right, reference_id=int(other["id"])))
        == "reading_charge_transfer_mismatch"
    )
    assert await _billed(reading) == before
    await database().batch(_minute_with_legs(reading, 2, right))  # the same minute, the right legs: charged
    assert await _billed(reading) == (before[0] + 1, before[1] - 100)


async def test_a_minute_out_of_order_or_at_another_rate_is_not_billable():
    reading = await _reading()
    legs = charges.minute_legs(reading, 0)
    assert await _refused(_minute_with_legs(reading, 3, legs)) == "reading_not_billable"
    # Minute 1 again: its key is taken, so under a key of its own the trigger is what refuses it.
    assert await _refused(_minute_with_legs(reading, 1, legs, key=f"test:{new_id()}")) == "reading_not_billable"
    assert await _billed(reading) == (1, int(reading["wallet_cents"]))


async def test_a_posting_with_one_entry_or_entries_that_do_not_sum_to_zero_is_refused():
    reading = await _reading()
    wallet = int(reading["client_id"])
    for amounts in ((-100,), (-100, 99)):
        transfer_id = new_id()
        statements = [
            sql(
                "INSERT INTO transfers (id, transfer_key, kind, created_at_ms) VALUES (?, ?, 'adjustment', 1)",
                transfer_id,
                f"test:{transfer_id}",
            )
        ]
        accounts = [ledger.wallet_of(wallet), ledger.PLATFORM_REVENUE]
        for account, amount in zip(accounts, amounts, strict=False):
            if account.account_id is not None:
                statements.append(sql(ledger._INSERT_ENTRY_BY_ID, transfer_id, amount, amount, 1, account.account_id))
            else:
                statements.append(
                    sql(ledger._INSERT_ENTRY_BY_OWNER, transfer_id, amount, amount, 1, wallet, "client_wallet")
                )
        statements.append(sql("UPDATE transfers SET posted = 1 WHERE id = ?", transfer_id))
        assert await _refused(statements) == "ledger_unbalanced_transfer", amounts
    assert await _billed(reading) == (1, int(reading["wallet_cents"]))


async def test_a_wallet_paid_minute_reads_at_most_62_rows():
    """The heartbeat batch of a wallet-paid minute read 67-71 rows before migration 0097
    (a posting counted and then summed its entries, the promo rule asked every leg about
    grants, the charge row's two triggers read the reading five times); 58-62 since."""
    reading = await _reading()
    now = int(reading["accepted_at_ms"]) + 60_000
    plan = billing.plan(reading, now, "heartbeat", "client")
    statements, _conditional = billing.batch_for(reading, plan, now, int(reading["client_id"]))
    results = await database().batch(statements)
    assert sum(r.rows_read for r in results) <= 62
    assert sum(r.rows_written for r in results) == 21
