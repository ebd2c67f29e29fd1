"""Test helpers: an HTTP-shaped client for the Worker, Clerk-style tokens, and
direct D1 access, all inside the local runtime (Pyodide + real local D1)."""

import base64
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

import js
import local_runtime
from pyodide.ffi import to_js
from workers import _EnvWrapper

from clairvora.db import Database

_counter = itertools.count(1)
ISSUER = str(local_runtime.vars.CLERK_ISSUER)
AUTHORIZED_PARTY = str(local_runtime.vars.CLERK_AUTHORIZED_PARTIES).split(",")[0].strip()


def unique(prefix: str = "t") -> str:
    """A name no other test (or earlier run against this state) has used."""
    return f"{prefix}{time.time_ns() % 10**12}{next(_counter)}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pem_body(pem: str) -> bytes:
    lines = [line for line in pem.strip().splitlines() if not line.startswith("-----")]
    return base64.b64decode("".join(lines))


_signing_keys: dict[str, Any] = {}


async def _private_key(pem: str) -> Any:
    if pem not in _signing_keys:
        algorithm = to_js({"name": "RSASSA-PKCS1-v1_5", "hash": "SHA-256"}, dict_converter=js.Object.fromEntries)
        _signing_keys[pem] = await js.crypto.subtle.importKey(
            "pkcs8", to_js(_pem_body(pem)), algorithm, False, to_js(["sign"])
        )
    return _signing_keys[pem]


async def generate_other_private_key() -> Any:
    """A key pair the Worker does not trust (for wrong-key tests)."""
    algorithm = to_js(
        {
            "name": "RSASSA-PKCS1-v1_5",
            "modulusLength": 2048,
            "publicExponent": to_js(bytes([1, 0, 1])),
            "hash": "SHA-256",
        },
        dict_converter=js.Object.fromEntries,
    )
    pair = await js.crypto.subtle.generateKey(algorithm, True, to_js(["sign", "verify"]))
    return pair.privateKey


async def sign_token(claims: dict[str, Any], header: dict[str, Any] | None = None, key: Any = None) -> str:
    header = header or {"alg": "RS256", "kid": "ins_test", "typ": "JWT"}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    if key is None:
        key = await _private_key(str(local_runtime.secrets.CLERK_TEST_PRIVATE_KEY))
    algorithm = to_js({"name": "RSASSA-PKCS1-v1_5"}, dict_converter=js.Object.fromEntries)
    signature = await js.crypto.subtle.sign(algorithm, key, to_js(signing_input.encode()))
    return f"{signing_input}.{b64url(signature.to_bytes())}"


def claims_for(sub: str, now_s: int | None = None, **overrides: Any) -> dict[str, Any]:
    now_s = int(time.time()) if now_s is None else now_s
    claims = {
        "azp": AUTHORIZED_PARTY,
        "exp": now_s + 60,
        "iat": now_s,
        "iss": ISSUER,
        "nbf": now_s - 5,
        "sid": f"sess_{sub}",
        "sub": sub,
        "v": 2,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


async def token_for(sub: str, **overrides: Any) -> str:
    return await sign_token(claims_for(sub, **overrides))


# Every secret-shaped value a test sends (tokens, signatures, card data, chat
# bodies, review comments, emails): tests/log_guard.py asserts that none of them
# ever appears in the Worker's output during the run.
SENSITIVE_VALUES: set[str] = set()
SENSITIVE_BODY_KEYS = frozenset({"body", "comment", "data_value", "card_number", "email", "display_name", "receiver"})
SENSITIVE_HEADERS = frozenset({"authorization", "x-anet-signature", "cookie"})
MIN_SENSITIVE_CHARS = 12  # shorter values ("a", "Tarot") would match innocently


def remember_sensitive(value: Any, key: str | None = None) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            remember_sensitive(v, str(k).lower())
    elif isinstance(value, list):
        for v in value:
            remember_sensitive(v, key)
    elif isinstance(value, str) and key in SENSITIVE_BODY_KEYS and len(value.strip()) >= MIN_SENSITIVE_CHARS:
        SENSITIVE_VALUES.add(value.strip())


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode())

    @property
    def text(self) -> str:
        return self.body.decode()


class Client:
    """Calls the Worker through its entrypoint, in this isolate (local_runtime.dispatchFetch).
    Requests over real HTTP are host-side (tooling_tests): an HTTP request to this isolate's own
    server while a test holds it suspended in run_sync is not reliable (docs/RUNTIME.md)."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.bookmark: str | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Resp:
        all_headers = {}
        if (token or self.token) is not None:
            all_headers["authorization"] = f"Bearer {token or self.token}"
        if json_body is not None:
            body = json.dumps(json_body)
            all_headers["content-type"] = "application/json"
        all_headers.update(headers or {})
        for name, value in all_headers.items():
            secret = value.split(" ", 1)[-1].strip()
            if name.lower() in SENSITIVE_HEADERS and len(secret) >= MIN_SENSITIVE_CHARS:
                SENSITIVE_VALUES.add(secret)
        remember_sensitive(json_body)
        init: dict[str, Any] = {"method": method, "headers": to_js(all_headers, dict_converter=js.Object.fromEntries)}
        if body is not None:
            init["body"] = to_js(body.encode() if isinstance(body, str) else body)
        js_init = to_js(init, dict_converter=js.Object.fromEntries)
        url = local_runtime.baseUrl + path
        response = (await local_runtime.dispatchFetch(js.Request.new(url, js_init))).response
        data = (await response.arrayBuffer()).to_bytes()
        out_headers = {k.lower(): v for k, v in response.headers.entries()}
        return Resp(int(response.status), out_headers, data)

    async def get(self, path: str, **kw: Any) -> Resp:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Resp:
        return await self.request("POST", path, json_body=json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Resp:
        return await self.request("PATCH", path, json_body=json, **kw)

    async def put(self, path: str, **kw: Any) -> Resp:
        return await self.request("PUT", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Resp:
        return await self.request("DELETE", path, **kw)


def database(primary: bool = True) -> Database:
    """Direct D1 access for assertions, through the same binding the Worker gets."""
    env = _EnvWrapper(local_runtime.makeEnv())
    return Database(env.DB, primary=primary)


async def new_user(prefix: str = "u") -> tuple[str, Client]:
    """A fresh Clerk subject and a client holding its token."""
    sub = f"user_{unique(prefix)}"
    return sub, Client(await token_for(sub))
