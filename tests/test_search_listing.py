"""The search listing (migration 0094) is kept in step with advisors, their
categories and users by triggers, whatever writes them: every API write path
here, the seed and the bench's plain SQL elsewhere (tooling_tests/test_seed.py)."""

import time
from typing import Any

from clairvora.db import sql
from support import Client, database

_DEFINITION = """
SELECT c.category, a.user_id AS advisor_id, a.status, a.rate_cents_per_minute, 5000 - a.rating_milli AS rating_key,
       a.rating_count, a.rating_sum, a.headline, a.bio, a.version, a.created_at_ms, a.updated_at_ms, a.photo_sha256,
       u.display_name,
       (SELECT json_group_array(category) FROM
          (SELECT category FROM advisor_categories WHERE advisor_id = a.user_id ORDER BY category)) AS categories_json
FROM advisors a JOIN users u ON u.id = a.user_id
JOIN (SELECT '*' AS category, ? AS advisor_id UNION ALL SELECT category, advisor_id FROM advisor_categories WHERE advisor_id = ?) c
  ON c.advisor_id = a.user_id
WHERE a.user_id = ? AND u.erased_at_ms IS NULL
ORDER BY c.category"""
_LISTED = """
SELECT category, advisor_id, status, rate_cents_per_minute, rating_key, rating_count, rating_sum, headline, bio,
       version, created_at_ms, updated_at_ms, photo_sha256, display_name, categories_json
FROM advisor_listing WHERE advisor_id = ? ORDER BY category"""


async def assert_listing_in_step(advisor_id: int) -> None:
    db = database()
    expected = (await db.all(sql(_DEFINITION, advisor_id, advisor_id, advisor_id))).rows
    listed = (await db.all(sql(_LISTED, advisor_id))).rows
    assert listed == expected


async def test_every_write_path_keeps_the_listing_in_step():
    from market_support import active_reading, market_pair
    from photo_support import png, upload

    client, _client_id, advisor, advisor_id = await market_pair(rate=150, funds=5000)
    await assert_listing_in_step(advisor_id)
    me = (await advisor.get("/v1/advisors/me")).json()

    async def patch(body: dict[str, Any]) -> dict[str, Any]:
        nonlocal me
        r = await advisor.patch("/v1/advisors/me", json=body, headers={"if-match": f'"{me["version"]}"'})
        assert r.status == 200, r.text
        me = r.json()
        await assert_listing_in_step(advisor_id)
        return me

    await patch({"headline": "New headline", "bio": "New bio"})
    await patch({"categories": ["love", "tarot", "dreams"]})
    await patch({"categories": ["dreams"]})
    await patch({"rate_cents_per_minute": 175, "status": "busy"})
    await patch({"status": "online", "rate_cents_per_minute": 150})
    # A stale If-Match changes nothing, the listing included.
    r = await advisor.patch("/v1/advisors/me", json={"categories": ["career"]}, headers={"if-match": '"1"'})
    assert r.status == 412
    await assert_listing_in_step(advisor_id)
    listed = await database().all(sql("SELECT category FROM advisor_listing WHERE advisor_id = ?", advisor_id))
    assert sorted(r["category"] for r in listed.rows) == ["*", "dreams"]

    # Reviews move the rating aggregates: 5, 5, 4 average 4.666..., kept as the
    # integer 4666 (D1 binds the rating as REAL; a REAL division stored 4666.67).
    t0 = int(time.time() * 1000)
    for n, stars in enumerate((5, 5, 4)):
        start = t0 + n * 120_000
        reading = await active_reading(client, advisor, advisor_id, start)
        r = await client.post(f"/v1/readings/{reading['id']}/end", headers={"x-test-now-ms": str(start + 30_000)})
        assert r.status == 200, r.text
        r = await client.post(f"/v1/readings/{reading['id']}/review", json={"rating": stars})
        assert r.status == 201, r.text
        await assert_listing_in_step(advisor_id)
    row = await database().first(
        sql("SELECT rating_milli, typeof(rating_milli) AS t FROM advisors WHERE user_id = ?", advisor_id)
    )
    assert (row["rating_milli"], row["t"]) == (4666, "integer")

    # A photo (its hash makes the list item's photo_url), then the display name.
    me = (await advisor.get("/v1/advisors/me")).json()
    r = await upload(advisor, png(3, 3), me["version"])
    assert r.status == 200, r.text
    await assert_listing_in_step(advisor_id)
    user = await advisor.get("/v1/me")
    r = await advisor.patch("/v1/me", json={"display_name": "Madame X"}, headers={"if-match": user.headers["etag"]})
    assert r.status == 200, r.text
    await assert_listing_in_step(advisor_id)
    page = (await Client().get("/v1/advisors?category=dreams&min_rate=150&max_rate=150&status=online")).json()
    assert any(item["id"] == str(advisor_id) and item["display_name"] == "Madame X" for item in page["items"])

    # Erasure: the placeholder profile stays, the listing rows go.
    user = await advisor.get("/v1/me")
    r = await advisor.delete("/v1/me", headers={"if-match": user.headers["etag"]})
    assert r.status == 200, r.text
    await assert_listing_in_step(advisor_id)
    gone = await database().first(sql("SELECT count(*) AS n FROM advisor_listing WHERE advisor_id = ?", advisor_id))
    assert gone["n"] == 0


async def test_category_rows_cannot_be_edited_in_place():
    from clairvora.db import TriggerAbort
    from market_support import new_advisor

    _c, adv = await new_advisor(categories=["tarot"])
    try:
        await database().run(
            sql("UPDATE advisor_categories SET category = 'love' WHERE advisor_id = ?", int(adv["id"]))
        )
    except TriggerAbort as exc:
        assert exc.code == "advisor_categories_immutable"
    else:
        raise AssertionError("an in-place category edit would leave the listing behind")
    await assert_listing_in_step(int(adv["id"]))
