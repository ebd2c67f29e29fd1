"""The payout receiver: sealed at rest under PAYOUT_KEYS, bound to its owner,
shown masked, changed only over the version the advisor read, erased with
the advisor."""

import pytest

from clairvora import payout_flow
from clairvora.db import sql
from clairvora.errors import Problem
from payout_support import balances, cleared_advisor, payout_row, receiver, request_payout, resume, set_method, settings
from support import database, unique
from world import actor, make_advisor

PATH = "/v1/advisors/me/payout-method"


async def _stored(user_id: int) -> dict:
    row = await database().first(sql("SELECT * FROM payout_methods WHERE user_id = ?", user_id))
    assert row is not None
    return row


async def test_set_read_and_replace_over_the_version_read():
    a = await make_advisor(await actor("pm"))
    r = await a.client.get(PATH)
    assert r.status == 200 and r.json()["version"] == 0 and r.json()["receiver_masked"] is None
    assert r.headers["etag"] == '"0"'
    email = receiver()
    r = await a.client.put(PATH, json_body={"recipient_type": "EMAIL", "receiver": email}, headers={"if-match": '"0"'})
    assert r.status == 200, r.text
    assert r.json() == {
        **r.json(),
        "recipient_type": "EMAIL",
        "receiver_masked": email[0] + "***@example.com",
        "version": 1,
    }
    assert email not in r.text and email not in (await a.client.get(PATH)).text
    # Sealed: the row holds no trace of the receiver, and it opens to it.
    row = await _stored(a.id)
    assert all(email not in str(v) for v in row.values())
    assert await payout_flow.open_receiver(settings(), row, a.id) == email
    # A second first-PUT, or one naming an old version, is refused; the current version works.
    payer_id = "C9G8B5ZBB6WLS"
    body = {"recipient_type": "PAYPAL_ID", "receiver": payer_id}
    for stale in ('"0"', '"7"'):
        r = await a.client.put(PATH, json_body=body, headers={"if-match": stale})
        assert r.status == 412 and r.json()["code"] == "version_conflict", r.text
    r = await a.client.put(PATH, json_body=body, headers={"if-match": '"1"'})
    assert r.status == 200 and r.json()["receiver_masked"] == "*********6WLS" and r.json()["version"] == 2
    assert r.headers["etag"] == '"2"'
    assert (await a.client.put(PATH, json_body=body)).status == 428


@pytest.mark.parametrize(
    "body",
    [
        {"recipient_type": "EMAIL", "receiver": "not-an-email"},
        {"recipient_type": "EMAIL", "receiver": "a b@example.com"},
        {"recipient_type": "PAYPAL_ID", "receiver": "c9g8b5zbb6wls"},
        {"recipient_type": "PAYPAL_ID", "receiver": "SHORT1"},
        {"recipient_type": "PHONE", "receiver": "+14085551234"},
        {"recipient_type": "EMAIL"},
        {"recipient_type": "EMAIL", "receiver": "x@example.com", "extra": 1},
    ],
)
async def test_bad_receivers_are_refused_and_change_nothing(body):
    a = await make_advisor(await actor("pmb"))
    r = await a.client.put(PATH, json_body=body, headers={"if-match": '"0"'})
    assert r.status == 400, r.text
    assert (await a.client.get(PATH)).json()["version"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"recipient_type": "PAYPAL_ID", "receiver": "x@example.com"},
        {"recipient_type": "EMAIL", "receiver": "C9G8B5ZBB6WLS"},
    ],
)
async def test_a_receiver_of_the_other_type_is_unprocessable(body):
    # Each is a receiver the document allows (its pattern is either form); the type picks one.
    a = await make_advisor(await actor("pmt"))
    r = await a.client.put(PATH, json_body=body, headers={"if-match": '"0"'})
    assert r.status == 422 and r.json()["code"] == "receiver_type_mismatch", r.text
    assert (await a.client.get(PATH)).json()["version"] == 0


async def test_only_advisors_have_a_payout_method():
    client = await actor("pmc")
    assert (await client.client.get(PATH)).status == 404
    r = await client.client.put(
        PATH, json_body={"recipient_type": "EMAIL", "receiver": receiver()}, headers={"if-match": '"0"'}
    )
    assert r.status == 404
    assert await database().first(sql("SELECT 1 FROM payout_methods WHERE user_id = ?", client.id)) is None


async def test_a_sealed_receiver_opens_only_for_its_owner_and_type():
    a = await make_advisor(await actor("pma"))
    b = await make_advisor(await actor("pmb2"))
    assert (await set_method(a, receiver())).status == 200
    assert (await set_method(b, receiver())).status == 200
    row_a = await _stored(a.id)
    with pytest.raises(Problem) as refused:
        await payout_flow.open_receiver(settings(), row_a, b.id)  # a's ciphertext in b's place
    assert refused.value.code == "payout_receiver_unreadable"
    with pytest.raises(Problem):
        await payout_flow.open_receiver(settings(), {**row_a, "recipient_type": "PAYPAL_ID"}, a.id)
    # Sealed under PAYOUT_KEYS, not the chat's keys.
    with pytest.raises(Problem):
        await payout_flow.open_receiver(settings(PAYOUT_KEYS=f"1:{'A' * 43}="), row_a, a.id)


async def test_erasure_removes_the_receiver_and_an_unsent_payout_comes_back():
    import local_runtime

    a, earned, email = await cleared_advisor(16)
    local_runtime.paypalControl.nextCreate("drop")
    r = await request_payout(a, key=unique("pe"))
    assert r.status == 202, r.text
    pid = r.json()["id"]
    me = await a.client.get("/v1/me")
    r = await a.client.delete("/v1/me", headers={"if-match": me.headers["etag"]})
    assert r.status == 200, r.text
    assert await database().first(sql("SELECT 1 FROM payout_methods WHERE user_id = ?", a.id)) is None
    row = await payout_row(pid)
    assert row["receiver_ciphertext_b64"] is None and row["receiver_masked"] is None
    after = await resume(pid)
    assert (after["status"], after["failure_code"]) == ("failed", "receiver_erased")
    assert (await balances(a.id))["cleared"] == earned
    assert all(email not in str(v) for v in after.values())
