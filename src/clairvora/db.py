"""The one D1 access layer.

Every handler reaches D1 through a `Database`: statements with bound parameters
only, `first`/`all`/`run`/`batch`, one request-scoped Sessions API session
(bookmark in, latest bookmark out), D1's error texts mapped to typed
exceptions, D1's limits guarded before a call is made, and per-request counters
of calls, rows read and rows written. In local tests a `FaultPlan` (faults.py)
can fail chosen calls exactly as a transient D1 failure would.

D1 is called through the JavaScript binding itself, not the SDK's Python wrapper
around it: the wrapper converted every prepare/bind call and every result value
through Python callbacks (about 0.25 ms per statement and a deep copy per row,
bench/py_profile.py). Parameters cross as JS values (None as JS null), and a
call's results cross once, as one JSON text (no BLOB columns exist: every value
is a number, a string or NULL).
"""

import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import js
from pyodide.ffi import JsException, jsnull, to_js
from workers import python_to_rpc

from .faults import FaultPlan, InjectedD1Fault

MAX_SAFE_INTEGER = 2**53 - 1
MAX_BOUND_PARAMETERS = 100
MAX_BATCH_STATEMENTS = 100  # our own cap, well under D1's 1000 per invocation
MAX_SQL_BYTES = 100_000
MAX_CALLS_PER_REQUEST = 50  # D1's free-plan cap per invocation
BOOKMARK_MAX_CHARS = 200
_BOOKMARK_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{32}$")

Param = None | bool | int | float | str | bytes


class D1Error(Exception):
    """A D1 failure; `message` is D1's text."""

    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConstraintError(D1Error):
    pass


class UniqueViolation(ConstraintError):
    def __init__(self, message: str, columns: tuple[str, ...]) -> None:
        super().__init__(message)
        self.columns = columns


class ForeignKeyViolation(ConstraintError):
    pass


class CheckViolation(ConstraintError):
    pass


class NotNullViolation(ConstraintError):
    pass


class TriggerAbort(ConstraintError):
    """RAISE(ABORT, '<code>') from one of our triggers."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class TooManyVariables(D1Error):
    pass


class TransientD1Error(D1Error):
    """D1 says try again (network lost, overloaded, object reset)."""

    retryable = True


class LimitExceeded(ValueError):
    """A value or statement that D1 would refuse (or mangle), caught before the call."""


_TRANSIENT_MARKERS = (
    "network connection lost",
    "overloaded",
    "object to be reset",
    "reset because its code was updated",
    "internal error",
    "storage caused object",
    "cannot resolve d1 db due to transient issue",
)
_UNIQUE_RE = re.compile(r"UNIQUE constraint failed: ([\w.]+(?:, [\w.]+)*)")
_TRIGGER_RE = re.compile(r"(?:D1_ERROR: )?([a-z][a-z0-9_]*): SQLITE_CONSTRAINT \(extended: SQLITE_CONSTRAINT_TRIGGER\)")


def classify(message: str) -> D1Error:
    """D1's error text -> a typed exception (pure; tested on real D1 texts)."""
    lowered = message.lower()
    if "sqlite_constraint" in lowered or "constraint failed" in lowered:
        if m := _UNIQUE_RE.search(message):
            return UniqueViolation(message, tuple(c.strip() for c in m.group(1).split(",")))
        if "FOREIGN KEY constraint failed" in message:
            return ForeignKeyViolation(message)
        if "CHECK constraint failed" in message:
            return CheckViolation(message)
        if "NOT NULL constraint failed" in message:
            return NotNullViolation(message)
        if m := _TRIGGER_RE.search(message):
            return TriggerAbort(message, m.group(1))
        return ConstraintError(message)
    if "too many sql variables" in lowered:
        return TooManyVariables(message)
    if any(marker in lowered for marker in _TRANSIENT_MARKERS):
        return TransientD1Error(message)
    return D1Error(message)


def check_param(value: Param) -> Param:
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        return value
    if isinstance(value, int):
        # Pyodide hands an int with |x| >= 2**53-1 to JavaScript as a BigInt, which
        # D1 refuses ("D1_TYPE_ERROR: Type 'bigint' not supported"), so the last
        # exact value on each side is 2**53-2.
        if not -MAX_SAFE_INTEGER < value < MAX_SAFE_INTEGER:
            raise LimitExceeded(f"integer {value} is outside what D1 binds exactly (|x| < 2**53-1)")
        return value
    if isinstance(value, float):
        return value
    raise LimitExceeded(f"D1 cannot bind a {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: tuple[Param, ...]


def sql(text: str, *params: Param) -> Statement:
    """A statement: SQL text is a constant, values are bound parameters."""
    if len(params) > MAX_BOUND_PARAMETERS:
        raise LimitExceeded(f"{len(params)} bound parameters; D1 allows {MAX_BOUND_PARAMETERS}")
    if len(text.encode()) > MAX_SQL_BYTES:
        raise LimitExceeded("statement longer than D1's 100 KB")
    return Statement(text, tuple(check_param(p) for p in params))


def chunked(values: Sequence[Param], size: int = MAX_BOUND_PARAMETERS) -> Iterable[Sequence[Param]]:
    """Split an IN list so each chunk (plus `size` headroom) fits D1's parameter limit."""
    assert 1 <= size <= MAX_BOUND_PARAMETERS
    for start in range(0, len(values), size):
        yield values[start : start + size]


def placeholders(count: int) -> str:
    """'?, ?, ?' for an IN list. Only a count reaches the SQL text, never a value."""
    assert 1 <= count <= MAX_BOUND_PARAMETERS
    return ", ".join("?" * count)


def _wall_clock_s() -> float:
    return time.perf_counter()


# The clock behind the opt-in durations, in seconds. The bench swaps in the
# process's CPU clock, so its figures hold on a shared, busy machine.
timing_clock: Callable[[], float] = _wall_clock_s


@dataclass(slots=True)
class Counters:
    calls: int = 0
    rows_read: int = 0
    rows_written: int = 0
    # Opt-in (SERVER_TIMING=timing): wall time spent awaiting D1, so the app can
    # report the request's own time without it. Off by default: in workerd the
    # clock only advances across I/O, so these durations are a local measure.
    timing: bool = False
    d1_ms: float = 0.0

    def add(self, meta: Any) -> None:
        if meta is None:
            return
        self.rows_read += int(_get(meta, "rows_read") or 0)
        self.rows_written += int(_get(meta, "rows_written") or 0)

    def server_timing(self) -> str:
        duration = f";dur={self.d1_ms:.3f}" if self.timing else ""
        return f'd1{duration};desc="calls={self.calls} rows_read={self.rows_read} rows_written={self.rows_written}"'


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


@dataclass(frozen=True, slots=True)
class Result:
    rows: list[dict[str, Any]]
    # D1's count includes the rows the statement's triggers wrote (e.g. the search
    # listing of migration 0094), so test a one-row write with `== 0`, not `!= 1`.
    changes: int
    rows_read: int
    rows_written: int


def _result(raw: dict[str, Any]) -> Result:
    """One statement's result, as D1's JSON has it ({"results": [...], "meta": {...}})."""
    meta = raw.get("meta") or {}
    return Result(
        rows=raw.get("results") or [],
        changes=int(meta.get("changes") or 0),
        rows_read=int(meta.get("rows_read") or 0),
        rows_written=int(meta.get("rows_written") or 0),
    )


def _from_js(raw: Any) -> Any:
    """A D1 result (or a batch's list of them) in one crossing: JS's own JSON text, parsed here."""
    return json.loads(js.JSON.stringify(raw))


def _js_param(value: Param) -> Any:
    """A checked parameter as D1's bind() takes it: None is SQL NULL (JS null; Python's None
    would cross as undefined, which D1 refuses), bytes a Uint8Array, the rest as they are."""
    if value is None:
        return jsnull
    if isinstance(value, bytes):
        return to_js(value)
    return value


def valid_bookmark(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > BOOKMARK_MAX_CHARS or not _BOOKMARK_RE.match(value):
        return None
    return value


class Database:
    """One request's view of D1 through one Sessions API session.

    `bookmark` (from x-d1-bookmark) starts the session at least that fresh;
    without one, `primary=True` starts it at the primary ("first-primary") for
    writes and reads that must see the caller's writes, else any replica.
    `faults` (local tests only, see faults.py) fails chosen D1 calls.
    """

    def __init__(
        self,
        binding: Any,
        *,
        bookmark: str | None = None,
        primary: bool = False,
        timing: bool = False,
        faults: FaultPlan | None = None,
    ) -> None:
        self._binding = python_to_rpc(binding)  # the JS D1Database (the SDK's wrapper unwrapped)
        self._start = bookmark or ("first-primary" if primary else "first-unconstrained")
        self._session: Any = None
        self.counters = Counters(timing=timing)
        self.faults = faults

    def new_session(self, *, bookmark: str | None = None, primary: bool = False) -> "Database":
        """Another Sessions API session for the same request: the same binding,
        fault plan and counters (D1's per-invocation limits are the request's)."""
        other = Database(
            self._binding, bookmark=bookmark, primary=primary, timing=self.counters.timing, faults=self.faults
        )
        other.counters = self.counters
        return other

    def _open(self) -> Any:
        if self._session is None:
            self._session = self._binding.withSession(self._start)
        return self._session

    def bookmark(self) -> str | None:
        """The session's latest bookmark; without a D1 call, the one the client
        sent (so a request that touched no data does not lose the client's place)."""
        if self._session is None:
            return self._start if self._start not in ("first-primary", "first-unconstrained") else None
        # A binding call: counted as D1 time (locally it is a synchronous
        # round trip through wrangler's platform proxy, ~3 ms of CPU).
        started = timing_clock() if self.counters.timing else 0.0
        value = self._session.getBookmark()
        if self.counters.timing:
            self.counters.d1_ms += (timing_clock() - started) * 1000
        return value if isinstance(value, str) else None

    def _prepare(self, statement: Statement) -> Any:
        prepared = self._open().prepare(statement.sql)
        return prepared.bind(*[_js_param(p) for p in statement.params]) if statement.params else prepared

    def _count_call(self) -> None:
        self.counters.calls += 1
        if self.counters.calls > MAX_CALLS_PER_REQUEST:
            raise LimitExceeded(f"more than {MAX_CALLS_PER_REQUEST} D1 calls in one request")

    async def _call(self, run: Callable[[], Awaitable[Any]]) -> Any:
        """One D1 call, the only place one is made: counted, timed, through the
        fault plan if any, D1's error text -> a typed exception."""
        self._count_call()
        started = timing_clock() if self.counters.timing else 0.0
        try:
            if self.faults is None:
                return await run()
            return await self.faults.around(run)
        except (JsException, InjectedD1Fault) as exc:
            raise classify(str(exc)) from None
        finally:
            if self.counters.timing:
                self.counters.d1_ms += (timing_clock() - started) * 1000

    async def all(self, statement: Statement) -> Result:
        raw = await self._call(lambda: self._prepare(statement).all())
        result = _result(_from_js(raw))
        self.counters.rows_read += result.rows_read
        self.counters.rows_written += result.rows_written
        return result

    async def first(self, statement: Statement) -> dict[str, Any] | None:
        """The first row or None. Uses all() so D1's meta (rows read) is counted."""
        result = await self.all(statement)
        return result.rows[0] if result.rows else None

    async def run(self, statement: Statement) -> Result:
        return await self.all(statement)

    async def batch(self, statements: Sequence[Statement]) -> list[Result]:
        """One round trip, one transaction: all statements apply or none do."""
        if not 1 <= len(statements) <= MAX_BATCH_STATEMENTS:
            raise LimitExceeded(f"a batch holds 1..{MAX_BATCH_STATEMENTS} statements, got {len(statements)}")
        raws = await self._call(lambda: self._open().batch(to_js([self._prepare(s) for s in statements])))
        results = [_result(r) for r in _from_js(raws)]
        for r in results:
            self.counters.rows_read += r.rows_read
            self.counters.rows_written += r.rows_written
        return results
