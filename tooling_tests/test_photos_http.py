"""Profile photos over real HTTP to workerd (the scratch server): what only a
real connection shows. A Content-Length over the limit is refused before the
body is read, exactly the limit uploads, and HEAD answers headers without a
body. (The runtime suite covers the rest in-process: tests/test_photos.py.)"""

import hashlib
import json
import struct
import zlib

MAX_PHOTO_BYTES = 2 * 1024 * 1024  # src/clairvora/photos.py MAX_PHOTO_BYTES


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_size(size_bytes: int, colour: int) -> bytes:
    """A 1x1 RGB PNG padded to exactly size_bytes with a private ancillary chunk."""
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    pixels = _chunk(b"IDAT", zlib.compress(b"\x00" + bytes([colour % 256, 7, 77])))
    end = _chunk(b"IEND", b"")
    filler = size_bytes - len(head) - len(pixels) - len(end) - 12
    data = head + pixels + _chunk(b"prVt", bytes(filler)) + end
    assert len(data) == size_bytes
    return data


def _put_photo(scratch, token: str, data: bytes, etag: str):
    return scratch.request_bytes(
        "PUT",
        "/v1/advisors/me/photo",
        data,
        token=token,
        headers={"content-type": "application/octet-stream", "if-match": etag},
    )


def test_photo_limits_and_head_over_http(scratch):
    advisor = scratch.world["advisor"]
    status, headers, _body = scratch.request("GET", "/v1/advisors/me", token=advisor["token"])
    assert status == 200
    etag = headers["etag"]

    too_big = png_of_size(MAX_PHOTO_BYTES + 1, 1)
    status, _headers, body = _put_photo(scratch, advisor["token"], too_big, etag)
    assert status == 413, body
    problem = json.loads(body)
    assert problem["code"] == "body_too_large" and problem["max_bytes"] == MAX_PHOTO_BYTES

    exact = png_of_size(MAX_PHOTO_BYTES, 2)
    status, _headers, body = _put_photo(scratch, advisor["token"], exact, etag)
    assert status == 200, body
    url = json.loads(body)["photo_url"]

    status, headers, body = scratch.request("HEAD", url)
    assert status == 200 and body == b""
    assert headers["content-type"] == "image/png"
    assert headers["etag"] == f'"{hashlib.sha256(exact).hexdigest()}"'
    status, _headers, body = scratch.request("GET", url)
    assert status == 200 and body == exact
