"""No secret reaches the Worker's logs: the output of the whole runtime suite
(pytest's per-test capture + what the Worker printed outside it) is scanned for
every sensitive value the tests sent (support.SENSITIVE_VALUES) and for
secret-shaped text (JWTs, bearer credentials, webhook signatures, emails)."""

import re

SECRET_SHAPES = {
    "jwt": re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"),
    "bearer credential": re.compile(r"(?i)bearer\s+(?!\[redacted)[A-Za-z0-9._~+/=-]{16,}"),
    "webhook signature": re.compile(r"(?i)sha512=[0-9a-f]{64,}"),
    "email address": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
}


def findings(text: str, sensitive: set[str]) -> list[str]:
    """What leaked, described without repeating the secret itself."""
    out = [f"{name} ({len(pattern.findall(text))}x)" for name, pattern in SECRET_SHAPES.items() if pattern.search(text)]
    leaked = sorted((v for v in sensitive if v and v in text), key=len)
    if leaked:
        out.append(
            f"{len(leaked)} value(s) sent by tests: " + ", ".join(f"{len(v)} chars starting {v[:4]!r}" for v in leaked)
        )
    return out
