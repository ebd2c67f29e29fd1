"""D1 round trips per route, and how they were brought to two.

Route.preload: the handler's first read rides in one D1 batch with the caller
lookup, so the reading routes cost one round trip less, and that read is still
scoped to the caller (by its Clerk `sub`). Cancel/decline send their
conditional UPDATE with the re-read; earnings sends the balance with the page."""

import re
import time
from typing import Any

from clairvora.clock import rfc3339
from clairvora.db import sql
from clairvora.ids import new_id
from market_support import active_reading, at, market_pair, request_reading
from support import Client, database, new_user, unique

_D1 = re.compile(r'calls=(?P<calls>\d+) rows_read=(?P<read>\d+) rows_written=(?P<written>\d+)"')


def d1_figures(headers: dict[str, str]) -> tuple[int, int, int]:
    m = _D1.search(headers["server-timing"])
    assert m, headers
    return int(m["calls"]), int(m["read"]), int(m["written"])


async def test_a_participant_reads_its_reading_in_one_call():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    reading = await active_reading(client, advisor, advisor_id, t0)
    for who in (client, advisor):
        r = await who.get(f"/v1/readings/{reading['id']}", headers=at(t0 + 1000))
        assert r.status == 200 and r.json()["id"] == reading["id"], r.text
        assert d1_figures(r.headers)[0] == 1


async def test_a_billing_heartbeat_takes_two_calls_and_charges_once():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    reading = await active_reading(client, advisor, advisor_id, t0)
    r = await client.post(f"/v1/readings/{reading['id']}/heartbeat", headers=at(t0 + 60_000))
    assert r.status == 200 and r.json()["billed_minutes"] == 2, r.text
    calls, _read, written = d1_figures(r.headers)
    assert calls == 2 and written > 0
    r = await advisor.post(f"/v1/readings/{reading['id']}/end", headers=at(t0 + 61_000))
    assert r.status == 200 and r.json()["status"] == "ended" and r.json()["billed_minutes"] == 2, r.text
    assert d1_figures(r.headers)[0] == 2


async def test_accept_takes_two_calls():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    r = await request_reading(client, advisor_id, t0)
    assert r.status == 201, r.text
    r = await advisor.post(f"/v1/readings/{r.json()['id']}/accept", headers=at(t0))
    assert r.status == 200 and r.json()["billed_minutes"] == 1, r.text
    assert d1_figures(r.headers)[0] == 2


async def test_the_preloaded_read_is_scoped_to_the_caller():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    reading = await active_reading(client, advisor, advisor_id, t0)
    _sub, stranger = await new_user("pre")
    assert (await stranger.get("/v1/me")).status == 200  # a known user: the preload runs
    for method, suffix in (("GET", ""), ("POST", "/heartbeat"), ("POST", "/end"), ("GET", "/messages")):
        r = await stranger.request(method, f"/v1/readings/{reading['id']}{suffix}", headers=at(t0 + 60_000))
        assert r.status == 404 and r.json()["code"] == "not_found", (suffix, r.text)
        assert reading["id"] not in r.text
    # Nothing was charged or ended by the stranger's calls.
    r = await client.get(f"/v1/readings/{reading['id']}", headers=at(t0 + 1000))
    assert r.json()["status"] == "active" and r.json()["billed_minutes"] == 1, r.text


async def test_a_caller_seen_for_the_first_time_is_created_and_gets_a_404():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    reading = await active_reading(client, advisor, advisor_id, t0)
    sub, newcomer = await new_user("fresh")
    before = await database().first(sql("SELECT count(*) AS n FROM users WHERE clerk_user_id = ?", sub))
    assert before["n"] == 0
    r = await newcomer.get(f"/v1/readings/{reading['id']}", headers=at(t0 + 1000))
    assert r.status == 404, r.text
    row = await database().first(sql("SELECT count(*) AS n FROM users WHERE clerk_user_id = ?", sub))
    assert row["n"] == 1


async def test_an_unknown_reading_is_a_404_without_a_second_read():
    _sub, caller = await new_user("unk")
    assert (await caller.get("/v1/me")).status == 200
    r = await Client(caller.token).get(f"/v1/readings/{new_id()}")
    assert r.status == 404, r.text
    assert d1_figures(r.headers)[0] == 1


async def test_cancel_and_decline_take_two_calls():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    r = await request_reading(client, advisor_id, t0)
    r = await client.post(f"/v1/readings/{r.json()['id']}/cancel", headers=at(t0 + 1000))
    assert r.status == 200 and r.json()["status"] == "cancelled", r.text
    assert d1_figures(r.headers)[0] == 2
    r = await client.post(f"/v1/readings/{r.json()['id']}/cancel", headers=at(t0 + 2000))
    assert r.status == 409 and r.json()["reading_status"] == "cancelled", r.text
    r = await request_reading(client, advisor_id, t0 + 3000)
    r = await advisor.post(f"/v1/readings/{r.json()['id']}/decline", headers=at(t0 + 4000))
    assert r.status == 200 and r.json()["status"] == "declined", r.text
    assert d1_figures(r.headers)[0] == 2


async def test_earnings_balance_and_page_take_two_calls():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    reading = await active_reading(client, advisor, advisor_id, t0)
    r = await advisor.get("/v1/advisors/me/earnings?limit=10")
    assert r.status == 200, r.text
    body = r.json()
    assert len(body["items"]) == 1 and body["items"][0]["reading_id"] == reading["id"]
    assert body["balance_cents"] == body["items"][0]["amount_cents"] > 0
    assert d1_figures(r.headers)[0] == 2
    r = await client.get("/v1/advisors/me/earnings")  # a client has no earnings account
    assert r.status == 404 and d1_figures(r.headers)[0] == 2


# --- every route of the route table, at most two D1 round trips ----------------
# A scenario per route (a new route without one fails the coverage test below)
# sends the route's usual requests as a known caller and names the statuses it
# expects. Each answer's `calls` (server-timing) must be <= MAX_CALLS, unless
# the (route, request) is in EXCEPTIONS with the reason and its exact count.

MAX_CALLS = 2
# (route key, request label) -> (calls, why). Must stay empty or argued here and in
# docs/BENCHMARKS.md ("Round trips per route"). A caller seen for the first time
# is outside this walk: its creation costs one call once (test below).
_REFUND_WHY = (
    "read, reserve, settle: which deposits to reserve depends on the gateway's getTransactionDetails "
    "(settled? the card's last 4), which needs the deposits D1 holds, and the reserve must commit before "
    "refundTransaction, the settlement after it; 3 for any number of parts (BENCHMARKS.md)"
)
EXCEPTIONS: dict[tuple[str, str], tuple[int, str]] = {
    ("POST /v1/wallet/refunds", "1 part"): (3, _REFUND_WHY),
    ("POST /v1/wallet/refunds", "3 parts"): (3, _REFUND_WHY),
    ("POST /v1/wallet/refunds", "refused by the gateway (502)"): (3, _REFUND_WHY),
}


class _Walk:
    """What the scenarios share: a funded client, an online advisor, an admin."""

    def __init__(self) -> None:
        self.checked: list[tuple[str, str, int, int]] = []  # (route, label, status, calls)

    async def setup(self) -> None:
        from market_support import long_lived_user, market_pair
        from money_support import admin_client

        self.client, self.client_id, self.advisor, self.advisor_id = await market_pair(rate=100, funds=10_000)
        _admin_id, self.admin = await admin_client()
        self.spare, _ = await long_lived_user("spare")  # a known user with nothing else

    def check(self, route: str, label: str, r: Any, statuses: tuple[int, ...] = (200,)) -> Any:
        assert r.status in statuses, (route, label, r.status, r.text[:300])
        self.checked.append((route, label, r.status, d1_figures(r.headers)[0]))
        return r


async def _scenarios(w: _Walk) -> None:
    from photo_support import png, upload
    from test_deposits import deposit_body
    from webhook_support import event, post_event

    c, a, aid = w.client, w.advisor, w.advisor_id
    t0 = int(time.time() * 1000)
    anyone = Client()
    w.check("GET /health", "liveness", await anyone.get("/health"))
    w.check("GET /openapi.json", "document", await anyone.get("/openapi.json"))
    me = w.check("GET /v1/me", "known user", await c.get("/v1/me"))
    w.check(
        "PATCH /v1/me",
        "display name",
        await c.patch("/v1/me", json={"display_name": "Walker"}, headers={"if-match": me.headers["etag"]}),
    )
    w.check("GET /v1/me/export", "export", await c.get("/v1/me/export"))
    gone = await w.spare.get("/v1/me")
    w.check("DELETE /v1/me", "erasure", await w.spare.delete("/v1/me", headers={"if-match": gone.headers["etag"]}))

    _sub, newcomer = await new_user("walk_adv")
    assert (await newcomer.get("/v1/me")).status == 200
    w.check(
        "POST /v1/advisors",
        "become one",
        await newcomer.post(
            "/v1/advisors", json={"headline": "H", "bio": "", "categories": ["tarot"], "rate_cents_per_minute": 100}
        ),
        (201,),
    )
    own = w.check("GET /v1/advisors/me", "own profile", await a.get("/v1/advisors/me"))
    own = w.check(
        "PATCH /v1/advisors/me",
        "headline",
        await a.patch("/v1/advisors/me", json={"headline": "Walk"}, headers={"if-match": own.headers["etag"]}),
    )
    w.check("GET /v1/advisors/{advisor_id:id}", "public profile", await anyone.get(f"/v1/advisors/{aid}"))
    w.check("GET /v1/advisors", "search", await anyone.get("/v1/advisors?category=tarot,love&min_rate=50&max_rate=500"))
    photo = w.check("PUT /v1/advisors/me/photo", "upload", await upload(a, png(), own.json()["version"]))
    w.check("GET /v1/advisors/{advisor_id:id}/photo", "photo", await anyone.get(f"/v1/advisors/{aid}/photo"))
    w.check(
        "DELETE /v1/advisors/me/photo",
        "remove",
        await a.delete("/v1/advisors/me/photo", headers={"if-match": photo.headers["etag"]}),
    )

    w.check("GET /v1/wallet", "balance", await c.get("/v1/wallet"))
    w.check("GET /v1/wallet/transactions", "page", await c.get("/v1/wallet/transactions?limit=10"))
    key = unique("walk_dep")
    dep = w.check(
        "POST /v1/wallet/deposits",
        "approved",
        await c.post("/v1/wallet/deposits", deposit_body(2000), headers={"idempotency-key": key}),
        (201,),
    )
    w.check(
        "POST /v1/wallet/deposits",
        "replay",
        await c.post("/v1/wallet/deposits", deposit_body(2000), headers={"idempotency-key": key}),
        (201,),
    )
    w.check(
        "POST /v1/wallet/deposits",
        "declined",
        await c.post(
            "/v1/wallet/deposits", deposit_body(900, "tok_declined"), headers={"idempotency-key": unique("walk_dec")}
        ),
        (402,),
    )
    refund = event(
        "net.authorize.payment.refund.created",
        trans_id=str(new_id()),
        invoice=dep.json()["deposit"]["id"],
        amount_cents=100,
    )
    w.check("POST /v1/webhooks/authorizenet", "refund -> reversal", await post_event(refund))
    w.check("POST /v1/webhooks/authorizenet", "duplicate", await post_event(refund))

    requested = w.check("POST /v1/readings", "request", await request_reading(c, aid, t0), (201,)).json()
    w.check(
        "POST /v1/readings/{reading_id:id}/cancel",
        "cancel",
        await c.post(f"/v1/readings/{requested['id']}/cancel", headers=at(t0 + 1000)),
    )
    declined = (await request_reading(c, aid, t0 + 2000)).json()
    w.check(
        "POST /v1/readings/{reading_id:id}/decline",
        "decline",
        await a.post(f"/v1/readings/{declined['id']}/decline", headers=at(t0 + 3000)),
    )
    fresh = (await request_reading(c, aid, t0 + 4000)).json()
    w.check(
        "POST /v1/readings/{reading_id:id}/accept",
        "accept (minute 1)",
        await a.post(f"/v1/readings/{fresh['id']}/accept", headers=at(t0 + 4000)),
    )
    rid = fresh["id"]
    w.check("GET /v1/readings/{reading_id:id}", "one", await c.get(f"/v1/readings/{rid}", headers=at(t0 + 5000)))
    w.check("GET /v1/readings", "list", await c.get("/v1/readings?limit=10"))
    w.check(
        "POST /v1/readings/{reading_id:id}/messages",
        "send",
        await c.post(f"/v1/readings/{rid}/messages", json={"body": "hi"}, headers=at(t0 + 6000)),
        (201,),
    )
    w.check(
        "GET /v1/readings/{reading_id:id}/messages",
        "page",
        await a.get(f"/v1/readings/{rid}/messages", headers=at(t0 + 7000)),
    )
    w.check(
        "POST /v1/readings/{reading_id:id}/heartbeat",
        "bills minute 2",
        await c.post(f"/v1/readings/{rid}/heartbeat", headers=at(t0 + 4000 + 60_000)),
    )
    w.check(
        "POST /v1/readings/{reading_id:id}/end",
        "end",
        await c.post(f"/v1/readings/{rid}/end", headers=at(t0 + 4000 + 61_000)),
    )
    w.check(
        "POST /v1/readings/{reading_id:id}/review",
        "review",
        await c.post(f"/v1/readings/{rid}/review", json={"rating": 5}),
        (201,),
    )
    w.check("GET /v1/advisors/{advisor_id:id}/reviews", "page", await anyone.get(f"/v1/advisors/{aid}/reviews"))
    w.check("GET /v1/advisors/me/earnings", "balance + page", await a.get("/v1/advisors/me/earnings"))
    w.check(
        "POST /v1/admin/readings/{reading_id:id}/refund",
        "1 cent",
        await w.admin.post(
            f"/v1/admin/readings/{rid}/refund",
            json={"amount_cents": 1, "reason": "walk"},
            headers={"idempotency-key": unique("walk_ref")},
        ),
        (201,),
    )
    w.check("GET /v1/admin/ledger/check", "report", await w.admin.get("/v1/admin/ledger/check"))
    w.check(
        "POST /v1/advisors/me/blocks",
        "block",
        await a.post("/v1/advisors/me/blocks", json={"client_id": str(w.client_id)}),
        (200, 201),
    )
    w.check("GET /v1/advisors/me/blocks", "page", await a.get("/v1/advisors/me/blocks"))
    w.check(
        "DELETE /v1/advisors/me/blocks/{client_id:id}",
        "unblock",
        await a.delete(f"/v1/advisors/me/blocks/{w.client_id}"),
        (200, 204),
    )


async def _period_scenarios(w: _Walk) -> None:
    """The ledger period routes (period_routes.py) on periods that do not exist or
    cannot open (the close itself is test_periods.py's): the caller lookup and one
    statement, the advance's read preloaded with the lookup."""
    missing = f"/v1/admin/ledger/periods/{1 << 45}"
    w.check("GET /v1/admin/ledger/periods", "list", await w.admin.get("/v1/admin/ledger/periods"))
    w.check(
        "POST /v1/admin/ledger/periods",
        "an end not yet past",
        await w.admin.post("/v1/admin/ledger/periods", json={"ends_before": "2999-01-01T00:00:00Z"}),
        (422,),
    )
    w.check("GET /v1/admin/ledger/periods/{period_id:id}", "missing", await w.admin.get(missing), (404,))
    w.check(
        "POST /v1/admin/ledger/periods/{period_id:id}/advance",
        "missing",
        await w.admin.post(f"{missing}/advance"),
        (404,),
    )
    w.check(
        "POST /v1/admin/ledger/periods/{period_id:id}/verify",
        "missing",
        await w.admin.post(f"{missing}/verify"),
        (404,),
    )


async def _promo_scenarios(w: _Walk) -> None:
    """Promo codes (promo_codes.py) and satisfaction credit (satisfaction.py): each
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


async def _card_money_scenarios(w: _Walk) -> None:
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


async def _payout_scenarios(w: _Walk) -> None:
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


def _route_keys() -> set[str]:
    from clairvora import app

    return {f"{r.method} {r.pattern}" for r in app.ROUTES}


async def test_every_route_takes_at_most_two_round_trips():
    walk = _Walk()
    await walk.setup()
    await _scenarios(walk)
    await _period_scenarios(walk)
    await _promo_scenarios(walk)
    await _card_money_scenarios(walk)
    await _payout_scenarios(walk)
    walked = {route for route, _label, _status, _calls in walk.checked}
    missing = _route_keys() - walked
    assert not missing, f"routes without a round-trip scenario (add one to _scenarios): {sorted(missing)}"
    over = []
    for route, label, status, calls in walk.checked:
        allowed = EXCEPTIONS.get((route, label), (MAX_CALLS, ""))[0]
        if calls > allowed:
            over.append(f"{route} [{label}] -> {status}: {calls} D1 calls (at most {allowed})")
    assert not over, "\n".join(over)
    for (route, label), (calls, why) in EXCEPTIONS.items():
        assert why and route in _route_keys(), (route, label)
        assert (route, label, calls) in {(r, lab, n) for r, lab, _s, n in walk.checked}, (route, label, calls)


# Every answer of _promo_scenarios, exactly: the first read with the caller lookup
# answers a replay, a missing object, a non-admin and every refusal it can see.
PROMO_CALLS = {
    "POST /v1/admin/promo-codes": {"credit": 2, "replay": 1, "code taken": 2, "not an admin": 1},
    "GET /v1/admin/promo-codes": {"page": 2},
    "GET /v1/admin/promo-codes/{code_id:id}": {"one": 2, "missing": 2},
    "POST /v1/promo-codes/redeem": {
        "credit": 2,
        "replay": 1,
        "per-client limit": 2,
        "free minutes": 2,
        "no such code": 1,
        "disabled": 2,
    },
    "POST /v1/admin/promo-codes/{code_id:id}/disable": {"disable": 2, "replay": 1, "missing": 1, "not an admin": 1},
    "POST /v1/readings/{reading_id:id}/satisfaction-claim": {
        "window closed": 1,
        "claim": 2,
        "replay": 1,
        "claimed already": 1,
        "the advisor": 1,
        "someone else's": 1,
    },
    "POST /v1/admin/readings/{reading_id:id}/satisfaction-credit": {
        "above paid": 1,
        "grant": 2,
        "replay": 1,
        "granted already": 1,
        "not an admin": 1,
    },
}


async def test_promo_and_satisfaction_routes_take_their_pinned_calls():
    walk = _Walk()
    await walk.setup()
    await _promo_scenarios(walk)
    seen: dict[str, dict[str, int]] = {}
    for route, label, _status, calls in walk.checked:
        seen.setdefault(route, {})[label] = calls
    assert seen == PROMO_CALLS


async def test_a_deposit_is_one_claim_batch_and_one_settle_batch_and_a_replay_is_one_call():
    from test_deposits import deposit_body

    _sub, client = await new_user("rt_dep")
    assert (await client.get("/v1/me")).status == 200
    key = unique("rt")
    r = await client.post("/v1/wallet/deposits", deposit_body(1500), headers={"idempotency-key": key})
    assert r.status == 201 and d1_figures(r.headers)[0] == 2, r.headers
    again = await client.post("/v1/wallet/deposits", deposit_body(1500), headers={"idempotency-key": key})
    assert again.status == 201 and again.json() == r.json() and d1_figures(again.headers)[0] == 1
    assert again.headers.get("idempotent-replayed") == "true"


async def test_a_first_sight_costs_one_call_once():
    """A new Clerk user: the read that finds no row (so the per-IP new-user limit can
    run before any write), then the creating batch, which carries the route's own
    first statements (users.with_caller, Route.preload). Once per user."""
    from test_deposits import deposit_body

    _sub, newcomer = await new_user("rt_first")
    r = await newcomer.post("/v1/wallet/deposits", deposit_body(1100), headers={"idempotency-key": unique("rt1")})
    assert r.status == 201 and d1_figures(r.headers)[0] == 3, r.headers
    r = await newcomer.post("/v1/wallet/deposits", deposit_body(1100), headers={"idempotency-key": unique("rt2")})
    assert r.status == 201 and d1_figures(r.headers)[0] == 2, r.headers
    _sub, other = await new_user("rt_first_me")
    r = await other.get("/v1/me")
    assert r.status == 200 and d1_figures(r.headers)[0] == 2
    r = await other.get("/v1/me")
    assert d1_figures(r.headers)[0] == 1


async def test_a_reading_request_and_an_admin_refund_take_two_calls_and_their_replays_one():
    from money_support import admin_client

    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    key = unique("rt_req")
    r = await request_reading(client, advisor_id, t0, key=key)
    assert r.status == 201 and d1_figures(r.headers)[0] == 2, r.headers
    replay = await request_reading(client, advisor_id, t0, key=key)
    assert replay.status == 201 and replay.json() == r.json() and d1_figures(replay.headers)[0] == 1
    reading_id = r.json()["id"]
    second = await request_reading(client, advisor_id, t0 + 1)
    assert second.status == 409 and second.json()["code"] == "reading_already_open", second.text
    assert second.json()["open_reading_id"] == reading_id and d1_figures(second.headers)[0] == 1
    r = await advisor.post(f"/v1/readings/{reading_id}/accept", headers=at(t0))
    assert r.status == 200, r.text
    _admin_id, admin = await admin_client()
    body, headers = {"amount_cents": 10, "reason": "round trips"}, {"idempotency-key": unique("rt_ref")}
    r = await admin.post(f"/v1/admin/readings/{reading_id}/refund", json=body, headers=headers)
    assert r.status == 201 and d1_figures(r.headers)[0] == 2, r.text
    replay = await admin.post(f"/v1/admin/readings/{reading_id}/refund", json=body, headers=headers)
    assert replay.status == 201 and replay.json() == r.json() and d1_figures(replay.headers)[0] == 1


async def test_a_payout_is_its_claim_with_the_lookup_then_its_record_and_a_refusal_writes_nothing():
    """POST /v1/advisors/me/payouts: the claim (payout row, cleared -> in transit, the
    key) in the caller lookup's batch, then PayPal, then the record of its answer; a
    refusal PayPal makes returns the money in that second call. A replay, and every
    refusal before money moves (judged by the claim's INSERT ... SELECT), is the one
    batch and writes nothing. The reads are one call each."""
    from payout_support import cleared_advisor, deliver_webhooks, request_payout

    await deliver_webhooks()  # earlier tests' leftovers
    a, earned, _email = await cleared_advisor(15)
    key = unique("rt_po")
    r = await request_payout(a, key=key)
    calls, _read, written = d1_figures(r.headers)
    assert r.status == 201 and calls == 2 and written > 0, r.text
    again = await request_payout(a, key=key)
    assert again.status == 201 and again.json() == r.json() and again.headers.get("idempotent-replayed") == "true"
    assert d1_figures(again.headers)[::2] == (1, 0)
    for body, status, code in (
        ({}, 422, "payout_below_minimum"),
        ({"amount_cents": earned}, 409, "insufficient_cleared_earnings"),
    ):
        refused = await request_payout(a, body)
        assert refused.status == status and refused.json()["code"] == code, refused.text
        assert d1_figures(refused.headers)[::2] == (1, 0), refused.headers
    returned_to, _earned, _email = await cleared_advisor(15, tag="invalid")
    r = await request_payout(returned_to)
    assert r.status == 502 and r.json()["payout"]["status"] == "failed" and d1_figures(r.headers)[0] == 2, r.text
    for path in ("/v1/advisors/me/payouts", f"/v1/advisors/me/payouts/{again.json()['id']}"):
        assert d1_figures((await a.client.get(path)).headers)[0] == 1, path
    assert d1_figures((await a.client.get("/v1/advisors/me/payout-method")).headers)[0] == 1
    await deliver_webhooks()  # the payout's notification, not left for the next test to meet
