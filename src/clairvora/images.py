"""What an uploaded image really is, decided from its own bytes.

The declared Content-Type is the client's claim and is ignored: the format
comes from the file's magic numbers, and the header that follows them must
parse to sane dimensions. Only JPEG, PNG and WebP are accepted. Nothing here
decodes pixels; it reads a few header bytes, so the cost does not grow with
the image.
"""

import struct
import zlib
from dataclasses import dataclass

# A profile photo is shown at a few hundred pixels; the limits refuse
# decompression bombs (tiny files that decode to gigabytes in a browser).
MAX_SIDE_PX = 8192
MAX_PIXELS = 40_000_000

JPEG, PNG, WEBP = "image/jpeg", "image/png", "image/webp"
CONTENT_TYPES: tuple[str, ...] = (JPEG, PNG, WEBP)
EXTENSIONS = {JPEG: "jpg", PNG: "png", WEBP: "webp"}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic);
# C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


class NotAnImage(ValueError):
    """The bytes are not JPEG, PNG or WebP (whatever the client declared)."""


class BadImage(ValueError):
    """The magic numbers say JPEG/PNG/WebP, but the header is broken or the
    dimensions are outside the limits."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    content_type: str
    width_px: int
    height_px: int

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.content_type]


def sniff_type(data: bytes) -> str | None:
    """The content type the magic numbers announce, or None."""
    if data.startswith(_PNG_MAGIC):
        return PNG
    if data.startswith(_JPEG_MAGIC):
        return JPEG
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


def identify(data: bytes) -> ImageInfo:
    """Type and dimensions from the header; raises NotAnImage or BadImage."""
    content_type = sniff_type(data)
    if content_type is None:
        raise NotAnImage("not a JPEG, PNG or WebP file")
    reader = {PNG: _png_size, JPEG: _jpeg_size, WEBP: _webp_size}[content_type]
    try:
        width, height = reader(data)
    except (IndexError, struct.error):
        raise BadImage("the image header is truncated") from None
    if not (1 <= width <= MAX_SIDE_PX and 1 <= height <= MAX_SIDE_PX) or width * height > MAX_PIXELS:
        raise BadImage(f"{width}x{height} px is outside 1..{MAX_SIDE_PX} px per side and {MAX_PIXELS} pixels in all")
    return ImageInfo(content_type, width, height)


def _png_size(data: bytes) -> tuple[int, int]:
    # The first chunk must be IHDR (13 bytes), and its CRC must hold.
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        raise BadImage("a PNG must start with its IHDR chunk")
    (crc,) = struct.unpack_from(">I", data, 29)
    if zlib.crc32(data[12:29]) != crc:
        raise BadImage("the PNG header checksum is wrong")
    width, height = struct.unpack_from(">II", data, 16)
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    # Walk the marker segments after SOI up to the first start-of-frame.
    i = 2
    while i < len(data):
        if data[i] != 0xFF:
            raise BadImage("the JPEG segments are malformed")
        while data[i] == 0xFF:  # fill bytes
            i += 1
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame
            break
        (length,) = struct.unpack_from(">H", data, i)
        if length < 2:
            raise BadImage("the JPEG segments are malformed")
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, i + 3)
            return width, height
        i += length
    raise BadImage("the JPEG has no frame header")


def _webp_size(data: bytes) -> tuple[int, int]:
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size + 8 > len(data) or riff_size < 4:
        raise BadImage("the WebP file is truncated")
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: frame tag, start code, 14-bit sizes
        if data[23:26] != b"\x9d\x01\x2a":
            raise BadImage("the WebP (VP8) frame header is malformed")
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: signature, then 14+14 bits (size - 1)
        if data[20] != 0x2F:
            raise BadImage("the WebP (VP8L) header is malformed")
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes (size - 1)
        if len(data) < 30:
            raise BadImage("the WebP file is truncated")
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise BadImage("the WebP file has no image chunk")
