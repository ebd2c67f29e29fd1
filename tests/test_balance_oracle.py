"""No balance oracle (issue 13, item 2): nothing an advisor receives depends on
the client's wallet.

The same reading played twice, once by a client with 2.50 and once by a client
with 70.00 (both can pay every minute used), must give the advisor the same
replies, byte for byte once the ids are set aside, and the same D1 calls and
rows written in server-timing:
accept, heartbeats, the reading, the list, the chat, the end, a heartbeat
after the end, the earnings and the reviews. A deposit after the end changes
nothing either. The client still sees its own balance, minutes left and the
low-balance warning."""

import json
import re
from typing import Any

from market_support import at, fund, market_pair, now_ms, request_reading

# rows_read is left out: it varies by a row or two with where random ids fall
# in an index (two plays with the same balance differ too), never with a balance.
_D1 = re.compile(r'd1;desc="calls=(\d+) rows_read=\d+ rows_written=(\d+)"')
_ID_KEYS = re.compile(r"(^id$|_id$|^next_cursor$)")


def _normal(value: Any) -> Any:
    """ids set aside (they differ between the two plays by construction)."""
    if isinstance(value, dict):
        return {k: ("<id>" if _ID_KEYS.search(k) and v is not None else _normal(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def _seen(label: str, r: Any) -> tuple[str, int, Any, str]:
    timing = _D1.search(r.headers.get("server-timing", ""))
    assert timing, r.headers
    return label, r.status, _normal(r.json()), f"calls={timing.group(1)} rows_written={timing.group(2)}"


async def _play(funds: int, t: int) -> tuple[list[tuple[str, int, Any, str]], list[dict[str, Any]]]:
    """(what the advisor saw, the client's billed replies) for one reading of two minutes."""
    client, client_id, advisor, advisor_id = await market_pair(rate=100, funds=funds)
    advisor_saw: list[tuple[str, int, Any, str]] = []
    client_saw: list[dict[str, Any]] = []
    r = await request_reading(client, advisor_id, t)
    assert r.status == 201, r.text
    rid = r.json()["id"]
    path = f"/v1/readings/{rid}"
    advisor_saw.append(_seen("accept", await advisor.post(path + "/accept", headers=at(t + 1000))))
    client_saw.append((await client.post(path + "/heartbeat", headers=at(t + 30_000))).json())
    advisor_saw.append(_seen("heartbeat", await advisor.post(path + "/heartbeat", headers=at(t + 40_000))))
    client_saw.append((await client.post(path + "/heartbeat", headers=at(t + 61_000))).json())  # minute 2
    advisor_saw.append(
        _seen("heartbeat after a charge", await advisor.post(path + "/heartbeat", headers=at(t + 62_000)))
    )
    advisor_saw.append(_seen("get", await advisor.get(path, headers=at(t + 63_000))))
    advisor_saw.append(_seen("list", await advisor.get("/v1/readings?limit=5", headers=at(t + 63_000))))
    r = await client.post(path + "/messages", json={"body": "Hello there"}, headers=at(t + 64_000))
    assert r.status == 201, r.text
    advisor_saw.append(_seen("messages", await advisor.get(path + "/messages", headers=at(t + 65_000))))
    advisor_saw.append(_seen("end", await advisor.post(path + "/end", headers=at(t + 90_000))))
    advisor_saw.append(_seen("end again", await advisor.post(path + "/end", headers=at(t + 91_000))))
    advisor_saw.append(
        _seen("heartbeat after the end", await advisor.post(path + "/heartbeat", headers=at(t + 92_000)))
    )
    advisor_saw.append(_seen("get after the end", await advisor.get(path, headers=at(t + 93_000))))
    client_saw.append((await client.get(path, headers=at(t + 93_000))).json())
    r = await client.post(path + "/review", json={"rating": 4, "comment": "Kind and clear"}, headers=at(t + 94_000))
    assert r.status == 201, r.text
    advisor_saw.append(
        _seen("reviews", await advisor.get(f"/v1/advisors/{advisor_id}/reviews", headers=at(t + 95_000)))
    )
    advisor_saw.append(_seen("earnings", await advisor.get("/v1/advisors/me/earnings", headers=at(t + 95_000))))
    # the client tops up long after: the ended reading looks the same to the advisor
    await fund(client_id, 12_345)
    advisor_saw.append(_seen("get after a deposit", await advisor.get(path, headers=at(t + 3_600_000))))
    advisor_saw.append(
        _seen("list after a deposit", await advisor.get("/v1/readings?limit=5", headers=at(t + 3_600_000)))
    )
    return advisor_saw, client_saw


async def test_the_advisor_sees_the_same_replies_whatever_the_clients_balance():
    t = now_ms()
    poor, poor_client = await _play(250, t)
    rich, rich_client = await _play(7000, t)
    assert [s[0] for s in poor] == [s[0] for s in rich]
    differences = [
        (a[0], json.dumps(a[1:], sort_keys=True), json.dumps(b[1:], sort_keys=True))
        for a, b in zip(poor, rich, strict=True)
        if a != b
    ]
    assert not differences, "the advisor's replies depend on the client's wallet:\n" + "\n".join(
        f"{label}:\n  2.50 -> {x}\n 70.00 -> {y}" for label, x, y in differences
    )
    # a deposit after the end changes nothing the advisor sees of the ended reading
    seen = {label: rest for label, *rest in poor}
    assert seen["get after a deposit"] == seen["get after the end"]
    # every billed reply the advisor gets carries none of the three wallet fields
    for label, status, body, _timing in poor:
        if isinstance(body, dict) and "billed_minutes" in body and label not in ("list", "list after a deposit"):
            assert status == 200, (label, body)
            assert (body["balance_cents"], body["minutes_left"], body["low_balance"]) == (None, None, None), label
    # the client keeps its own figures
    assert [(b["balance_cents"], b["minutes_left"], b["low_balance"]) for b in poor_client] == [
        (150, 1, True),
        (50, 0, True),
        (50, 0, True),
    ]
    assert [(b["balance_cents"], b["minutes_left"], b["low_balance"]) for b in rich_client] == [
        (6900, 69, False),
        (6800, 68, False),
        (6800, 68, False),
    ]
