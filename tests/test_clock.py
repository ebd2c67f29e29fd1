"""clock.rfc3339 is formatted with time.gmtime for speed; it must equal the
datetime formatting it replaced, to the millisecond."""

import random
from datetime import UTC, datetime

from clairvora.clock import rfc3339


def _reference(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def test_rfc3339_matches_datetime():
    fixed = [
        0,
        1,
        999,
        1000,
        59_999,
        951_782_400_000,  # 2000-02-29 (leap day)
        1_767_225_599_999,
        1_767_225_600_000,  # the last and first ms of 2025/2026
        4_102_444_800_000,
        253_402_300_799_999,
    ]  # 2100-01-01, 9999-12-31T23:59:59.999
    rng = random.Random(7)
    values = fixed + [rng.randrange(0, 253_402_300_800_000) for _ in range(2000)]
    assert [rfc3339(ms) for ms in values] == [_reference(ms) for ms in values]
    assert rfc3339(1_795_738_678_609) == "2026-11-27T00:17:58.609Z"
    assert rfc3339(None) is None
