"""Handler results and their conversion to the JavaScript Response workerd sends.

The Response is built with the JS constructor itself: the SDK's `workers.Response`
checks and converts its arguments through Python (~0.15 ms a reply,
bench/py_profile.py), and the entrypoint hands workerd a JS Response either way."""

import json
from dataclasses import dataclass, field
from typing import Any

import js
from pyodide.ffi import to_js

from .errors import Problem
from .validation import encodable


@dataclass
class Reply:
    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    raw: bytes | None = None
    # A JS ReadableStream (e.g. an R2 object's body) passed to the Response as
    # is, so large bodies never get copied through Python.
    stream: Any = None


def encode_json(body: Any) -> str:
    """Compact JSON, non-ASCII as is. A text that cannot be UTF-8 (a lone surrogate
    that got past validation.py, e.g. from an older row) is written with \\u escapes
    instead: Pyodide would otherwise hand workerd a string it sends as invalid UTF-8."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    if encodable(text):
        return text
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True)


def problem_reply(problem: Problem, request_id: str) -> Reply:
    body = problem.body()
    if problem.status >= 500:
        body["request_id"] = request_id
    return Reply(body, problem.status, dict(problem.headers), "application/problem+json")


def encode_payload(reply: Reply) -> Any:
    """The response body's bytes, text or stream; None when the status has no body."""
    if reply.status == 204 or reply.status == 304:
        return None
    if reply.stream is not None:
        return reply.stream
    return reply.raw if reply.raw is not None else encode_json(reply.body)


def _js_response(body: Any, status: int, headers: dict[str, str]) -> Any:
    init = to_js({"status": status, "headers": headers}, dict_converter=js.Object.fromEntries)
    if isinstance(body, bytes):
        body = to_js(body)
    return js.Response.new(body, init)


def to_response(reply: Reply, extra_headers: dict[str, str], head: bool = False, payload: Any = None) -> Any:
    """A JS Response. `payload` is `encode_payload(reply)` when the caller already encoded it."""
    headers = {**reply.headers, **extra_headers}
    if "server-timing" in reply.headers and "server-timing" in extra_headers:
        # A handler's own entries (e.g. R2 operations) join the pipeline's D1 ones.
        headers["server-timing"] = f"{extra_headers['server-timing']}, {reply.headers['server-timing']}"
    if reply.status == 204 or reply.status == 304:
        return _js_response(None, reply.status, headers)
    headers["content-type"] = reply.content_type
    if payload is None:
        payload = encode_payload(reply)
    if head:
        return _js_response(None, reply.status, headers)
    return _js_response(payload, reply.status, headers)
