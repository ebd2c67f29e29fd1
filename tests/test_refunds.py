"""POST /v1/admin/readings/{id}/refund: shares back in the charges' proportion,
bounded in SQL by what the reading was charged."""

import asyncio

from clairvora import ledger, refunds
from clairvora.db import CheckViolation, TriggerAbort, sql
from clairvora.ids import new_id
from money_support import admin_client, balance, charge_minute, credit, make_advisor, start_reading, user_with_wallet
from support import Resp, database, unique


async def _charged_reading(minutes: int, rate: int = 100, fee_bps: int = 3000) -> dict:
    db = database()
    client_id, client = await user_with_wallet("rf")
    advisor_id, _advisor = await user_with_wallet("rfa")
    await make_advisor(db, advisor_id, rate)
    await credit(db, client_id, rate * minutes)
    reading = await start_reading(db, client_id, advisor_id, rate, fee_bps)
    for minute in range(1, minutes + 1):
        await charge_minute(db, reading, minute)
    reading["client"] = client
    return reading


async def _earnings(advisor_id: int) -> int:
    value = await ledger.balance_cents(database(), ledger.earnings_of(advisor_id))
    assert value is not None
    return value


def _path(reading: dict) -> str:
    return f"/v1/admin/readings/{reading['id']}/refund"


async def test_full_refund_returns_each_share_exactly():
    _admin_id, admin = await admin_client()
    reading = await _charged_reading(3, rate=100, fee_bps=3000)
    platform_before = await ledger.balance_cents(database(), ledger.PLATFORM_REVENUE)
    assert await balance(reading["client_id"]) == 0 and await _earnings(reading["advisor_id"]) == 210
    resp = await admin.post(
        _path(reading), {"amount_cents": 300, "reason": "connection dropped"}, headers={"idempotency-key": unique()}
    )
    assert resp.status == 201, resp.text
    body = resp.json()
    assert body["refund"]["advisor_cents"] == 210 and body["refund"]["platform_cents"] == 90
    assert body["reading_charged_cents"] == 300 and body["reading_refunded_cents"] == 300
    assert await balance(reading["client_id"]) == 300
    assert await _earnings(reading["advisor_id"]) == 0
    assert await ledger.balance_cents(database(), ledger.PLATFORM_REVENUE) == platform_before - 90
    items = (await reading["client"].get("/v1/wallet/transactions?limit=1")).json()["items"]
    assert items[0]["kind"] == "reading_refund" and items[0]["reference"] == {
        "type": "reading",
        "id": str(reading["id"]),
    }


async def test_partial_refunds_add_up_and_stop_at_the_charged_total():
    _admin_id, admin = await admin_client()
    reading = await _charged_reading(1, rate=7, fee_bps=3000)  # advisor 5, platform 2 per minute
    parts = []
    for amount in (3, 3):
        resp = await admin.post(
            _path(reading), {"amount_cents": amount, "reason": "partial"}, headers={"idempotency-key": unique()}
        )
        assert resp.status == 201
        parts.append((resp.json()["refund"]["advisor_cents"], resp.json()["refund"]["platform_cents"]))
    over = await admin.post(
        _path(reading), {"amount_cents": 2, "reason": "too much"}, headers={"idempotency-key": unique()}
    )
    assert over.status == 409 and over.json()["code"] == "refund_exceeds_charges"
    last = await admin.post(
        _path(reading), {"amount_cents": 1, "reason": "rest"}, headers={"idempotency-key": unique()}
    )
    assert last.status == 201
    parts.append((last.json()["refund"]["advisor_cents"], last.json()["refund"]["platform_cents"]))
    assert sum(a for a, _p in parts) == 5 and sum(p for _a, p in parts) == 2
    assert await _earnings(reading["advisor_id"]) == 0 and await balance(reading["client_id"]) == 7


async def test_the_cap_is_enforced_in_sql_even_when_python_is_bypassed():
    db = database()
    admin_id, _admin = await admin_client()
    reading = await _charged_reading(1, rate=100)
    transfer_id = new_id()
    # Legs that the ledger itself would accept (the clearing account may go
    # negative), so only the reading_refunds trigger stands in the way.
    legs = [ledger.Leg(ledger.wallet_of(reading["client_id"]), 101), ledger.Leg(ledger.GATEWAY_CLEARING, -101)]
    statements = [
        *ledger.transfer(
            transfer_id=transfer_id,
            key=f"t:{transfer_id}",
            kind="reading_refund",
            legs=legs,
            now_ms=1,
            reference_type="reading",
            reference_id=reading["id"],
        ),
        sql(
            """INSERT INTO reading_refunds (id, reading_id, transfer_id, amount_cents, advisor_cents, platform_cents,
                                            refunded_before_cents, reason, requested_by_user_id, created_at_ms)
               VALUES (?, ?, ?, 101, 70, 31, 0, 'x', ?, 1)""",
            new_id(),
            reading["id"],
            transfer_id,
            admin_id,
        ),
    ]
    try:
        await db.batch(statements)
        raise AssertionError("over-refund accepted")
    except TriggerAbort as exc:
        assert exc.code == "refund_exceeds_charges"
    assert await balance(reading["client_id"]) == 0  # the whole batch rolled back


async def test_idempotent_replay_and_key_reuse():
    _admin_id, admin = await admin_client()
    reading = await _charged_reading(2, rate=100)
    key, body = unique(), {"amount_cents": 100, "reason": "replay"}
    first = await admin.post(_path(reading), body, headers={"idempotency-key": key})
    again = await admin.post(_path(reading), body, headers={"idempotency-key": key})
    assert first.status == again.status == 201 and first.json() == again.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert await balance(reading["client_id"]) == 100
    other = await admin.post(_path(reading), {"amount_cents": 50, "reason": "replay"}, headers={"idempotency-key": key})
    assert other.status == 422
    assert await balance(reading["client_id"]) == 100


async def test_refusals():
    _admin_id, admin = await admin_client()
    reading = await _charged_reading(1, rate=100)
    path = _path(reading)
    assert (await admin.post(path, {"amount_cents": 10, "reason": "x"})).status == 400  # no key
    for body in (
        {"amount_cents": 0, "reason": "x"},
        {"amount_cents": 10},
        {"amount_cents": 10, "reason": ""},
        {"amount_cents": 10, "reason": "x", "extra": 1},
    ):
        assert (await admin.post(path, body, headers={"idempotency-key": unique()})).status == 400, body
    missing = await admin.post(
        f"/v1/admin/readings/{new_id()}/refund",
        {"amount_cents": 1, "reason": "x"},
        headers={"idempotency-key": unique()},
    )
    assert missing.status == 404
    assert (
        await reading["client"].post(path, {"amount_cents": 1, "reason": "x"}, headers={"idempotency-key": unique()})
    ).status == 403
    assert await balance(reading["client_id"]) == 0


def test_split_is_cumulative_and_exact():
    for rate, platform_part in ((7, 2), (100, 30), (333, 99), (50, 0), (10, 10)):
        charged = refunds.Totals(rate * 4, 0, 4 * (rate - platform_part), 0)
        for step in (1, 3, 7, 50):
            refunded = refunds.Totals(0, 0, 0, 0)
            while refunded.cents < charged.cents:
                amount = min(step, charged.cents - refunded.cents)
                split = refunds.split_refund(amount, charged, refunded)
                assert split.promo == 0 and split.promotions == 0, split
                refunded = refunds.Totals(
                    refunded.cents + amount, 0, refunded.advisor + split.advisor, refunded.promotions
                )
                # never more from either side than it earned
                assert refunded.revenue <= 4 * platform_part and refunded.advisor <= 4 * (rate - platform_part)
            assert refunded.revenue == 4 * platform_part and refunded.advisor == 4 * (rate - platform_part)


# --- concurrent refunds of one reading (issue 13 item 6) ---------------------
# Each refund is a request through the entrypoint; asyncio.gather overlaps
# them as concurrent Worker invocations would: both read the refunded total
# before either writes. The loser's split was computed from a stale total.

MAX_RACE_ATTEMPTS = 5  # fresh readings tried until the two refunds really overlap


async def _concurrent_refunds(admin, reading: dict, amounts: tuple[int, ...]) -> list[tuple[Resp, dict, str]]:
    sent = [({"amount_cents": amount, "reason": f"race {i}"}, unique()) for i, amount in enumerate(amounts)]
    answers = await asyncio.gather(
        *(admin.post(_path(reading), body, headers={"idempotency-key": key}) for body, key in sent)
    )
    return [(answer, body, key) for answer, (body, key) in zip(answers, sent, strict=True)]


async def test_the_loser_of_concurrent_refunds_is_refund_conflict_when_the_advisor_can_cover_it():
    # 1 minute at 7 cents: advisor 5, platform 2. Refunds of 3 and 4 together are
    # exactly the charge, and the advisor can cover both (cumulative split: 3+2 or
    # 2+3). The loser's stale split (computed as if it came first) asks the advisor
    # for 3 when only 2 are left: before the fix it aborted on the accounts' CHECK
    # and answered advisor_balance_insufficient, a lie a retry would have shown.
    _admin_id, admin = await admin_client()
    raced = False
    for _attempt in range(MAX_RACE_ATTEMPTS):
        reading = await _charged_reading(1, rate=7, fee_bps=3000)
        outcomes = await _concurrent_refunds(admin, reading, (3, 4))
        codes = sorted(answer.json().get("code") or "" for answer, _body, _key in outcomes if answer.status != 201)
        assert "advisor_balance_insufficient" not in codes, [a.text for a, _b, _k in outcomes]
        for answer, body, key in outcomes:
            if answer.status == 201:
                continue
            raced = True
            assert answer.status == 409 and answer.json()["code"] == "refund_conflict", answer.text
            assert answer.headers.get("retry-after") == "1"
            # Retryable: the same request, same key, now computed from the current total, lands.
            retry = await admin.post(_path(reading), body, headers={"idempotency-key": key})
            assert retry.status == 201, retry.text
        assert await balance(reading["client_id"]) == 7 and await _earnings(reading["advisor_id"]) == 0
        parts = await database().first(
            sql(
                "SELECT sum(advisor_cents) AS a, sum(platform_cents) AS p FROM reading_refunds WHERE reading_id = ?",
                reading["id"],
            )
        )
        assert (parts["a"], parts["p"]) == (5, 2)
        if raced:
            break
    assert raced, f"the two refunds never overlapped in {MAX_RACE_ATTEMPTS} attempts"


async def test_concurrent_refunds_beyond_the_charge_conflict_first_then_exceed_on_retry():
    # 3 minutes at 100: advisor 210. Two refunds of 200: each alone is fine; both
    # are more than was charged. The loser's stale advisor share (140) is more
    # than the 70 the winner left: it too must be refund_conflict, and its retry
    # then gets the true answer, refund_exceeds_charges.
    _admin_id, admin = await admin_client()
    raced = False
    for _attempt in range(MAX_RACE_ATTEMPTS):
        reading = await _charged_reading(3, rate=100, fee_bps=3000)
        outcomes = await _concurrent_refunds(admin, reading, (200, 200))
        statuses = sorted(answer.status for answer, _body, _key in outcomes)
        if statuses == [201, 201]:
            raise AssertionError("two refunds of 200 on a 300 charge both landed")
        assert statuses == [201, 409], [a.text for a, _b, _k in outcomes]
        [(loser, body, key)] = [o for o in outcomes if o[0].status == 409]
        if loser.json()["code"] == "refund_exceeds_charges":
            continue  # not concurrent: the second read already saw the first refund
        raced = True
        assert loser.json()["code"] == "refund_conflict", loser.text
        retry = await admin.post(_path(reading), body, headers={"idempotency-key": key})
        assert retry.status == 409 and retry.json()["code"] == "refund_exceeds_charges", retry.text
        assert await balance(reading["client_id"]) == 200 and await _earnings(reading["advisor_id"]) == 70
        break
    assert raced, f"the two refunds never overlapped in {MAX_RACE_ATTEMPTS} attempts"


async def test_advisor_balance_insufficient_still_answers_when_the_earnings_are_really_gone():
    # Not a race: the advisor's earnings were spent elsewhere (an adjustment moves
    # them out, as a payout would). The refund is read against the current total,
    # so the accounts' CHECK is the real reason and keeps its own code.
    _admin_id, admin = await admin_client()
    reading = await _charged_reading(2, rate=100, fee_bps=3000)  # advisor 140
    transfer_id = new_id()
    await database().batch(
        ledger.transfer(
            transfer_id=transfer_id,
            key=f"test:payout:{transfer_id}",
            kind="adjustment",
            legs=[
                ledger.Leg(ledger.earnings_of(reading["advisor_id"]), -100),
                ledger.Leg(ledger.GATEWAY_CLEARING, 100),
            ],
            now_ms=1,
        )
    )
    resp = await admin.post(_path(reading), {"amount_cents": 200, "reason": "x"}, headers={"idempotency-key": unique()})
    assert resp.status == 409 and resp.json()["code"] == "advisor_balance_insufficient", resp.text
    assert "retry-after" not in resp.headers
    assert await balance(reading["client_id"]) == 0 and await _earnings(reading["advisor_id"]) == 40


def test_only_the_balance_check_maps_to_advisor_balance_insufficient():
    balance_text = (
        "D1_ERROR: CHECK constraint failed: balance_cents >= 0 OR kind IN ('gateway_clearing', 'client_wallet'): "
        "SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_CHECK)"
    )
    assert refunds._is_balance_check(CheckViolation(balance_text))
    assert not refunds._is_balance_check(
        CheckViolation("D1_ERROR: CHECK constraint failed: advisor_cents + platform_cents = amount_cents")
    )
