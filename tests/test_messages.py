"""Chat: participants only, active readings only, AES-GCM at rest with a fresh
IV per message, key versions beside the ciphertext, rotation."""

import base64
import secrets

import local_runtime

from clairvora import messages
from clairvora.db import sql
from market_support import active_reading, at, fetch_with_env, market_pair, now_ms
from support import database


async def test_bodies_are_encrypted_at_rest_with_fresh_ivs():
    t = now_ms()
    client, _cid, advisor, advisor_id = await market_pair()
    reading = await active_reading(client, advisor, advisor_id, t)
    rid = reading["id"]
    text = "My secret question about Sam"
    for i in range(3):
        r = await client.post(f"/v1/readings/{rid}/messages", json={"body": text}, headers=at(t + i))
        assert r.status == 201, r.text
        assert r.json()["body"] == text and r.json()["sender_role"] == "client"
    rows = (await database().all(sql("SELECT * FROM messages WHERE reading_id = ?", int(rid)))).rows
    assert len(rows) == 3
    assert len({r["iv_b64"] for r in rows}) == 3, "a fresh IV per message"
    assert len({r["ciphertext_b64"] for r in rows}) == 3
    for row in rows:
        assert row["key_version"] == 1
        assert len(base64.b64decode(row["iv_b64"])) == 12
        stored = base64.b64decode(row["ciphertext_b64"])
        assert text.encode() not in stored and b"Sam" not in stored
        assert len(stored) == len(text.encode()) + 16, "ciphertext + GCM tag"

    # a ciphertext moved to another message fails authentication
    a, b = rows[0], rows[1]
    await database().run(
        sql(
            "UPDATE messages SET iv_b64 = ?, ciphertext_b64 = ? WHERE id = ?", b["iv_b64"], b["ciphertext_b64"], a["id"]
        )
    )
    r = await advisor.get(f"/v1/readings/{rid}/messages")
    assert r.status == 500 and r.json()["code"] == "message_unreadable"
    assert text not in r.text


async def test_limits_and_status():
    t = now_ms()
    client, _cid, advisor, advisor_id = await market_pair()
    rid_requested = (
        await client.post(
            "/v1/readings",
            json={"advisor_id": str(advisor_id)},
            headers=at(t, **{"idempotency-key": secrets.token_hex(8)}),
        )
    ).json()["id"]
    r = await client.post(f"/v1/readings/{rid_requested}/messages", json={"body": "hi"})
    assert r.status == 409 and r.json()["reading_status"] == "requested"
    await client.post(f"/v1/readings/{rid_requested}/cancel")
    reading = await active_reading(client, advisor, advisor_id, t + 10)
    rid = reading["id"]
    for body in [
        {"body": "x" * (messages.MAX_BODY_CHARS + 1)},
        {"body": ""},
        {"body": "   "},
        {"text": "hi"},
        {"body": 5},
    ]:
        r = await client.post(f"/v1/readings/{rid}/messages", json=body)
        assert r.status == 400, body
    r = await client.post(f"/v1/readings/{rid}/messages", json={"body": "é" * messages.MAX_BODY_CHARS})
    assert r.status == 201


async def test_pages_in_order():
    t = now_ms()
    client, _cid, advisor, advisor_id = await market_pair()
    reading = await active_reading(client, advisor, advisor_id, t)
    rid = reading["id"]
    for i in range(7):
        who = client if i % 2 == 0 else advisor
        r = await who.post(f"/v1/readings/{rid}/messages", json={"body": f"m{i}"}, headers=at(t + 100 + i))
        assert r.status == 201
    seen, cursor = [], None
    while True:
        r = await advisor.get(f"/v1/readings/{rid}/messages?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert r.status == 200
        seen += [m["body"] for m in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert seen == [f"m{i}" for i in range(7)]
    assert (await advisor.get(f"/v1/readings/{rid}/messages?limit=101")).status == 400
    assert (await advisor.get(f"/v1/readings/{rid}/messages?cursor=abc")).status == 400


async def test_key_rotation_old_messages_still_read():
    t = now_ms()
    client, _cid, advisor, advisor_id = await market_pair()
    reading = await active_reading(client, advisor, advisor_id, t)
    rid = reading["id"]
    r = await client.post(f"/v1/readings/{rid}/messages", json={"body": "before rotation"}, headers=at(t + 1))
    assert r.status == 201
    current = str(local_runtime.makeEnv().MESSAGE_KEYS)
    assert current.startswith("1:")
    new_key = base64.b64encode(secrets.token_bytes(32)).decode()
    rotated = {"MESSAGE_KEYS": f"{current},2:{new_key}"}
    r = await fetch_with_env(
        rotated,
        "POST",
        f"/v1/readings/{rid}/messages",
        token=advisor.token,
        json_body={"body": "after rotation"},
        headers=at(t + 2),
    )
    assert r.status == 201, r.text
    versions = (
        await database().all(
            sql("SELECT key_version FROM messages WHERE reading_id = ? ORDER BY created_at_ms", int(rid))
        )
    ).rows
    assert [v["key_version"] for v in versions] == [1, 2], "the highest version encrypts"
    r = await fetch_with_env(rotated, "GET", f"/v1/readings/{rid}/messages", token=client.token)
    assert r.status == 200, r.text
    assert [m["body"] for m in r.json()["items"]] == ["before rotation", "after rotation"]
    # without the new key, its messages cannot be read (and nothing leaks)
    r = await client.get(f"/v1/readings/{rid}/messages")
    assert r.status == 500 and "after rotation" not in r.text


def test_keyring_parsing():
    good = base64.b64encode(b"k" * 32).decode()
    ring = messages.parse_keyring(f"1:{good}, 3:{good}")
    assert ring.current == 3 and set(ring.keys) == {1, 3}
    for bad in ["", "x", f"0:{good}", f"1:{good},1:{good}", "1:notbase64!", f"1:{base64.b64encode(b'short').decode()}"]:
        try:
            messages.parse_keyring(bad)
        except messages.Problem as exc:
            assert exc.status == 500 and good not in exc.detail
        else:
            raise AssertionError(bad)


async def test_bodies_never_reach_logs(capsys):
    t = now_ms()
    client, _cid, advisor, advisor_id = await market_pair()
    reading = await active_reading(client, advisor, advisor_id, t)
    secret_text = "please-never-log-this-" + secrets.token_hex(4)
    await client.post(f"/v1/readings/{reading['id']}/messages", json={"body": secret_text})
    await client.post(f"/v1/readings/{reading['id']}/messages", json={"body": secret_text, "extra": 1})
    await advisor.get(f"/v1/readings/{reading['id']}/messages")
    out = capsys.readouterr()
    assert secret_text not in out.out and secret_text not in out.err
