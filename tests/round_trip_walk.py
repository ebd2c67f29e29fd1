"""The round-trip walk (tests/test_round_trips.py): what its scenarios share, and
the scenarios of the routes that move no money or only a reading's (a known
caller sends each route's usual requests; `Walk.check` records the D1 calls of
each answer from its server-timing header). The money routes' scenarios are in
round_trip_money.py."""

import re
import time
from typing import Any

from clairvora.ids import new_id
from market_support import at, market_pair, request_reading
from support import Client, new_user, unique

_D1 = re.compile(r'calls=(?P<calls>\d+) rows_read=(?P<read>\d+) rows_written=(?P<written>\d+)"')


def d1_figures(headers: dict[str, str]) -> tuple[int, int, int]:
    m = _D1.search(headers["server-timing"])
    assert m, headers
    return int(m["calls"]), int(m["read"]), int(m["written"])


class Walk:
    """What the scenarios share: a funded client, an online advisor, an admin."""

    def __init__(self) -> None:
        self.checked: list[tuple[str, str, int, int]] = []  # (route, label, status, calls)

    async def setup(self) -> None:
        from market_support import long_lived_user
        from money_support import admin_client

        self.client, self.client_id, self.advisor, self.advisor_id = await market_pair(rate=100, funds=10_000)
        _admin_id, self.admin = await admin_client()
        self.spare, _ = await long_lived_user("spare")  # a known user with nothing else

    def check(self, route: str, label: str, r: Any, statuses: tuple[int, ...] = (200,)) -> Any:
        assert r.status in statuses, (route, label, r.status, r.text[:300])
        self.checked.append((route, label, r.status, d1_figures(r.headers)[0]))
        return r


async def core_scenarios(w: Walk) -> None:
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


async def period_scenarios(w: Walk) -> None:
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
