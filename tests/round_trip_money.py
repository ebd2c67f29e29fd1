"""The round-trip walk's scenarios of the money routes issue 14 added: promo
codes and satisfaction credit, refunds of unused funds and chargebacks, payouts
(tests/test_round_trips.py runs them; round_trip_walk.py has the Walk)."""

from typing import Any

from clairvora.clock import rfc3339
from clairvora.ids import new_id
from round_trip_walk import Walk
from support import Client, unique


async def promo_scenarios(w: Walk) -> None:
    """Promo codes (promo_codes.py, promo_redemptions.py) and satisfaction credit (satisfaction.py): each
    sends the caller lookup with its first read (Route(caller_batch=True)), so a
    replay or a refusal seen by that read is 1 call, a write or a refusal by the
    write's own SQL 2."""
    from market_support import now_ms
    from promo_support import DAY_MS
    from test_satisfaction import _claim, _ended

    adm, c, t0 = w.admin, w.client, now_ms()
    codes, key = "/v1/admin/promo-codes", unique("walk_pc")

    def code_body(**fields: Any) -> dict[str, Any]:
        return {
            "code": unique("WALK").upper()[:32],
            "valid_until": rfc3339(t0 + DAY_MS),
            "max_redemptions": 9,
            **fields,
        }

    body = code_body(credit_cents=100)
    route = f"POST {codes}"
    made = w.check(route, "credit", await adm.post(codes, body, headers={"idempotency-key": key}), (201,)).json()
    w.check(route, "replay", await adm.post(codes, body, headers={"idempotency-key": key}), (201,))
    w.check(route, "code taken", await adm.post(codes, body, headers={"idempotency-key": unique()}), (409,))
    w.check(route, "not an admin", await c.post(codes, body, headers={"idempotency-key": unique()}), (403,))
    minutes = (await adm.post(codes, code_body(free_minutes=2), headers={"idempotency-key": unique()})).json()
    w.check(f"GET {codes}", "page", await adm.get(f"{codes}?limit=5"))
    one, missing = "GET /v1/admin/promo-codes/{code_id:id}", f"{codes}/{1 << 45}"
    w.check(one, "one", await adm.get(f"{codes}/{made['id']}"))
    w.check(one, "missing", await adm.get(missing), (404,))

    route, path = "POST /v1/promo-codes/redeem", "/v1/promo-codes/redeem"
    key = unique("walk_rd")
    w.check(route, "credit", await c.post(path, {"code": made["code"]}, headers={"idempotency-key": key}), (201,))
    w.check(route, "replay", await c.post(path, {"code": made["code"]}, headers={"idempotency-key": key}), (201,))
    w.check(
        route,
        "per-client limit",
        await c.post(path, {"code": made["code"]}, headers={"idempotency-key": unique()}),
        (409,),
    )
    w.check(
        route,
        "free minutes",
        await c.post(path, {"code": minutes["code"]}, headers={"idempotency-key": unique()}),
        (201,),
    )
    w.check(
        route,
        "no such code",
        await c.post(path, {"code": "NO-SUCH-WALK"}, headers={"idempotency-key": unique()}),
        (404,),
    )

    route, path, key = "POST /v1/admin/promo-codes/{code_id:id}/disable", f"{codes}/{made['id']}/disable", unique()
    w.check(route, "disable", await adm.post(path, headers={"idempotency-key": key}))
    w.check(route, "replay", await adm.post(path, headers={"idempotency-key": key}))
    w.check(route, "missing", await adm.post(f"{missing}/disable", headers={"idempotency-key": unique()}), (404,))
    w.check(route, "not an admin", await c.post(path, headers={"idempotency-key": unique()}), (403,))

    client, _cid, advisor, _aid, rid, end = await _ended(minutes=2)
    w.check(  # a client that never redeemed it: refused by the redeeming INSERT's trigger
        "POST /v1/promo-codes/redeem",
        "disabled",
        await client.post("/v1/promo-codes/redeem", {"code": made["code"]}, headers={"idempotency-key": unique()}),
        (409,),
    )
    route, key = "POST /v1/readings/{reading_id:id}/satisfaction-claim", unique("walk_sc")
    w.check(route, "window closed", await _claim(client, rid, end + 4 * DAY_MS), (409,))
    w.check(route, "claim", await _claim(client, rid, end + 1000, key), (201,))
    w.check(route, "replay", await _claim(client, rid, end + 1000, key), (201,))
    w.check(route, "claimed already", await _claim(client, rid, end + 2000), (409,))
    w.check(route, "the advisor", await _claim(advisor, rid, end + 2000), (403,))
    w.check(route, "someone else's", await _claim(c, rid, end + 2000), (404,))

    _client, _cid, _adv, _aid, rid, _end = await _ended(minutes=2)
    route, path, key = (
        "POST /v1/admin/readings/{reading_id:id}/satisfaction-credit",
        f"/v1/admin/readings/{rid}/satisfaction-credit",
        unique(),
    )
    grant = {"amount_cents": 150, "reason": "walk"}
    w.check(
        route,
        "above paid",
        await adm.post(path, {**grant, "amount_cents": 201}, headers={"idempotency-key": unique()}),
        (409,),
    )
    w.check(route, "grant", await adm.post(path, grant, headers={"idempotency-key": key}), (201,))
    w.check(route, "replay", await adm.post(path, grant, headers={"idempotency-key": key}), (201,))
    w.check(route, "granted already", await adm.post(path, grant, headers={"idempotency-key": unique()}), (409,))
    w.check(route, "not an admin", await c.post(path, grant, headers={"idempotency-key": unique()}), (403,))


async def card_money_scenarios(w: Walk) -> None:
    """Refunds of unused funds and chargebacks (wallet_refunds.py, chargebacks.py) on
    fresh clients with settled card deposits at the stand-in. A refund that reaches
    the gateway is 3 calls whatever its parts (EXCEPTIONS); a resume, a replay and
    every refusal the request knows before the gateway 2 or fewer."""
    from card_support import REFUNDS, deposit, plan, refund
    from test_chargebacks import record, resolve
    from world import actor, ended_reading, make_advisor

    route, one = "POST /v1/wallet/refunds", "GET /v1/wallet/refunds/{refund_id:id}"
    c = (await actor("rt_card")).client
    key = unique("rt_rk")
    deposits = [await deposit(c, cents) for cents in (1000, 1000, 1000, 1500)]
    first = w.check(route, "1 part", await refund(c, {"amount_cents": 500}, key), (201,))
    w.check(route, "replay", await refund(c, {"amount_cents": 500}, key), (201,))
    w.check(route, "3 parts", await refund(c, {"amount_cents": 3000}), (201,))
    w.check(route, "more than the wallet", await refund(c, {"amount_cents": 5000}), (409,))
    # The settle batch (call 3) and its retry fail: the request dies with its part in transit; the retry resumes it.
    died = unique("rt_rk")
    assert (await refund(c, {"amount_cents": 200}, died, **{"x-test-d1-fault": "3,4"})).status == 503
    w.check(route, "resume (the request died after reserving)", await refund(c, {"amount_cents": 200}, died), (201,))
    plan(deposits[0]["gateway_transaction_id"], "refuse")  # the only deposit with money left
    w.check(route, "refused by the gateway (502)", await refund(c, {"amount_cents": 100}), (502,))
    fresh = (await actor("rt_card_u")).client
    await deposit(fresh, 1200, settled=False)
    w.check(route, "only unsettled deposits", await refund(fresh), (409,))
    w.check(route, "nothing to refund", await refund((await actor("rt_card_e")).client), (409,))
    w.check("GET /v1/wallet/refunds", "page", await c.get(f"{REFUNDS}?limit=10"))
    w.check(one, "one", await c.get(f"{REFUNDS}/{first.json()['refund']['id']}"))
    w.check(one, "someone else's", await fresh.get(f"{REFUNDS}/{first.json()['refund']['id']}"), (404,))

    record_route, resolve_route = (
        "POST /v1/admin/payments/{payment_id:id}/chargebacks",
        "POST /v1/admin/chargebacks/{chargeback_id:id}/resolve",
    )
    client, advisor = await actor("rt_cb"), await make_advisor(await actor("rt_cba"))
    dep = await deposit(client.client, 2000)
    cb_key = unique("rt_ck")
    cb = w.check(record_route, "platform", await record(dep, {"amount_cents": 500}, cb_key), (201,))
    w.check(record_route, "replay", await record(dep, {"amount_cents": 500}, cb_key), (201,))
    w.check(record_route, "more than is left", await record(dep, {"amount_cents": 5000}), (409,))
    w.check(record_route, "missing deposit", await record({"id": str(new_id())}), (404,))
    w.check(
        record_route,
        "not an admin",
        await c.post(
            f"/v1/admin/payments/{dep['id']}/chargebacks", {"note": "x"}, headers={"idempotency-key": unique()}
        ),
        (403,),
    )
    w.check(route, "on hold (403)", await refund(client.client), (403,))
    cb_id = cb.json()["chargeback"]["id"]
    won_key = unique("rt_wk")
    w.check(resolve_route, "won", await resolve(cb_id, "won", won_key))
    w.check(resolve_route, "replay", await resolve(cb_id, "won", won_key))
    w.check(resolve_route, "already resolved", await resolve(cb_id, "lost"), (409,))
    await ended_reading(client.id, advisor.id, minutes=10)  # 1000 of the deposit spent: a clawback
    spent = w.check(record_route, "clawback", await record(dep, side="clawback"), (201,))
    assert spent.json()["chargeback"]["clawback_cents"] > 0, spent.text
    w.check(resolve_route, "lost", await resolve(spent.json()["chargeback"]["id"], "lost"))


async def payout_scenarios(w: Walk) -> None:
    """The payout routes (payouts.py, payout_methods.py, payout_webhooks.py): the
    receiver, payouts PayPal accepts, refuses or never answers, their refusals before
    money moves, and PayPal's item notifications. A payout request is the claim with
    the caller lookup, then the record of PayPal's answer (a refusal's return too)."""
    import json

    import local_runtime

    from payout_support import DAY_MS, WEBHOOK, clear, cleared_advisor, earn, now_ms, receiver, request_payout
    from world import actor, make_advisor

    control, method, payouts = local_runtime.paypalControl, "/v1/advisors/me/payout-method", "/v1/advisors/me/payouts"
    a = await make_advisor(await actor("rt_pay"))
    await earn(a.id, 20, now_ms() - 8 * DAY_MS)
    await clear(a.id, now_ms())
    none = w.check(f"GET {method}", "none yet", await a.client.get(method)).headers["etag"]
    to = {"recipient_type": "EMAIL", "receiver": receiver()}
    first = w.check(f"PUT {method}", "first", await a.client.put(method, json_body=to, headers={"if-match": none}))
    w.check(f"PUT {method}", "stale", await a.client.put(method, json_body=to, headers={"if-match": none}), (412,))
    put = await a.client.put(method, json_body=to, headers={"if-match": first.headers["etag"]})
    w.check(f"PUT {method}", "replace", put)
    w.check(f"GET {method}", "set", await a.client.get(method))
    w.check(f"GET {method}", "not an advisor", await w.client.get(method), (404,))

    post = f"POST {payouts}"
    key = unique("rt_po")
    sent = w.check(post, "sent", await request_payout(a, key=key), (201,)).json()
    w.check(post, "replay", await request_payout(a, key=key), (201,))
    w.check(post, "key reused", await request_payout(a, {"amount_cents": 5000}, key=key), (422,))
    w.check(post, "below minimum", await request_payout(a), (422,))
    w.check(post, "insufficient", await request_payout(a, {"amount_cents": 5000}), (409,))
    w.check(post, "no method", await request_payout(await make_advisor(await actor("rt_pnm"))), (409,))
    w.check(post, "not an advisor", await w.client.post(payouts, json={}, headers={"idempotency-key": key}), (404,))
    refused, _cents, _email = await cleared_advisor(15, tag="invalid")
    w.check(post, "PayPal refuses: returned", await request_payout(refused), (502,))
    lost, _cents, _email = await cleared_advisor(15)
    control.nextCreate("drop")
    w.check(post, "PayPal's answer lost", await request_payout(lost), (202,))
    failing, _cents, _email = await cleared_advisor(15, tag="fail")
    failed = (await request_payout(failing)).json()

    w.check(f"GET {payouts}", "balances + page", await a.client.get(f"{payouts}?limit=10"))
    w.check(f"GET {payouts}", "not an advisor", await w.client.get(payouts), (404,))
    one = "GET /v1/advisors/me/payouts/{payout_id:id}"
    w.check(one, "own", await a.client.get(f"{payouts}/{sent['id']}"))
    w.check(one, "someone else's", await a.client.get(f"{payouts}/{failed['id']}"), (404,))

    hook = "POST /v1/webhooks/paypal"

    async def deliver(d: dict, body: str | None = None) -> Any:
        headers = {k: str(v) for k, v in dict(d["headers"]).items()}
        return await Client().request("POST", WEBHOOK, body=body or str(d["body"]), headers=headers)

    deliveries = {json.loads(d["body"])["resource"]["payout_item"]["sender_item_id"]: d for d in control.takeWebhooks()}
    for pid in set(deliveries) - {sent["id"], failed["id"]}:
        await deliver(deliveries[pid])  # earlier tests' leftovers, so the books add up after the suite

    settled = deliveries[sent["id"]]
    forged = {**json.loads(settled["body"]), "id": f"WH-{unique('rt')}"}
    w.check(hook, "bad signature", await deliver(settled, json.dumps(forged)), (401,))
    w.check(hook, "SUCCEEDED: settlement", await deliver(settled))
    w.check(hook, "redelivery: duplicate", await deliver(settled))
    w.check(hook, "FAILED: return to cleared", await deliver(deliveries[failed["id"]]))
    batch_event = json.dumps({"id": f"WH-{unique('rt')}", "event_type": "PAYMENT.PAYOUTSBATCH.SUCCESS"})
    w.check(hook, "not an item event: ignored", await deliver(settled, batch_event))
