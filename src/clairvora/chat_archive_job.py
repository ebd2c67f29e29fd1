"""Writing chat archives to R2: the cron's job, and the erasure's rewrites.

One run, bounded (D1 calls, claims, rows, bytes, R2 operations) and safe to
repeat, to crash anywhere and to race another run:

1. ONE D1 batch claims work and reads what it needs: due archives (ended at
   least MESSAGE_ARCHIVE_DELAY_SECONDS ago) and archived objects an erasure
   must rewrite, each claim an `attempt` + 1 under this run's random token and
   a lease; the previous attempt's key, if it never went live, is queued for
   deletion; the claimed records; the first CLAIM_ROWS message rows; the queue
   of R2 objects to delete.
2. Per claim, in R2: a due archive's rows (more pages if the first read did not
   hold them) become the object at the attempt's own key; a rewrite reads the
   live object (checksum verified) and writes it again without the erased
   participant's messages. Every put carries the sha256 we computed (R2 refuses
   a mismatch) and the checksum R2 reports back is compared again.
3. ONE D1 batch finalizes: a due archive goes live only while D1 still holds as
   many messages as the object (nothing can be added to an ended reading, so
   that is the same set), and that flip deletes the rows (trigger); a rewrite
   goes live only for its own claim, and queues the object it replaced; an
   attempt that did not go live queues its own key; every claim is released.
4. R2 deletes the queued objects; one D1 call forgets them.

A failure at any step leaves D1 as it was or as step 3 made it: the rows stay
until an object holding exactly them is live, a lost claim expires with its
lease and the next attempt queues what the lost one may have written. Two runs
never write one key. The only assumption: no put starts later than
PUT_DEADLINE_S into a run, and none takes a lease (LEASE_MS) to land.
"""

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from pyodide.ffi import JsException

from . import chat_archive, logs
from .chat_archive import Bucket, Stored, object_key
from .config import Settings
from .db import Database, Statement, placeholders, sql
from .errors import Problem

CLAIMS_PER_RUN = 10  # due archives claimed per run
REWRITES_PER_RUN = 5  # erasure rewrites claimed per run
CLAIM_ROWS = 1000  # message rows read with the claims
PAGE_ROWS = 1000  # rows per further read of one reading
MAX_MESSAGES = 5000  # more stay in D1 ('oversize'): one object is read whole
MAX_OBJECT_BYTES = 8 * 1024 * 1024
LEASE_MS = 10 * 60_000
PUT_DEADLINE_S = 120
D1_CALLS_PER_RUN = 12  # this job's own budget, finalize and deletions included
D1_CALL_CEILING = 40  # the cron's shared count: deposit resolution (last) stops at 45 of 50
DELETES_PER_RUN = 100

_COLUMNS = "id, reading_id, sender_id, key_version, iv_b64, ciphertext_b64, created_at_ms"
_CLAIM = "UPDATE message_archives SET attempt = attempt + 1, attempt_token = ?, attempt_at_ms = ? WHERE reading_id IN "
_LEASE_FREE = "(attempt_at_ms IS NULL OR attempt_at_ms < ?)"
_CLAIM_DUE = f"""{_CLAIM}(SELECT reading_id FROM message_archives
  WHERE state = 'due' AND due_at_ms <= ? AND {_LEASE_FREE} ORDER BY due_at_ms LIMIT ?)"""  # noqa: S608 - constant text
_CLAIM_ERASING = f"""{_CLAIM}(SELECT reading_id FROM message_archives
  WHERE erasures > erasures_applied AND {_LEASE_FREE} LIMIT ?)"""  # noqa: S608 - constant text
_CLAIM_ERASING_OF_USER = f"""{_CLAIM}(SELECT reading_id FROM message_archives
  WHERE reading_id IN (SELECT id FROM readings WHERE client_id = ? UNION ALL SELECT id FROM readings WHERE advisor_id = ?)
    AND erasures > erasures_applied AND {_LEASE_FREE} LIMIT ?)"""  # noqa: S608 - constant text
# The attempt before this claim, if it never went live: whatever it wrote goes.
_QUEUE_PREVIOUS = """INSERT INTO archive_object_deletions (object_key, reading_id, created_at_ms)
SELECT 'chat/' || reading_id || '/' || (attempt - 1) || '.json', reading_id, ?
FROM message_archives WHERE attempt_token = ? AND attempt - 1 > generation
ON CONFLICT (object_key) DO NOTHING"""
_CLAIMED = """SELECT a.reading_id, a.state, a.due_at_ms, a.attempt, a.generation, a.object_key, a.sha256, a.erasures,
       r.client_id, r.advisor_id,
       (SELECT erased_at_ms FROM users WHERE id = r.client_id) IS NOT NULL AS client_erased,
       (SELECT erased_at_ms FROM users WHERE id = r.advisor_id) IS NOT NULL AS advisor_erased
FROM message_archives a JOIN readings r ON r.id = a.reading_id
WHERE a.attempt_token = ? ORDER BY a.reading_id"""
_CLAIMED_ROWS = f"""SELECT {_COLUMNS} FROM messages
WHERE reading_id IN (SELECT reading_id FROM message_archives WHERE attempt_token = ? AND state = 'due')
ORDER BY reading_id, created_at_ms, id LIMIT ?"""  # noqa: S608 - constant text
_MORE_ROWS = f"""SELECT {_COLUMNS} FROM messages
WHERE reading_id = ? AND (created_at_ms, id) > (?, ?) ORDER BY created_at_ms, id LIMIT ?"""  # noqa: S608
_QUEUED = "SELECT object_key FROM archive_object_deletions LIMIT ?"
_FACTS = """object_key = ?, sha256 = ?, r2_etag = ?, size_bytes = ?, message_count = ?, client_message_count = ?,
  advisor_message_count = ?, last_message_at_ms = ?, attempt_token = NULL, attempt_at_ms = NULL"""
_ARCHIVE = f"""UPDATE message_archives SET state = 'archived', generation = attempt, archived_at_ms = ?, {_FACTS}
WHERE reading_id = ? AND attempt_token = ? AND attempt = ? AND state = 'due'
  AND (SELECT count(*) FROM messages WHERE reading_id = ?) = ?"""  # noqa: S608 - constant text
_REWRITE = f"""UPDATE message_archives SET generation = attempt, erasures_applied = ?, {_FACTS}
WHERE reading_id = ? AND attempt_token = ? AND attempt = ? AND state = 'archived' AND generation = ?"""  # noqa: S608
_QUEUE_REPLACED = """INSERT INTO archive_object_deletions (object_key, reading_id, created_at_ms)
SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM message_archives WHERE reading_id = ? AND object_key = ?)
ON CONFLICT (object_key) DO NOTHING"""
_QUEUE_UNUSED = """INSERT INTO archive_object_deletions (object_key, reading_id, created_at_ms)
SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM message_archives WHERE reading_id = ? AND object_key = ?)
ON CONFLICT (object_key) DO NOTHING"""
_OVERSIZE = """UPDATE message_archives SET state = 'oversize', attempt_token = NULL, attempt_at_ms = NULL
WHERE reading_id = ? AND attempt_token = ? AND state = 'due'"""
_RELEASE = "UPDATE message_archives SET attempt_token = NULL, attempt_at_ms = NULL WHERE attempt_token = ?"


@dataclass
class _Work:
    claim: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False
    oversize: bool = False
    put_key: str | None = None  # a put was tried at this key (it may have landed)
    stored: Stored | None = None  # ...and R2 confirmed our checksum
    kept: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reading_id(self) -> int:
        return int(self.claim["reading_id"])

    @property
    def rewrite(self) -> bool:
        return self.claim["state"] == "archived"


class _Budget:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._start = db.counters.calls

    def left(self, reserve: int) -> bool:
        """Whether one more call still leaves `reserve` calls of the job's budget."""
        used = self._db.counters.calls - self._start
        return used + 1 + reserve <= D1_CALLS_PER_RUN and self._db.counters.calls + 1 + reserve <= D1_CALL_CEILING


async def cron_job(db: Database, env: Any, settings: Settings, now_ms: int) -> dict[str, int]:
    """The cron's entry (cron.py): archive what ended MESSAGE_ARCHIVE_DELAY_SECONDS ago."""
    due_before_ms = now_ms - settings.message_archive_delay_s * 1000
    return await run(db, Bucket.of(env), now_ms, due_before_ms=due_before_ms)


async def erasure_job(db: Database, env: Any, user_id: int, now_ms: int) -> None:
    """The erasure's waitUntil (erasure.py): that user's archived objects
    rewritten now; whatever this does not finish, the cron does."""
    done = await run(db, Bucket.of(env), now_ms, erasing_user_id=user_id)
    logs.info("chat_erasure_rewrites", **done)


async def run(
    db: Database,
    bucket: Bucket,
    now_ms: int,
    *,
    due_before_ms: int | None = None,
    erasing_user_id: int | None = None,
) -> dict[str, int]:
    """The cron's run (`due_before_ms`: archive what ended by then, and rewrite
    any erased object), or the erasure's (`erasing_user_id`: that user's
    rewrites only). Counts for the cron's log."""
    budget = _Budget(db)
    counts = {"chat_archived": 0, "chat_rewritten": 0, "chat_oversize": 0, "chat_released": 0}
    if not budget.left(reserve=0):
        return counts
    started_s = time.monotonic()
    token = secrets.token_hex(16)
    lease_cut = now_ms - LEASE_MS
    claims: list[Statement] = []
    if erasing_user_id is None:
        claims.append(sql(_CLAIM_ERASING, token, now_ms, lease_cut, REWRITES_PER_RUN))
        if due_before_ms is not None:
            claims.append(sql(_CLAIM_DUE, token, now_ms, due_before_ms, lease_cut, CLAIMS_PER_RUN))
    else:
        uid = erasing_user_id
        claims.append(sql(_CLAIM_ERASING_OF_USER, token, now_ms, uid, uid, lease_cut, REWRITES_PER_RUN))
    results = await db.batch(
        [
            *claims,
            sql(_QUEUE_PREVIOUS, now_ms, token),
            sql(_CLAIMED, token),
            sql(_CLAIMED_ROWS, token, CLAIM_ROWS + 1),
            sql(_QUEUED, DELETES_PER_RUN),
        ]
    )
    claimed, first_rows, queued = results[-3].rows, results[-2].rows, results[-1].rows
    if claimed:
        works = [_Work(c) for c in claimed]
        await _read_rows(db, budget, [w for w in works if not w.rewrite], first_rows)
        for work in works:
            if time.monotonic() - started_s > PUT_DEADLINE_S:
                break  # released below; a later run takes it
            await (_rewrite(bucket, work) if work.rewrite else _write(bucket, work))
        planned = _finalize(works, token, now_ms)
        final = await db.batch([*(statement for _, statement in planned), sql(_QUEUED, DELETES_PER_RUN)])
        for (tag, _), result in zip(planned, final, strict=False):
            if tag == "chat_released":
                counts[tag] += result.changes
            elif tag is not None and result.changes:
                # One archive each (D1's `changes` also counts the rows its trigger deleted).
                counts[tag] += 1
        queued = final[-1].rows
    deleted = 0
    if queued and budget.left(reserve=0):
        deleted = await _delete_queued(db, bucket, [str(r["object_key"]) for r in queued])
    return {**counts, "chat_objects_deleted": deleted, "chat_r2_ops": bucket.operations}


async def _read_rows(db: Database, budget: _Budget, works: list[_Work], first: list[dict[str, Any]]) -> None:
    """Each due claim's rows, oldest first: those the claim batch read, then
    further pages while the budget lasts (finalize and deletion reserved). The
    claim batch read readings in id order, so all but its last are complete.
    Pages go to the claim that has waited longest first: within one run's
    budget (9 pages of PAGE_ROWS) it is always finished or found oversize, so
    the queue moves even behind a chat that fills a whole run."""
    truncated = len(first) > CLAIM_ROWS
    first = first[:CLAIM_ROWS]
    last_read = int(first[-1]["reading_id"]) if first else None
    for work in works:
        rid = work.reading_id
        work.rows = [r for r in first if int(r["reading_id"]) == rid]
        work.complete = not truncated or (last_read is not None and rid < last_read)
    for work in sorted(works, key=lambda w: (int(w.claim["due_at_ms"]), w.reading_id)):
        while not work.complete and len(work.rows) <= MAX_MESSAGES and budget.left(reserve=2):
            after = (int(work.rows[-1]["created_at_ms"]), int(work.rows[-1]["id"])) if work.rows else (-1, -1)
            page = (await db.all(sql(_MORE_ROWS, work.reading_id, after[0], after[1], PAGE_ROWS + 1))).rows
            work.rows += page[:PAGE_ROWS]
            work.complete = len(page) <= PAGE_ROWS
        work.oversize = len(work.rows) > MAX_MESSAGES


async def _put(bucket: Bucket, work: _Work, rows: list[dict[str, Any]]) -> None:
    claim = work.claim
    data = chat_archive.encode(work.reading_id, int(claim["client_id"]), int(claim["advisor_id"]), rows)
    if len(data) > MAX_OBJECT_BYTES:
        work.oversize = not work.rewrite  # a rewrite only shrinks an object that fitted
        return
    sha256 = hashlib.sha256(data).hexdigest()
    work.put_key = object_key(work.reading_id, int(claim["attempt"]))
    try:
        stored = await bucket.put(work.put_key, data, sha256, work.reading_id)
    except JsException as exc:
        logs.warning("chat_archive_put_failed", reading_id=work.reading_id, error=str(exc)[:200])
        return
    if stored.sha256 != sha256 or stored.size != len(data):
        logs.error("chat_archive_put_mismatch", reading_id=work.reading_id)
        return
    work.stored, work.kept = stored, rows


async def _write(bucket: Bucket, work: _Work) -> None:
    if work.complete and not work.oversize:
        await _put(bucket, work, work.rows)


async def _rewrite(bucket: Bucket, work: _Work) -> None:
    """The live object again, without the messages of erased participants."""
    claim = work.claim
    try:
        data = await bucket.get(str(claim["object_key"]))
    except JsException as exc:
        logs.warning("chat_archive_get_failed", reading_id=work.reading_id, error=str(exc)[:200])
        return
    if data is None:
        logs.error("chat_archive_object_missing", reading_id=work.reading_id)
        return
    try:
        rows = chat_archive.decode(data, str(claim["sha256"]), work.reading_id)
    except Problem:
        return  # logged by decode; the object stays unreadable, nobody is served it
    hidden = {int(claim["client_id"])} if claim["client_erased"] else set()
    if claim["advisor_erased"]:
        hidden.add(int(claim["advisor_id"]))
    await _put(bucket, work, [m for m in rows if int(m["sender_id"]) not in hidden])


def _facts(work: _Work) -> tuple[Any, ...]:
    assert work.stored is not None and work.put_key is not None
    client_id = int(work.claim["client_id"])
    by_client = sum(1 for m in work.kept if int(m["sender_id"]) == client_id)
    last = max((int(m["created_at_ms"]) for m in work.kept), default=None)
    stored = work.stored
    return (
        work.put_key,
        stored.sha256,
        stored.etag,
        stored.size,
        len(work.kept),
        by_client,
        len(work.kept) - by_client,
        last,
    )


def _finalize(works: list[_Work], token: str, now_ms: int) -> list[tuple[str | None, Statement]]:
    """The statements of step 3, in order, each with the count its changes add to."""
    out: list[tuple[str | None, Statement]] = []
    for work in works:
        rid, attempt = work.reading_id, int(work.claim["attempt"])
        if work.stored is not None and work.rewrite:
            generation = int(work.claim["generation"])
            out.append(
                (
                    "chat_rewritten",
                    sql(_REWRITE, int(work.claim["erasures"]), *_facts(work), rid, token, attempt, generation),
                )
            )
            out.append((None, sql(_QUEUE_REPLACED, str(work.claim["object_key"]), rid, now_ms, rid, work.put_key)))
        elif work.stored is not None:
            out.append(
                ("chat_archived", sql(_ARCHIVE, now_ms, *_facts(work), rid, token, attempt, rid, len(work.kept)))
            )
        if work.put_key is not None:
            out.append((None, sql(_QUEUE_UNUSED, work.put_key, rid, now_ms, rid, work.put_key)))
        if work.oversize:
            logs.warning("chat_archive_oversize", reading_id=rid, message_rows=len(work.rows))
            out.append(("chat_oversize", sql(_OVERSIZE, rid, token)))
    out.append(("chat_released", sql(_RELEASE, token)))
    return out


async def _delete_queued(db: Database, bucket: Bucket, keys: list[str]) -> int:
    """Step 4. R2 first: a key forgotten by D1 is never deleted again."""
    try:
        await bucket.delete(keys)
    except JsException as exc:
        logs.warning("chat_archive_delete_failed", count=len(keys), error=str(exc)[:200])
        return 0
    await db.run(
        sql(
            f"DELETE FROM archive_object_deletions WHERE object_key IN ({placeholders(len(keys))})",  # noqa: S608 - only '?'s
            *keys,
        )
    )
    return len(keys)
