"""Row ids: 52-bit random integers, generated inside handlers (workerd forbids
entropy at import time), exact as JavaScript numbers, strings on the wire."""

import secrets

ID_BITS = 52
MIN_ID = 1 << 40


def new_id() -> int:
    value = secrets.randbits(ID_BITS)
    return value if value >= MIN_ID else value + MIN_ID


def parse_id(text: str) -> int | None:
    """A wire id back to an int, or None when it cannot be one of ours."""
    if not (1 <= len(text) <= 16) or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if MIN_ID <= value < (1 << ID_BITS) + MIN_ID else None
