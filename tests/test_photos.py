"""Advisor profile photos against the real runtime: local R2 for the bytes,
local D1 for the reference, the Worker's own routes in between."""

import hashlib
import time

import local_runtime
import pytest

from clairvora import photos
from clairvora.db import sql
from market_support import new_advisor
from photo_support import d1_calls, fixture, media, png, r2_keys, upload
from support import Client, database, new_user, unique

HOUR_MS = 3600 * 1000


async def photo_row(advisor_id: str) -> dict:
    row = await database().first(
        sql(
            """SELECT photo_key, photo_content_type, photo_size_bytes, photo_sha256, version
           FROM advisors WHERE user_id = ?""",
            int(advisor_id),
        )
    )
    assert row is not None
    return row


def prefix_of(advisor_id: str) -> str:
    return f"{photos.KEY_PREFIX}{advisor_id}/"


@pytest.mark.parametrize("kind", ["png", "jpeg", "webp"])
async def test_upload_is_sniffed_stored_in_r2_and_served(kind):
    data = {"png": png(5, 4), "jpeg": fixture("python-16x16.jpg"), "webp": fixture("python-16x16.webp")}[kind]
    client, advisor = await new_advisor("ph")
    aid = advisor["id"]
    assert advisor["photo_url"] is None
    # The declared type says nothing useful; the bytes decide.
    r = await upload(client, data, advisor["version"], content_type="application/octet-stream")
    assert r.status == 200, r.text
    body = r.json()
    sha = hashlib.sha256(data).hexdigest()
    assert body["version"] == advisor["version"] + 1
    assert r.headers["etag"] == f'"{body["version"]}"'
    assert body["photo_url"] == f"/v1/advisors/{aid}/photo?v={sha[:16]}"
    # D1 holds the reference only.
    row = await photo_row(aid)
    assert row["photo_content_type"] == f"image/{kind}"
    assert row["photo_size_bytes"] == len(data)
    assert row["photo_sha256"] == sha
    assert row["photo_key"].startswith(prefix_of(aid)) and len(row["photo_key"]) > len(prefix_of(aid)) + 32
    assert row["photo_key"].split("/")[-1].split(".")[0] not in r.text  # the random part is never shown
    # R2 holds the bytes, with the sniffed type.
    stored = await media().get(row["photo_key"])
    assert bytes(await stored.arrayBuffer()) == data
    assert stored.httpMetadata["contentType"] == f"image/{kind}"
    assert await r2_keys(prefix_of(aid)) == [row["photo_key"]]
    # Anyone can fetch it (over real HTTP: tooling_tests/test_photos_http.py); the URL with ?v= is immutable.
    got = await Client().get(body["photo_url"])
    assert got.status == 200, got.text
    assert got.body == data
    assert got.headers["content-type"] == f"image/{kind}"
    assert got.headers["etag"] == f'"{sha}"'
    assert got.headers["cache-control"] == photos.CACHE_VERSIONED
    assert got.headers["x-content-type-options"] == "nosniff"
    plain = await Client().get(f"/v1/advisors/{aid}/photo")
    assert plain.status == 200 and plain.body == data
    assert plain.headers["cache-control"] == photos.CACHE_UNVERSIONED
    # Every advisor reply carries the URL.
    assert (await Client().get(f"/v1/advisors/{aid}")).json()["photo_url"] == body["photo_url"]
    assert (await client.get("/v1/advisors/me")).json()["photo_url"] == body["photo_url"]


async def test_upload_costs_two_d1_calls_and_serving_one():
    client, advisor = await new_advisor("phc")
    r = await upload(client, png(), advisor["version"])
    assert r.status == 200, r.text
    # The caller's row, then ONE batch (old key + conditional UPDATE + the reply's row).
    assert d1_calls(r)["calls"] == 2
    got = await Client().get(r.json()["photo_url"])
    assert got.status == 200
    assert d1_calls(got) == {"calls": 1, "rows_read": 1, "rows_written": 0}


async def test_spoofed_content_types_are_judged_by_the_bytes():
    client, advisor = await new_advisor("phs")
    aid, version = advisor["id"], advisor["version"]
    refused = [
        (fixture("python-16x16.gif"), "image/png"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "image/jpeg"),
        (b"<html><script>alert(document.cookie)</script></html>", "image/webp"),
        (b"%PDF-1.7\n" + bytes(100), "image/png"),
    ]
    for data, declared in refused:
        r = await upload(client, data, version, content_type=declared)
        assert r.status == 415, r.text
        assert r.json()["code"] == "unsupported_image"
    assert (await photo_row(aid))["version"] == version  # nothing changed
    assert await r2_keys(prefix_of(aid)) == []
    # A real PNG declared as JPEG is stored and served as what it is.
    data = png()
    r = await upload(client, data, version, content_type="image/jpeg")
    assert r.status == 200, r.text
    got = await Client().get(r.json()["photo_url"])
    assert got.headers["content-type"] == "image/png" and got.body == data


async def test_broken_or_oversized_images_are_422_and_change_nothing():
    client, advisor = await new_advisor("phb")
    aid, version = advisor["id"], advisor["version"]
    huge = png(photos.images.MAX_SIDE_PX + 1, 1)
    truncated_jpeg = fixture("python-16x16.jpg")[:4]
    for data in (huge, truncated_jpeg):
        r = await upload(client, data, version)
        assert r.status == 422, r.text
        assert r.json()["code"] == "invalid_image"
    assert (await photo_row(aid))["photo_key"] is None
    assert await r2_keys(prefix_of(aid)) == []


async def test_empty_and_too_large_bodies_are_refused():
    client, advisor = await new_advisor("phz")
    aid, version = advisor["id"], advisor["version"]
    r = await upload(client, b"", version)
    assert r.status == 400 and r.json()["code"] == "empty_body", r.text
    too_big = png(pad_to=photos.MAX_PHOTO_BYTES + 1)
    # In-process the request has no Content-Length: the streamed read stops at the
    # limit. Over HTTP (Content-Length refused before reading): tooling_tests/test_photos_http.py.
    r = await upload(client, too_big, version)
    assert r.status == 413, r.text
    assert r.json()["code"] == "body_too_large" and r.json()["max_bytes"] == photos.MAX_PHOTO_BYTES
    assert (await photo_row(aid))["version"] == version
    assert await r2_keys(prefix_of(aid)) == []
    # Exactly the limit is fine, and far beyond the app-wide 64 KB JSON limit.
    exact = png(pad_to=photos.MAX_PHOTO_BYTES)
    r = await upload(client, exact, version)
    assert r.status == 200, r.text
    assert (await photo_row(aid))["photo_size_bytes"] == photos.MAX_PHOTO_BYTES
    # Other routes keep the small limit.
    r = await client.patch("/v1/advisors/me", json={"bio": "x" * 70_000}, headers={"if-match": r.headers["etag"]})
    assert r.status == 413


async def test_only_advisors_have_photos():
    _sub, client = await new_user("phn")
    r = await upload(client, png(), 1)
    assert r.status == 404, r.text
    r = await client.delete("/v1/advisors/me/photo", headers={"if-match": '"1"'})
    assert r.status == 404
    uid = (await client.get("/v1/me")).json()["id"]
    assert await r2_keys(prefix_of(uid)) == []
    r = await Client().put("/v1/advisors/me/photo", body=png())
    assert r.status == 401


async def test_if_match_is_required_and_a_stale_one_leaves_no_object():
    client, advisor = await new_advisor("phm")
    aid, version = advisor["id"], advisor["version"]
    r = await upload(client, png(), None)
    assert r.status == 428 and r.json()["code"] == "precondition_required", r.text
    assert await r2_keys(prefix_of(aid)) == []
    first = await upload(client, png(), version)
    assert first.status == 200
    kept = (await photo_row(aid))["photo_key"]
    # The version moved on: the new object was written, then removed when D1 said no.
    r = await upload(client, png(), version)
    assert r.status == 412 and r.json()["code"] == "version_conflict", r.text
    row = await photo_row(aid)
    assert row["photo_key"] == kept and row["version"] == version + 1
    assert await r2_keys(prefix_of(aid)) == [kept]


async def test_replacing_a_photo_deletes_the_old_object_after_the_update():
    client, advisor = await new_advisor("phr")
    aid = advisor["id"]
    r = await upload(client, png(), advisor["version"])
    old = await photo_row(aid)
    new_data = fixture("python-16x16.webp")
    r = await upload(client, new_data, r.headers["etag"])
    assert r.status == 200, r.text
    new = await photo_row(aid)
    assert new["photo_key"] != old["photo_key"] and new["photo_content_type"] == "image/webp"
    # waitUntil work has finished once the request is done.
    assert await media().head(old["photo_key"]) is None
    assert await r2_keys(prefix_of(aid)) == [new["photo_key"]]
    # The old URL now answers the current photo, but not as immutable.
    old_url = f"/v1/advisors/{aid}/photo?v={old['photo_sha256'][:16]}"
    got = await Client().get(old_url)
    assert got.body == new_data and got.headers["cache-control"] == photos.CACHE_UNVERSIONED


async def test_conditional_get_and_head():
    client, advisor = await new_advisor("phg")
    data = png()
    r = await upload(client, data, advisor["version"])
    url = r.json()["photo_url"]
    tag = f'"{hashlib.sha256(data).hexdigest()}"'
    for inm in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        got = await Client().get(url, headers={"if-none-match": inm})
        assert got.status == 304, (inm, got.status)
        assert got.body == b"" and got.headers["etag"] == tag
        assert "cache-control" in got.headers
    got = await Client().get(url, headers={"if-none-match": '"0000"'})
    assert got.status == 200 and got.body == data
    # HEAD over real HTTP (workerd drops the body): tooling_tests/test_photos_http.py.
    assert (await Client().get(f"/v1/advisors/{advisor['id']}/photo?size=large")).status == 400


async def test_missing_photos_are_404():
    _client, advisor = await new_advisor("ph4")
    assert (await Client().get(f"/v1/advisors/{advisor['id']}/photo")).status == 404
    assert (await Client().get("/v1/advisors/1099511627776/photo")).status == 404
    assert (await Client().get("/v1/advisors/not-an-id/photo")).status == 404


async def test_delete_photo():
    client, advisor = await new_advisor("phd")
    aid = advisor["id"]
    r = await upload(client, png(), advisor["version"])
    key = (await photo_row(aid))["photo_key"]
    version = r.json()["version"]
    assert (await client.delete("/v1/advisors/me/photo")).status == 428
    stale = await client.delete("/v1/advisors/me/photo", headers={"if-match": f'"{version - 1}"'})
    assert stale.status == 412
    assert await media().head(key) is not None
    r = await client.delete("/v1/advisors/me/photo", headers={"if-match": f'"{version}"'})
    assert r.status == 200, r.text
    assert r.json()["photo_url"] is None and r.json()["version"] == version + 1
    row = await photo_row(aid)
    assert row["photo_key"] is None and row["photo_sha256"] is None and row["photo_size_bytes"] is None
    assert await media().head(key) is None
    assert (await Client().get(f"/v1/advisors/{aid}/photo")).status == 404
    again = await client.delete("/v1/advisors/me/photo", headers={"if-match": r.headers["etag"]})
    assert again.status == 404 and again.json()["code"] == "not_found"


async def test_no_image_bytes_ever_reach_d1():
    db = database()
    # No column anywhere is declared BLOB.
    columns = (
        await db.all(
            sql(
                """SELECT t.name AS t, c.name AS c, c.type AS type FROM pragma_table_list AS t
           JOIN pragma_table_info(t.name) AS c
           WHERE t.schema = 'main' AND t.type = 'table' AND t.name NOT LIKE 'sqlite%' AND t.name NOT LIKE '_cf%'"""
            )
        )
    ).rows
    assert columns and not [c for c in columns if "BLOB" in str(c["type"]).upper()]
    size_before = await _d1_size_bytes()
    client, advisor = await new_advisor("phx")
    data = png(pad_to=1_500_000)
    r = await upload(client, data, advisor["version"])
    assert r.status == 200, r.text
    # 1.5 MB went to R2; D1 grew by a few pages at most.
    assert await _d1_size_bytes() - size_before < 64 * 1024
    # No stored value is a BLOB, and no value is anywhere near image-sized.
    for col in columns:
        table, column = col["t"], col["c"]
        # Identifiers come from D1's own catalogue above, never from input.
        found = await database().first(
            sql(
                f"SELECT coalesce(sum(typeof(\"{column}\") = 'blob'), 0) AS blobs, "  # noqa: S608
                f'coalesce(max(length("{column}")), 0) AS longest FROM "{table}"'
            )
        )
        assert found["blobs"] == 0, f"{table}.{column} holds a BLOB"
        assert found["longest"] < 200_000, f"{table}.{column} holds a {found['longest']}-character value"


async def _d1_size_bytes() -> int:
    result = await local_runtime.makeEnv().DB.prepare("SELECT 1").run()
    return int(result.meta.size_after)


async def test_d1_failures_around_the_update_never_lose_or_leak_a_photo():
    client, advisor = await new_advisor("phf")
    aid = advisor["id"]
    r = await upload(client, png(), advisor["version"])
    version = r.json()["version"]
    first_key = (await photo_row(aid))["photo_key"]
    # D1 call 2 (the batch) commits, then the connection drops: a 503, but the
    # row names the new object, which must stay.
    r = await upload(client, png(), version, headers={"x-test-d1-fault": "2;after"})
    assert r.status == 503, r.text
    row = await photo_row(aid)
    assert row["version"] == version + 1 and row["photo_key"] != first_key
    committed_key = row["photo_key"]
    assert await media().head(committed_key) is not None
    # D1 call 2 fails before running: the row is unchanged, the new object is
    # an orphan (ambiguous from the Worker's side, so it is left to the sweep).
    r = await upload(client, png(), version + 1, headers={"x-test-d1-fault": "2"})
    assert r.status == 503, r.text
    assert (await photo_row(aid))["photo_key"] == committed_key
    keys = await r2_keys(prefix_of(aid))
    # Two orphans: that object, and first_key (the committed replacement
    # failed before it could schedule the old object's deletion).
    assert len(keys) == 3 and {committed_key, first_key} < set(keys)
    # Within the grace period the sweep keeps them; later it removes exactly them.
    job = unique("sweep")
    now = int(time.time() * 1000)
    assert (await photos.sweep_orphans(database(), media(), now, prefix=prefix_of(aid), job=job))[
        "photo_orphans_deleted"
    ] == 0
    done = await photos.sweep_orphans(database(), media(), now + 2 * HOUR_MS, prefix=prefix_of(aid), job=job)
    assert done == {"photo_objects_listed": 3, "photo_orphans_deleted": 2}
    assert await r2_keys(prefix_of(aid)) == [committed_key]
    got = await Client().get(f"/v1/advisors/{aid}/photo")
    assert got.status == 200


async def test_sweep_pages_through_the_bucket_with_a_saved_cursor():
    client, advisor = await new_advisor("phw")
    aid = advisor["id"]
    r = await upload(client, png(), advisor["version"])
    assert r.status == 200
    referenced = (await photo_row(aid))["photo_key"]
    for i in range(5):
        await media().put(f"{prefix_of(aid)}orphan-{i}", b"left behind")
    job = unique("sweep")
    later = int(time.time() * 1000) + 2 * HOUR_MS
    runs = []
    for _ in range(3):  # 6 objects, 2 per run
        runs.append(await photos.sweep_orphans(database(), media(), later, prefix=prefix_of(aid), limit=2, job=job))
        saved = await database().first(sql("SELECT cursor FROM maintenance_cursors WHERE job = ?", job))
        assert (saved["cursor"] is None) == (len(runs) == 3)  # resumes until the end, then starts over
    assert [run["photo_objects_listed"] for run in runs] == [2, 2, 2]
    assert sum(run["photo_orphans_deleted"] for run in runs) == 5
    assert await r2_keys(prefix_of(aid)) == [referenced]


async def test_the_cron_runs_the_sweep():
    before = int(time.time() * 1000)
    await local_runtime.dispatchScheduled("* * * * *", before)
    saved = await database().first(
        sql("SELECT cursor, updated_at_ms FROM maintenance_cursors WHERE job = ?", photos.SWEEP_JOB)
    )
    assert saved is not None and saved["updated_at_ms"] >= before


async def test_openapi_describes_the_photo_routes():
    doc = (await Client().get("/openapi.json")).json()
    put = doc["paths"]["/v1/advisors/me/photo"]["put"]
    content = put["requestBody"]["content"]
    assert set(content) == {"image/jpeg", "image/png", "image/webp"}
    assert content["image/png"]["schema"]["maxLength"] == photos.MAX_PHOTO_BYTES
    assert {"200", "401", "404", "412", "413", "415", "422", "428"} <= set(put["responses"])
    assert any(p["name"] == "If-Match" and p["required"] for p in put["parameters"])
    assert {"200", "412", "428"} <= set(doc["paths"]["/v1/advisors/me/photo"]["delete"]["responses"])
    get = doc["paths"]["/v1/advisors/{advisor_id}/photo"]["get"]
    assert get["security"] == []
    assert get["responses"]["200"]["content"]["image/*"]["schema"]["format"] == "binary"
    assert "304" in get["responses"]
    assert "photo_url" in doc["components"]["schemas"]["Advisor"]["required"]
