"""Refund parts whose gateway answer never came (refund_resolution.py): the
money waits in refunds in transit, the answer is 202 `processing`, and the
cron decides each part from the stand-in's transaction lists once the grace
period has passed: a refund it finds settles the part, none at all returns the
money, exactly once either way. Also: a retry's resend that the gateway refuses
is not trusted (refund_parts.py), the lists decide it."""

import time

import local_runtime

from card_support import books_clean, deposit, in_transit_cents, parts_of, payment, plan, refund, requests_for
from clairvora import refund_resolution
from clairvora.anet import TransactionSummary
from clairvora.config import Settings
from clairvora.db import sql
from clairvora.refund_parts import decide_lists
from money_support import balance, user_with_wallet
from support import database, unique

AFTER_GRACE_MS = refund_resolution.RESOLVE_AFTER_MS + 60_000


def _settings() -> Settings:
    return Settings.from_env(local_runtime.makeEnv())


async def _resolve(now_ms: int) -> dict[str, int]:
    return await refund_resolution.resolve_refunds_in_transit(database(), _settings(), now_ms)


async def _drain(now_ms: int) -> None:
    """Decide (or put back) what earlier tests left in transit, so the next runs see only this test's part."""
    for _ in range(30):
        if (await _resolve(now_ms)).get("refunds_looked_up", 0) == 0:
            return
    raise AssertionError("parts in transit never drained")


def _now() -> int:
    return int(time.time() * 1000)


async def test_an_answer_lost_after_the_refund_is_found_and_settled_once():
    user_id, client = await user_with_wallet("rrl")
    dep = await deposit(client, 1400)
    before = await in_transit_cents()
    plan(dep["gateway_transaction_id"], "lost")
    key = unique("rk")
    r = await refund(client, {"amount_cents": 600}, key)
    assert r.status == 202, r.text
    view = r.json()["refund"]
    assert (view["status"], view["in_transit_cents"]) == ("processing", 600)
    assert await balance(user_id) == 800 and await in_transit_cents() == before + 600
    replay = await refund(client, {"amount_cents": 600}, key)
    assert replay.status == 202 and replay.json() == r.json()
    report = await books_clean()
    assert report["refunds_in_transit"]["cents"] == before + 600

    # Within the grace period nothing is looked up (the request could still be answered).
    assert (await _resolve(_now())).get("refunds_looked_up") == 0
    later = _now() + AFTER_GRACE_MS
    overdue = (await books_clean(later))["refunds_in_transit"]["overdue"]
    assert str(view["parts"][0]["id"]) in overdue["sample_ids"] or overdue["count"] > 5
    await _drain(later)
    (part,) = await parts_of(view["id"])
    assert (part["state"], part["outcome"]) == ("settled", "found")
    assert part["gateway_transaction_id"] not in (None, dep["gateway_transaction_id"])
    assert await balance(user_id) == 800 and await in_transit_cents() == before
    assert (await payment(dep["id"]))["refunded_cents"] == 600
    now_view = (await client.get(f"/v1/wallet/refunds/{view['id']}")).json()
    assert now_view["status"] == "completed" and now_view["refunded_cents"] == 600
    assert (await _resolve(later + 60_000)).get("refunds_resolved", 0) == 0
    await books_clean(later)


async def test_a_refund_the_gateway_never_made_is_returned_by_the_cron():
    user_id, client = await user_with_wallet("rrt")
    dep = await deposit(client, 1000)
    plan(dep["gateway_transaction_id"], "timeout")
    r = await refund(client)
    assert r.status == 202 and r.json()["refund"]["in_transit_cents"] == 1000, r.text
    assert await balance(user_id) == 0
    later = _now() + AFTER_GRACE_MS
    # Through the cron itself, as workerd calls it.
    await _drain_with_cron(later)
    (part,) = await parts_of(r.json()["refund"]["id"])
    assert (part["state"], part["outcome"]) == ("returned", "not_processed")
    assert await balance(user_id) == 1000
    assert (await payment(dep["id"]))["refunded_cents"] == 0
    view = (await client.get(f"/v1/wallet/refunds/{r.json()['refund']['id']}")).json()
    assert view["status"] == "failed" and view["returned_cents"] == 1000
    await books_clean(later)


async def _drain_with_cron(when_ms: int) -> None:
    for _ in range(30):
        await local_runtime.dispatchScheduled("* * * * *", when_ms)
        waiting = await database().first(
            sql(
                "SELECT count(*) AS n FROM wallet_refund_parts WHERE state = 'in_transit' AND updated_at_ms < ?",
                when_ms - refund_resolution.RESOLVE_AFTER_MS,
            )
        )
        if waiting is not None and waiting["n"] == 0:
            return
    raise AssertionError("the cron never drained the parts in transit")


async def test_a_resend_the_gateway_refuses_is_left_to_the_lists():
    """The first delivery refunded everything but its answer was lost and the
    request died; the retry's resend is refused (55: the sum would exceed the
    deposit) since the stand-in judges its criteria before the duplicate rule.
    Returning the money then would pay the client twice: the part stays in
    transit and the lists settle it."""
    user_id, client = await user_with_wallet("rrs")
    dep = await deposit(client, 700)
    plan(dep["gateway_transaction_id"], "lost")
    key = unique("rk")
    # No part to settle (the request times out at the gateway), then D1 fails on the completion (call 3:
    # the caller with the read, the reservation, the completion) and on its one retry.
    r = await refund(client, {"amount_cents": 700}, key, **{"x-test-d1-fault": "3,4"})
    assert r.status == 503, r.text
    retry = await refund(client, {"amount_cents": 700}, key)
    assert retry.status == 202, retry.text
    part = retry.json()["refund"]["parts"][0]
    sent = requests_for(f"R{part['id']}")
    assert len(sent) == 2  # the first delivery and the resend
    assert part["status"] == "in_transit" and await balance(user_id) == 0
    await _drain(_now() + AFTER_GRACE_MS)
    (row,) = await parts_of(retry.json()["refund"]["id"])
    assert (row["state"], row["outcome"]) == ("settled", "found")
    assert await balance(user_id) == 0
    await books_clean(_now() + AFTER_GRACE_MS)


def test_what_the_lists_say_about_a_part():
    part = {"amount_cents": 500}

    def t(status: str, amount: int = 500, trans_id: str = "9") -> TransactionSummary:
        return TransactionSummary(trans_id, status, "R1", amount, 0)

    assert decide_lists(part, [t("refundPendingSettlement")], True).state == "settled"
    assert decide_lists(part, [t("refundSettledSuccessfully")], False).state == "settled"
    assert decide_lists(part, [t("refundPendingSettlement", 400)], True).state == "in_transit"
    assert decide_lists(
        part, [t("refundPendingSettlement"), t("refundPendingSettlement", trans_id="8")], True
    ).state == ("in_transit")
    assert decide_lists(part, [t("voided")], True).state == "returned"
    assert decide_lists(part, [], True).outcome == "not_processed"
    assert decide_lists(part, [], False).state == "in_transit"
