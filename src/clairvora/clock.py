"""The one clock. Tests replace it per request (local test hooks only), so
nothing ever sleeps to let time pass."""

import time
from datetime import UTC, datetime

MAX_SAFE_INTEGER = 2**53 - 1


class Clock:
    def __init__(self, fixed_ms: int | None = None) -> None:
        assert fixed_ms is None or 0 <= fixed_ms <= MAX_SAFE_INTEGER
        self._fixed_ms = fixed_ms

    def now_ms(self) -> int:
        if self._fixed_ms is not None:
            return self._fixed_ms
        return int(time.time() * 1000)


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
