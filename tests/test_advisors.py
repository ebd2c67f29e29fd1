"""Advisors: becoming one, editing with If-Match, the public list and profile."""

from clairvora import advisors
from clairvora.db import sql
from market_support import new_advisor, user_id_of
from support import Client, database, new_user

PROFILE = {
    "headline": "Tarot with care",
    "bio": "I read cards.",
    "categories": ["tarot", "love"],
    "rate_cents_per_minute": 150,
}


async def test_category_constant_equals_the_table():
    rows = (await database().all(sql("SELECT slug FROM categories ORDER BY slug"))).rows
    assert tuple(r["slug"] for r in rows) == advisors.CATEGORIES


async def test_become_advisor_creates_profile_categories_and_earnings_account_once():
    _sub, client = await new_user("adv")
    r = await client.post("/v1/advisors", json=PROFILE)
    assert r.status == 201, r.text
    body = r.json()
    uid = await user_id_of(client)
    assert body["id"] == str(uid)
    assert body["categories"] == ["love", "tarot"]
    assert body["status"] == "offline"
    assert body["rating_average"] is None and body["rating_count"] == 0
    assert body["rate_cents_per_minute"] == 150
    assert r.headers["etag"] == '"1"'
    db = database()
    account = await db.first(
        sql("SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'advisor_earnings'", uid)
    )
    assert account == {"balance_cents": 0}
    me = (await client.get("/v1/me")).json()
    assert "advisor" in me["roles"]

    again = await client.post("/v1/advisors", json={**PROFILE, "categories": ["dreams"]})
    assert again.status == 409 and again.json()["code"] == "already_advisor"
    cats = (
        await db.all(sql("SELECT category FROM advisor_categories WHERE advisor_id = ? ORDER BY category", uid))
    ).rows
    assert [c["category"] for c in cats] == ["love", "tarot"]


async def test_bad_profiles_are_refused_and_create_nothing():
    _sub, client = await new_user("adv")
    uid = await user_id_of(client)
    cases = [
        ({**PROFILE, "rate_cents_per_minute": 49}, "rate_cents_per_minute"),
        ({**PROFILE, "rate_cents_per_minute": 2001}, "rate_cents_per_minute"),
        ({**PROFILE, "categories": ["palmistry"]}, "categories[0]"),
        ({**PROFILE, "categories": []}, "categories"),
        ({**PROFILE, "categories": ["tarot", "tarot"]}, "categories"),
        ({**PROFILE, "headline": ""}, "headline"),
        ({**PROFILE, "bio": "x" * 4001}, "bio"),
        ({k: v for k, v in PROFILE.items() if k != "bio"}, "bio"),
        ({**PROFILE, "rate_cents_per_minute": "150"}, "rate_cents_per_minute"),
    ]
    for body, field in cases:
        r = await client.post("/v1/advisors", json=body)
        assert r.status == 400, (body, r.text)
        assert r.json()["field"] == field
    db = database()
    assert await db.first(sql("SELECT 1 FROM advisors WHERE user_id = ?", uid)) is None
    assert await db.first(sql("SELECT 1 FROM advisor_categories WHERE advisor_id = ?", uid)) is None
    assert (
        await db.first(sql("SELECT 1 FROM accounts WHERE owner_user_id = ? AND kind = 'advisor_earnings'", uid)) is None
    )
    assert (await Client().post("/v1/advisors", json=PROFILE)).status == 401


async def test_patch_needs_current_version_and_changes_everything_together():
    client, adv = await new_advisor(status=None)
    uid = int(adv["id"])
    r = await client.patch("/v1/advisors/me", json={"status": "online"})
    assert r.status == 428
    r = await client.patch(
        "/v1/advisors/me", json={"status": "online", "categories": ["career"]}, headers={"if-match": '"7"'}
    )
    assert r.status == 412 and r.json()["code"] == "version_conflict"
    db = database()
    row = await db.first(sql("SELECT status, version FROM advisors WHERE user_id = ?", uid))
    assert row == {"status": "offline", "version": 1}
    cats = (await db.all(sql("SELECT category FROM advisor_categories WHERE advisor_id = ?", uid))).rows
    assert [c["category"] for c in cats] == ["tarot"], "a stale PATCH must not touch categories"

    r = await client.patch(
        "/v1/advisors/me",
        json={"status": "busy", "categories": ["career", "dreams"], "rate_cents_per_minute": 300, "headline": "New"},
        headers={"if-match": '"1"'},
    )
    assert r.status == 200, r.text
    body = r.json()
    assert (body["status"], body["categories"], body["rate_cents_per_minute"], body["headline"], body["version"]) == (
        "busy",
        ["career", "dreams"],
        300,
        "New",
        2,
    )
    assert body["bio"] == adv["bio"]
    assert r.headers["etag"] == '"2"'
    # the same (now stale) version again
    r = await client.patch("/v1/advisors/me", json={"status": "online"}, headers={"if-match": '"1"'})
    assert r.status == 412
    assert (await client.patch("/v1/advisors/me", json={"status": "away"}, headers={"if-match": '"2"'})).status == 400
    assert (
        await client.patch("/v1/advisors/me", json={"rate_cents_per_minute": 1}, headers={"if-match": '"2"'})
    ).status == 400
    assert (await client.patch("/v1/advisors/me", json={}, headers={"if-match": '"2"'})).status == 400
    own = await client.get("/v1/advisors/me")
    assert own.status == 200 and own.json()["version"] == 2


async def test_patch_by_a_non_advisor_is_404():
    _sub, client = await new_user("plain")
    r = await client.patch("/v1/advisors/me", json={"status": "online"}, headers={"if-match": '"1"'})
    assert r.status == 404
    assert (await client.get("/v1/advisors/me")).status == 404


async def test_public_profile():
    _client, adv = await new_advisor(categories=["numerology", "astrology"], rate=120)
    r = await Client().get(f"/v1/advisors/{adv['id']}")
    assert r.status == 200
    body = r.json()
    assert body["id"] == adv["id"] and body["categories"] == ["astrology", "numerology"]
    assert body["status"] == "online" and body["rate_cents_per_minute"] == 120
    assert {"rating_average", "rating_count", "headline", "bio"} <= set(body)
    _sub, plain = await new_user("plain")
    plain_id = await user_id_of(plain)
    assert (await Client().get(f"/v1/advisors/{plain_id}")).status == 404
    assert (await Client().get("/v1/advisors/12")).status == 404


async def _walk(path: str) -> list[dict]:
    items, cursor, pages = [], None, 0
    while True:
        r = await Client().get(path + (f"&cursor={cursor}" if cursor else ""))
        assert r.status == 200, r.text
        body = r.json()
        items += body["items"]
        pages += 1
        assert pages < 200
        cursor = body["next_cursor"]
        if cursor is None:
            return items


async def test_list_filters_sorts_and_pages_without_gaps_or_repeats():
    mine = []
    for rate, cats, status in [
        (501, ["dreams"], "online"),
        (502, ["mediumship"], "online"),
        (502, ["dreams", "mediumship"], "online"),
        (503, ["dreams"], "offline"),
        (504, ["career"], "online"),
        (505, ["dreams"], "busy"),
    ]:
        _c, adv = await new_advisor(rate=rate, categories=cats, status=status)
        mine.append(adv)
    # give two of them ratings so the rating order is not only by id
    db = database()
    for adv, (count, total) in zip(mine[:2], [(2, 9), (1, 3)], strict=True):
        await db.run(
            sql(
                "UPDATE advisors SET rating_count = ?, rating_sum = ?, rating_milli = ? * 1000 / ? WHERE user_id = ?",
                count,
                total,
                total,
                count,
                int(adv["id"]),
            )
        )

    by_price = await _walk(
        "/v1/advisors?category=dreams,mediumship&status=online&min_rate=501&max_rate=505&sort=price&limit=1"
    )
    ids = [a["id"] for a in by_price]
    assert len(ids) == len(set(ids)), "no advisor twice"
    for a in by_price:
        assert a["status"] == "online" and 501 <= a["rate_cents_per_minute"] <= 505
        assert {"dreams", "mediumship"} & set(a["categories"])
    assert [a["rate_cents_per_minute"] for a in by_price] == sorted(a["rate_cents_per_minute"] for a in by_price)
    assert {a["id"] for a in mine[:3]} <= set(ids)
    assert not {a["id"] for a in mine[3:]} & set(ids)

    by_rating = await _walk("/v1/advisors?min_rate=501&max_rate=505&limit=2")
    keys = [(-(a["rating_average"] or 0), int(a["id"])) for a in by_rating]
    assert {a["id"] for a in mine} <= {a["id"] for a in by_rating}
    ratings = [a["rating_average"] or 0 for a in by_rating]
    assert ratings == sorted(ratings, reverse=True)
    assert len(keys) == len(set(keys))
    assert by_rating[0]["rating_average"] == 4.5

    busy = await _walk("/v1/advisors?status=busy&min_rate=505&max_rate=505")
    assert mine[5]["id"] in {a["id"] for a in busy}


async def test_list_rejects_bad_queries():
    for q in [
        "limit=101",
        "limit=0",
        "category=palmistry",
        "status=away",
        "sort=name",
        "cursor=%21%21",
        "min_rate=10&max_rate=5",
        "bogus=1",
        "cursor=" + "eyJ4IjoxfQ",
    ]:
        r = await Client().get(f"/v1/advisors?{q}")
        assert r.status == 400, (q, r.text)
    page = (await Client().get("/v1/advisors?sort=price&limit=1")).json()
    if page["next_cursor"]:
        r = await Client().get(f"/v1/advisors?sort=rating&cursor={page['next_cursor']}")
        assert r.status == 400 and r.json()["code"] == "invalid_cursor"


async def test_openapi_describes_advisor_routes():
    doc = (await Client().get("/openapi.json")).json()
    assert set(doc["paths"]["/v1/advisors"]) == {"get", "post"}
    assert "patch" in doc["paths"]["/v1/advisors/me"]
    assert "Advisor" in doc["components"]["schemas"]
