"""Method + path patterns to handlers, with typed path parameters.

A pattern segment `{name:id}` matches one of our ids (else the route answers
404, as for any unknown object); `{name:str}` matches any single segment.
Each Route also carries what the OpenAPI document says about it."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .db import Statement
from .errors import Problem, not_found
from .ids import parse_id
from .validation import Obj, RawBody

Auth = Literal["none", "user", "admin", "webhook"]
Handler = Callable[[Any], Awaitable[Any]]
# The handler's first read, scoped by the caller's Clerk `sub` instead of the
# user id (not known yet): path params, sub -> one statement.
Preload = Callable[[dict[str, Any], str], Statement]
_PARAM_TYPES = {"id", "str"}
MAX_PATH_CHARS = 512


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: Handler
    summary: str
    auth: Auth = "user"
    # Writes and reads that must see the caller's writes start at the primary
    # when the client sends no bookmark.
    primary: bool = False
    body: Obj | None = None
    # A non-JSON body with its own size limit (e.g. an image); excludes `body`.
    raw_body: RawBody | None = None
    query: Obj | None = None
    idempotency_key: bool = False
    if_match: bool = False
    responses: dict[int, str] = field(default_factory=lambda: {200: "Object"})
    problems: tuple[int, ...] = ()
    # The problem `code`s a status can carry, for the OpenAPI descriptions (optional).
    problem_codes: dict[int, tuple[str, ...]] = field(default_factory=dict)
    tag: str = "misc"
    # Sent in ONE D1 batch with the caller lookup (users.authenticate), so the
    # handler's first read costs no round trip of its own (rc.take_preloaded()).
    preload: Preload | None = None
    # The handler sends the caller lookup itself, in front of its first batch
    # (users.with_caller), so a route whose first D1 call is a write (a deposit's
    # claim) or needs the body (a reading request's precheck) saves a round trip.
    caller_batch: bool = False

    def __post_init__(self) -> None:
        assert self.body is None or self.raw_body is None, f"{self.pattern}: a JSON body or a raw body, not both"
        assert set(self.problem_codes) <= set(self.problems), f"{self.pattern}: problem_codes of unlisted statuses"
        assert self.preload is None or self.auth in ("user", "admin"), f"{self.pattern}: a preload needs a caller"
        assert not self.caller_batch or (self.auth in ("user", "admin") and self.preload is None), self.pattern

    def segments(self) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for part in self.pattern.strip("/").split("/"):
            if part.startswith("{") and part.endswith("}"):
                name, _, kind = part[1:-1].partition(":")
                assert kind in _PARAM_TYPES, part
                out.append((name, kind))
            else:
                out.append((part, None))
        return out

    def path_params(self) -> list[tuple[str, str]]:
        return [(name, kind) for name, kind in self.segments() if kind is not None]


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = list(routes)
        seen = set()
        for r in self.routes:
            key = (r.method, r.pattern)
            assert key not in seen, f"duplicate route {key}"
            seen.add(key)
        self._compiled = [(r, r.segments()) for r in self.routes]

    def match(self, method: str, path: str) -> tuple[Route, dict[str, Any]]:
        if len(path) > MAX_PATH_CHARS:
            raise Problem(414, "uri_too_long", "URI too long", f"Paths are limited to {MAX_PATH_CHARS} characters.")
        parts = path.strip("/").split("/") if path.strip("/") else [""]
        allowed: list[str] = []
        id_mismatch = False
        for route, segments in self._compiled:
            if len(segments) != len(parts):
                continue
            params: dict[str, Any] = {}
            matched = True
            for (name, kind), part in zip(segments, parts, strict=True):
                if kind is None:
                    if name != part:
                        matched = False
                        break
                elif kind == "id":
                    value = parse_id(part)
                    if value is None:
                        id_mismatch = True
                        matched = False
                        break
                    params[name] = value
                else:
                    if not part or len(part) > 128:
                        matched = False
                        break
                    params[name] = part
            if not matched:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params
            allowed.append(route.method)
        if allowed:
            if "GET" in allowed:
                allowed.append("HEAD")  # every GET route answers HEAD too
            allow = ", ".join(sorted(set(allowed)))
            raise Problem(
                405,
                "method_not_allowed",
                "Method not allowed",
                f"{method} is not allowed here; use {allow}.",
                headers={"allow": allow},
            )
        if id_mismatch:
            raise not_found()
        raise Problem(404, "route_not_found", "Not found", f"No route for {method} {path}.")
