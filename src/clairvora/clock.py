"""The one clock. Tests replace it per request (local test hooks only), so
nothing ever sleeps to let time pass."""

import calendar
import time

MAX_SAFE_INTEGER = 2**53 - 1


class Clock:
    def __init__(self, fixed_ms: int | None = None) -> None:
        assert fixed_ms is None or 0 <= fixed_ms <= MAX_SAFE_INTEGER
        self._fixed_ms = fixed_ms

    def now_ms(self) -> int:
        if self._fixed_ms is not None:
            return self._fixed_ms
        return int(time.time() * 1000)


def parse_rfc3339_ms(text: str) -> int:
    """'YYYY-MM-DDTHH:MM:SS[.fff]Z' (a shape's pattern checked the form) -> ms since
    the epoch. ValueError for a date and time that does not exist (month 13, Feb 30)."""
    whole, _, fraction = text[:-1].partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1000 + (int(fraction.ljust(3, "0")) if fraction else 0)


def rfc3339(ms: int | None) -> str | None:
    """UTC, millisecond precision: 2026-11-27T00:31:21.123Z. Formatted from
    time.gmtime (about 6x cheaper in Pyodide than datetime.strftime, which
    mattered for 100-item lists; tests/test_clock.py pins it to datetime's output)."""
    if ms is None:
        return None
    t = time.gmtime(ms // 1000)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 - fastest formatting here
        t.tm_year,
        t.tm_mon,
        t.tm_mday,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
        ms % 1000,
    )
