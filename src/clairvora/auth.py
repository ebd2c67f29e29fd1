"""Clerk session tokens (RS256 JWT), verified networklessly through WebCrypto.

The algorithm is pinned to RS256 whatever the header says (no `none`, no HS256
signed with the public key); `iss` must equal the configured issuer; `azp`, when
present, must be an allowed origin; `exp` is required and `exp`/`nbf`/`iat` get
a small clock skew; `sub` is required.

Time claims are JSON integers of seconds, 0 <= t <= 2**53 - 2 (what Clerk
sends): a float (1e999 is read as infinity, 1e10 or 1.5 are not integers), NaN
or Infinity (refused by the JSON reader), a string, a bool, a negative or a
huge number is a 401, never a crash. A token may not live longer than
MAX_TOKEN_LIFETIME_SECONDS (Settings.max_token_lifetime_s): `exp - iat` must not
exceed it, nor `exp - now` (with the clock skew), so a token whose exp is
decades away (a misconfigured JWT template; once stolen, such a token would
never stop working) is refused. Clerk session tokens live 60 s.

Cookie sessions and CSRF (`cookie_session_refusal`): the `__session` cookie is
sent by the browser whoever made the page, so a state-changing request
authenticated by it must come from an allowed Origin, or, without an Origin
header, carry a header that only a CORS-preflighted request can have.
"""

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import js
from pyodide.ffi import JsException, to_js

from .config import MAX_TOKEN_LIFETIME_SECONDS
from .errors import Problem, unauthorized
from .validation import exact_integer

MAX_TOKEN_CHARS = 4096
MAX_SUB_CHARS = 64

# Imported CryptoKeys per isolate, keyed by the PEM text (importKey costs ~1 ms).
_KEY_CACHE: dict[str, Any] = {}
# Tokens whose RS256 signature already verified in this isolate, keyed by
# (key PEM, whole token): a client repeats its session token on every request
# (heartbeats!), and the signature check is most of a request's own CPU time
# (bench/). Claims (exp, nbf, iss, azp, sub) are still checked every time.
# Bounded: the oldest entry goes first.
_VERIFIED: dict[tuple[str, str], bool] = {}
MAX_VERIFIED_TOKENS = 512
_ALGORITHM: list[Any] = []  # the JS algorithm object, built on first use (to_js costs ~0.15 ms)


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str
    session_id: str | None
    expires_at_s: int


def _b64url(segment: str) -> bytes:
    if not segment or len(segment) > MAX_TOKEN_CHARS:
        raise unauthorized("Malformed token.")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise unauthorized("Malformed token.") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_segment(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url(segment).decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError):
        raise unauthorized("Malformed token.") from None
    if not isinstance(value, dict):
        raise unauthorized("Malformed token.")
    return value


def pem_to_der(pem: str) -> bytes:
    """SPKI DER from a PEM (or its bare base64 body; '\\n' escapes tolerated)."""
    text = pem.replace("\\n", "\n")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("-----")]
    return base64.b64decode("".join(lines), validate=True)


def _algorithm() -> Any:
    if not _ALGORITHM:
        _ALGORITHM.append(to_js({"name": "RSASSA-PKCS1-v1_5", "hash": "SHA-256"}, dict_converter=js.Object.fromEntries))
    return _ALGORITHM[0]


async def _public_key(pem: str) -> Any:
    key = _KEY_CACHE.get(pem)
    if key is None:
        der = pem_to_der(pem)
        key = await js.crypto.subtle.importKey("spki", to_js(der), _algorithm(), False, to_js(["verify"]))
        _KEY_CACHE[pem] = key
    return key


def credentials(authorization: str | None, cookie: str | None) -> tuple[str | None, str | None]:
    """(token, where it came from: "header" | "cookie"): the Authorization header
    first (cross-origin), then a `__session*` cookie (same-origin)."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("Use 'Authorization: Bearer <token>'.")
        return token.strip(), "header"
    if cookie:
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name.startswith("__session") and value:
                return value, "cookie"
    return None, None


def bearer_token(authorization: str | None, cookie: str | None) -> str | None:
    return credentials(authorization, cookie)[0]


# Methods that change nothing here: every other one (POST, PUT, PATCH, DELETE, ...)
# is state-changing and gets the cookie-session check.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Request headers that are NOT CORS-safelisted, so a page of another origin can
# only make a browser send them after a preflight, which this Worker never
# approves (it answers no OPTIONS with Access-Control-Allow-*). A request that
# carries one cannot be a forged cross-site request. They are the API's own
# headers, which a client sets on purpose; headers that browsers or Cloudflare
# add by themselves (cf-*, sec-fetch-*, user-agent, ...) prove nothing, and
# neither does Content-Type: application/json, which `navigator.sendBeacon`
# sent without a preflight for years (the check does not rest on a body's
# declared type; text/plain, form and multipart bodies are simple anyway).
PREFLIGHT_ONLY_HEADERS = ("x-requested-with", "idempotency-key", "if-match", "x-d1-bookmark")


def cookie_session_refusal(
    method: str, origin: str | None, has_header: Any, authorized_parties: tuple[str, ...]
) -> Problem | None:
    """Why a request authenticated by the `__session` cookie is refused (a 403
    `csrf_origin_refused`), or None. `has_header(name) -> bool`.

    Safe methods pass. A state-changing one passes when its Origin is one of the
    authorized parties (browsers send Origin on every POST/PUT/PATCH/DELETE,
    same-origin ones included). A foreign Origin (or "null", from sandboxed
    frames and file: pages) is refused whatever else it carries. Without an
    Origin (not a browser, or a very old one), a preflight-only header must be
    present."""
    if method.upper() in SAFE_METHODS:
        return None
    if origin is not None:
        if origin.strip() in authorized_parties:
            return None
        reason = "comes from an origin that is not allowed"
    elif any(has_header(name) for name in PREFLIGHT_ONLY_HEADERS):
        return None
    else:
        reason = "has no Origin header"
    return Problem(
        403,
        "csrf_origin_refused",
        "Forbidden",
        f"This state-changing request is authenticated by the session cookie and {reason}: "
        "send it from the app's own origin, or send the token as 'Authorization: Bearer <token>'.",
    )


async def verify_token(
    token: str,
    *,
    public_key_pem: str,
    issuer: str,
    authorized_parties: tuple[str, ...],
    now_s: int,
    clock_skew_s: int,
    max_lifetime_s: int = MAX_TOKEN_LIFETIME_SECONDS,
) -> Identity:
    if len(token) > MAX_TOKEN_CHARS:
        raise unauthorized("Token too long.")
    parts = token.split(".")
    if len(parts) != 3:
        raise unauthorized("Malformed token.")
    header = _json_segment(parts[0])
    if header.get("alg") != "RS256":
        raise unauthorized("Unsupported token algorithm.")
    if header.get("typ", "JWT") != "JWT":
        raise unauthorized("Unsupported token type.")
    claims = _json_segment(parts[1])
    signature = _b64url(parts[2])
    signed = (
        f"{parts[0]}.{parts[1]}".encode("ascii", errors="strict") if parts[0].isascii() and parts[1].isascii() else b""
    )
    if not signed:
        raise unauthorized("Malformed token.")
    if (public_key_pem, token) not in _VERIFIED:
        try:
            key = await _public_key(public_key_pem)
            valid = await js.crypto.subtle.verify(_algorithm(), key, to_js(signature), to_js(signed))
        except JsException:
            raise unauthorized("Invalid token signature.") from None
        if valid is not True:
            raise unauthorized("Invalid token signature.")
        if len(_VERIFIED) >= MAX_VERIFIED_TOKENS:
            del _VERIFIED[next(iter(_VERIFIED))]
        _VERIFIED[(public_key_pem, token)] = True
    return _check_claims(claims, issuer, authorized_parties, now_s, clock_skew_s, max_lifetime_s)


def _int_claim(claims: dict[str, Any], name: str) -> int | None:
    """A NumericDate as Clerk writes it: a JSON integer of seconds, not negative,
    exact in a double (validation.exact_integer); absent or null is None."""
    value = claims.get(name)
    if value is None:
        return None
    if not exact_integer(value) or value < 0:
        raise unauthorized(f"Invalid '{name}' claim: not a whole number of seconds.")
    result: int = value
    return result


def _check_claims(
    claims: dict[str, Any], issuer: str, parties: tuple[str, ...], now_s: int, skew_s: int, max_lifetime_s: int
) -> Identity:
    if not issuer or claims.get("iss") != issuer:
        raise unauthorized("Token issuer not accepted.")
    exp = _int_claim(claims, "exp")
    if exp is None:
        raise unauthorized("Token has no expiry.")
    if now_s > exp + skew_s:
        raise unauthorized("Token expired.")
    nbf = _int_claim(claims, "nbf")
    if nbf is not None and now_s + skew_s < nbf:
        raise unauthorized("Token not yet valid.")
    iat = _int_claim(claims, "iat")
    if iat is not None and now_s + skew_s < iat:
        raise unauthorized("Token issued in the future.")
    if exp - now_s > max_lifetime_s + skew_s or (iat is not None and exp - iat > max_lifetime_s):
        raise unauthorized(f"Token lifetime is longer than the {max_lifetime_s} s accepted.")
    azp = claims.get("azp")
    if azp is not None and (not isinstance(azp, str) or azp not in parties):
        raise unauthorized("Token authorized party not accepted.")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUB_CHARS or not sub.isascii() or not sub.isprintable():
        raise unauthorized("Token has no valid subject.")
    sid = claims.get("sid")
    return Identity(sub=sub, session_id=sid if isinstance(sid, str) else None, expires_at_s=exp)
