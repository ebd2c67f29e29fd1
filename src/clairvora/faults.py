"""The test-only D1 fault switch: fail chosen D1 calls of one request.

A request carrying `x-test-d1-fault` fails its Nth D1 call (counted from 1 over
every D1 call the request makes, whichever `Database` makes it) with one of D1's
own transient error texts, so the Worker's error path is the one a real D1
outage takes (`db.classify` -> `TransientD1Error` -> 503 + Retry-After).

    x-test-d1-fault: 3          the 3rd call fails before it runs
    x-test-d1-fault: 2,4        the 2nd and the 4th fail before they run
    x-test-d1-fault: 3;after    the 3rd call runs, then fails (the ambiguous case)
    x-test-d1-fault: 99         a position never reached: nothing fails, calls are counted

Grammar: `<position>[,<position>...][;before|;after]`, at most MAX_POSITIONS
distinct positions, each 1..MAX_CALL_POSITION in ASCII digits (spaces around
tokens are allowed). A malformed value raises `FaultHeaderError` (a
ValueError) and the app answers 400 problem+json naming the header, never a
silently unarmed switch that would let a test pass for the wrong reason.

The app builds a plan only when `Settings.test_hooks_allowed` (local
configuration with TEST_HOOKS=allowed); elsewhere the header is never read.
While a plan is active the response carries `x-test-d1-faults: calls=<n>
injected=<m>`.

Pure Python (no pyodide import): db.py runs every D1 call through `around`.
"""

from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

REQUEST_HEADER = "x-test-d1-fault"
RESPONSE_HEADER = "x-test-d1-faults"

MAX_POSITIONS = 16
# Twice db.MAX_CALLS_PER_REQUEST (50): room for "a position never reached".
MAX_CALL_POSITION = 100
MAX_HEADER_CHARS = 256

# D1's own texts for transient failures (each one classifies as TransientD1Error).
TRANSIENT_D1_ERRORS = (
    "D1_ERROR: Network connection lost.",
    "D1_ERROR: D1 DB is overloaded. Too many requests queued.",
    "D1_ERROR: Internal error while starting up D1 DB storage caused object to be reset.",
)

When = Literal["before", "after"]
T = TypeVar("T")


class FaultHeaderError(ValueError):
    """A malformed x-test-d1-fault value."""


class InjectedD1Fault(Exception):
    """Raised in place of D1's JsException. Its str() has the JsException's
    form ("Error: <D1 text>"), so db.classify sees what a real failure shows."""

    def __init__(self, d1_message: str) -> None:
        assert d1_message in TRANSIENT_D1_ERRORS, d1_message
        super().__init__(f"Error: {d1_message}")


class FaultPlan:
    """Counts the D1 calls of one request and fails the planned ones."""

    __slots__ = ("_positions", "calls", "injected", "when")

    def __init__(self, positions: frozenset[int], when: When = "before") -> None:
        assert 1 <= len(positions) <= MAX_POSITIONS, positions
        assert all(1 <= p <= MAX_CALL_POSITION for p in positions), positions
        assert when in ("before", "after"), when
        self._positions = positions
        self.when: When = when
        self.calls = 0  # D1 calls made through this plan, failed ones included
        self.injected = 0  # of those, how many this plan failed

    @property
    def positions(self) -> frozenset[int]:
        return self._positions

    async def around(self, run: Callable[[], Awaitable[T]]) -> T:
        """One D1 call: `run` starts it. Fails it before or after it ran when
        its position is planned; otherwise returns what it returned."""
        self.calls += 1
        position = self.calls
        fail = position in self._positions
        if fail and self.when == "before":
            raise self._inject(position)
        result = await run()
        if fail:
            # The statement ran, but the caller never learns it: the ambiguous case.
            raise self._inject(position)
        return result

    def _inject(self, position: int) -> InjectedD1Fault:
        self.injected += 1
        assert self.injected <= len(self._positions)
        assert self.injected <= self.calls
        return InjectedD1Fault(TRANSIENT_D1_ERRORS[(position - 1) % len(TRANSIENT_D1_ERRORS)])

    def report(self) -> str:
        """The RESPONSE_HEADER value."""
        return f"calls={self.calls} injected={self.injected}"


def plan_from_header(value: str | None) -> FaultPlan | None:
    """The plan an x-test-d1-fault value asks for; None without the header.
    Raises FaultHeaderError on a malformed value (see the module docstring)."""
    if value is None:
        return None
    if len(value) > MAX_HEADER_CHARS:
        raise FaultHeaderError(f"{REQUEST_HEADER} is longer than {MAX_HEADER_CHARS} characters.")
    listed, has_when, when_text = value.partition(";")
    when_text = when_text.strip() if has_when else "before"
    when: When
    if when_text == "before":
        when = "before"
    elif when_text == "after":
        when = "after"
    else:
        raise FaultHeaderError(f'{REQUEST_HEADER}: after ";" comes "before" or "after".')
    tokens = [token.strip() for token in listed.split(",")]
    if len(tokens) > MAX_POSITIONS:
        raise FaultHeaderError(f"{REQUEST_HEADER}: at most {MAX_POSITIONS} call positions.")
    positions: set[int] = set()
    for token in tokens:
        # isascii: str.isdigit() also accepts digits such as "²" or "٣".
        if not (token.isascii() and token.isdigit() and len(token) <= len(str(MAX_CALL_POSITION))):
            raise FaultHeaderError(f"{REQUEST_HEADER}: call positions are integers 1..{MAX_CALL_POSITION}.")
        position = int(token)
        if not 1 <= position <= MAX_CALL_POSITION:
            raise FaultHeaderError(f"{REQUEST_HEADER}: call positions are integers 1..{MAX_CALL_POSITION}.")
        if position in positions:
            raise FaultHeaderError(f"{REQUEST_HEADER}: call position {position} is listed twice.")
        positions.add(position)
    assert 1 <= len(positions) <= MAX_POSITIONS
    return FaultPlan(frozenset(positions), when)
