"""AES-GCM sealing through WebCrypto under versioned keys from a Worker secret.

One mechanism for every field kept encrypted at rest (chat messages, payout
receivers): the secret is "version:base64key" comma-separated; the highest
version seals, every listed version opens, so keys rotate by adding a version.
Each seal draws a fresh 12-byte IV; the additional data (the caller's) binds a
ciphertext to the row it belongs to, so rows cannot be swapped. Plaintexts and
keys never reach a log.
"""

import base64
import binascii
import secrets
from dataclasses import dataclass
from typing import Any

import js
from pyodide.ffi import JsException, to_js

from .errors import Problem

IV_BYTES = 12
MAX_KEYS = 16
MAX_KEY_VERSION = 1_000_000


@dataclass(frozen=True, slots=True)
class Keyring:
    keys: dict[int, bytes]

    @property
    def current(self) -> int:
        return max(self.keys)


def _misconfigured(detail: str) -> Problem:
    return Problem(500, "misconfigured", "Server misconfigured", detail)


def parse_keyring(secret: str | None, name: str) -> Keyring:
    """ "1:<base64>,2:<base64>" -> versions and raw AES keys (16, 24 or 32 bytes);
    `name` (the secret's) is all an error says about it."""
    if not secret:
        raise _misconfigured(f"{name} is not set.")
    keys: dict[int, bytes] = {}
    for part in secret.split(",")[: MAX_KEYS + 1]:
        version_text, sep, b64 = part.strip().partition(":")
        if not sep or not version_text.isdigit() or not 1 <= int(version_text) <= MAX_KEY_VERSION:
            raise _misconfigured(f"{name} entries are version:base64key.")
        try:
            raw = base64.b64decode(b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise _misconfigured(f"A {name} key is not base64.") from None
        if len(raw) not in (16, 24, 32) or int(version_text) in keys:
            raise _misconfigured(f"{name} keys are 16, 24 or 32 bytes, one per version.")
        keys[int(version_text)] = raw
    if not keys or len(keys) > MAX_KEYS:
        raise _misconfigured(f"{name} holds 1 to {MAX_KEYS} keys.")
    return Keyring(keys)


# Imported CryptoKeys, per isolate (importKey is the slow part).
_CRYPTO_KEYS: dict[bytes, Any] = {}


def _algorithm(name: str, **fields: Any) -> Any:
    return to_js({"name": name, **fields}, dict_converter=js.Object.fromEntries)


async def _crypto_key(raw: bytes) -> Any:
    key = _CRYPTO_KEYS.get(raw)
    if key is None:
        key = await js.crypto.subtle.importKey(
            "raw", to_js(raw), _algorithm("AES-GCM"), False, to_js(["encrypt", "decrypt"])
        )
        _CRYPTO_KEYS[raw] = key
    return key


async def seal(keyring: Keyring, plaintext: bytes, aad: bytes) -> tuple[int, str, str]:
    """(key_version, iv_b64, ciphertext_b64); a fresh random IV every call."""
    version = keyring.current
    iv = secrets.token_bytes(IV_BYTES)
    params = _algorithm("AES-GCM", iv=to_js(iv), additionalData=to_js(aad))
    sealed = await js.crypto.subtle.encrypt(params, await _crypto_key(keyring.keys[version]), to_js(plaintext))
    return version, base64.b64encode(iv).decode(), base64.b64encode(sealed.to_bytes()).decode()


async def open_sealed(
    keyring: Keyring, version: int, iv_b64: str, ciphertext_b64: str, aad: bytes, *, what: str, unreadable: Problem
) -> bytes:
    """The plaintext; `unreadable` when authentication fails (a swapped or altered
    row), a 500 naming `what` when its key version is no longer configured."""
    raw = keyring.keys.get(version)
    if raw is None:
        raise _misconfigured(f"{what} key version {version} is no longer configured.")
    params = _algorithm("AES-GCM", iv=to_js(base64.b64decode(iv_b64)), additionalData=to_js(aad))
    try:
        plain = await js.crypto.subtle.decrypt(params, await _crypto_key(raw), to_js(base64.b64decode(ciphertext_b64)))
    except JsException:
        raise unreadable from None
    return bytes(plain.to_bytes())
