"""Chat out of D1 once a reading ends (issue 15 item 2): one R2 object per
reading, ciphertexts as stored, the same replies (page by page, for both
participants), the same scope, ETag and conditional GET, nothing added after
the end, and the cron's wiring."""

import base64
import hashlib
import secrets

import local_runtime
import pytest

from archive_support import (
    archive_row,
    archive_until_done,
    binding,
    d1_rows,
    drain,
    ended_chat,
    every_page,
    queued_deletions,
    r2_figures,
    r2_keys,
    r2_object,
    run_job,
)
from clairvora import chat_archive, chat_archive_job
from clairvora.db import TriggerAbort, sql
from clairvora.ids import new_id
from market_support import active_reading, at, fetch_with_env, market_pair, now_ms
from round_trip_walk import d1_figures
from support import database, new_user

CHAT = [
    ("client", "Hello, is the tower card bad news?"),
    ("advisor", "Not at all: change, not ruin."),
    ("client", "Émigré ñandú 漢字 and an emoji 🔮"),
    ("client", "And the third card?"),
    ("advisor", "The star: hope."),
    ("advisor", "x" * 2000),
    ("client", "Thanks!"),
]


async def test_every_page_answers_the_same_before_and_after_archiving_for_both_participants():
    t = now_ms()
    client, _cid, advisor, _aid, rid = await ended_chat(CHAT, t)
    # Two messages at the same millisecond: the id breaks the tie, in D1 and in R2.
    rows = await d1_rows(rid)
    await database().run(
        sql("UPDATE messages SET created_at_ms = ? WHERE id = ?", rows[3]["created_at_ms"], rows[4]["id"])
    )
    _sub, stranger = await new_user("nosy")
    assert (await stranger.get("/v1/me")).status == 200
    before = {who: await every_page(c, rid) for who, c in (("client", client), ("advisor", advisor))}
    stranger_before = await stranger.get(f"/v1/readings/{rid}/messages")
    missing_before = await stranger.get(f"/v1/readings/{new_id()}/messages")
    assert (await archive_row(rid))["state"] == "due"

    row = await archive_until_done(rid, t)
    assert await d1_rows(rid) == [], "the rows left D1"
    assert row["message_count"] == len(CHAT) and (row["client_message_count"], row["advisor_message_count"]) == (4, 3)
    assert await r2_keys(rid) == [row["object_key"]] == [chat_archive.object_key(int(rid), row["generation"])]

    for who, c in (("client", client), ("advisor", advisor)):
        after = await every_page(c, rid)
        assert after == before[who], who
    assert sum(1 for _path, status, _body in before["client"] if status == 200) > 12, "many pages compared"
    # Someone else's archived chat answers exactly like a missing reading.
    stranger_after = await stranger.get(f"/v1/readings/{rid}/messages")
    assert stranger_after.status == stranger_before.status == missing_before.status == 404
    assert stranger_after.json() == stranger_before.json() == missing_before.json()
    assert "etag" not in stranger_after.headers


async def test_the_object_holds_the_ciphertexts_and_key_versions_as_stored_and_rotation_still_reads_it():
    t = now_ms()
    client, cid, advisor, aid = await market_pair(rate=100, funds=5_000)
    reading = await active_reading(client, advisor, aid, t)
    rid = reading["id"]
    assert (
        await client.post(f"/v1/readings/{rid}/messages", json={"body": "under key 1"}, headers=at(t + 1))
    ).status == 201
    current = str(local_runtime.makeEnv().MESSAGE_KEYS)
    rotated = {"MESSAGE_KEYS": f"{current},2:{base64.b64encode(secrets.token_bytes(32)).decode()}"}
    r = await fetch_with_env(
        rotated,
        "POST",
        f"/v1/readings/{rid}/messages",
        token=advisor.token,
        json_body={"body": "under key 2"},
        headers=at(t + 2),
    )
    assert r.status == 201, r.text
    r = await fetch_with_env(rotated, "POST", f"/v1/readings/{rid}/end", token=client.token, headers=at(t + 3))
    assert r.status == 200, r.text
    stored = await d1_rows(rid)
    before = await fetch_with_env(rotated, "GET", f"/v1/readings/{rid}/messages", token=client.token)
    assert [m["body"] for m in before.json()["items"]] == ["under key 1", "under key 2"]
    without_key_2 = await client.get(f"/v1/readings/{rid}/messages")
    assert without_key_2.status == 500

    row = await archive_until_done(rid, t)
    document = await r2_object(row["object_key"])
    assert document["format"] == chat_archive.FORMAT and document["reading_id"] == int(rid)
    assert (document["client_id"], document["advisor_id"]) == (cid, aid)
    assert document["messages"] == [{f: s[f] for f in chat_archive.MESSAGE_FIELDS} for s in stored]
    assert [m["key_version"] for m in document["messages"]] == [1, 2], "nothing re-encrypted"
    raw = bytes(await (await binding().get(row["object_key"])).arrayBuffer())
    assert hashlib.sha256(raw).hexdigest() == row["sha256"] and len(raw) == row["size_bytes"]
    assert b"under key" not in raw, "ciphertext only"

    after = await fetch_with_env(rotated, "GET", f"/v1/readings/{rid}/messages", token=advisor.token)
    assert after.status == 200 and after.json() == before.json()
    # Without key 2 its message cannot be read, from R2 as from D1 (and nothing leaks).
    r = await client.get(f"/v1/readings/{rid}/messages")
    assert r.status == 500 and "under key 2" not in r.text
    assert r.json()["code"] == without_key_2.json()["code"] and r.json()["detail"] == without_key_2.json()["detail"]


async def test_archived_replies_carry_an_etag_and_a_revalidation_costs_one_d1_call_and_no_r2_operation():
    t = now_ms()
    client, _cid, advisor, _aid, rid = await ended_chat(CHAT[:3], t)
    r = await client.get(f"/v1/readings/{rid}/messages")
    assert r.status == 200 and "etag" not in r.headers and r2_figures(r) == {}
    assert d1_figures(r.headers)[0] == 2, "from D1: the caller + reading, then the page"
    await archive_until_done(rid, t)

    r = await client.get(f"/v1/readings/{rid}/messages?limit=2")
    assert r.status == 200 and len(r.json()["items"]) == 2
    tag = r.headers["etag"]
    assert r.headers["cache-control"] == "private, no-cache"
    assert d1_figures(r.headers)[0] == 1, "from R2: the caller + reading + archive record only"
    assert r2_figures(r) == {"gets": 1, "puts": 0, "deletes": 0}
    # The same content for the other participant: the same tag.
    assert (await advisor.get(f"/v1/readings/{rid}/messages?limit=2")).headers["etag"] == tag
    for sent in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        again = await client.get(f"/v1/readings/{rid}/messages?limit=2", headers={"if-none-match": sent})
        assert again.status == 304 and again.body == b"", sent
        assert again.headers["etag"] == tag and r2_figures(again) == {} and d1_figures(again.headers)[0] == 1
    stale = await client.get(f"/v1/readings/{rid}/messages?limit=2", headers={"if-none-match": '"chat-0000"'})
    assert stale.status == 200 and stale.json() == r.json()


async def test_nothing_can_be_added_to_an_ended_or_archived_reading():
    t = now_ms()
    client, cid, _advisor, _aid, rid = await ended_chat(CHAT[:2], t)
    insert = sql(
        """INSERT INTO messages (id, reading_id, sender_id, key_version, iv_b64, ciphertext_b64, created_at_ms)
           VALUES (?, ?, ?, 1, 'AAAAAAAAAAAAAAAA', 'AAAA', ?)""",
        new_id(),
        int(rid),
        cid,
        t + 100,
    )
    with pytest.raises(TriggerAbort) as refused:
        await database().run(insert)
    assert refused.value.code == "reading_not_active"
    r = await client.post(f"/v1/readings/{rid}/messages", json={"body": "too late"})
    assert r.status == 409 and r.json()["reading_status"] == "ended"
    await archive_until_done(rid, t)
    with pytest.raises(TriggerAbort):
        await database().run(insert)
    r = await client.post(f"/v1/readings/{rid}/messages", json={"body": "too late"})
    assert r.status == 409 and r.json()["reading_status"] == "ended"
    assert len((await client.get(f"/v1/readings/{rid}/messages")).json()["items"]) == 2


async def test_a_reading_without_chat_queues_nothing_and_one_with_chat_is_queued_by_its_end():
    t = now_ms()
    client, _cid, advisor, aid = await market_pair(rate=100, funds=5_000)
    reading = await active_reading(client, advisor, aid, t)
    assert (await client.post(f"/v1/readings/{reading['id']}/end", headers=at(t + 5))).status == 200
    assert await archive_row(reading["id"]) is None
    _c, _cid, _a, _aid, rid = await ended_chat(CHAT[:1], t)
    row = await archive_row(rid)
    ended = await database().first(sql("SELECT ended_at_ms FROM readings WHERE id = ?", int(rid)))
    assert (row["state"], row["due_at_ms"], row["attempt"], row["generation"]) == ("due", ended["ended_at_ms"], 0, 0)


async def test_the_cron_archives_once_the_delay_has_passed():
    t = now_ms()
    client, _cid, _advisor, _aid, rid = await ended_chat(CHAT[:2], t)
    ended = int((await archive_row(rid))["due_at_ms"])
    delay_ms = int(local_runtime.vars.MESSAGE_ARCHIVE_DELAY_SECONDS) * 1000
    await local_runtime.dispatchScheduled("* * * * *", ended + delay_ms - 60_000)
    assert (await archive_row(rid))["state"] == "due", "not before the delay"
    for _ in range(40):
        await local_runtime.dispatchScheduled("* * * * *", ended + delay_ms + 1)
        if (await archive_row(rid))["state"] == "archived":
            break
    assert (await archive_row(rid))["state"] == "archived" and await d1_rows(rid) == []
    assert [m["body"] for m in (await client.get(f"/v1/readings/{rid}/messages")).json()["items"]] == [
        b for _w, b in CHAT[:2]
    ]


async def test_one_run_takes_many_readings_in_two_d1_calls_and_one_put_each():
    t = now_ms()
    await drain(t)
    readings = [await ended_chat(CHAT[: 2 + i], t + i) for i in range(4)]
    done, counters, bucket = await run_job(t)
    assert done["chat_archived"] == 4 and done["chat_released"] == 0
    assert counters.calls == 2, "claims + rows in one batch, the finalize in another (nothing queued to delete)"
    assert (bucket.puts, bucket.gets, bucket.deletes) == (4, 0, 0)
    for _c, _cid, _a, _aid, rid in readings:
        assert (await archive_row(rid))["state"] == "archived" and await d1_rows(rid) == []
        assert await queued_deletions(rid) == []
    done, counters, bucket = await run_job(t)
    assert done["chat_archived"] == 0 and counters.calls == 1 and bucket.operations == 0, "an idle run: one call"


async def test_readings_larger_than_the_first_read_are_completed_page_by_page(monkeypatch):
    t = now_ms()
    await drain(t)
    monkeypatch.setattr(chat_archive_job, "CLAIM_ROWS", 4)
    monkeypatch.setattr(chat_archive_job, "PAGE_ROWS", 3)
    sizes = [5, 2, 7]
    chats = [await ended_chat([("client" if k % 2 else "advisor", f"m{n}.{k}") for k in range(n)], t) for n in sizes]
    expected = {rid: await d1_rows(rid) for *_x, rid in chats}
    done, counters, _bucket = await run_job(t)
    assert done["chat_archived"] == 3
    assert counters.calls > 2, "further pages were read"
    for rid, rows in expected.items():
        row = await archive_row(rid)
        document = await r2_object(row["object_key"])
        assert [m["id"] for m in document["messages"]] == [r["id"] for r in rows]


async def test_a_chat_above_the_limit_stays_in_d1_and_reads_as_before(monkeypatch):
    t = now_ms()
    await drain(t)
    monkeypatch.setattr(chat_archive_job, "MAX_MESSAGES", 3)
    client, _cid, _advisor, _aid, rid = await ended_chat(CHAT[:5], t)
    before = await every_page(client, rid, limits=(None, 2))
    done, _counters, bucket = await run_job(t)
    assert done["chat_oversize"] == 1 and bucket.puts == 0
    assert (await archive_row(rid))["state"] == "oversize" and len(await d1_rows(rid)) == 5
    assert await every_page(client, rid, limits=(None, 2)) == before
    assert (await run_job(t))[0]["chat_oversize"] == 0, "never claimed again"


async def test_a_missing_or_altered_object_answers_500_and_leaks_nothing():
    t = now_ms()
    client, _cid, advisor, _aid, rid = await ended_chat(CHAT[:2], t)
    row = await archive_until_done(rid, t)
    document = await r2_object(row["object_key"])
    document["messages"].reverse()
    await binding().put(row["object_key"], __import__("json").dumps(document).encode())
    r = await client.get(f"/v1/readings/{rid}/messages")
    assert r.status == 500 and r.json()["code"] == "message_unreadable" and CHAT[0][1] not in r.text
    await binding().delete(row["object_key"])
    r = await advisor.get(f"/v1/readings/{rid}/messages")
    assert r.status == 500 and r.json()["code"] == "message_unreadable"


async def test_the_record_refuses_what_would_lose_or_expose_messages():
    t = now_ms()
    _client, _cid, _advisor, _aid, rid = await ended_chat(CHAT[:2], t)
    db = database()
    # No flip to 'archived' without the object's facts, and the rows stay.
    with pytest.raises(Exception, match="CHECK"):
        await db.run(
            sql(
                "UPDATE message_archives SET state = 'archived', generation = 1, attempt = 1 WHERE reading_id = ?",
                int(rid),
            )
        )
    assert len(await d1_rows(rid)) == 2
    row = await archive_until_done(rid, t)
    for statement in (
        "UPDATE message_archives SET state = 'due' WHERE reading_id = ?",
        "UPDATE message_archives SET generation = generation - 1 WHERE reading_id = ?",
        "UPDATE message_archives SET message_count = message_count + 1, client_message_count = client_message_count + 1 WHERE reading_id = ?",
    ):
        with pytest.raises(TriggerAbort) as refused:
            await db.run(sql(statement, int(rid)))
        assert refused.value.code == "message_archive_illegal_update", statement
    # The live object can never be queued for deletion.
    with pytest.raises(TriggerAbort) as refused:
        await db.run(
            sql(
                "INSERT INTO archive_object_deletions (object_key, reading_id, created_at_ms) VALUES (?, ?, 0)",
                row["object_key"],
                int(rid),
            )
        )
    assert refused.value.code == "archive_object_live"


async def test_the_longest_waiting_chat_gets_the_pages_first_so_the_queue_always_moves(monkeypatch):
    t = now_ms()
    await drain(t)
    monkeypatch.setattr(chat_archive_job, "CLAIM_ROWS", 2)
    monkeypatch.setattr(chat_archive_job, "PAGE_ROWS", 2)
    monkeypatch.setattr(chat_archive_job, "D1_CALLS_PER_RUN", 5)  # the claim, 2 pages, finalize, deletions
    *_a, older = await ended_chat([("client", f"a{k}") for k in range(4)], t)
    # A newer chat with a smaller id: the claim batch reads its rows first.
    while True:
        *_b, newer = await ended_chat([("client", f"b{k}") for k in range(6)], t + 10)
        if int(newer) < int(older):
            break
        await drain(t)
        *_a, older = await ended_chat([("client", f"a{k}") for k in range(4)], t)
    done, counters, _bucket = await run_job(t)
    assert counters.calls == 4, "claim, two pages, finalize"
    assert (await archive_row(older))["state"] == "archived", "the older chat was finished first"
    assert (await archive_row(newer))["state"] == "due" and done["chat_released"] == 1
    await run_job(t)
    assert (await archive_row(newer))["state"] == "archived"


async def test_a_reading_the_cron_ends_for_silence_queues_its_chat_too():
    t = now_ms()
    client, _cid, advisor, aid = await market_pair(rate=100, funds=5_000)
    reading = await active_reading(client, advisor, aid, t)
    rid = reading["id"]
    assert (
        await advisor.post(f"/v1/readings/{rid}/messages", json={"body": "still there?"}, headers=at(t + 5))
    ).status == 201
    for _ in range(40):
        await local_runtime.dispatchScheduled("* * * * *", t + 10 * 60_000)
        ended = await database().first(sql("SELECT status, ended_at_ms FROM readings WHERE id = ?", int(rid)))
        if ended["status"] == "ended":
            break
    assert ended["status"] == "ended"
    row = await archive_row(rid)
    assert row is not None and row["due_at_ms"] == ended["ended_at_ms"], "due from the (past) end time"
