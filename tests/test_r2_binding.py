"""The R2 binding as the Worker sees it on workerd: the vendored workers SDK
wrapping workerd's own R2Bucket over wrangler's local R2, with the shapes
production returns (R2Object / R2ObjectBody, null for a missing key)."""

import hashlib

import pytest
from pyodide.ffi import JsException
from workers import Response

from photo_support import media
from support import unique


async def test_put_get_head_delete_round_trip():
    bucket = media()
    key = f"test/{unique('r2')}"
    data = bytes(range(256)) * 64 + b"\x00end"
    stored = await bucket.put(
        key,
        data,
        httpMetadata={"contentType": "image/png", "cacheControl": "no-store"},
        customMetadata={"owner": "test"},
        sha256=hashlib.sha256(data).hexdigest(),
    )
    assert stored.key == key and stored.size == len(data)
    assert stored.httpEtag == f'"{stored.etag}"'
    got = await bucket.get(key)
    assert got.size == len(data) and got.etag == stored.etag
    # workerd reports every httpMetadata field, the unset ones as None.
    set_fields = {k: v for k, v in dict(got.httpMetadata).items() if v is not None}
    assert set_fields == {"contentType": "image/png", "cacheControl": "no-store"}
    assert dict(got.customMetadata) == {"owner": "test"}
    assert bytes(await got.arrayBuffer()) == data
    # The body is a ReadableStream a Response can take as is.
    again = await bucket.get(key)
    assert again.body.constructor.name == "ReadableStream"
    streamed = Response(again.body)
    assert (await streamed.js_object.arrayBuffer()).to_bytes() == data
    head = await bucket.head(key)
    assert head.size == len(data) and head.httpMetadata["contentType"] == "image/png"
    assert not hasattr(head, "body") or head.body is None
    await bucket.delete(key)
    assert await bucket.get(key) is None
    assert await bucket.head(key) is None


async def test_checksum_mismatch_is_refused_and_stores_nothing():
    bucket = media()
    key = f"test/{unique('r2sum')}"
    with pytest.raises(JsException, match="SHA-256"):
        await bucket.put(key, b"abc", sha256=hashlib.sha256(b"abd").hexdigest())
    assert await bucket.head(key) is None


async def test_conditional_get_answers_without_a_body():
    bucket = media()
    key = f"test/{unique('r2if')}"
    stored = await bucket.put(key, b"same bytes")
    unchanged = await bucket.get(key, onlyIf={"etagDoesNotMatch": stored.etag})
    assert unchanged is not None and not hasattr(unchanged, "arrayBuffer")
    changed = await bucket.get(key, onlyIf={"etagDoesNotMatch": "0" * 32})
    assert bytes(await changed.arrayBuffer()) == b"same bytes"


async def test_list_pages_with_a_cursor_and_deletes_many():
    bucket = media()
    prefix = f"test/{unique('r2ls')}/"
    keys = [f"{prefix}{i}" for i in range(5)]
    for k in keys:
        await bucket.put(k, k.encode())
    seen, cursor, pages = [], None, 0
    while True:
        options = {"prefix": prefix, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await bucket.list(**options)
        pages += 1
        seen += [str(o.key) for o in page["objects"]]
        assert all(o.uploaded.getTime() > 0 for o in page["objects"])
        if not page["truncated"]:
            break
        cursor = page["cursor"]
    assert seen == keys and pages == 3
    await bucket.delete(keys[:4])
    assert [str(o.key) for o in (await bucket.list(prefix=prefix))["objects"]] == keys[4:]
