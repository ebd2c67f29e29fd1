"""The whole marketplace flow, scripted: fund, request, accept, heartbeats
across several minutes, a low-balance warning, the automatic end when funds
run out, chat, a review, earnings, and the ledger invariants."""

from clairvora.db import sql
from market_support import (
    MINUTE_MS,
    assert_ledger_consistent,
    at,
    fund,
    long_lived_user,
    now_ms,
    request_reading,
)
from support import Client, database, unique


async def test_the_whole_flow():
    t0 = now_ms()
    advisor, advisor_id = await long_lived_user("adv")
    r = await advisor.post(
        "/v1/advisors",
        json={"headline": "Tarot", "bio": "Cards.", "categories": ["tarot"], "rate_cents_per_minute": 100},
    )
    assert r.status == 201
    r = await advisor.patch("/v1/advisors/me", json={"status": "online"}, headers={"if-match": r.headers["etag"]})
    assert r.status == 200

    client, client_id = await long_lived_user("cli")
    await fund(client_id, 450)  # pays 4 minutes at 100

    key = unique("key")
    r = await request_reading(client, advisor_id, t0, key)
    assert r.status == 201, r.text
    reading = r.json()
    rid = reading["id"]
    assert (reading["status"], reading["rate_cents_per_minute"], reading["billed_minutes"]) == ("requested", 100, 0)
    # a retry with the same key replays the first answer and creates nothing
    again = await request_reading(client, advisor_id, t0 + 50, key)
    assert again.status == 201 and again.json() == reading
    assert again.headers.get("idempotent-replayed") == "true"
    # read-after-write: the bookmark of the create makes the next read see it
    seen = await client.get(f"/v1/readings/{rid}", headers={"x-d1-bookmark": r.headers["x-d1-bookmark"]})
    assert seen.status == 200 and seen.json()["status"] == "requested"

    accepted_at = t0 + 5_000
    r = await advisor.post(f"/v1/readings/{rid}/accept", headers=at(accepted_at))
    assert r.status == 200, r.text
    body = r.json()
    assert (
        body["status"],
        body["billed_minutes"],
        body["balance_cents"],
        body["minutes_left"],
        body["low_balance"],
    ) == ("active", 1, None, None, None), "minute 1 is charged on accept; the advisor sees nothing of the wallet"
    seen = await client.get(f"/v1/readings/{rid}", headers={"x-d1-bookmark": r.headers["x-d1-bookmark"]})
    assert seen.json()["status"] == "active" and seen.json()["balance_cents"] == 350

    async def beat(who: Client, t: int) -> dict:
        resp = await who.post(f"/v1/readings/{rid}/heartbeat", headers=at(t))
        assert resp.status == 200, resp.text
        return resp.json()

    # inside minute 1: nothing more to pay
    b = await beat(client, accepted_at + 30_000)
    assert (b["billed_minutes"], b["balance_cents"], b["minutes_left"], b["low_balance"]) == (1, 350, 3, False)
    # minute 2 begins exactly one period after accept: the client's heartbeat then charges it
    charged = await client.post(f"/v1/readings/{rid}/heartbeat", headers=at(accepted_at + MINUTE_MS))
    b = charged.json()
    assert (b["billed_minutes"], b["minutes_left"], b["low_balance"]) == (2, 2, False)
    # the advisor's app beats too (a side silent past the timeout would end the reading)
    b = await beat(advisor, accepted_at + MINUTE_MS)
    assert (b["billed_minutes"], b["minutes_left"], b["low_balance"]) == (2, None, None)
    # read-after-write after a charge: the client's next read, with that bookmark, sees it
    seen = await client.get(f"/v1/readings/{rid}", headers={"x-d1-bookmark": charged.headers["x-d1-bookmark"]})
    assert (seen.json()["billed_minutes"], seen.json()["balance_cents"]) == (2, 250)
    assert seen.headers["x-d1-bookmark"] >= charged.headers["x-d1-bookmark"]

    r = await client.post(
        f"/v1/readings/{rid}/messages", json={"body": "Will I find a new job?"}, headers=at(accepted_at + MINUTE_MS + 1)
    )
    assert r.status == 201, r.text
    r = await advisor.post(
        f"/v1/readings/{rid}/messages", json={"body": "The cards say: soon."}, headers=at(accepted_at + MINUTE_MS + 2)
    )
    assert r.status == 201, r.text

    b = await beat(client, accepted_at + 2 * MINUTE_MS + 10)
    assert (b["billed_minutes"], b["balance_cents"], b["minutes_left"], b["low_balance"]) == (3, 150, 1, True), (
        "the low-balance warning comes when fewer than two minutes remain"
    )
    await beat(advisor, accepted_at + 2 * MINUTE_MS + 20)
    # read-after-write after a charge
    b = await beat(client, accepted_at + 3 * MINUTE_MS + 10)
    assert (b["billed_minutes"], b["balance_cents"], b["minutes_left"], b["low_balance"], b["status"]) == (
        4,
        50,
        0,
        True,
        "active",
    )
    await beat(advisor, accepted_at + 3 * MINUTE_MS + 30)
    # minute 5 cannot be paid: the reading ends where minute 4 ended
    b = await beat(client, accepted_at + 4 * MINUTE_MS + 20_000)
    assert (b["status"], b["end_reason"], b["billed_minutes"], b["balance_cents"]) == (
        "ended",
        "insufficient_funds",
        4,
        50,
    )
    db = database()
    row = await db.first(sql("SELECT ended_at_ms FROM readings WHERE id = ?", int(rid)))
    assert row["ended_at_ms"] == accepted_at + 4 * MINUTE_MS
    # a late heartbeat just reports the end; messages are closed
    b = await beat(advisor, accepted_at + 5 * MINUTE_MS)
    assert (b["status"], b["billed_minutes"]) == ("ended", 4)
    r = await client.post(f"/v1/readings/{rid}/messages", json={"body": "hello?"})
    assert r.status == 409

    # the chat reads back in order for both participants
    for who in (client, advisor):
        msgs = (await who.get(f"/v1/readings/{rid}/messages")).json()["items"]
        assert [(m["sender_role"], m["body"]) for m in msgs] == [
            ("client", "Will I find a new job?"),
            ("advisor", "The cards say: soon."),
        ]

    r = await client.post(f"/v1/readings/{rid}/review", json={"rating": 5, "comment": "Spot on."})
    assert r.status == 201, r.text
    assert (await client.post(f"/v1/readings/{rid}/review", json={"rating": 1})).status == 409
    profile = (await Client().get(f"/v1/advisors/{advisor_id}")).json()
    assert (profile["rating_average"], profile["rating_count"]) == (5.0, 1)
    reviews = (await Client().get(f"/v1/advisors/{advisor_id}/reviews")).json()["items"]
    assert [(v["rating"], v["comment"]) for v in reviews] == [(5, "Spot on.")]

    earnings = (await advisor.get("/v1/advisors/me/earnings")).json()
    assert earnings["balance_cents"] == 4 * 70  # PLATFORM_FEE_BPS = 3000
    assert [e["amount_cents"] for e in earnings["items"]] == [70, 70, 70, 70]
    assert {e["reading_id"] for e in earnings["items"]} == {rid}

    charges = (
        await db.all(
            sql("SELECT minute, charged_at_ms FROM reading_charges WHERE reading_id = ? ORDER BY minute", int(rid))
        )
    ).rows
    assert [c["minute"] for c in charges] == [1, 2, 3, 4]
    await assert_ledger_consistent()
