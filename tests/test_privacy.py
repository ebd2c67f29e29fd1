"""Export and erasure of one's own data (issue 13 item 11; docs/PRIVACY.md):
GET /v1/me/export and DELETE /v1/me."""

import asyncio

import pytest

from clairvora.db import TriggerAbort, sql
from clairvora.ids import new_id
from market_support import active_reading, at, market_pair, now_ms, request_reading
from photo_support import png, r2_keys, upload
from support import Client, database, token_for, unique
from world import actor, assert_books_clean, make_admin, row_counts


async def _version(client: Client) -> str:
    r = await client.get("/v1/me")
    assert r.status == 200, r.text
    return r.headers["etag"]


async def _erase(client: Client, **headers: str):
    return await client.delete("/v1/me", headers={"if-match": await _version(client), **headers})


async def _ended_reading_with_chat(client, advisor, advisor_id, t):
    """An ended, paid reading with one message from each side; (reading id, client text, advisor text)."""
    reading = await active_reading(client, advisor, advisor_id, t)
    rid = reading["id"]
    mine, theirs = f"client words {unique('c')}", f"advisor words {unique('a')}"
    r = await client.post(f"/v1/readings/{rid}/messages", json={"body": mine}, headers=at(t + 1))
    assert r.status == 201, r.text
    r = await advisor.post(f"/v1/readings/{rid}/messages", json={"body": theirs}, headers=at(t + 2))
    assert r.status == 201, r.text
    r = await client.post(f"/v1/readings/{rid}/end", headers=at(t + 3))
    assert r.status == 200, r.text
    return rid, mine, theirs


async def _world():
    client, cid, advisor, aid = await market_pair(rate=100, funds=5_000)
    t = now_ms()
    rid, mine, theirs = await _ended_reading_with_chat(client, advisor, aid, t)
    r = await client.post(f"/v1/readings/{rid}/review", json={"rating": 4, "comment": "Very kind words"})
    assert r.status == 201, r.text
    return client, cid, advisor, aid, rid, mine, theirs, t


# --- export --------------------------------------------------------------------


async def test_export_holds_everything_stored_about_the_caller_and_only_their_own_words():
    client, cid, advisor, aid, rid, mine, theirs, _t = await _world()
    r = await client.post(
        "/v1/wallet/deposits",
        json={
            "amount_cents": 1500,
            "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": f"tok_approved.{unique()}"},
        },
        headers={"idempotency-key": unique("exp")},
    )
    assert r.status == 201, r.text

    r = await client.get("/v1/me/export")
    assert r.status == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    data = r.json()
    assert data["format"] == "clairvora.export.v1" and data["truncated"] is False
    assert data["profile"]["id"] == str(cid) and data["profile"]["clerk_user_id"].startswith("user_")
    # The profile as GET /v1/me shows it, the limits the client set included.
    me = (await client.get("/v1/me")).json()
    assert data["profile"]["spending_limits"] == me["spending_limits"]
    assert data["advisor"] is None
    (wallet,) = data["accounts"]
    assert wallet["kind"] == "client_wallet" and wallet["balance_cents"] == 5_000 - 100 + 1500
    kinds = [e["kind"] for e in wallet["entries"]["items"]]
    assert kinds.count("reading_charge") == 1 and "deposit" in kinds
    assert wallet["entry_count"] == len(kinds)
    payment, funding = data["payments"]["items"]  # newest first: the card deposit, then market_pair's funding
    assert payment["status"] == "approved" and payment["amount_cents"] == 1500 and payment["gateway_transaction_id"]
    assert funding["amount_cents"] == 5_000 and "opaque_data" not in r.text and "tok_approved" not in r.text
    assert [x["id"] for x in data["readings"]["as_client"]["items"]] == [rid]
    assert data["readings"]["as_advisor"]["items"] == []
    assert [m["body"] for m in data["messages_sent"]["items"]] == [mine]
    assert theirs not in r.text, "the export holds only the caller's own messages"
    (review,) = data["reviews_written"]["items"]
    assert review["comment"] == "Very kind words" and review["rating"] == 4 and review["advisor_id"] == str(aid)

    r = await advisor.get("/v1/me/export")
    assert r.status == 200, r.text
    data = r.json()
    assert data["advisor"]["rate_cents_per_minute"] == 100 and data["advisor"]["categories"] == ["tarot"]
    assert [x["id"] for x in data["readings"]["as_advisor"]["items"]] == [rid]
    assert [m["body"] for m in data["messages_sent"]["items"]] == [theirs]
    assert mine not in r.text
    assert [x["comment"] for x in data["reviews_received"]["items"]] == ["Very kind words"]
    kinds = {a["kind"]: a for a in data["accounts"]}
    assert kinds["advisor_earnings"]["entries"]["items"][0]["kind"] == "reading_charge"


async def test_export_is_one_d1_call_and_caps_each_section_saying_so(monkeypatch):
    from clairvora import data_export

    client, _cid, advisor, aid = await market_pair(rate=100, funds=5_000)
    t = now_ms()
    reading = await active_reading(client, advisor, aid, t)
    for i in range(3):
        r = await client.post(f"/v1/readings/{reading['id']}/messages", json={"body": f"m{i}"}, headers=at(t + 1 + i))
        assert r.status == 201, r.text
    monkeypatch.setitem(data_export.EXPORT_LIMITS, "messages_sent", 2)
    r = await client.get("/v1/me/export", headers=at(t + 10))
    assert r.status == 200, r.text
    data = r.json()
    assert data["limits"]["messages_sent"] == 2
    assert [m["body"] for m in data["messages_sent"]["items"]] == ["m2", "m1"], "newest first, capped"
    assert data["messages_sent"]["truncated"] is True and data["truncated"] is True
    # The caller lookup, then the whole export in one batch.
    assert "calls=2 " in r.headers["server-timing"], r.headers["server-timing"]


# --- erasure -------------------------------------------------------------------


async def test_erasure_needs_the_current_version_in_if_match():
    a = await actor("erv")
    before = await row_counts()
    r = await a.client.delete("/v1/me")
    assert r.status == 428 and r.json()["code"] == "precondition_required", r.text
    r = await a.client.delete("/v1/me", headers={"if-match": '"7"'})
    assert r.status == 412 and r.json()["code"] == "version_conflict", r.text
    assert await row_counts() == before
    r = await _erase(a.client)
    assert r.status == 200, r.text


async def test_erasure_is_refused_while_a_reading_is_open_on_either_side():
    client, _cid, advisor, aid = await market_pair(rate=100, funds=5_000)
    t = now_ms()
    r = await request_reading(client, aid, t)
    assert r.status == 201, r.text
    rid = r.json()["id"]
    for who in (client, advisor):  # requested
        before = await row_counts()
        r = await _erase(who, **at(t + 1))
        assert r.status == 409 and r.json()["code"] == "erasure_reading_open", r.text
        assert await row_counts() == before
    r = await advisor.post(f"/v1/readings/{rid}/accept", headers=at(t + 2))
    assert r.status == 200, r.text
    for who in (client, advisor):  # active
        r = await _erase(who, **at(t + 3))
        assert r.status == 409 and r.json()["code"] == "erasure_reading_open", r.text
    r = await client.post(f"/v1/readings/{rid}/end", headers=at(t + 4))
    assert r.status == 200, r.text
    r = await _erase(client, **at(t + 5))
    assert r.status == 200, r.text


@pytest.mark.parametrize("status", ["pending", "unknown"])
async def test_erasure_is_refused_while_a_deposit_waits_for_the_gateway(status: str):
    a = await actor("erp")
    payment_id = new_id()
    t = now_ms()
    await database().run(
        sql(
            """INSERT INTO payments (id, user_id, amount_cents, status, created_at_ms, updated_at_ms)
               VALUES (?, ?, 1000, ?, ?, ?)""",
            payment_id,
            a.id,
            status,
            t,
            t,
        )
    )
    before = await row_counts()
    r = await _erase(a.client)
    assert r.status == 409 and r.json()["code"] == "erasure_payment_pending", r.text
    assert await row_counts() == before
    await database().run(sql("UPDATE payments SET status = 'declined' WHERE id = ?", payment_id))
    r = await _erase(a.client)
    assert r.status == 200, r.text


async def test_erasure_removes_personal_data_keeps_the_books_and_a_new_sign_in_is_a_new_account():
    client, cid, advisor, aid, rid, mine, theirs, t = await _world()
    admin = await make_admin(await actor("era"))
    r = await advisor.get("/v1/advisors/me")
    r = await upload(advisor, png(), r.json()["version"], content_type="image/png")
    assert r.status == 200, r.text
    assert await r2_keys(f"advisor-photos/{aid}/")
    db = database()
    r = await client.post(
        "/v1/wallet/deposits",
        json={
            "amount_cents": 500,
            "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": f"tok_approved.{unique()}"},
        },
        headers={"idempotency-key": unique("era"), "cf-connecting-ip": "203.0.113.77"},
    )
    assert r.status == 201, r.text
    ips = await db.all(sql("SELECT client_ip FROM deposit_attempts WHERE user_id = ?", cid))
    assert [row["client_ip"] for row in ips.rows] == ["203.0.113.77"]
    entries_before = await db.first(sql("SELECT count(*) AS n, sum(amount_cents) AS s FROM ledger_entries"))

    r = await _erase(client, **at(t + 10))
    assert r.status == 200, r.text
    receipt = r.json()
    assert receipt["id"] == str(cid) and receipt["erased"] is True
    assert receipt["removed"]["messages"] == 1 and receipt["removed"]["review_comments"] == 1
    assert receipt["wallet_balance_cents"] == 4_900 + 500
    r = await _erase(advisor, **at(t + 11))
    assert r.status == 200, r.text
    assert r.json()["removed"] == {
        "messages": 1,
        "review_comments": 0,
        "satisfaction_claim_reasons": 0,
        "chargeback_notes": 0,
        "advisor_profile": True,
        "photo": True,
        "payout_method": False,
    }

    # The card deposit's attempt stays counted, without the address it came from.
    ips = await db.all(sql("SELECT client_ip FROM deposit_attempts WHERE user_id = ?", cid))
    assert ips.rows and all(r["client_ip"] is None for r in ips.rows)
    for uid in (cid, aid):
        row = await db.first(sql("SELECT * FROM users WHERE id = ?", uid))
        assert row["clerk_user_id"] == f"erased:{uid}" and row["display_name"] is None
        assert row["erased_at_ms"] is not None and row["is_admin"] == 0
        left = await db.first(sql("SELECT count(*) AS n FROM messages WHERE sender_id = ?", uid))
        assert left["n"] == 0
    review = await db.first(sql("SELECT rating, comment FROM reviews WHERE reading_id = ?", int(rid)))
    assert review == {"rating": 4, "comment": None}
    prof = await db.first(sql("SELECT * FROM advisors WHERE user_id = ?", aid))
    assert prof["headline"] == "Deleted account" and prof["bio"] == "" and prof["status"] == "offline"
    assert prof["photo_key"] is None and prof["rating_count"] == 1
    cats = await db.first(sql("SELECT count(*) AS n FROM advisor_categories WHERE advisor_id = ?", aid))
    assert cats["n"] == 0
    assert await r2_keys(f"advisor-photos/{aid}/") == []
    # The ledger is untouched and every invariant holds.
    assert await db.first(sql("SELECT count(*) AS n, sum(amount_cents) AS s FROM ledger_entries")) == entries_before
    reading = await db.first(sql("SELECT status, billed_minutes FROM readings WHERE id = ?", int(rid)))
    assert reading == {"status": "ended", "billed_minutes": 1}
    await assert_books_clean(admin)
    # Nothing of the person is shown anywhere any more.
    r = await Client().get(f"/v1/advisors/{aid}")
    assert mine not in r.text and theirs not in r.text and "Very kind words" not in r.text
    r = await Client().get(f"/v1/advisors/{aid}/reviews")
    assert "Very kind words" not in r.text
    # ... and the erased advisor is listed no more (every page of the price-sorted list).
    listed, cursor = [], None
    while True:
        r = await Client().get("/v1/advisors?sort=price&limit=100" + (f"&cursor={cursor}" if cursor else ""))
        assert r.status == 200, r.text
        listed += [a["id"] for a in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert str(aid) not in listed
    # The same Clerk user signing in again is a new, empty account.
    r = await client.get("/v1/me")
    assert r.status == 200 and r.json()["id"] != str(cid), r.text
    r = await client.get("/v1/me/export")
    data = r.json()
    assert data["readings"]["as_client"]["items"] == [] and data["accounts"][0]["balance_cents"] == 0


async def test_an_erased_row_stays_erased_and_gets_nothing_new():
    """Migration 0080's triggers: whatever request was under way when the erasure committed."""
    a = await actor("ert")
    _c, _cid, _advisor, aid = await market_pair(rate=100, funds=0)
    r = await _erase(a.client)
    assert r.status == 200, r.text
    db = database()
    t = now_ms()
    refused = [
        sql("UPDATE users SET display_name = 'Back' WHERE id = ?", a.id),
        sql(
            """INSERT INTO readings (id, client_id, advisor_id, status, rate_cents_per_minute, advisor_cents_per_minute,
                 platform_cents_per_minute, billing_period_seconds, requested_at_ms)
               VALUES (?, ?, ?, 'requested', 100, 70, 30, 60, ?)""",
            new_id(),
            a.id,
            aid,
            t,
        ),
        sql(
            "INSERT INTO payments (id, user_id, amount_cents, status, created_at_ms, updated_at_ms) "
            "VALUES (?, ?, 100, 'pending', ?, ?)",
            new_id(),
            a.id,
            t,
            t,
        ),
        sql(
            "INSERT INTO advisors (user_id, headline, bio, rate_cents_per_minute, created_at_ms, updated_at_ms) "
            "VALUES (?, 'Back', '', 100, ?, ?)",
            a.id,
            t,
            t,
        ),
    ]
    for statement in refused:
        with pytest.raises(TriggerAbort) as info:
            await db.run(statement)
        assert info.value.code == "user_erased"


async def test_a_reading_requested_while_the_client_erases_either_blocks_the_erasure_or_is_refused():
    """Both requests at once, no timing assumed: exactly one of them wins, and the books stay clean."""
    client, cid, _advisor, aid = await market_pair(rate=100, funds=5_000)
    version = await _version(client)
    t = now_ms()
    erased, requested = await asyncio.gather(
        client.delete("/v1/me", headers=at(t, **{"if-match": version})),
        request_reading(client, aid, t),
    )
    db = database()
    open_readings = await db.first(
        sql("SELECT count(*) AS n FROM readings WHERE client_id = ? AND status IN ('requested', 'active')", cid)
    )
    if erased.status == 200:
        # Refused by the trigger (409 account_erased), or, looked up after the erasure, a new empty account (402).
        assert requested.status in (402, 409), requested.text
        assert open_readings["n"] == 0
    else:
        assert erased.json()["code"] == "erasure_reading_open", erased.text
        assert requested.status == 201 and open_readings["n"] == 1
    await assert_books_clean()


async def test_a_new_client_that_erases_at_once_leaves_a_clean_tombstone():
    sub = f"user_{unique('era0')}"
    client = Client(await token_for(sub))
    r = await client.get("/v1/me")
    uid = int(r.json()["id"])
    r = await client.delete("/v1/me", headers={"if-match": r.headers["etag"]})
    assert r.status == 200 and r.json()["wallet_balance_cents"] == 0, r.text
    row = await database().first(sql("SELECT clerk_user_id FROM users WHERE id = ?", uid))
    assert row["clerk_user_id"] == f"erased:{uid}"
    gone = await database().first(sql("SELECT count(*) AS n FROM users WHERE clerk_user_id = ?", sub))
    assert gone["n"] == 0
