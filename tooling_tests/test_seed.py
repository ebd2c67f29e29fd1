"""runtime/seed.mjs (run by `make dev`): demo data through the real ledger
triggers, offline, and idempotent (a second run adds nothing)."""

import os
import shutil
import subprocess

from conftest import ROOT, WRANGLER_ENV, MigratedState


def _seed(persist_dir) -> None:
    result = subprocess.run(
        [os.environ.get("NODE", "node"), str(ROOT / "runtime" / "seed.mjs"), "--persist-to", str(persist_dir)],
        cwd=ROOT,
        env=WRANGLER_ENV,
        text=True,
        capture_output=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr


def _counts(state: MigratedState) -> dict:
    return state.query("""SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM advisors) AS advisors,
                                 (SELECT count(*) FROM transfers) AS transfers,
                                 (SELECT count(*) FROM ledger_entries) AS entries,
                                 (SELECT count(*) FROM reviews) AS reviews,
                                 (SELECT count(*) FROM reading_charges) AS charges""")[0]


def test_seed_is_idempotent_and_consistent(migrated, tmp_path):
    base = migrated[""]
    copy = tmp_path / "d1"
    shutil.copytree(base.persist_dir, copy)
    state = MigratedState("", base.database, copy, "")
    _seed(copy)
    first = _counts(state)
    assert first["advisors"] == 4 and first["reviews"] == 5 and first["charges"] > 0
    _seed(copy)
    assert _counts(state) == first, "a second run adds nothing"

    wallets = {
        r["clerk_user_id"]: r["balance_cents"]
        for r in state.query(
            """SELECT u.clerk_user_id, a.balance_cents FROM accounts a JOIN users u ON u.id = a.owner_user_id
           WHERE a.kind = 'client_wallet'"""
        )
    }
    assert wallets["user_ann"] == 5000 and wallets["user_ben"] == 2000 and wallets["user_cara"] == 250
    # the ledger invariants hold over every seeded row
    assert (
        state.query("SELECT transfer_id FROM ledger_entries GROUP BY transfer_id HAVING sum(amount_cents) <> 0") == []
    )
    assert (
        state.query("""SELECT id FROM accounts a WHERE balance_cents <>
                          (SELECT coalesce(sum(amount_cents), 0) FROM ledger_entries WHERE account_id = a.id)""")
        == []
    )
    assert (
        state.query("""SELECT id FROM readings r WHERE billed_minutes <>
                          (SELECT count(*) FROM reading_charges WHERE reading_id = r.id)""")
        == []
    )
    assert state.query("SELECT id FROM transfers WHERE posted = 0") == []
    categories = {r["category"] for r in state.query("SELECT DISTINCT category FROM advisor_categories")}
    assert len(categories) >= 6
    online = state.query("SELECT count(*) AS n FROM advisors WHERE status = 'online'")[0]["n"]
    assert online == 3
    rated = state.query("SELECT rating_count, rating_sum, rating_milli FROM advisors WHERE rating_count > 0")
    assert all(r["rating_milli"] == r["rating_sum"] * 1000 // r["rating_count"] for r in rated)
    # The search listing (migration 0094's triggers) follows the seed's plain SQL:
    # a '*' row and a row per category for every advisor, with the seeded ratings.
    listed = state.query(
        """SELECT u.clerk_user_id AS who, group_concat(l.category, ',') AS cats, min(l.rating_key) AS key,
                  min(l.display_name) AS name
           FROM advisor_listing l JOIN users u ON u.id = l.advisor_id GROUP BY u.clerk_user_id"""
    )
    by_name = {r["who"]: r for r in listed}
    assert set(by_name) == {"user_luna", "user_orion", "user_sage", "user_nova"}
    assert sorted(by_name["user_luna"]["cats"].split(",")) == ["*", "love", "tarot"]
    stored = state.query(
        "SELECT a.rating_milli, u.clerk_user_id AS who FROM advisors a JOIN users u ON u.id = a.user_id"
    )
    assert all(by_name[r["who"]]["key"] == 5000 - r["rating_milli"] for r in stored)
    assert by_name["user_luna"]["name"] is not None
