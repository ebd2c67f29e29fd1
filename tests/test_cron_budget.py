"""The cron's jobs together, in one worst-case run: each job stops itself at its
own ceiling of the run's shared D1 call count (settling 35, promo expiry 40,
payouts 38, chat archive 40, refund and deposit resolution 40 and 45), so a run
with more work than fits stays under D1's 50 calls per invocation and no job
fails on the cap; what did not fit is done by the next runs. (Measured: 12 silent
readings and 25 expired grants took two runs of 39 and 31 calls.)"""

import json
import re
from typing import Any

import local_runtime

from clairvora import cron, db, promo
from clairvora.db import sql
from market_support import MINUTE_MS, active_reading, long_lived_user, market_pair, now_ms
from promo_support import DAY_MS, admin, give_credit
from support import database

_CALLS = re.compile(r"calls=(\d+)")
SILENT_READINGS = cron.MAX_TIMED_OUT_READINGS_PER_RUN + 2
EXPIRING_GRANTS = promo.MAX_EXPIRIES_PER_RUN + 5


def _cron_runs(out: str) -> list[dict[str, Any]]:
    """The cron's own records in the Worker's output (one "cron" line per run)."""
    records = []
    for line in out.splitlines():
        if line.startswith("{") and '"event":"cron' in line:
            records.append(json.loads(line))
    return records


async def _left(reading_ids: list[int], grantee_ids: list[int]) -> tuple[int, int]:
    """This test's readings still active, and its grantees' grants still holding credit."""
    d = database()
    readings = await d.first(
        sql(
            "SELECT count(*) AS n FROM readings WHERE status = 'active' AND id IN (SELECT value FROM json_each(?))",
            json.dumps(reading_ids),
        )
    )
    grants = await d.first(
        sql(
            "SELECT count(*) AS n FROM promo_grants WHERE remaining_cents > 0 AND client_id IN (SELECT value FROM json_each(?))",
            json.dumps(grantee_ids),
        )
    )
    return int(readings["n"]), int(grants["n"])


async def test_a_run_with_more_work_than_fits_stays_under_the_cap_and_the_next_runs_finish_it(capsys):
    t = now_ms()
    reading_ids, grantee_ids = [], []
    for _ in range(SILENT_READINGS):  # more than one run settles, each silent long before `later`
        client, _cid, advisor, advisor_id = await market_pair(rate=100, funds=1000)
        reading_ids.append(int((await active_reading(client, advisor, advisor_id, t))["id"]))
    admin_client = await admin()
    for _ in range(EXPIRING_GRANTS):  # more than one run expires, each of its own code
        grantee, grantee_id = await long_lived_user("grantee")
        await give_credit(admin_client, grantee, 100, t, valid_days=1)
        grantee_ids.append(grantee_id)
    later = t + 2 * DAY_MS + 10 * MINUTE_MS
    assert await _left(reading_ids, grantee_ids) == (SILENT_READINGS, EXPIRING_GRANTS)
    capsys.readouterr()

    runs = 0  # earlier tests may have left work of their own: a few more runs take it too
    while await _left(reading_ids, grantee_ids) != (0, 0):
        runs += 1
        assert runs <= 15, await _left(reading_ids, grantee_ids)
        await local_runtime.dispatchScheduled("* * * * *", later)
    out = capsys.readouterr().out
    records = _cron_runs(out)
    assert len(records) == runs >= 2, (runs, len(records))  # the first run could not take it all
    for record in records:
        calls = int(_CALLS.search(record["d1"]).group(1))
        assert calls <= db.MAX_CALLS_PER_REQUEST, record
    assert '"event":"cron_job_failed"' not in out, [line for line in out.splitlines() if "cron_job_failed" in line]
    first = records[0]
    assert first["readings_timed_out"] >= cron.MAX_TIMED_OUT_READINGS_PER_RUN - 1, first
    assert first["promo_grants_expired"] >= 1, first
