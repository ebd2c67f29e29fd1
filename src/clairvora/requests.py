"""The request-scoped context handed to every handler."""

import hashlib
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pyodide.ffi import jsnull

from . import logs
from .clock import Clock
from .config import Settings
from .db import Database
from .errors import Problem, bad_request
from .validation import MAX_JSON_DEPTH, Obj, json_depth, parse_query, text_nesting_exceeds

MAX_QUERY_CHARS = 2048
MAX_HEADER_CHARS = 8192


class Headers:
    """The request's headers, each read from the JavaScript Headers object when asked
    for. The SDK's `request.headers` copies every header into a new Python mapping on
    each access (~40 us with one header, more with the dozen an edge request carries;
    bench/py_profile.py), and a request reads five before its handler runs."""

    __slots__ = ("_js",)

    def __init__(self, request: Any) -> None:
        self._js = request.js_object.headers

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self._js.get(name)
        return default if value is None or value is jsnull else str(value)


class RequestContext:
    def __init__(
        self,
        *,
        request: Any,
        env: Any,
        ctx: Any,
        settings: Settings,
        db: Database,
        clock: Clock,
        request_id: str,
        params: dict[str, Any],
        route: Any,
        headers: Headers | None = None,
    ) -> None:
        self.request = request
        self.env = env
        self.ctx = ctx
        self.settings = settings
        self.db = db
        self.clock = clock
        self.request_id = request_id
        self.params = params
        self.route = route
        self.method = str(request.method.value if hasattr(request.method, "value") else request.method)
        url = urlsplit(request.url)
        self.path = url.path
        if len(url.query) > MAX_QUERY_CHARS:
            raise Problem(
                414, "uri_too_long", "URI too long", f"Query strings are limited to {MAX_QUERY_CHARS} characters."
            )
        self.query = parse_qs(url.query, keep_blank_values=True, max_num_fields=50)
        self.headers = headers if headers is not None else Headers(request)
        self.user: dict[str, Any] | None = None
        # Route(caller_batch=True): the verified identity and the first-sight hook,
        # for users.with_caller (rc.user is None until the handler's first batch).
        self.identity: Any = None
        self.before_create: Callable[[], Awaitable[None]] | None = None
        # Rows of the route's preload statement, read with the caller lookup
        # (None: the route has none, or the caller was new and it did not run).
        self._preloaded: list[dict[str, Any]] | None = None
        self._body: bytes | None = None

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        if value is None:
            return None
        if len(value) > MAX_HEADER_CHARS:
            raise bad_request(f"Header {name} is too long.", name)
        return value

    def set_preloaded(self, rows: list[dict[str, Any]]) -> None:
        self._preloaded = rows

    def take_preloaded(self) -> list[dict[str, Any]] | None:
        """The preload's rows, once: a later read (after a refused batch) must
        go to D1 again rather than reuse what is now stale."""
        rows, self._preloaded = self._preloaded, None
        return rows

    @property
    def user_id(self) -> int:
        assert self.user is not None, "route requires an authenticated caller"
        return int(self.user["id"])

    def body_limit(self) -> int:
        """The route's own limit for a raw body (an upload), else MAX_BODY_BYTES."""
        raw_body = getattr(self.route, "raw_body", None)
        return raw_body.max_bytes if raw_body is not None else self.settings.max_body_bytes

    async def body_bytes(self) -> bytes:
        if self._body is not None:
            return self._body
        limit = self.body_limit()
        too_large = Problem(
            413,
            "body_too_large",
            "Request body too large",
            f"Bodies are limited to {limit} bytes.",
            extra={"max_bytes": limit},
        )
        declared = self.header("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        # Read the stream chunk by chunk and stop at the limit, so a body sent
        # without Content-Length (chunked) cannot make the Worker buffer more.
        stream = self.request.body
        chunks: list[bytes] = []
        size = 0
        if stream:
            reader = stream.getReader()
            while True:
                part = await reader.read()
                if part.done:
                    break
                chunk = part.value.to_bytes()
                size += len(chunk)
                if size > limit:
                    await reader.cancel()
                    raise too_large
                chunks.append(chunk)
        self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        data = await self.body_bytes()
        if not data:
            raise bad_request("A JSON body is required.", "body")
        content_type = (self.header("content-type") or "application/json").split(";")[0].strip().lower()
        if content_type not in ("application/json", "application/merge-patch+json") and not content_type.endswith(
            "+json"
        ):
            raise Problem(415, "unsupported_media_type", "Unsupported media type", "Send application/json.")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("The body is not valid UTF-8.", "body") from None
        if text_nesting_exceeds(text):
            raise bad_request(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.", "body")
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise bad_request("The body is not valid JSON.", "body") from None
        if json_depth(value) > MAX_JSON_DEPTH:
            raise bad_request(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.", "body")
        return value

    async def parsed_body(self) -> dict[str, Any]:
        assert self.route.body is not None
        result: dict[str, Any] = self.route.body.parse(await self.json())
        return result

    def parsed_query(self, shape: Obj | None = None) -> dict[str, Any]:
        shape = shape or self.route.query
        if shape is None:
            if self.query:
                raise bad_request("This route takes no query parameters.", next(iter(self.query)))
            return {}
        return parse_query(self.query, shape)

    async def body_sha256(self) -> str:
        return hashlib.sha256(await self.body_bytes()).hexdigest()

    def wait_until(self, awaitable: Coroutine[Any, Any, None], task: str) -> None:
        """Run `awaitable` after the reply. A failure is logged here, as one
        structured line naming the task and the exception type (never its text,
        which may quote user data), instead of reaching workerd as a bare error."""
        self.ctx.waitUntil(_logged_task(awaitable, task, self.request_id))


async def _logged_task(awaitable: Coroutine[Any, Any, None], task: str, request_id: str) -> None:
    try:
        await awaitable
    except Exception as exc:  # noqa: BLE001 - background work: log and end, the reply is already sent
        logs.error("background_task_failed", task=task, error=type(exc).__name__, request_id=request_id)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
