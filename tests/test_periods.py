"""Closing ledger periods (periods.py, period_routes.py, migration 0096): the
closed history goes to R2 in verified segments, D1 keeps the open period, the
ledger check starts from the closing balances, and an admin re-proves a
closed period from R2.

The suite shares one D1, so the first close here takes everything the earlier
test files wrote: it is the close of a real, mixed history."""

from typing import Any

import local_runtime

from clairvora import ledger, ledger_archive, periods
from clairvora.clock import Clock, rfc3339
from clairvora.db import TriggerAbort, sql
from period_support import (
    HOUR_MS,
    archive,
    at,
    check_ok,
    clients,
    close,
    history,
    long_lived_admin,
    next_end,
    pages,
    pay,
    verify,
)
from support import database


async def test_the_whole_history_closes_into_r2_and_the_check_starts_from_it():
    admin = await long_lived_admin()
    client_id, advisor_id = await history(Clock().now_ms())
    client, advisor = clients[client_id], clients[advisor_id]
    wallet_before = await pages(client, "/v1/wallet/transactions", 4)
    earnings_before = await pages(advisor, "/v1/advisors/me/earnings", 3)
    now = await next_end()
    balance = await ledger.balance_cents(database(), ledger.wallet_of(client_id))
    period = await close(admin, now, now + 2 * HOUR_MS)
    assert period["entries"] > 0 and period["segments"] >= 1
    db = database()
    # The closed entries left D1; the newest transfer's entries stay (rowids are never reused).
    left = await db.all(
        sql("SELECT DISTINCT transfer_id FROM ledger_entries WHERE id <= ?", int(period["last_entry_id"]))
    )
    assert len(left.rows) <= 1
    closings = await db.first(
        sql(
            "SELECT c.balance_cents, c.sequence FROM account_closings c JOIN accounts a ON a.id = c.account_id"
            " WHERE a.owner_user_id = ? AND a.kind = 'client_wallet'",
            client_id,
        )
    )
    assert closings == {"balance_cents": balance, "sequence": 6}
    # Balances stay O(1) and unchanged; the check holds from the closing balances on.
    assert await ledger.balance_cents(db, ledger.wallet_of(client_id)) == balance
    await check_ok()
    proof = await verify(admin, period["id"])
    assert proof["ok"], proof["problems"]
    assert proof["entries_verified"] == period["entries"]
    # Each side's history reads the same from R2 as it did from D1, page by page.
    assert await pages(client, "/v1/wallet/transactions", 4) == wallet_before
    assert await pages(advisor, "/v1/advisors/me/earnings", 3) == earnings_before
    assert sum(len(p) for p in wallet_before) == 6
    # The open period goes on from the closing balance, and the check follows it.
    await pay(client_id, advisor_id, 25, now + 3 * HOUR_MS)
    assert await ledger.balance_cents(db, ledger.wallet_of(client_id)) == balance - 25
    await check_ok()


async def test_a_small_segment_size_splits_a_period_without_splitting_a_transfer(monkeypatch):
    monkeypatch.setattr(periods, "SEGMENT_MAX_ENTRIES", 5)
    admin = await long_lived_admin()
    await history(Clock().now_ms())
    await history(Clock().now_ms())
    now = await next_end()
    period = await close(admin, now, now + 2 * HOUR_MS)
    segments = await database().all(
        sql(
            "SELECT first_entry_id, last_entry_id, entries, transfers FROM ledger_segments WHERE period_id = ?"
            " ORDER BY last_entry_id",
            int(period["id"]),
        )
    )
    assert len(segments.rows) >= 4
    assert all(s["entries"] <= 5 for s in segments.rows)
    # Each segment ends where a transfer ends: no transfer has entries in two segments.
    keys = await database().all(sql("SELECT object_key FROM ledger_segments WHERE period_id = ?", int(period["id"])))
    seen: set[int] = set()
    for key in keys.rows:
        stored = await archive().get(key["object_key"])
        _trailer, rows = ledger_archive.decode(bytes(await stored.arrayBuffer()))
        transfers = {r["transfer_id"] for r in rows}
        assert not transfers & seen
        seen |= transfers
    proof = await verify(admin, period["id"])
    assert proof["ok"], proof["problems"]
    assert proof["segments_verified"] == len(segments.rows)
    await check_ok()


async def test_an_edited_or_missing_archive_fails_the_proof():
    admin = await long_lived_admin()
    await history(Clock().now_ms())
    now = await next_end()
    period = await close(admin, now, now + 2 * HOUR_MS)
    row = await database().first(
        sql(
            "SELECT object_key FROM ledger_segments WHERE period_id = ? ORDER BY last_entry_id DESC LIMIT 1",
            int(period["id"]),
        )
    )
    assert row is not None
    bucket = archive()
    original = bytes(await (await bucket.get(row["object_key"])).arrayBuffer())
    edited = original.replace(b'"amount_cents":-30', b'"amount_cents":-31', 1)
    assert edited != original
    await bucket.put(row["object_key"], edited)
    proof = await verify(admin, period["id"])
    assert not proof["ok"] and "sha256" in proof["problems"][0], proof
    await bucket.delete(row["object_key"])
    proof = await verify(admin, period["id"])
    assert not proof["ok"] and "missing" in proof["problems"][0], proof
    await bucket.put(row["object_key"], original)
    assert (await verify(admin, period["id"]))["ok"]


async def test_open_entries_stay_append_only():
    db = database()
    await history(Clock().now_ms() + 30 * HOUR_MS)
    newest = await db.first(sql("SELECT max(id) AS id FROM ledger_entries"))
    assert newest is not None
    try:
        await db.run(sql("DELETE FROM ledger_entries WHERE id = ?", newest["id"]))
    except TriggerAbort as exc:
        assert exc.code == "ledger_append_only"
    else:
        raise AssertionError("an open entry was deleted")


async def test_periods_close_in_order_one_at_a_time_and_only_once_ended():
    admin = await long_lived_admin()
    await history(Clock().now_ms())
    now = await next_end() + 3 * HOUR_MS

    async def start(ends_before_ms: int) -> Any:
        return await admin.post(
            "/v1/admin/ledger/periods", json={"ends_before": rfc3339(ends_before_ms)}, headers=at(now)
        )

    not_ended = await start(now - HOUR_MS + 60_000)
    assert not_ended.status == 422 and not_ended.json()["code"] == "period_not_ended"
    last = await database().first(sql("SELECT max(ends_before_ms) AS ends FROM ledger_periods"))
    assert last is not None and last["ends"] is not None
    earlier = await start(int(last["ends"]))  # not after the last period's end
    assert earlier.status == 409 and earlier.json()["code"] == "period_out_of_order", earlier.text
    opened = await start(now - 2 * HOUR_MS)
    assert opened.status == 201
    second = await start(now - HOUR_MS - 1)
    assert second.status == 409 and second.json()["code"] == "period_close_in_progress"
    bad = await admin.post("/v1/admin/ledger/periods", json={"ends_before": "yesterday"}, headers=at(now))
    assert bad.status == 400 and bad.json()["field"] == "ends_before"
    no_such_day = await admin.post("/v1/admin/ledger/periods", json={"ends_before": "2026-02-30T00:00:00Z"})
    assert no_such_day.status == 422 and no_such_day.json()["code"] == "invalid_instant"
    # Finish it so later tests start from no period in progress.
    pid = opened.json()["period"]["id"]
    for _ in range(100):
        step = await admin.post(f"/v1/admin/ledger/periods/{pid}/advance", headers=at(now))
        if step.json()["outcome"] == "closed":
            break


async def test_a_step_that_dies_after_writing_r2_is_retried_harmlessly():
    admin = await long_lived_admin()
    await history(Clock().now_ms())
    now = await next_end()
    started = await admin.post(
        "/v1/admin/ledger/periods", json={"ends_before": rfc3339(now)}, headers=at(now + 2 * HOUR_MS)
    )
    pid = started.json()["period"]["id"]
    before = await database().first(sql("SELECT count(*) AS n FROM ledger_segments"))
    # Call 1 is the caller lookup with the step's read; call 2 is the recording batch.
    for fault in ("2", "2;after"):
        step = await admin.post(
            f"/v1/admin/ledger/periods/{pid}/advance", headers={**at(now + 2 * HOUR_MS), "x-test-d1-fault": fault}
        )
        assert step.status == 503, step.text
    after = await database().first(sql("SELECT count(*) AS n FROM ledger_segments"))
    assert before is not None and after is not None
    assert after["n"] - before["n"] <= 1  # ';after' committed one; the plain fault none
    for _ in range(100):
        state = (await admin.get(f"/v1/admin/ledger/periods/{pid}")).json()["period"]["state"]
        if state == "closed":
            break
        step = await admin.post(f"/v1/admin/ledger/periods/{pid}/advance", headers=at(now + 2 * HOUR_MS))
        assert step.status == 200, step.text
    assert (await verify(admin, pid))["ok"]
    await check_ok()


async def test_the_cron_closes_last_month_by_itself_when_automatic():
    db = database()
    latest = await db.first(sql("SELECT max(ends_before_ms) AS ends FROM ledger_periods"))
    assert latest is not None
    # Ten days into a month at least 40 days after the last period: a month boundary lies
    # between, and the month before is past the earnings hold (7 days) plus a day.
    when = periods._month_start_ms(int(latest["ends"] or 0) + 40 * 86_400_000) + 10 * 86_400_000
    await history(when - 35 * 86_400_000)
    count = await db.first(sql("SELECT count(*) AS n FROM ledger_periods"))
    await local_runtime.dispatchScheduled("* * * * *", when)  # manual locally: nothing opens
    assert await db.first(sql("SELECT count(*) AS n FROM ledger_periods")) == count
    for _ in range(100):
        await local_runtime.dispatchScheduled("* * * * *", when, {"LEDGER_PERIOD_CLOSE": "auto"})
        newest = await db.first(
            sql("SELECT state, ends_before_ms FROM ledger_periods ORDER BY ends_before_ms DESC LIMIT 1")
        )
        assert newest is not None
        if newest["state"] == "closed":
            break
    assert newest["state"] == "closed"
    assert newest["ends_before_ms"] == periods._month_start_ms(when) <= when - periods.CLOSE_GRACE_MS
    await check_ok()
