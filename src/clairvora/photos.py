"""Advisor profile photos: the bytes in R2 (binding MEDIA), the reference in D1.

Upload order, and why: the object is written to R2 under a new random key
first, then ONE conditional UPDATE (guarded by the advisor's version, i.e.
If-Match) points the row at it. Until that UPDATE commits nobody can see the
new object; after it, the old object is unreferenced and is deleted in
waitUntil. Whatever is left behind (the UPDATE refused, an ambiguous D1
failure, a waitUntil that did not finish) is an object no row names, and the
cron sweep removes it once it is older than ORPHAN_GRACE_MS. D1 never holds
image bytes: its CHECKs admit only a key, a type, a size and a hash.
"""

import hashlib
import secrets
from typing import Any

from pyodide.ffi import JsException

from . import images, logs
from .advisors import PHOTO_URL_HASH_CHARS, SELECT_ADVISOR, advisor_view
from .db import D1Error, Database, Statement, TransientD1Error, placeholders, sql
from .errors import Problem, bad_request, not_found, service_unavailable, unprocessable
from .requests import RequestContext
from .responses import Reply
from .routing import Route
from .users import etag, parse_if_match
from .validation import Obj, RawBody, Str

MAX_PHOTO_BYTES = 2 * 1024 * 1024  # also a CHECK in migrations/0030_advisor_photos.sql
KEY_PREFIX = "advisor-photos/"  # also a CHECK in the migration
# A URL with ?v=<hash prefix> names one photo's bytes for ever; without it the
# URL follows the current photo, so caches must come back soon.
CACHE_VERSIONED = "public, max-age=86400, immutable"
CACHE_UNVERSIONED = "public, max-age=300"
# The sweep never deletes an object younger than this: an upload's D1 update
# may still be on its way (a request lives seconds, not an hour).
ORPHAN_GRACE_MS = 60 * 60 * 1000
SWEEP_JOB = "photo_orphan_sweep"
SWEEP_LIST_LIMIT = 100  # one R2 list page, and at most 100 bound parameters in the IN query

_NOT_ADVISOR = "advisor profile (become an advisor with POST /v1/advisors)"


def new_key(advisor_id: int, extension: str) -> str:
    """Unguessable (128 random bits), and never reused, so a key names one
    upload for ever and the sweep can never race a later upload to it."""
    return f"{KEY_PREFIX}{advisor_id}/{secrets.token_hex(16)}.{extension}"


def _media(env: Any) -> Any:
    media = getattr(env, "MEDIA", None)
    if media is None:
        raise Problem(500, "misconfigured", "Server misconfigured", "The MEDIA (R2) binding is missing.")
    return media


async def _delete_objects(media: Any, keys: list[str], why: str) -> None:
    """Best effort (run in waitUntil): a failure leaves an orphan the sweep removes."""
    try:
        await media.delete(keys if len(keys) > 1 else keys[0])
    except JsException as exc:
        logs.warning("photo_delete_failed", why=why, count=len(keys), error=str(exc)[:200])


def _stale() -> Problem:
    return Problem(
        412, "version_conflict", "Precondition failed", "The advisor profile changed since you read it; fetch it again."
    )


async def _apply(rc: RequestContext, expected_version: int, update: Statement) -> tuple[dict[str, Any], str | None]:
    """Runs `update` (guarded by user_id and version) in one batch with a read
    of the row before and after: the before-read gives the old photo key and
    tells "not an advisor" from "stale version", race-free (one transaction).
    Returns (the advisor row after, the photo key it had before)."""
    uid = rc.user_id
    before, changed, after = await rc.db.batch(
        [
            sql("SELECT photo_key, version FROM advisors WHERE user_id = ?", uid),
            update,
            sql(SELECT_ADVISOR, uid),
        ]
    )
    if not before.rows:
        raise not_found(_NOT_ADVISOR)
    if changed.changes == 0:  # (changes counts the listing rows its triggers wrote too)
        if int(before.rows[0]["version"]) != expected_version:
            raise _stale()
        raise not_found("photo")
    return after.rows[0], before.rows[0]["photo_key"]


async def put_photo(rc: RequestContext) -> Reply:
    assert rc.user is not None
    if not rc.user.get("is_advisor"):
        raise not_found(_NOT_ADVISOR)
    expected = parse_if_match(rc.header("if-match"))
    data = await rc.body_bytes()
    if not data:
        raise bad_request("Send the image file as the request body.", "body", code="empty_body")
    try:
        info = images.identify(data)
    except images.NotAnImage:
        raise Problem(
            415,
            "unsupported_image",
            "Unsupported media type",
            "Send a JPEG, PNG or WebP image; the type is read from the file itself, not from Content-Type.",
        ) from None
    except images.BadImage as exc:
        raise unprocessable("invalid_image", f"The image cannot be used: {exc}.") from None
    sha256 = hashlib.sha256(data).hexdigest()
    uid = rc.user_id
    key = new_key(uid, info.extension)
    media = _media(rc.env)
    try:
        # R2 verifies the checksum on its side: what it stores is what we hashed.
        await media.put(
            key,
            data,
            httpMetadata={"contentType": info.content_type},
            customMetadata={"advisor_id": str(uid)},
            sha256=sha256,
        )
    except JsException as exc:
        logs.error("photo_put_failed", error=str(exc)[:200])
        raise service_unavailable("Photo storage is briefly unavailable; retry.") from None
    update = sql(
        """UPDATE advisors
           SET photo_key = ?, photo_content_type = ?, photo_size_bytes = ?, photo_sha256 = ?,
               version = version + 1, updated_at_ms = ?
           WHERE user_id = ? AND version = ?""",
        key,
        info.content_type,
        len(data),
        sha256,
        rc.clock.now_ms(),
        uid,
        expected,
    )
    try:
        row, old_key = await _apply(rc, expected, update)
    except TransientD1Error:
        # Ambiguous: the UPDATE may have committed. Keep the object; if no row
        # names it, the sweep removes it later.
        raise
    except (Problem, D1Error):
        # Definitely not committed: the new object is an orphan right now.
        rc.wait_until(_delete_objects(media, [key], "update_refused"), "photo_cleanup")
        raise
    if old_key is not None:
        rc.wait_until(_delete_objects(media, [old_key], "replaced"), "photo_cleanup")
    return Reply(advisor_view(row), headers={"etag": etag(int(row["version"]))})


async def delete_photo(rc: RequestContext) -> Reply:
    assert rc.user is not None
    if not rc.user.get("is_advisor"):
        raise not_found(_NOT_ADVISOR)
    expected = parse_if_match(rc.header("if-match"))
    update = sql(
        """UPDATE advisors
           SET photo_key = NULL, photo_content_type = NULL, photo_size_bytes = NULL, photo_sha256 = NULL,
               version = version + 1, updated_at_ms = ?
           WHERE user_id = ? AND version = ? AND photo_key IS NOT NULL""",
        rc.clock.now_ms(),
        rc.user_id,
        expected,
    )
    row, old_key = await _apply(rc, expected, update)
    assert old_key is not None, "the UPDATE matched, so there was a photo"
    rc.wait_until(_delete_objects(_media(rc.env), [old_key], "deleted"), "photo_cleanup")
    return Reply(advisor_view(row), headers={"etag": etag(int(row["version"]))})


# --- serving -----------------------------------------------------------------

_SELECT_PHOTO = """SELECT photo_key, photo_content_type, photo_sha256 FROM advisors
                   WHERE user_id = ? AND photo_key IS NOT NULL"""

PHOTO_QUERY = Obj({"v": Str(min_len=1, max_len=64, description="The version in photo_url; optional.")})


def etag_matches(if_none_match: str | None, current: str) -> bool:
    """RFC 9110 If-None-Match: `*` or a list of (weak or strong) entity tags,
    compared weakly."""
    if if_none_match is None:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == current:
            return True
    return False


async def get_photo(rc: RequestContext) -> Reply:
    advisor_id = rc.params["advisor_id"]
    query = rc.parsed_query()
    row = await rc.db.first(sql(_SELECT_PHOTO, advisor_id))
    if row is None:
        raise not_found("photo")
    headers = _photo_headers(row["photo_sha256"], query.get("v"))
    # Answered from D1 alone: a revalidation costs no R2 operation.
    if etag_matches(rc.header("if-none-match"), headers["etag"]):
        return Reply(status=304, headers=headers)
    media = _media(rc.env)
    fetch = media.head if rc.method == "HEAD" else media.get
    found = await fetch(row["photo_key"])
    if found is None:
        # A replica behind a replacement names an object already deleted:
        # ask the primary once before calling the photo missing.
        # (Same fault plan and counters as rc.db: one request.)
        row = await rc.db.new_session(primary=True).first(sql(_SELECT_PHOTO, advisor_id))
        found = await fetch(row["photo_key"]) if row is not None else None
        if row is None or found is None:
            if row is not None:
                logs.error("photo_object_missing", advisor_id=advisor_id)
            raise not_found("photo")
        headers = _photo_headers(row["photo_sha256"], query.get("v"))
    if rc.method == "HEAD":
        return Reply(headers=headers, content_type=row["photo_content_type"], raw=b"")
    # The R2 body stream goes to the client as is: the bytes never pass through Python.
    return Reply(stream=found.body, headers=headers, content_type=row["photo_content_type"])


def _photo_headers(sha256: str, version: str | None) -> dict[str, str]:
    return {
        "etag": f'"{sha256}"',
        "cache-control": CACHE_VERSIONED if version == sha256[:PHOTO_URL_HASH_CHARS] else CACHE_UNVERSIONED,
        # The type was decided from the bytes; browsers must not guess another.
        "x-content-type-options": "nosniff",
        "content-security-policy": "default-src 'none'; sandbox",
    }


# --- the cron's sweep ---------------------------------------------------------


def _uploaded_ms(obj: Any) -> int:
    uploaded = obj.uploaded
    if hasattr(uploaded, "getTime"):
        return int(uploaded.getTime())
    return int(uploaded.timestamp() * 1000)  # already converted to a datetime


async def sweep_orphans(
    db: Database,
    media: Any,
    now_ms: int,
    *,
    prefix: str = KEY_PREFIX,
    limit: int = SWEEP_LIST_LIMIT,
    job: str = SWEEP_JOB,
) -> dict[str, int]:
    """One bounded step over the photo objects: list one page (resuming where
    the last run stopped), delete those no advisor row references and older
    than the grace period. Two D1 calls and two R2 calls at most per run;
    concurrent runs are harmless (deleting a deleted key is a no-op)."""
    assert 1 <= limit <= SWEEP_LIST_LIMIT and prefix.startswith(KEY_PREFIX)
    saved = await db.first(sql("SELECT cursor FROM maintenance_cursors WHERE job = ?", job))
    cursor = saved["cursor"] if saved else None
    options: dict[str, Any] = {"prefix": prefix, "limit": limit}
    if cursor:
        options["cursor"] = cursor
    try:
        listed = await media.list(**options)
    except JsException as exc:
        # An expired or foreign cursor: start again from the beginning next run.
        logs.warning("photo_sweep_list_failed", error=str(exc)[:200])
        listed = {"objects": [], "truncated": False}
    objects = [(str(o.key), _uploaded_ms(o)) for o in listed["objects"]]
    next_cursor = listed.get("cursor") if listed["truncated"] else None
    save_cursor = sql(
        """INSERT INTO maintenance_cursors (job, cursor, updated_at_ms) VALUES (?, ?, ?)
           ON CONFLICT (job) DO UPDATE SET cursor = excluded.cursor, updated_at_ms = excluded.updated_at_ms""",
        job,
        next_cursor,
        now_ms,
    )
    referenced: set[str] = set()
    if objects:
        keys = [k for k, _ in objects]
        in_use, _saved = await db.batch(
            [
                sql(
                    f"SELECT photo_key FROM advisors WHERE photo_key IN ({placeholders(len(keys))})",  # noqa: S608 - only '?'s
                    *keys,
                ),
                save_cursor,
            ]
        )
        referenced = {r["photo_key"] for r in in_use.rows}
    else:
        await db.run(save_cursor)
    orphans = [k for k, uploaded_ms in objects if k not in referenced and uploaded_ms < now_ms - ORPHAN_GRACE_MS]
    if orphans:
        await media.delete(orphans)
    return {"photo_objects_listed": len(objects), "photo_orphans_deleted": len(orphans)}


ROUTES = [
    Route(
        "PUT",
        "/v1/advisors/me/photo",
        put_photo,
        "Upload or replace your profile photo: the raw JPEG/PNG/WebP file as the body (If-Match: <version>)",
        primary=True,
        if_match=True,
        raw_body=RawBody(
            media_types=images.CONTENT_TYPES,
            max_bytes=MAX_PHOTO_BYTES,
            description="The image file itself (not multipart). Its type is read from its first "
            f"bytes; at most {MAX_PHOTO_BYTES} bytes and "
            f"{images.MAX_SIDE_PX} px per side.",
        ),
        responses={200: "Advisor"},
        problems=(412, 422, 428),
        tag="advisors",
    ),
    Route(
        "DELETE",
        "/v1/advisors/me/photo",
        delete_photo,
        "Remove your profile photo (If-Match: <version>)",
        primary=True,
        if_match=True,
        responses={200: "Advisor"},
        problems=(412, 428),
        tag="advisors",
    ),
    Route(
        "GET",
        "/v1/advisors/{advisor_id:id}/photo",
        get_photo,
        "An advisor's profile photo (ETag, If-None-Match -> 304)",
        auth="none",
        query=PHOTO_QUERY,
        responses={200: "raw:image/*", 304: ""},
        tag="advisors",
    ),
]
