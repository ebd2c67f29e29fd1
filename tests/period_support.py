"""What the ledger-period tests share (test_periods.py, test_period_checks.py): a
small mixed history, an admin whose token outlives the moved clock, a close and a
proof through the admin routes, the next period end after everything D1 holds."""

import time
from typing import Any

import local_runtime

from clairvora import ledger, periods, reconcile
from clairvora.clock import Clock, rfc3339
from clairvora.db import sql
from clairvora.ids import new_id
from money_support import credit, user_with_wallet
from photo_support import _EnvWrapper
from support import database, new_user, token_for

HOUR_MS = 3_600_000
clients: dict[int, Any] = {}  # user id -> its Client, for the users history() makes


def archive() -> Any:
    return _EnvWrapper(local_runtime.makeEnv()).LEDGER_ARCHIVE


def at(now_ms: int) -> dict[str, str]:
    return {"x-test-now-ms": str(now_ms)}


async def pay(user_id: int, to_user_id: int, cents: int, now_ms: int) -> None:
    """A wallet-to-earnings movement (three legs with the platform's share)."""
    transfer_id = new_id()
    legs = [
        ledger.Leg(ledger.wallet_of(user_id), -cents),
        ledger.Leg(ledger.earnings_of(to_user_id), cents - 1),
        ledger.Leg(ledger.PLATFORM_REVENUE, 1),
    ]
    await database().batch(
        ledger.transfer(
            transfer_id=transfer_id, key=f"test:pay:{transfer_id}", kind="adjustment", legs=legs, now_ms=now_ms
        )
    )


async def history(now_ms: int) -> tuple[int, int]:
    """Two users with deposits and payments between them, created at now_ms."""
    db = database()
    client_id, client = await user_with_wallet("pc")
    advisor_id, advisor = await user_with_wallet("pa")
    clients.update({client_id: client, advisor_id: advisor})
    await db.run(
        sql("INSERT INTO accounts (kind, owner_user_id, created_at_ms) VALUES ('advisor_earnings', ?, 1)", advisor_id)
    )
    for cents in (1000, 500):
        await credit(db, client_id, cents, now_ms)
    for cents in (30, 40, 50, 60):
        await pay(client_id, advisor_id, cents, now_ms)
    return client_id, advisor_id


async def long_lived_admin() -> Any:
    """An admin whose token outlives the hours these tests move the clock forward."""
    sub, client = await new_user("padmin")
    client.token = await token_for(sub, exp=int(time.time()) + 8 * 86400)
    me = (await client.get("/v1/me")).json()
    await database().run(sql("UPDATE users SET is_admin = 1 WHERE id = ?", int(me["id"])))
    return client


async def close(admin: Any, ends_before_ms: int, now_ms: int) -> dict[str, Any]:
    started = await admin.post(
        "/v1/admin/ledger/periods", json={"ends_before": rfc3339(ends_before_ms)}, headers=at(now_ms)
    )
    assert started.status == 201, started.text
    period = started.json()["period"]
    assert period["state"] == "closing"
    for _ in range(500):
        step = await admin.post(f"/v1/admin/ledger/periods/{period['id']}/advance", headers=at(now_ms))
        assert step.status == 200, step.text
        assert "calls=2 " in step.headers["server-timing"], step.headers["server-timing"]
        if step.json()["outcome"] == "closed":
            break
        assert step.json()["outcome"] == "archived", step.text
    got = await admin.get(f"/v1/admin/ledger/periods/{period['id']}")
    assert got.json()["period"]["state"] == "closed", got.text
    return got.json()["period"]


async def verify(admin: Any, period_id: str) -> dict[str, Any]:
    """The whole proof, following next_cursor: {ok, problems, segments_verified, entries_verified}."""
    total = {"ok": True, "problems": [], "segments_verified": 0, "entries_verified": 0}
    cursor = ""
    for _ in range(1000):
        proved = await admin.post(f"/v1/admin/ledger/periods/{period_id}/verify{cursor}")
        assert proved.status == 200, proved.text
        page = proved.json()
        assert page["segments_verified"] <= periods.MAX_VERIFY_SEGMENTS
        total["ok"] = total["ok"] and page["ok"]
        total["problems"] += page["problems"]
        total["segments_verified"] += page["segments_verified"]
        total["entries_verified"] += page["entries_verified"]
        if page["next_cursor"] is None:
            return total
        cursor = f"?after_segment={page['next_cursor']}"
    raise AssertionError("the proof never finished")


async def next_end() -> int:
    """An end after every entry D1 holds (earlier test files move their clocks
    forward) and after the last period: the next close takes all history."""
    row = await database().first(
        sql(
            "SELECT max(created_at_ms) AS entries, (SELECT max(ends_before_ms) FROM ledger_periods) AS ends"
            " FROM ledger_entries"
        )
    )
    assert row is not None
    end = max(Clock().now_ms(), int(row["entries"] or 0), int(row["ends"] or 0)) + 1
    assert end < time.time() * 1000 + 7 * 86_400_000, "the admin token would not outlive this test's clock"
    return end


async def check_ok() -> None:
    report = await reconcile.check(database())
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]


async def pages(client: Any, path: str, limit: int) -> list[list[dict[str, Any]]]:
    """Every page of a history route, following next_cursor."""
    out, cursor = [], ""
    for _ in range(100):
        r = await client.get(f"{path}?limit={limit}{cursor}")
        assert r.status == 200, r.text
        out.append(r.json()["items"])
        if r.json()["next_cursor"] is None:
            return out
        cursor = f"&cursor={r.json()['next_cursor']}"
    raise AssertionError("endless pages")
