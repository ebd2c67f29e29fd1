"""Host-side checks of the project's configuration (run with CPython)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_environment_has_its_own_d1_binding():
    config = tomllib.loads((ROOT / "wrangler.toml").read_text())
    names = {config["d1_databases"][0]["database_name"]}
    for env in ("staging", "production"):
        bindings = config["env"][env]["d1_databases"]
        assert [b["binding"] for b in bindings] == ["DB"]
        assert bindings[0]["migrations_dir"] == "migrations"
        names.add(bindings[0]["database_name"])
        assert config["env"][env]["vars"]["TEST_HOOKS"] == "forbidden"
    assert len(names) == 3


def test_every_environment_has_its_own_media_chat_and_ledger_buckets():
    # Bindings are not inherited between environments: each needs MEDIA (photos),
    # CHAT_ARCHIVE (chat of ended readings) and LEDGER_ARCHIVE (closed ledger periods),
    # and sharing a bucket would let the sweep of one environment delete another's
    # photos, mix private chat with public photos, or one environment's closed books
    # overwrite another's (their object keys are the same shape).
    config = tomllib.loads((ROOT / "wrangler.toml").read_text())
    buckets = [config["r2_buckets"]] + [config["env"][env]["r2_buckets"] for env in ("staging", "production")]
    assert all(
        sorted(b["binding"] for b in bindings) == ["CHAT_ARCHIVE", "LEDGER_ARCHIVE", "MEDIA"] for bindings in buckets
    )
    assert len({b["bucket_name"] for bindings in buckets for b in bindings}) == 9
