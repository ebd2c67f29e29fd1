"""D1 round trips per route, and how they were brought to two.

Route.preload: the handler's first read rides in one D1 batch with the caller
lookup, so the reading routes cost one round trip less, and that read is still
scoped to the caller (by its Clerk `sub`). Cancel/decline send their
conditional UPDATE with the re-read; earnings sends the balance with the page."""

import re
import time

from clairvora.db import sql
from clairvora.ids import new_id
from market_support import active_reading, at, market_pair, request_reading
from support import Client, database, new_user

_D1 = re.compile(r'calls=(?P<calls>\d+) rows_read=(?P<read>\d+) rows_written=(?P<written>\d+)"')


def d1_figures(headers: dict[str, str]) -> tuple[int, int, int]:
    m = _D1.search(headers["server-timing"])
    assert m, headers
    return int(m["calls"]), int(m["read"]), int(m["written"])


async def test_a_participant_reads_its_reading_in_one_call():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    reading = await active_reading(client, advisor, advisor_id, t0)
    for who in (client, advisor):
        r = await who.get(f"/v1/readings/{reading['id']}", headers=at(t0 + 1000))
        assert r.status == 200 and r.json()["id"] == reading["id"], r.text
        assert d1_figures(r.headers)[0] == 1


async def test_a_billing_heartbeat_takes_two_calls_and_charges_once():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    reading = await active_reading(client, advisor, advisor_id, t0)
    r = await client.post(f"/v1/readings/{reading['id']}/heartbeat", headers=at(t0 + 60_000))
    assert r.status == 200 and r.json()["billed_minutes"] == 2, r.text
    calls, _read, written = d1_figures(r.headers)
    assert calls == 2 and written > 0
    r = await advisor.post(f"/v1/readings/{reading['id']}/end", headers=at(t0 + 61_000))
    assert r.status == 200 and r.json()["status"] == "ended" and r.json()["billed_minutes"] == 2, r.text
    assert d1_figures(r.headers)[0] == 2


async def test_accept_takes_two_calls():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    r = await request_reading(client, advisor_id, t0)
    assert r.status == 201, r.text
    r = await advisor.post(f"/v1/readings/{r.json()['id']}/accept", headers=at(t0))
    assert r.status == 200 and r.json()["billed_minutes"] == 1, r.text
    assert d1_figures(r.headers)[0] == 2


async def test_the_preloaded_read_is_scoped_to_the_caller():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    reading = await active_reading(client, advisor, advisor_id, t0)
    _sub, stranger = await new_user("pre")
    assert (await stranger.get("/v1/me")).status == 200  # a known user: the preload runs
    for method, suffix in (("GET", ""), ("POST", "/heartbeat"), ("POST", "/end"), ("GET", "/messages")):
        r = await stranger.request(method, f"/v1/readings/{reading['id']}{suffix}", headers=at(t0 + 60_000))
        assert r.status == 404 and r.json()["code"] == "not_found", (suffix, r.text)
        assert reading["id"] not in r.text
    # Nothing was charged or ended by the stranger's calls.
    r = await client.get(f"/v1/readings/{reading['id']}", headers=at(t0 + 1000))
    assert r.json()["status"] == "active" and r.json()["billed_minutes"] == 1, r.text


async def test_a_caller_seen_for_the_first_time_is_created_and_gets_a_404():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    reading = await active_reading(client, advisor, advisor_id, t0)
    sub, newcomer = await new_user("fresh")
    before = await database().first(sql("SELECT count(*) AS n FROM users WHERE clerk_user_id = ?", sub))
    assert before["n"] == 0
    r = await newcomer.get(f"/v1/readings/{reading['id']}", headers=at(t0 + 1000))
    assert r.status == 404, r.text
    row = await database().first(sql("SELECT count(*) AS n FROM users WHERE clerk_user_id = ?", sub))
    assert row["n"] == 1


async def test_an_unknown_reading_is_a_404_without_a_second_read():
    _sub, caller = await new_user("unk")
    assert (await caller.get("/v1/me")).status == 200
    r = await Client(caller.token).get(f"/v1/readings/{new_id()}")
    assert r.status == 404, r.text
    assert d1_figures(r.headers)[0] == 1


async def test_cancel_and_decline_take_two_calls():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    r = await request_reading(client, advisor_id, t0)
    r = await client.post(f"/v1/readings/{r.json()['id']}/cancel", headers=at(t0 + 1000))
    assert r.status == 200 and r.json()["status"] == "cancelled", r.text
    assert d1_figures(r.headers)[0] == 2
    r = await client.post(f"/v1/readings/{r.json()['id']}/cancel", headers=at(t0 + 2000))
    assert r.status == 409 and r.json()["reading_status"] == "cancelled", r.text
    r = await request_reading(client, advisor_id, t0 + 3000)
    r = await advisor.post(f"/v1/readings/{r.json()['id']}/decline", headers=at(t0 + 4000))
    assert r.status == 200 and r.json()["status"] == "declined", r.text
    assert d1_figures(r.headers)[0] == 2


async def test_earnings_balance_and_page_take_two_calls():
    client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
    t0 = int(time.time() * 1000)
    reading = await active_reading(client, advisor, advisor_id, t0)
    r = await advisor.get("/v1/advisors/me/earnings?limit=10")
    assert r.status == 200, r.text
    body = r.json()
    assert len(body["items"]) == 1 and body["items"][0]["reading_id"] == reading["id"]
    assert body["balance_cents"] == body["items"][0]["amount_cents"] > 0
    assert d1_figures(r.headers)[0] == 2
    r = await client.get("/v1/advisors/me/earnings")  # a client has no earnings account
    assert r.status == 404 and d1_figures(r.headers)[0] == 2
