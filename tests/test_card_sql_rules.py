"""Migration 0092's rules hold in SQL whatever code writes: written straight to
D1 (no route in between), each of these batches is refused whole."""

import pytest

from card_support import deposit, refund
from clairvora import ledger
from clairvora.db import CheckViolation, TriggerAbort, UniqueViolation, sql
from clairvora.ids import new_id
from clairvora.refund_parts import Decision, outcome_key, resolve_statements
from money_support import balance, user_with_wallet
from support import database


def _transfer(kind: ledger.TransferKind, user_id: int, cents: int, **ref) -> list:
    transfer_id = new_id()
    return ledger.transfer(
        transfer_id=transfer_id,
        key=f"test:{kind}:{transfer_id}",
        kind=kind,
        legs=[ledger.Leg(ledger.wallet_of(user_id), -cents), ledger.Leg(ledger.GATEWAY_CLEARING, cents)],
        now_ms=1,
        **ref,
    )


async def test_chargeback_and_refund_transfers_need_their_records():
    user_id, client = await user_with_wallet("sq")
    await deposit(client, 1000)
    db = database()
    with pytest.raises(TriggerAbort) as exc:
        await db.batch(_transfer("chargeback", user_id, 100))
    assert exc.value.code == "chargeback_transfer_mismatch"
    with pytest.raises(TriggerAbort) as exc:
        await db.batch(_transfer("chargeback", user_id, 100, reference_type="chargeback", reference_id=new_id()))
    assert exc.value.code == "chargeback_transfer_mismatch"
    with pytest.raises(TriggerAbort) as exc:
        await db.batch(_transfer("wallet_refund", user_id, 100, reference_type="wallet_refund", reference_id=new_id()))
    assert exc.value.code == "wallet_refund_transfer_mismatch"
    assert await balance(user_id) == 1000


async def test_a_part_has_one_outcome_and_a_deposit_never_gives_back_more_than_it_took():
    user_id, client = await user_with_wallet("sq2")
    dep = await deposit(client, 1000)
    view = (await refund(client, {"amount_cents": 600})).json()["refund"]
    part = await database().first(sql("SELECT * FROM wallet_refund_parts WHERE id = ?", int(view["parts"][0]["id"])))
    assert part is not None and part["state"] == "settled"
    db = database()
    # Returning a settled part: its UPDATE matches nothing and the return transfer's trigger refuses it.
    with pytest.raises(TriggerAbort) as exc:
        await db.batch(resolve_statements(part, Decision("returned", "refused", error_code="54"), 2))
    assert exc.value.code == "wallet_refund_transfer_mismatch"
    # Settling it again: the shared outcome key is taken.
    with pytest.raises(UniqueViolation) as unique:
        await db.batch(resolve_statements(part, Decision("settled", "approved", "777"), 2))
    assert any(c.startswith("transfers.") for c in unique.value.columns)
    assert await db.first(sql("SELECT id FROM transfers WHERE transfer_key = ?", outcome_key(int(part["id"]))))
    # More than is left of the deposit (600 refunded): the payments CHECK.
    with pytest.raises(CheckViolation):
        await db.run(sql("UPDATE payments SET charged_back_cents = 401 WHERE id = ?", int(dep["id"])))
    with pytest.raises(CheckViolation):
        await db.run(sql("UPDATE payments SET reversed_cents = 401 WHERE id = ?", int(dep["id"])))
    assert await balance(user_id) == 400


async def test_a_resolved_chargeback_cannot_change_or_move_money_again():
    user_id, client = await user_with_wallet("sq3")
    dep = await deposit(client, 1000)
    db = database()
    cb_id = new_id()
    await db.batch(
        [
            sql(
                """INSERT INTO chargebacks (id, payment_id, user_id, amount_cents, note, advisor_side, state,
                                            recorded_by_user_id, created_at_ms)
                   VALUES (?, ?, ?, 300, 'x', 'platform', 'open', ?, 1)""",
                cb_id,
                int(dep["id"]),
                user_id,
                user_id,
            ),
            sql("UPDATE payments SET charged_back_cents = 300 WHERE id = ?", int(dep["id"])),
            *_transfer("chargeback", user_id, 300, reference_type="chargeback", reference_id=cb_id),
        ]
    )
    with pytest.raises(TriggerAbort) as exc:  # a reversal while it is still open
        await db.batch(_transfer("chargeback_reversal", user_id, -300, reference_type="chargeback", reference_id=cb_id))
    assert exc.value.code == "chargeback_transfer_mismatch"
    await db.run(
        sql(
            "UPDATE chargebacks SET state = 'lost', resolved_at_ms = 2, resolved_by_user_id = ? WHERE id = ?",
            user_id,
            cb_id,
        )
    )
    with pytest.raises(TriggerAbort) as exc:
        await db.run(sql("UPDATE chargebacks SET state = 'won' WHERE id = ?", cb_id))
    assert exc.value.code == "chargeback_not_open"
    with pytest.raises(TriggerAbort) as exc:  # no chargeback money for a lost one either
        await db.batch(_transfer("chargeback", user_id, 100, reference_type="chargeback", reference_id=cb_id))
    assert exc.value.code == "chargeback_transfer_mismatch"
    with pytest.raises(TriggerAbort) as exc:
        await db.run(sql("DELETE FROM chargebacks WHERE id = ?", cb_id))
    assert exc.value.code == "ledger_append_only"
    assert await balance(user_id) == 700
