"""Advisor blocks (issue 13, item 10): an advisor blocks a client it has met in
a reading, lists and unblocks; a blocked client cannot request a reading from
that advisor (the refusal is in the INSERT's own WHERE clause), and learns only
`advisor_unavailable`, the code an offline or busy advisor also answers."""

from clairvora.db import sql
from clairvora.ids import new_id
from market_support import at, market_pair, now_ms, request_reading
from support import database
from world import row_counts

BLOCKS = "/v1/advisors/me/blocks"


async def _met(client, advisor, advisor_id, t):
    """The client requests a reading and the advisor declines it: now they have met."""
    r = await request_reading(client, advisor_id, t)
    assert r.status == 201, r.text
    r = await advisor.post(f"/v1/readings/{r.json()['id']}/decline", headers=at(t + 1))
    assert r.status == 200, r.text


async def test_a_blocked_client_cannot_request_a_reading_and_an_unblocked_one_can():
    client, client_id, advisor, advisor_id = await market_pair(funds=10_000)
    t = now_ms()
    await _met(client, advisor, advisor_id, t)
    r = await advisor.post(BLOCKS, json={"client_id": str(client_id)}, headers=at(t + 2))
    assert r.status == 201, r.text
    assert r.json()["client_id"] == str(client_id) and r.json()["created_at"]
    # Blocking again changes nothing and answers the block as it is.
    again = await advisor.post(BLOCKS, json={"client_id": str(client_id)}, headers=at(t + 3))
    assert again.status == 200 and again.json() == r.json(), again.text

    before = await row_counts()
    r = await request_reading(client, advisor_id, t + 4)
    assert r.status == 409, r.text
    problem = r.json()
    assert problem["code"] == "advisor_unavailable"
    assert "block" not in r.text.lower() and "advisor_status" not in problem
    assert await row_counts() == before

    r = await advisor.get(BLOCKS)
    assert r.status == 200 and [b["client_id"] for b in r.json()["items"]] == [str(client_id)], r.text
    assert r.json()["next_cursor"] is None

    r = await advisor.delete(f"{BLOCKS}/{client_id}", headers=at(t + 5))
    assert r.status == 204, r.text
    r = await advisor.delete(f"{BLOCKS}/{client_id}", headers=at(t + 6))
    assert r.status == 404 and r.json()["code"] == "not_found", r.text
    # A malformed id is refused alike.
    r = await advisor.post(BLOCKS, json={"client_id": "12"}, headers=at(t + 6))
    assert r.status == 404 and r.json()["code"] == "not_found", r.text
    r = await request_reading(client, advisor_id, t + 7)
    assert r.status == 201, r.text


async def test_the_block_is_checked_in_the_insert_itself():
    """A block that lands between the precheck and the INSERT (simulated: the block row
    is written behind the handler's back, after a first successful look) still refuses."""
    client, client_id, advisor, advisor_id = await market_pair(funds=10_000)
    t = now_ms()
    await _met(client, advisor, advisor_id, t)
    from clairvora import reading_requests

    # The INSERT alone, as create_reading sends it, with a block row present: it writes nothing.
    await database().run(
        sql(
            "INSERT INTO advisor_blocks (advisor_id, client_id, created_at_ms) VALUES (?, ?, ?)",
            advisor_id,
            client_id,
            t,
        )
    )
    result = await database().run(
        sql(
            reading_requests._INSERT_READING,
            1,
            client_id,
            "chat",
            90,
            10,
            90,
            60,
            120,
            t,
            advisor_id,
            100,
        )
    )
    assert result.changes == 0


async def test_only_clients_met_in_a_reading_can_be_blocked_and_others_answer_like_missing_ones():
    client, _client_id, advisor, advisor_id = await market_pair(funds=10_000)
    _stranger, stranger_id, _other_advisor, _oid = await market_pair(funds=10_000)
    t = now_ms()
    before = await row_counts()
    unknown = await advisor.post(BLOCKS, json={"client_id": str(new_id())}, headers=at(t))
    not_met = await advisor.post(BLOCKS, json={"client_id": str(stranger_id)}, headers=at(t))
    for r in (unknown, not_met):
        assert r.status == 404 and r.json()["code"] == "not_found", r.text
    assert unknown.json()["detail"] == not_met.json()["detail"]
    assert unknown.headers["server-timing"] == not_met.headers["server-timing"]
    # Oneself: never met as a client either.
    r = await advisor.post(BLOCKS, json={"client_id": str(advisor_id)}, headers=at(t))
    assert r.status == 404, r.text
    # A user who is no advisor has no block list.
    r = await client.post(BLOCKS, json={"client_id": str(advisor_id)}, headers=at(t))
    assert r.status == 404, r.text
    r = await client.get(BLOCKS)
    assert r.status == 404, r.text
    assert await row_counts() == before


async def test_blocks_are_the_advisors_own_and_paged_newest_first():
    client, client_id, advisor, advisor_id = await market_pair(funds=10_000)
    t = now_ms()
    await _met(client, advisor, advisor_id, t)
    ids = [client_id]
    for i in range(2):
        other, other_id, _a, _aid = await market_pair(funds=10_000)
        await _met(other, advisor, advisor_id, t + 10 + i)
        ids.append(other_id)
    for i, cid in enumerate(ids):
        r = await advisor.post(BLOCKS, json={"client_id": str(cid)}, headers=at(t + 100 + i))
        assert r.status == 201, r.text
    seen = []
    cursor = None
    while True:
        r = await advisor.get(BLOCKS + "?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert r.status == 200, r.text
        seen += [b["client_id"] for b in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(c) for c in reversed(ids)]
    r = await advisor.get(BLOCKS + "?cursor=nope")
    assert r.status == 400 and r.json()["code"] == "invalid_cursor", r.text

    # Another advisor sees none of them and cannot lift them.
    _c, _cid, other_advisor, _oaid = await market_pair()
    r = await other_advisor.get(BLOCKS)
    assert r.status == 200 and r.json()["items"] == [], r.text
    r = await other_advisor.delete(f"{BLOCKS}/{client_id}")
    assert r.status == 404, r.text
    missing = await other_advisor.delete(f"{BLOCKS}/{new_id()}")
    assert missing.status == 404 and missing.json() == r.json()
    assert missing.headers["server-timing"] == r.headers["server-timing"]
    # The block still stands.
    r = await request_reading(client, advisor_id, t + 200)
    assert r.status == 409 and r.json()["code"] == "advisor_unavailable", r.text
