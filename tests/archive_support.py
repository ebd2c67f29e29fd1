"""Helpers for the chat archive tests: the CHAT_ARCHIVE bucket, archive runs
(optionally with D1 faults, or an R2 binding that fails chosen operations),
ended readings with chat, and the replies of every page of a chat."""

import json
from typing import Any

import js
import local_runtime
from workers import _EnvWrapper

from clairvora import chat_archive, chat_archive_job
from clairvora.db import Counters, Database, sql
from clairvora.faults import FaultPlan
from market_support import active_reading, at, market_pair
from support import Client, Resp, database

DAY_MS = 86_400_000
# Archive runs in these tests take everything that is due, whenever it ended.
FAR_MS = 3650 * DAY_MS


def binding() -> Any:
    """The Worker's real CHAT_ARCHIVE binding, through the workers SDK."""
    return _EnvWrapper(local_runtime.makeEnv()).CHAT_ARCHIVE


async def run_job(
    now_ms: int,
    *,
    faults: FaultPlan | None = None,
    r2: Any = None,
    erasing_user_id: int | None = None,
    due_before_ms: int | None = None,
) -> tuple[dict[str, int], Counters, chat_archive.Bucket]:
    """One run of the archive job as the cron makes it, on its own Database
    (everything due however recent, unless `due_before_ms` says otherwise)."""
    db = Database(_EnvWrapper(local_runtime.makeEnv()).DB, primary=True, faults=faults)
    bucket = chat_archive.Bucket(r2 if r2 is not None else binding())
    if erasing_user_id is not None:
        done = await chat_archive_job.run(db, bucket, now_ms, erasing_user_id=erasing_user_id)
    else:
        due = now_ms + FAR_MS if due_before_ms is None else due_before_ms
        done = await chat_archive_job.run(db, bucket, now_ms, due_before_ms=due)
    return done, db.counters, bucket


async def pending_work() -> int:
    row = await database().first(
        sql(
            """SELECT (SELECT count(*) FROM message_archives WHERE state = 'due' OR erasures > erasures_applied)
                    + (SELECT count(*) FROM archive_object_deletions) AS n"""
        )
    )
    return int(row["n"])


async def drain(now_ms: int, runs: int = 200) -> None:
    """Archive whatever earlier tests left due, so that the next runs see only
    this test's readings (leases of earlier runs have expired a day later)."""
    for _ in range(runs):
        if not await pending_work():
            return
        await run_job(now_ms + DAY_MS)
    raise AssertionError("the archive queue did not drain")


async def archive_row(reading_id: Any) -> dict[str, Any] | None:
    return await database().first(sql("SELECT * FROM message_archives WHERE reading_id = ?", int(reading_id)))


async def d1_rows(reading_id: Any) -> list[dict[str, Any]]:
    result = await database().all(
        sql("SELECT * FROM messages WHERE reading_id = ? ORDER BY created_at_ms, id", int(reading_id))
    )
    return result.rows


async def r2_keys(reading_id: Any) -> list[str]:
    listed = await binding().list(prefix=f"{chat_archive.KEY_PREFIX}{int(reading_id)}/")
    return sorted(str(o.key) for o in listed["objects"])


async def r2_object(key: str) -> dict[str, Any]:
    found = await binding().get(key)
    assert found is not None, key
    return json.loads(bytes(await found.arrayBuffer()))


async def queued_deletions(reading_id: Any) -> list[str]:
    result = await database().all(
        sql("SELECT object_key FROM archive_object_deletions WHERE reading_id = ?", int(reading_id))
    )
    return [r["object_key"] for r in result.rows]


async def archive_until_done(reading_id: Any, now_ms: int, runs: int = 50) -> dict[str, Any]:
    for _ in range(runs):
        row = await archive_row(reading_id)
        if row is not None and row["state"] == "archived" and row["erasures"] == row["erasures_applied"]:
            return row
        await run_job(now_ms)
    raise AssertionError("not archived")


async def ended_chat(
    bodies: list[tuple[str, str]], t: int, *, funds: int = 5_000
) -> tuple[Client, int, Client, int, str]:
    """A reading with these messages ((who, body), who = 'client' | 'advisor',
    one ms apart), then ended by the client. (client, client_id, advisor, advisor_id, reading id)."""
    client, cid, advisor, aid = await market_pair(rate=100, funds=funds)
    reading = await active_reading(client, advisor, aid, t)
    rid = reading["id"]
    for i, (who, body) in enumerate(bodies):
        sender = client if who == "client" else advisor
        r = await sender.post(f"/v1/readings/{rid}/messages", json={"body": body}, headers=at(t + 1 + i))
        assert r.status == 201, r.text
    r = await client.post(f"/v1/readings/{rid}/end", headers=at(t + 1 + len(bodies)))
    assert r.status == 200 and r.json()["status"] == "ended", r.text
    return client, cid, advisor, aid, rid


async def every_page(client: Client, reading_id: str, limits: tuple[int | None, ...] = (None, 1, 3, 100)) -> list:
    """(path, status, body) of every page of the chat, for each page size, by
    following next_cursor; plus a cursor past the end and a malformed one."""
    out = []
    for limit in limits:
        cursor = None
        while True:
            params = [f"limit={limit}"] if limit else []
            if cursor:
                params.append(f"cursor={cursor}")
            path = f"/v1/readings/{reading_id}/messages" + ("?" + "&".join(params) if params else "")
            r = await client.get(path)
            out.append((path, r.status, r.json()))
            assert r.status == 200, r.text
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
    for tail in ("?cursor=99999999999999.1", "?cursor=abc", "?limit=0", "?limit=101"):
        r = await client.get(f"/v1/readings/{reading_id}/messages{tail}")
        out.append((tail, r.status, r.json()))
    return out


def r2_figures(resp: Resp) -> dict[str, int]:
    """The R2 operations a reply reports in server-timing (none: {})."""
    header = resp.headers.get("server-timing", "")
    if "r2;desc=" not in header:
        return {}
    desc = header.split('r2;desc="', 1)[1].split('"', 1)[0]
    return {k: int(v) for k, v in (part.split("=") for part in desc.split())}


class FlakyR2:
    """The real CHAT_ARCHIVE binding, with chosen operations (numbered from 1
    over get/put/delete) failing as a binding error does: "before" it reaches
    R2, or "after" R2 has done it (the answer is lost)."""

    def __init__(self, plan: dict[int, str]) -> None:
        assert all(when in ("before", "after") for when in plan.values())
        self._real = binding()
        self.plan = plan
        self.calls = 0
        self.failed = 0

    async def _op(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        when = self.plan.get(self.calls)
        if when == "before":
            await self._raise(name)
        result = await getattr(self._real, name)(*args, **kwargs)
        if when == "after":
            await self._raise(name)
        return result

    async def _raise(self, name: str) -> None:
        self.failed += 1
        # A JsException, as the binding raises: a rejected JS promise awaited.
        await js.Promise.reject(js.Error.new(f"R2 {name} failed (injected)"))

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        return await self._op("get", *args, **kwargs)

    async def put(self, *args: Any, **kwargs: Any) -> Any:
        return await self._op("put", *args, **kwargs)

    async def delete(self, *args: Any, **kwargs: Any) -> Any:
        return await self._op("delete", *args, **kwargs)
