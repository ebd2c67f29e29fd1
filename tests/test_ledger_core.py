"""The ledger's SQL guarantees, exercised on real local D1."""

import pytest

from clairvora import ledger
from clairvora.db import TriggerAbort, UniqueViolation, sql
from clairvora.ids import new_id
from support import database, new_user


async def _user_with_wallet() -> int:
    _sub, client = await new_user("ledger")
    me = (await client.get("/v1/me")).json()
    return int(me["id"])


async def test_deposit_then_overdraft_is_refused_and_rolled_back():
    db = database()
    user_id = await _user_with_wallet()
    legs = [ledger.Leg(ledger.wallet_of(user_id), 500), ledger.Leg(ledger.GATEWAY_CLEARING, -500)]
    await db.batch(ledger.transfer(transfer_id=new_id(), key=f"t:{new_id()}", kind="deposit", legs=legs, now_ms=1))
    assert await ledger.balance_cents(db, ledger.wallet_of(user_id)) == 500

    overdraft = [ledger.Leg(ledger.wallet_of(user_id), -501), ledger.Leg(ledger.PLATFORM_REVENUE, 501)]
    key = f"t:{new_id()}"
    with pytest.raises(TriggerAbort) as err:
        await db.batch(ledger.transfer(transfer_id=new_id(), key=key, kind="reading_charge", legs=overdraft, now_ms=2))
    assert err.value.code == "insufficient_funds"
    assert await ledger.balance_cents(db, ledger.wallet_of(user_id)) == 500
    assert await db.first(sql("SELECT id FROM transfers WHERE transfer_key = ?", key)) is None


async def test_same_transfer_key_twice_aborts_second_batch():
    db = database()
    user_id = await _user_with_wallet()
    key = f"t:{new_id()}"
    legs = [ledger.Leg(ledger.wallet_of(user_id), 300), ledger.Leg(ledger.GATEWAY_CLEARING, -300)]
    await db.batch(ledger.transfer(transfer_id=new_id(), key=key, kind="deposit", legs=legs, now_ms=1))
    with pytest.raises(UniqueViolation):
        await db.batch(ledger.transfer(transfer_id=new_id(), key=key, kind="deposit", legs=legs, now_ms=1))
    assert await ledger.balance_cents(db, ledger.wallet_of(user_id)) == 300


async def test_entries_are_append_only():
    db = database()
    user_id = await _user_with_wallet()
    legs = [ledger.Leg(ledger.wallet_of(user_id), 200), ledger.Leg(ledger.GATEWAY_CLEARING, -200)]
    transfer_id = new_id()
    await db.batch(
        ledger.transfer(transfer_id=transfer_id, key=f"t:{transfer_id}", kind="deposit", legs=legs, now_ms=1)
    )
    with pytest.raises(TriggerAbort) as err:
        await db.run(sql("UPDATE ledger_entries SET amount_cents = 1 WHERE transfer_id = ?", transfer_id))
    assert err.value.code == "ledger_append_only"
    with pytest.raises(TriggerAbort) as err:
        await db.run(sql("DELETE FROM ledger_entries WHERE transfer_id = ?", transfer_id))
    assert err.value.code == "ledger_append_only"
    with pytest.raises(TriggerAbort) as err:
        await db.run(sql("UPDATE transfers SET kind = 'adjustment' WHERE id = ?", transfer_id))
    assert err.value.code == "ledger_append_only"
    assert await ledger.balance_cents(db, ledger.wallet_of(user_id)) == 200


def test_split_rate_sums_exactly():
    for rate in range(1, 500):
        advisor, platform = ledger.split_rate(rate, 3000)
        assert advisor + platform == rate and platform == rate * 3000 // 10000
