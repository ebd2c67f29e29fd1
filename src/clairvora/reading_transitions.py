"""Readings after the request: accept and decline (the advisor), cancel (the
client), heartbeat and end (either side).

The lifecycle is a state machine enforced in SQL:

    requested -> active     (accept: also charges minute 1, same batch)
    requested -> declined | cancelled | expired
    active    -> ended      (end, heartbeat/cron when funds run out or either
                             side's heartbeats stop: see billing.py)

Every transition is a conditional UPDATE on the status it leaves (and the
version the caller read), and a trigger (migrations/0020) refuses any other
status change, so an illegal or lost-race transition changes nothing and
answers 409. Accept and end are idempotent: repeated on a reading already
accepted (ended), they answer the reading as it is and change nothing, so a
client whose answer was lost after the batch committed can simply retry.
Billing lives in billing.py.

Each starts from the caller's reading (readings.caller_reading: 404 unless the
caller takes part in it).
"""

from typing import Any

from . import billing, offers
from .db import TriggerAbort, UniqueViolation, sql
from .errors import Problem, forbidden, not_found, service_unavailable
from .readings import SELECT_FOR_PARTICIPANT, billed_view, caller_reading, load_participant, not_in_status, reading_view
from .requests import RequestContext
from .responses import Reply

# --- advisor: accept / decline ---------------------------------------------

_ACCEPT = """
UPDATE readings
SET status = 'active', accepted_at_ms = ?, last_heartbeat_at_ms = ?, version = version + 1
WHERE id = ? AND advisor_id = ? AND status = 'requested' AND version = ? AND requested_at_ms >= ?"""

_EXPIRE_ONE = """
UPDATE readings SET status = 'expired', ended_at_ms = requested_at_ms + ?, version = version + 1
WHERE id = ? AND status = 'requested' AND requested_at_ms < ?"""


async def _load_as_advisor(rc: RequestContext) -> dict[str, Any]:
    row = await caller_reading(rc)
    if int(row["advisor_id"]) != rc.user_id:
        raise forbidden("Only the reading's advisor may do this.")
    return row


async def _expire_if_late(rc: RequestContext, row: dict[str, Any], now_ms: int) -> None:
    timeout_ms = rc.settings.request_timeout_s * 1000
    if row["status"] == "requested" and now_ms - int(row["requested_at_ms"]) > timeout_ms:
        await rc.db.run(sql(_EXPIRE_ONE, timeout_ms, row["id"], now_ms - timeout_ms))
        raise Problem(
            409,
            "reading_expired",
            "Conflict",
            "The request was not accepted in time and has expired.",
            extra={"reading_status": "expired"},
        )


def _already_accepted(row: dict[str, Any], viewer_id: int, now_ms: int) -> Reply | None:
    """Accept is idempotent: a reading this advisor already accepted answers as
    it is and charges nothing. A retry whose first answer was lost after its
    batch committed (or a double tap racing it) lands here, not on a 409."""
    if row["accepted_at_ms"] is None:
        return None
    return Reply(billed_view(row, viewer_id, now_ms))


async def accept_reading(rc: RequestContext) -> Reply:
    row = await _load_as_advisor(rc)
    now_ms = rc.clock.now_ms()
    if (done := _already_accepted(row, rc.user_id, now_ms)) is not None:
        return done
    if row["status"] != "requested":
        raise not_in_status(row, "requested", "accept")
    await _expire_if_late(rc, row, now_ms)
    for _attempt in range(3):
        active = {**row, "status": "active", "accepted_at_ms": now_ms, "last_heartbeat_at_ms": now_ms}
        statements = [
            sql(
                _ACCEPT,
                now_ms,
                now_ms,
                row["id"],
                rc.user_id,
                row["version"],
                now_ms - rc.settings.request_timeout_s * 1000,
            ),
            # A free-minute offer's grant, then minute 1, in the same batch (offers.py);
            # minute 1's trigger requires the reading to be active, so a lost race
            # rolls the whole batch back.
            *offers.accept_charges(active, rc.settings, now_ms, rc.user_id),
            sql(billing.SELECT_READING, row["id"]),
        ]
        try:
            results = await rc.db.batch(statements)
        except UniqueViolation as exc:
            fresh = await load_participant(rc.db, row["id"], rc.user_id)
            if (done := _already_accepted(fresh, rc.user_id, now_ms)) is not None:
                # Minute 1's transfer key exists: a concurrent accept of this reading
                # committed first (the whole batch rolled back).
                return done
            if "free_minute_offers.client_id" not in exc.columns:
                raise
            row = fresh  # the client's new-client offer went to another reading meanwhile
            continue
        except TriggerAbort as exc:
            if exc.code == "insufficient_funds":
                raise Problem(
                    402,
                    "insufficient_funds",
                    "Payment required",
                    "The client's wallet and promo credit cannot pay the first minute; nothing changed.",
                    extra={"reading_status": "requested"},
                ) from None
            if exc.code not in ("reading_not_billable", *billing.PROMO_RETRY_CODES, *offers.RETRY_CODES):
                raise
            fresh = await load_participant(rc.db, row["id"], rc.user_id)
            if (done := _already_accepted(fresh, rc.user_id, now_ms)) is not None:
                return done
            if exc.code == "reading_not_billable":
                raise not_in_status(fresh, "requested", "accept") from None
            row = fresh  # an offer or a grant moved since the read: plan again
            continue
        fresh_row = results[-1].rows[0]
        return Reply(billed_view(fresh_row, rc.user_id, now_ms))
    raise service_unavailable("The client's promo credit keeps changing; retry.")


_DECLINE = """
UPDATE readings SET status = 'declined', ended_at_ms = ?, version = version + 1
WHERE id = ? AND advisor_id = ? AND status = 'requested'
RETURNING id"""

_CANCEL = """
UPDATE readings SET status = 'cancelled', ended_at_ms = ?, version = version + 1
WHERE id = ? AND client_id = ? AND status = 'requested'
RETURNING id"""


async def _close_request(rc: RequestContext, statement: str, action: str) -> Reply:
    now_ms = rc.clock.now_ms()
    reading_id = rc.params["reading_id"]
    # The conditional UPDATE and the read of the result in one round trip.
    done, fresh = await rc.db.batch(
        [
            sql(statement, now_ms, reading_id, rc.user_id),
            sql(SELECT_FOR_PARTICIPANT, reading_id, rc.user_id, rc.user_id),
        ]
    )
    if not fresh.rows:
        raise not_found("reading")
    row = fresh.rows[0]
    if not done.rows:
        raise not_in_status(row, "requested", action)
    return Reply(reading_view(row, rc.user_id))


async def decline_reading(rc: RequestContext) -> Reply:
    await _load_as_advisor(rc)
    return await _close_request(rc, _DECLINE, "decline")


async def cancel_reading(rc: RequestContext) -> Reply:
    row = await caller_reading(rc)
    if int(row["client_id"]) != rc.user_id:
        raise forbidden("Only the reading's client may cancel it.")
    return await _close_request(rc, _CANCEL, "cancel")


# --- billing: heartbeat / end -----------------------------------------------


async def heartbeat(rc: RequestContext) -> Reply:
    row = await caller_reading(rc)
    if row["status"] not in ("active", "ended"):
        raise not_in_status(row, "active", "send a heartbeat to")
    now_ms = rc.clock.now_ms()
    row = await billing.advance(rc.db, row, now_ms, "heartbeat", rc.user_id)
    return Reply(billed_view(row, rc.user_id, now_ms))


async def end_reading(rc: RequestContext) -> Reply:
    row = await caller_reading(rc)
    if row["status"] == "ended":
        # End is idempotent, like a heartbeat on an ended reading: the reading
        # as it ended (end_reason says by whom or why), nothing charged. A
        # retry whose first answer was lost after the end committed lands here.
        return Reply(billed_view(row, rc.user_id, rc.clock.now_ms()))
    if row["status"] != "active":
        raise not_in_status(row, "active", "end")
    action: billing.Action = "client_ended" if int(row["client_id"]) == rc.user_id else "advisor_ended"
    now_ms = rc.clock.now_ms()
    row = await billing.advance(rc.db, row, now_ms, action, rc.user_id)
    return Reply(billed_view(row, rc.user_id, now_ms))
