"""The ledger check after closed periods reads what the open period holds: every
check alone, measured as more history and more records close, and the plans by
which the record-driven checks find their records (periods.py OPEN_TRANSFER_IDS,
open_record_ids)."""

from clairvora import reconcile
from clairvora.clock import Clock
from clairvora.db import sql
from period_support import HOUR_MS, check_ok, close, history, long_lived_admin, next_end, pay
from support import database, new_user


async def rows_read_per_check() -> dict[str, int]:
    from clairvora import promo_checks

    db, now, out = database(), Clock().now_ms(), {}
    for name, _holds, query in (*reconcile.CHECKS, *promo_checks.CHECKS):
        (result,) = await db.batch([sql(query, *promo_checks.params(query, now))])
        out[name] = result.rows_read
    return out


async def test_closing_more_history_leaves_every_check_reading_what_it_read():
    """Transfers stay in D1 when their entries close: a check scanning transfers (as the
    card and payout checks' "every such transfer names a record" parts did) would read
    one row more for every closed movement. Each check alone, after a close, then after
    closing 17 more movements: the same rows, give or take the index noise. (The users
    and their accounts come first: several checks join every account, which is O(accounts),
    not history.)"""
    admin = await long_lived_admin()
    client_id, advisor_id = await history(await next_end())
    await close(admin, await next_end(), await next_end() + HOUR_MS)
    before = await rows_read_per_check()
    for _ in range(17):
        await pay(client_id, advisor_id, 10, await next_end())
    end = await next_end()
    await close(admin, end, end + HOUR_MS)
    after = await rows_read_per_check()
    grown = {name: (before[name], after[name]) for name in before if after[name] > before[name] + 10}
    assert not grown, grown
    await check_ok()


async def test_closing_records_leaves_the_record_checks_reading_what_they_read():
    """Records (payments, their card deposits) stay in D1 when their movements close:
    a check iterating every payment would read one row more (or several) per deposit
    ever. Each check alone, after a close, then after 12 approved card deposits through
    the API and their close: the same rows, give or take the index noise."""
    from card_support import deposit

    admin = await long_lived_admin()
    _sub, client = await new_user("pcard")
    assert (await client.get("/v1/me")).status == 200  # the user and its wallet, before the measure
    await close(admin, await next_end(), await next_end() + HOUR_MS)
    before = await rows_read_per_check()
    for _ in range(12):
        await deposit(client, 1000, settled=False)
    end = await next_end()
    await close(admin, end, end + HOUR_MS)
    after = await rows_read_per_check()
    grown = {name: (before[name], after[name]) for name in before if after[name] > before[name] + 10}
    assert not grown, grown
    await check_ok()


# Each record-driven check and the alias of its record table (periods.open_record_ids).
_RECORD_CHECKS = {
    "approved_payments_credited_once": "p",
    "payment_reversals_recorded": "p",
    "payments_charged_back_recorded": "p",
    "payments_refunded_recorded": "p",
    "chargebacks_match_transfers": "c",
    "wallet_refunds_match_transfers": "pt",
    "payout_transfers_match_status": "p",
}
# Scans allowed: of partial indexes, holding only the records still moving money.
_PARTIAL_SCANS = (
    "USING INDEX payments_charged_back",
    "USING INDEX payments_refunded",
    "USING INDEX payouts_open_by_attempt",
)
_PARTIAL = {
    "payments_charged_back_recorded": "payments_charged_back",
    "payments_refunded_recorded": "payments_refunded",
}


async def test_the_record_checks_look_their_records_up_instead_of_scanning_them():
    """EXPLAIN QUERY PLAN through the D1 binding: each record-driven check finds its
    records by their primary key (from the open period's transfers, through the
    transfers' primary key, and from indexes of the records still moving money),
    never by scanning the table or every transfer of the type."""
    import re

    queries = {name: query for name, _holds, query in reconcile.CHECKS}
    for name, alias in _RECORD_CHECKS.items():
        rows = (await database().all(sql("EXPLAIN QUERY PLAN " + queries[name]))).rows
        plan = [str(r["detail"]) for r in rows]
        assert f"SEARCH {alias} USING INTEGER PRIMARY KEY (rowid=?)" in plan, (name, plan)
        assert name in _PARTIAL or "SEARCH o USING INTEGER PRIMARY KEY (rowid=?)" in plan, (name, plan)
        scans = [d for d in plan if re.fullmatch(rf"SCAN ({alias}|o|payments|payouts)( .*)?", d)]
        assert all(d.endswith(_PARTIAL_SCANS) for d in scans), (name, scans)
        if name in _PARTIAL:
            assert f"SCAN payments USING INDEX {_PARTIAL[name]}" in plan, (name, plan)
