"""The reading routes, in the order the OpenAPI document lists them: the
handlers of readings.py (the list, one reading), reading_requests.py (the
request) and reading_transitions.py (accept, decline, cancel, heartbeat, end).
"""

from .reading_requests import READING_CREATE, create_reading
from .reading_transitions import accept_reading, cancel_reading, decline_reading, end_reading, heartbeat
from .readings import READING_LIST_QUERY, get_reading, list_readings, preload_participant
from .routing import Route

_ID = "/v1/readings/{reading_id:id}"

ROUTES = [
    Route(
        "POST",
        "/v1/readings",
        create_reading,
        "Request a reading (funds for the first minute needed)",
        primary=True,
        caller_batch=True,
        body=READING_CREATE,
        idempotency_key=True,
        responses={201: "Reading"},
        problems=(402, 403, 409, 422),
        tag="readings",
    ),
    Route(
        "GET",
        "/v1/readings",
        list_readings,
        "Your readings (as client or advisor), newest first",
        primary=True,
        query=READING_LIST_QUERY,
        responses={200: "ReadingList"},
        tag="readings",
    ),
    Route(
        "GET",
        _ID,
        get_reading,
        "A reading you take part in",
        primary=True,
        responses={200: "ReadingBilling"},
        tag="readings",
        preload=preload_participant,
    ),
    Route(
        "POST",
        _ID + "/accept",
        accept_reading,
        "Advisor: accept a request (charges minute 1); accepting again answers the reading, charging nothing",
        primary=True,
        responses={200: "ReadingBilling"},
        problems=(402, 403, 409),
        tag="readings",
        preload=preload_participant,
    ),
    Route(
        "POST",
        _ID + "/decline",
        decline_reading,
        "Advisor: decline a request",
        primary=True,
        responses={200: "Reading"},
        problems=(403, 409),
        tag="readings",
        preload=preload_participant,
    ),
    Route(
        "POST",
        _ID + "/cancel",
        cancel_reading,
        "Client: withdraw a request not yet accepted",
        primary=True,
        responses={200: "Reading"},
        problems=(403, 409),
        tag="readings",
        preload=preload_participant,
    ),
    Route(
        "POST",
        _ID + "/heartbeat",
        heartbeat,
        "Bill every minute begun (the advisor's: those the client was seen in); balance, minutes left, "
        "low-balance warning (the client's only); ends when funds run out or a side is silent past the timeout",
        primary=True,
        responses={200: "ReadingBilling"},
        problems=(409,),
        tag="readings",
        preload=preload_participant,
    ),
    Route(
        "POST",
        _ID + "/end",
        end_reading,
        "End the reading now; bills minutes begun (an ended reading answers as it ended)",
        primary=True,
        responses={200: "ReadingBilling"},
        problems=(409,),
        tag="readings",
        preload=preload_participant,
    ),
]
