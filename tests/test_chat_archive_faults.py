"""The chat archive killed in between (issue 15 item 2): a D1 failure at every
call position of a run (before the call, or after it ran with the answer
lost), an R2 failure at every operation, an erasure between the object's put
and its record, two runs at once. Each time the retries converge: the messages
are in exactly one live object or still in D1, never lost, never twice, and
no object is left behind in R2."""

import asyncio

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
from market_support import now_ms

CHAT = [("client", "first words"), ("advisor", "an answer"), ("client", "a follow-up"), ("advisor", "the last word")]
AFTER_LEASE_MS = chat_archive_job.LEASE_MS + 1


async def _converged(rid, rows, pages_before, client, t) -> dict:
    """The retries' end state: archived, the rows gone from D1, the live object
    holding exactly `rows`, nothing else under the reading's prefix, nothing queued."""
    row = await archive_until_done(rid, t)
    for _ in range(5):
        if not await pending_work():
            break
        await run_job(t)
    assert await d1_rows(rid) == []
    document = await r2_object(row["object_key"])
    assert [m["id"] for m in document["messages"]] == [r["id"] for r in rows], "nothing lost, nothing twice"
    assert document["messages"] == [{f: r[f] for f in chat_archive.MESSAGE_FIELDS} for r in rows]
    assert await r2_keys(rid) == [row["object_key"]], "no object left behind"
    assert await queued_deletions(rid) == []
    assert await every_page(client, rid, limits=(None, 3)) == pages_before
    return row


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("position", [1, 2])
async def test_a_d1_failure_at_any_call_of_an_archive_run_converges(position, when):
    t = now_ms()
    await drain(t)
    client, _cid, _advisor, _aid, rid = await ended_chat(CHAT, t)
    rows = await d1_rows(rid)
    pages = await every_page(client, rid, limits=(None, 3))
    plan = FaultPlan(frozenset({position}), when)
    with pytest.raises(TransientD1Error):
        await run_job(t, faults=plan)
    assert plan.injected == 1
    state = await archive_row(rid)
    if state["state"] == "due":
        assert len(await d1_rows(rid)) == len(CHAT), "rows stay until an object holding them is live"
        assert await every_page(client, rid, limits=(None, 3)) == pages
    else:
        assert position == 2 and when == "after", "only a finalize that committed archives"
    # A claim that may have been taken waits for its lease; then the retry converges.
    await _converged(rid, rows, pages, client, t + AFTER_LEASE_MS)


@pytest.mark.parametrize("when", ["before", "after"])
async def test_an_r2_put_failure_converges_without_waiting_for_the_lease(when):
    t = now_ms()
    await drain(t)
    client, _cid, _advisor, _aid, rid = await ended_chat(CHAT, t)
    rows = await d1_rows(rid)
    pages = await every_page(client, rid, limits=(None, 3))
    flaky = FlakyR2({1: when})
    done, _counters, _bucket = await run_job(t, r2=flaky)
    assert flaky.failed == 1 and done["chat_archived"] == 0 and done["chat_released"] == 1
    # The attempt's key was queued and deleted in the same run (an object that did land is gone).
    assert done["chat_objects_deleted"] == 1 and await r2_keys(rid) == []
    assert (await archive_row(rid))["state"] == "due" and len(await d1_rows(rid)) == len(CHAT)
    row = await _converged(rid, rows, pages, client, t)
    assert row["generation"] == 2, "the second attempt went live"


@pytest.mark.parametrize("when", ["before", "after"])
async def test_an_r2_delete_failure_keeps_the_queue_until_a_later_run(when):
    t = now_ms()
    await drain(t)
    client, _cid, _advisor, _aid, rid = await ended_chat(CHAT, t)
    rows = await d1_rows(rid)
    pages = await every_page(client, rid, limits=(None, 3))
    # The put lands but its answer is lost (so there is an object to delete), then the delete fails.
    flaky = FlakyR2({1: "after", 2: when})
    done, _c, _b = await run_job(t, r2=flaky)
    assert flaky.failed == 2 and done["chat_objects_deleted"] == 0
    assert await queued_deletions(rid) == [chat_archive.object_key(int(rid), 1)]
    await _converged(rid, rows, pages, client, t)


async def test_an_erasure_between_the_put_and_the_record_never_lets_the_erased_words_live():
    t = now_ms()
    await drain(t)
    client, cid, advisor, _aid, rid = await ended_chat(CHAT, t)
    # The put lands, the finalize never runs: attempt 1's object holds the client's words.
    with pytest.raises(TransientD1Error):
        await run_job(t, faults=FaultPlan(frozenset({2}), "before"))
    assert await r2_keys(rid) == [chat_archive.object_key(int(rid), 1)]
    version = (await client.get("/v1/me")).headers["etag"]
    r = await client.delete("/v1/me", headers={"if-match": version})
    assert r.status == 200 and r.json()["removed"]["messages"] == 2, r.text
    kept = await d1_rows(rid)
    assert [int(m["sender_id"]) for m in kept] != [] and cid not in [int(m["sender_id"]) for m in kept]
    pages = await every_page(advisor, rid, limits=(None, 3))
    row = await _converged(rid, kept, pages, advisor, t + AFTER_LEASE_MS)
    assert row["generation"] == 2 and (row["client_message_count"], row["advisor_message_count"]) == (0, 2)


async def test_two_runs_at_once_archive_each_chat_once():
    t = now_ms()
    await drain(t)
    chats = [await ended_chat(CHAT[: 2 + i], t) for i in range(3)]
    results = await asyncio.gather(run_job(t), run_job(t))
    assert sum(done["chat_archived"] for done, _c, _b in results) == 3
    assert sum(bucket.puts for _d, _c, bucket in results) == 3, "disjoint claims: no chat written twice"
    for client, _cid, _advisor, _aid, rid in chats:
        row = await archive_row(rid)
        assert row["state"] == "archived" and await r2_keys(rid) == [row["object_key"]]
        assert await d1_rows(rid) == []
        assert len((await client.get(f"/v1/readings/{rid}/messages")).json()["items"]) == len(
            await _ids(row["object_key"])
        )


async def _ids(key: str) -> list[int]:
    return [m["id"] for m in (await r2_object(key))["messages"]]
