"""Helpers for the photo tests: real image bytes, the R2 bucket the Worker
uses, and uploads through the API."""

import itertools
import struct
import zlib
from typing import Any

import local_runtime
from workers import _EnvWrapper

from support import Client, Resp

FIXTURES = "tests/fixtures/images/"
_colours = itertools.count(1)


def fixture(name: str) -> bytes:
    with open(FIXTURES + name, "rb") as f:
        return f.read()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int = 4, height: int = 3, *, pad_to: int | None = None) -> bytes:
    """A valid RGB PNG in a colour no other call used (so every upload has its
    own bytes and hash); `pad_to` grows it to exactly that many bytes with a
    private ancillary chunk, which decoders skip."""
    n = next(_colours)
    rgb = bytes([n % 256, (n // 256) % 256, 77])
    rows = b"".join(b"\x00" + rgb * width for _ in range(height))
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    body = _chunk(b"IDAT", zlib.compress(rows))
    end = _chunk(b"IEND", b"")
    if pad_to is not None:
        filler = pad_to - len(head) - len(body) - len(end) - 12
        assert filler >= 0
        body += _chunk(b"prVt", bytes(filler))
    data = head + body + end
    assert pad_to is None or len(data) == pad_to
    return data


def media() -> Any:
    """The Worker's R2 bucket (MEDIA), through the workers SDK."""
    return _EnvWrapper(local_runtime.makeEnv()).MEDIA


async def r2_keys(prefix: str) -> list[str]:
    listed = await media().list(prefix=prefix, limit=1000)
    return [str(o.key) for o in listed["objects"]]


async def upload(
    client: Client,
    data: bytes,
    version: int | str | None,
    *,
    content_type: str = "application/octet-stream",
    headers: dict[str, str] | None = None,
) -> Resp:
    all_headers = {"content-type": content_type, **(headers or {})}
    if version is not None:
        all_headers["if-match"] = f'"{version}"' if isinstance(version, int) else version
    return await client.put("/v1/advisors/me/photo", body=data, headers=all_headers)


def d1_calls(resp: Resp) -> dict[str, int]:
    """calls / rows_read / rows_written from the Server-Timing header."""
    desc = resp.headers["server-timing"].split('desc="', 1)[1].split('"', 1)[0]
    return {k: int(v) for k, v in (part.split("=") for part in desc.split())}
