"""Export and erasure see archived chat (issue 15 item 2, with issue 13 item 11):
GET /v1/me/export reads the caller's own archived messages from R2 (bounded);
DELETE /v1/me hides the erased user's archived messages at once and rewrites
the objects without them (in its waitUntil, else by the cron), crash-safe."""

import pytest

from archive_support import (
    FlakyR2,
    archive_row,
    archive_until_done,
    d1_rows,
    drain,
    ended_chat,
    every_page,
    pending_work,
    queued_deletions,
    r2_keys,
    r2_object,
    run_job,
)
from clairvora import chat_archive, chat_archive_job
from clairvora.db import TransientD1Error
from clairvora.faults import FaultPlan
from market_support import active_reading, at, now_ms
from support import Client, unique

AFTER_LEASE_MS = chat_archive_job.LEASE_MS + 1


async def _erase(client: Client, **headers: str):
    version = (await client.get("/v1/me")).headers["etag"]
    return await client.delete("/v1/me", headers={"if-match": version, **headers})


def _chat(tag: str) -> list[tuple[str, str]]:
    return [
        ("client", f"client one {tag}"),
        ("advisor", f"advisor one {tag}"),
        ("client", f"client two {tag}"),
        ("advisor", f"advisor two {tag}"),
    ]


async def test_the_export_holds_the_callers_archived_messages_newest_first_and_only_theirs():
    t = now_ms()
    tag = unique("x")
    client, _cid, advisor, aid, first = await ended_chat(_chat(f"{tag}a"), t)
    await archive_until_done(first, t)
    # A second reading with the same pair, archived too, then a third still live in D1.
    reading = await active_reading(client, advisor, aid, t + 100)
    for i, (who, body) in enumerate(_chat(f"{tag}b")):
        r = await (client if who == "client" else advisor).post(
            f"/v1/readings/{reading['id']}/messages", json={"body": body}, headers=at(t + 101 + i)
        )
        assert r.status == 201
    assert (await client.post(f"/v1/readings/{reading['id']}/end", headers=at(t + 110))).status == 200
    await archive_until_done(reading["id"], t)
    live = await active_reading(client, advisor, aid, t + 200)
    r = await client.post(
        f"/v1/readings/{live['id']}/messages", json={"body": f"client live {tag}"}, headers=at(t + 201)
    )
    assert r.status == 201

    for who, mine in ((client, "client"), (advisor, "advisor")):
        r = await who.get("/v1/me/export")
        assert r.status == 200, r.text
        section = r.json()["messages_sent"]
        expected = [f"{mine} live {tag}"] if mine == "client" else []
        expected += [f"{mine} two {tag}b", f"{mine} one {tag}b", f"{mine} two {tag}a", f"{mine} one {tag}a"]
        assert [m["body"] for m in section["items"]] == expected, mine
        assert section["truncated"] is False and all(m["readable"] for m in section["items"])
        other = "advisor" if mine == "client" else "client"
        assert f"{other} one {tag}" not in r.text, "someone else's words are not exported"


async def test_the_export_reads_a_bounded_number_of_transcripts_and_says_when_it_left_some_out(monkeypatch):
    t = now_ms()
    tag = unique("y")
    client, _cid, advisor, aid, first = await ended_chat(_chat(f"{tag}a"), t)
    await archive_until_done(first, t)
    reading = await active_reading(client, advisor, aid, t + 100)
    r = await client.post(f"/v1/readings/{reading['id']}/messages", json={"body": f"newer {tag}"}, headers=at(t + 101))
    assert r.status == 201
    assert (await client.post(f"/v1/readings/{reading['id']}/end", headers=at(t + 102))).status == 200
    await archive_until_done(reading["id"], t)
    monkeypatch.setattr(chat_archive, "EXPORT_MAX_OBJECTS", 1)
    section = (await client.get("/v1/me/export")).json()["messages_sent"]
    assert [m["body"] for m in section["items"]] == [f"newer {tag}"] and section["truncated"] is True


async def test_erasure_hides_the_users_archived_messages_and_rewrites_the_object_without_them():
    t = now_ms()
    tag = unique("e")
    client, cid, advisor, _aid, rid = await ended_chat(_chat(tag), t)
    before = await archive_until_done(rid, t)
    r = await _erase(client)
    assert r.status == 200, r.text
    assert r.json()["removed"]["messages"] == 2, "the archived ones count"
    row = await archive_row(rid)
    assert (row["erasures"], row["erasures_applied"]) == (1, 1), "rewritten in the erasure's waitUntil"
    assert row["generation"] > before["generation"] and (row["client_message_count"], row["advisor_message_count"]) == (
        0,
        2,
    )
    document = await r2_object(row["object_key"])
    assert [m["sender_id"] for m in document["messages"]] != [] and cid not in [
        m["sender_id"] for m in document["messages"]
    ]
    assert await r2_keys(rid) == [row["object_key"]], "the object that held the erased words is gone"
    assert await queued_deletions(rid) == []
    r = await advisor.get(f"/v1/readings/{rid}/messages")
    assert [m["body"] for m in r.json()["items"]] == [f"advisor one {tag}", f"advisor two {tag}"]
    assert r.headers["etag"] != f'"chat-{before["sha256"][:40]}"'


async def test_erasure_before_the_rewrite_hides_the_words_and_the_cron_finishes_it():
    t = now_ms()
    tag = unique("w")
    client, _cid, advisor, _aid, rid = await ended_chat(_chat(tag), t)
    archived = await archive_until_done(rid, t)
    seen = await advisor.get(f"/v1/readings/{rid}/messages")
    # The erasure's own rewrite fails at its first D1 call (3rd of the request): only the cron is left.
    r = await _erase(client, **{"x-test-d1-fault": "3"})
    # The reply's own figures: its two D1 calls (the rewrite runs after the reply).
    assert r.status == 200 and r.headers["x-test-d1-faults"] == "calls=2 injected=0", r.headers
    assert (await archive_row(rid))["object_key"] == archived["object_key"], "not rewritten yet"
    hidden = await advisor.get(f"/v1/readings/{rid}/messages")
    assert [m["body"] for m in hidden.json()["items"]] == [f"advisor one {tag}", f"advisor two {tag}"]
    assert f"client one {tag}" not in hidden.text
    assert hidden.headers["etag"] == seen.headers["etag"][:-1] + '-c"', "the tag names what is hidden"
    assert (
        await advisor.get(f"/v1/readings/{rid}/messages", headers={"if-none-match": seen.headers["etag"]})
    ).status == 200
    pages = await every_page(advisor, rid, limits=(None, 1))
    row = await archive_until_done(rid, t)
    assert row["erasures_applied"] == 1 and await r2_keys(rid) == [row["object_key"]]
    assert await every_page(advisor, rid, limits=(None, 1)) == [(path, status, body) for path, status, body in pages], (
        "the same replies once rewritten"
    )


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("position", [1, 2, 3])
async def test_a_d1_failure_at_any_call_of_a_rewrite_converges(position, when):
    t = now_ms()
    await drain(t)
    tag = unique("f")
    client, cid, advisor, _aid, rid = await ended_chat(_chat(tag), t)
    old = await archive_until_done(rid, t)
    r = await _erase(client, **{"x-test-d1-fault": "3"})  # leave the rewrite to the runs below
    assert r.status == 200
    pages = await every_page(advisor, rid, limits=(None, 1))
    plan = FaultPlan(frozenset({position}), when)
    try:
        await run_job(t, faults=plan)
    except TransientD1Error:
        pass
    assert plan.injected == 1, "the rewrite run makes three calls: claims, finalize, deletion"
    await _rewritten(rid, cid, old, advisor, pages, t + AFTER_LEASE_MS)


@pytest.mark.parametrize(
    "plan", [{1: "before"}, {1: "after"}, {2: "before"}, {2: "after"}, {3: "before"}, {3: "after"}]
)
async def test_an_r2_failure_at_any_operation_of_a_rewrite_converges(plan):
    t = now_ms()
    await drain(t)
    tag = unique("g")
    client, cid, advisor, _aid, rid = await ended_chat(_chat(tag), t)
    old = await archive_until_done(rid, t)
    assert (await _erase(client, **{"x-test-d1-fault": "3"})).status == 200
    pages = await every_page(advisor, rid, limits=(None, 1))
    flaky = FlakyR2(plan)  # get of the old object, put of the new, delete of the old
    await run_job(t, r2=flaky)
    assert flaky.failed == 1
    await _rewritten(rid, cid, old, advisor, pages, t)


async def _rewritten(rid, erased_id, old, reader, pages, t) -> None:
    row = await archive_until_done(rid, t)
    for _ in range(5):
        if not await pending_work():
            break
        await run_job(t)
    assert row["erasures_applied"] == row["erasures"] == 1 and row["generation"] > old["generation"]
    document = await r2_object(row["object_key"])
    assert erased_id not in [m["sender_id"] for m in document["messages"]]
    assert len(document["messages"]) == old["message_count"] - old["client_message_count"]
    assert await r2_keys(rid) == [row["object_key"]], "old object and failed attempts deleted"
    assert await queued_deletions(rid) == []
    assert await d1_rows(rid) == []
    assert await every_page(reader, rid, limits=(None, 1)) == pages


async def test_both_participants_erased_leaves_an_empty_object():
    t = now_ms()
    client, _cid, advisor, _aid, rid = await ended_chat(_chat(unique("b")), t)
    await archive_until_done(rid, t)
    assert (await _erase(client)).status == 200
    assert (await _erase(advisor)).status == 200
    row = await archive_row(rid)
    assert (row["erasures"], row["erasures_applied"], row["message_count"]) == (2, 2, 0)
    assert (await r2_object(row["object_key"]))["messages"] == []
    assert await r2_keys(rid) == [row["object_key"]]
