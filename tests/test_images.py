"""The image sniffer: type from magic numbers, dimensions from the header."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clairvora import images
from photo_support import fixture, png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_real_files_are_identified_with_their_sizes():
    assert images.identify(fixture("python-16x16.jpg")) == images.ImageInfo("image/jpeg", 16, 16)
    assert images.identify(fixture("python-16x16.webp")) == images.ImageInfo("image/webp", 16, 16)
    assert images.identify(png(7, 5)) == images.ImageInfo("image/png", 7, 5)


@pytest.mark.parametrize(
    "data",
    [
        b"GIF89a\x10\x00\x10\x00",
        b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
        b"<html><body>not an image</body></html>",
        b"BM\x8a\x04\x00\x00",  # BMP
        b"II*\x00\x08\x00\x00\x00",  # TIFF
        b"RIFF\x24\x00\x00\x00WAVEfmt ",  # a RIFF that is not WebP
        b"\xff\xd8",  # too short for JPEG's three-byte magic
        b"",
    ],
)
def test_other_formats_are_not_images(data):
    with pytest.raises(images.NotAnImage):
        images.identify(data)


def test_gif_fixture_is_refused():
    with pytest.raises(images.NotAnImage):
        images.identify(fixture("python-16x16.gif"))


def _ihdr(width: int, height: int, crc_ok: bool = True) -> bytes:
    import zlib

    body = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = zlib.crc32(body) ^ (0 if crc_ok else 1)
    return PNG_MAGIC + struct.pack(">I", 13) + body + struct.pack(">I", crc)


@pytest.mark.parametrize(
    "data, reason",
    [
        (_ihdr(0, 10), "outside"),
        (_ihdr(images.MAX_SIDE_PX + 1, 10), "outside"),
        (_ihdr(8000, 8000), "outside"),  # each side fine, too many pixels in all
        (_ihdr(16, 16, crc_ok=False), "checksum"),
        (PNG_MAGIC + b"\x00\x00", "truncated"),
        (PNG_MAGIC + struct.pack(">I", 13) + b"IDAT" + bytes(17), "IHDR"),
        (b"\xff\xd8\xff", "truncated"),
        (b"\xff\xd8\xff\xd9", "no frame"),  # SOI then EOI: no frame header
        (b"\xff\xd8\xff\xda\x00\x08" + bytes(8), "no frame"),  # scan before any frame
        (b"\xff\xd8\xff\xe0\x00\x01", "malformed"),  # segment length below 2
        (b"RIFF\xff\xff\x00\x00WEBPVP8X" + bytes(18), "truncated"),  # RIFF size beyond the data
        (b"RIFF\x16\x00\x00\x00WEBPABCD" + bytes(14), "no image chunk"),
        (b"RIFF\x16\x00\x00\x00WEBPVP8 " + bytes(14), "VP8"),  # missing start code
    ],
)
def test_broken_headers_are_bad_images(data, reason):
    with pytest.raises(images.BadImage, match=reason):
        images.identify(data)


def test_each_webp_flavour_and_jpeg_frame_kind_gives_its_size():
    # Lossy VP8: frame tag, start code 9d 01 2a, 14-bit width/height (+2 scale bits).
    vp8 = b"VP8 " + struct.pack("<I", 10) + b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", 0xC000 | 320, 240)
    lossy = b"RIFF" + struct.pack("<I", 4 + len(vp8)) + b"WEBP" + vp8
    assert images.identify(lossy) == images.ImageInfo("image/webp", 320, 240)
    # Lossless VP8L: 0x2f, then width-1 and height-1 in 14 bits each.
    bits = (640 - 1) | ((480 - 1) << 14)
    vp8l = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + struct.pack("<I", bits)
    lossless = b"RIFF" + struct.pack("<I", 4 + len(vp8l)) + b"WEBP" + vp8l
    assert images.identify(lossless) == images.ImageInfo("image/webp", 640, 480)
    # A progressive JPEG (SOF2) after an APP0 segment and fill bytes.
    jpeg = (
        b"\xff\xd8"
        + b"\xff\xe0\x00\x04ab"
        + b"\xff\xff\xc2\x00\x0b\x08"
        + struct.pack(">HH", 600, 800)
        + b"\x01\x01\x11\x00"
    )
    assert images.identify(jpeg) == images.ImageInfo("image/jpeg", 800, 600)


@settings(max_examples=300, deadline=None)
@given(
    magic=st.sampled_from([PNG_MAGIC, b"\xff\xd8\xff", b"RIFF\x20\x00\x00\x00WEBP", b""]), tail=st.binary(max_size=64)
)
def test_arbitrary_bytes_never_crash_the_sniffer(magic, tail):
    try:
        info = images.identify(magic + tail)
    except (images.NotAnImage, images.BadImage):
        return
    assert info.content_type in images.CONTENT_TYPES
    assert 1 <= info.width_px <= images.MAX_SIDE_PX and 1 <= info.height_px <= images.MAX_SIDE_PX
