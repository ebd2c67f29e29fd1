"""runtime/seed_photos.mjs (run by `make seed` after seed.mjs): demo advisors
get real PNG photos in local R2, referenced from D1 the way the API does it,
and a second run changes nothing."""

import hashlib
import json
import os
import shutil
import sqlite3
import struct
import subprocess
from contextlib import closing

from conftest import ROOT, WRANGLER, WRANGLER_ENV, MigratedState

BASE = 1_200_000_000_000


def _seed_photos(persist_dir) -> str:
    result = subprocess.run(
        [os.environ.get("NODE", "node"), str(ROOT / "runtime" / "seed_photos.mjs"), "--persist-to", str(persist_dir)],
        cwd=ROOT,
        env=WRANGLER_ENV,
        text=True,
        capture_output=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def _add_advisors(state: MigratedState, count: int) -> None:
    with closing(sqlite3.connect(state.database_file())) as db:
        for i in range(count):
            uid = BASE + i
            db.execute(
                "INSERT INTO users (id, clerk_user_id, created_at_ms, updated_at_ms) VALUES (?, ?, 1, 1)",
                (uid, f"user_seedphoto{i}"),
            )
            db.execute(
                """INSERT INTO advisors (user_id, headline, bio, rate_cents_per_minute, created_at_ms,
                                                updated_at_ms) VALUES (?, 'h', 'b', 100, ?, ?)""",
                (uid, i, i),
            )
        db.commit()


def _r2_objects(persist_dir) -> dict[str, dict]:
    """Every object in local R2 (wrangler's own index of the bucket), key -> its HTTP metadata."""
    objects = {}
    for index in (persist_dir / "v3" / "r2" / "miniflare-R2BucketObject").glob("*.sqlite"):
        if index.name == "metadata.sqlite":
            continue
        with closing(sqlite3.connect(index)) as db:
            objects |= {key: json.loads(meta) for key, meta in db.execute("SELECT key, http_metadata FROM _mf_objects")}
    return objects


def _r2_get(persist_dir, key: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *WRANGLER,
            "r2",
            "object",
            "get",
            f"clairvora-media-local/{key}",
            "--local",
            "--persist-to",
            str(persist_dir),
            "--pipe",
        ],
        cwd=ROOT,
        env=WRANGLER_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def test_seed_photos_gives_the_first_advisors_real_pngs_once(migrated, tmp_path):
    base = migrated[""]
    copy = tmp_path / "state"
    shutil.copytree(base.persist_dir, copy)
    state = MigratedState("", base.database, copy, "")
    assert "nothing to do" in _seed_photos(copy)  # no advisors yet: no error, nothing written
    _add_advisors(state, 4)
    _seed_photos(copy)
    rows = state.query("""SELECT user_id, photo_key, photo_content_type, photo_size_bytes, photo_sha256, version
                          FROM advisors ORDER BY user_id""")
    with_photo = [r for r in rows if r["photo_key"] is not None]
    assert [r["user_id"] for r in with_photo] == [BASE, BASE + 1, BASE + 2]  # the oldest three; one left without
    assert all(r["version"] == 2 and r["photo_content_type"] == "image/png" for r in with_photo)
    assert all(r["photo_key"].startswith(f"advisor-photos/{r['user_id']}/") for r in with_photo)
    # The bytes in local R2 are the PNGs the rows describe (one wrangler at a time on one state).
    for row in with_photo:
        process = _r2_get(copy, row["photo_key"])
        data, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        assert len(data) == row["photo_size_bytes"] and hashlib.sha256(data).hexdigest() == row["photo_sha256"]
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (128, 128)
    assert len({r["photo_sha256"] for r in with_photo}) == 3  # a colour per advisor
    # Exactly the referenced objects, stored with their content type (no stray uploads).
    objects = _r2_objects(copy)
    assert set(objects) == {r["photo_key"] for r in with_photo}
    assert all(meta == {"contentType": "image/png"} for meta in objects.values()), objects
    _seed_photos(copy)
    assert (
        state.query("""SELECT user_id, photo_key, photo_content_type, photo_size_bytes, photo_sha256, version
                          FROM advisors ORDER BY user_id""")
        == rows
    ), "a second run changes nothing"
    assert _r2_objects(copy) == objects, "a second run uploads nothing"
