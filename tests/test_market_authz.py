"""Authorization: every reading, message, charge and review route answers 404
to anyone but the reading's client and advisor; lists hold only the caller's rows."""

from clairvora.db import sql
from market_support import active_reading, at, long_lived_user, market_pair, now_ms, request_reading
from support import Client, database


async def _routes(rid: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", f"/v1/readings/{rid}", None),
        ("POST", f"/v1/readings/{rid}/accept", None),
        ("POST", f"/v1/readings/{rid}/decline", None),
        ("POST", f"/v1/readings/{rid}/cancel", None),
        ("POST", f"/v1/readings/{rid}/heartbeat", None),
        ("POST", f"/v1/readings/{rid}/end", None),
        ("GET", f"/v1/readings/{rid}/messages", None),
        ("POST", f"/v1/readings/{rid}/messages", {"body": "hello"}),
        ("POST", f"/v1/readings/{rid}/review", {"rating": 1}),
    ]


async def _snapshot(rid: str) -> tuple:
    db = database()
    reading = await db.first(sql("SELECT * FROM readings WHERE id = ?", int(rid)))
    counts = await db.first(
        sql(
            """SELECT (SELECT count(*) FROM messages WHERE reading_id = ?1) AS m,
                                          (SELECT count(*) FROM reading_charges WHERE reading_id = ?1) AS c,
                                          (SELECT count(*) FROM reviews WHERE reading_id = ?1) AS v""",
            int(rid),
        )
    )
    return reading, counts


async def test_a_third_user_gets_404_everywhere_and_changes_nothing():
    t = now_ms()
    client, _cid, advisor, advisor_id = await market_pair(funds=1000)
    stranger, _sid = await long_lived_user("stranger")
    _c2, _c2id, other_advisor, _oid = await market_pair()  # another advisor is a stranger too
    requested = (await request_reading(client, advisor_id, t)).json()
    for rid in [requested["id"]]:
        before = await _snapshot(rid)
        for who in (stranger, other_advisor):
            for method, path, body in await _routes(rid):
                r = await who.request(method, path, json_body=body, headers=at(t + 1))
                assert r.status == 404, (method, path, r.status, r.text)
                assert r.json()["code"] == "not_found"
        assert await _snapshot(rid) == before
    await client.post(f"/v1/readings/{requested['id']}/cancel")

    active = await active_reading(client, advisor, advisor_id, t + 10)
    await client.post(f"/v1/readings/{active['id']}/messages", json={"body": "private"}, headers=at(t + 11))
    before = await _snapshot(active["id"])
    for method, path, body in await _routes(active["id"]):
        r = await stranger.request(method, path, json_body=body, headers=at(t + 12))
        assert r.status == 404, (method, path, r.status)
        assert "private" not in r.text
    assert await _snapshot(active["id"]) == before
    # the advisor is a participant but may not review
    await client.post(f"/v1/readings/{active['id']}/end", headers=at(t + 13))
    r = await advisor.post(f"/v1/readings/{active['id']}/review", json={"rating": 5})
    assert r.status == 403
    # no token at all
    for method, path, body in await _routes(active["id"]):
        assert (await Client().request(method, path, json_body=body)).status == 401


async def test_lists_hold_only_the_callers_rows():
    t = now_ms()
    client, client_id, advisor, advisor_id = await market_pair(funds=5000)
    ids = []
    for i in range(3):
        reading = await active_reading(client, advisor, advisor_id, t + i * 1000)
        await client.post(f"/v1/readings/{reading['id']}/end", headers=at(t + i * 1000 + 10))
        ids.append(reading["id"])
    stranger, _sid = await long_lived_user("stranger")
    r = await stranger.get("/v1/readings")
    assert r.status == 200 and r.json() == {"items": [], "next_cursor": None}
    for who, role in [(client, "client"), (advisor, "advisor")]:
        seen, cursor = [], None
        while True:
            r = await who.get("/v1/readings?limit=2" + (f"&cursor={cursor}" if cursor else ""))
            assert r.status == 200
            seen += r.json()["items"]
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
        assert [x["id"] for x in seen] == list(reversed(ids)), "newest first, each once"
        assert all(x["role"] == role for x in seen)
    r = await stranger.get("/v1/advisors/me/earnings")
    assert r.status == 404
    earnings = (await advisor.get("/v1/advisors/me/earnings?limit=2")).json()
    assert earnings["balance_cents"] == 3 * 70 and len(earnings["items"]) == 2 and earnings["next_cursor"]
    rest = (await advisor.get(f"/v1/advisors/me/earnings?cursor={earnings['next_cursor']}")).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert client_id != advisor_id
