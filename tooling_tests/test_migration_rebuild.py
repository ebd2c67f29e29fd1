"""0090 rebuilds accounts and transfers (a CHECK cannot be altered). Applied by
wrangler to a local D1 that already holds a ledger, the rebuild keeps every row
and id, leaves no dangling reference, and the recreated triggers still refuse
what they refused before."""

import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from conftest import ROOT, WRANGLER, WRANGLER_ENV

REBUILD = "0090_ledger_kinds.sql"


def _apply(project: Path, persist: Path) -> None:
    command = [*WRANGLER, "d1", "migrations", "apply", "clairvora-db", "--local", "--persist-to", str(persist)]
    done = subprocess.run(command, cwd=project, env=WRANGLER_ENV, text=True, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


def _database(persist: Path) -> sqlite3.Connection:
    files = [f for f in (persist / "v3" / "d1").rglob("*.sqlite") if f.name != "metadata.sqlite"]
    assert len(files) == 1, files
    db = sqlite3.connect(files[0])
    db.execute("PRAGMA foreign_keys = ON")
    return db


# A user with a wallet that took a deposit and paid one charge to an advisor.
LEDGER = """
INSERT INTO users (id, clerk_user_id, created_at_ms, updated_at_ms) VALUES (10, 'user_a', 1, 1), (11, 'user_b', 1, 1);
INSERT INTO accounts (id, kind, owner_user_id, created_at_ms) VALUES (100, 'client_wallet', 10, 1), (101, 'advisor_earnings', 11, 1);
INSERT INTO transfers (id, transfer_key, kind, created_at_ms) VALUES (500, 'test:deposit', 'adjustment', 2), (501, 'test:charge', 'adjustment', 3);
INSERT INTO ledger_entries (transfer_id, account_id, amount_cents, balance_after_cents, sequence, created_at_ms) VALUES
  (500, 2, -1000, -1000, 1, 2), (500, 100, 1000, 1000, 1, 2),
  (501, 100, -300, 700, 2, 3), (501, 101, 300, 300, 1, 3);
UPDATE transfers SET posted = 1 WHERE id IN (500, 501);
"""


ROWS = {
    "accounts": "SELECT * FROM accounts ORDER BY id",
    "transfers": "SELECT * FROM transfers ORDER BY id",
    "ledger_entries": "SELECT * FROM ledger_entries ORDER BY id",
}


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    project = tmp_path_factory.mktemp("rebuild-project")
    shutil.copy(ROOT / "wrangler.toml", project / "wrangler.toml")
    (project / "migrations").mkdir()
    for migration in sorted((ROOT / "migrations").glob("*.sql")):
        if migration.name < REBUILD:
            shutil.copy(migration, project / "migrations" / migration.name)
    persist = tmp_path_factory.mktemp("rebuild-d1")
    _apply(project, persist)
    with closing(_database(persist)) as db:
        db.executescript(LEDGER)
        before = {table: db.execute(query).fetchall() for table, query in ROWS.items()}
    for migration in sorted((ROOT / "migrations").glob("*.sql")):
        if migration.name >= REBUILD:
            shutil.copy(migration, project / "migrations" / migration.name)
    _apply(project, persist)
    return persist, before


def test_the_rebuild_keeps_every_row_and_id(rebuilt):
    persist, before = rebuilt
    with closing(_database(persist)) as db:
        assert db.execute(ROWS["transfers"]).fetchall() == before["transfers"]
        assert db.execute(ROWS["ledger_entries"]).fetchall() == before["ledger_entries"]
        accounts = db.execute(ROWS["accounts"]).fetchall()
        assert [a for a in accounts if a[0] in (1, 2, 100, 101)] == before["accounts"]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        kinds = dict(db.execute("SELECT id, kind FROM accounts WHERE owner_user_id IS NULL"))
        assert kinds == {
            1: "platform_revenue",
            2: "gateway_clearing",
            3: "platform_promotions",
            4: "payouts_in_transit",
            5: "payout_clearing",
            6: "refunds_in_transit",
        }


def test_the_recreated_triggers_still_guard_the_ledger(rebuilt):
    persist, _ = rebuilt
    with closing(_database(persist)) as db:
        with pytest.raises(sqlite3.IntegrityError, match="ledger_append_only"):
            db.execute("UPDATE ledger_entries SET amount_cents = 1 WHERE transfer_id = 500")
        with pytest.raises(sqlite3.IntegrityError, match="ledger_append_only"):
            db.execute("DELETE FROM transfers WHERE id = 500")
        db.execute(
            "INSERT INTO transfers (id, transfer_key, kind, created_at_ms) VALUES (502, 'test:over', 'adjustment', 4)"
        )
        with pytest.raises(sqlite3.IntegrityError, match="ledger_sequence_mismatch"):
            db.execute(
                "INSERT INTO ledger_entries (transfer_id, account_id, amount_cents, balance_after_cents, sequence, created_at_ms)"
                " VALUES (502, 100, -1, 699, 2, 4)"
            )
        # The overdraft rule: an adjustment may not take a wallet below zero, a chargeback may.
        with pytest.raises(sqlite3.IntegrityError, match="insufficient_funds"):
            db.execute(
                "INSERT INTO ledger_entries (transfer_id, account_id, amount_cents, balance_after_cents, sequence, created_at_ms)"
                " VALUES (502, 100, -800, -100, 3, 4)"
            )
        # A chargeback transfer names its chargeback record (0092), of an approved deposit.
        db.execute(
            "INSERT INTO payments (id, user_id, amount_cents, status, gateway_transaction_id, created_at_ms,"
            " updated_at_ms) VALUES (600, 10, 1000, 'approved', '1', 4, 4)"
        )
        db.execute(
            "INSERT INTO chargebacks (id, payment_id, user_id, amount_cents, note, advisor_side, state,"
            " recorded_by_user_id, created_at_ms) VALUES (700, 600, 10, 800, 'test', 'platform', 'open', 11, 4)"
        )
        db.execute(
            "INSERT INTO transfers (id, transfer_key, kind, reference_type, reference_id, created_at_ms)"
            " VALUES (503, 'test:cb', 'chargeback', 'chargeback', 700, 4)"
        )
        db.execute(
            "INSERT INTO ledger_entries (transfer_id, account_id, amount_cents, balance_after_cents, sequence, created_at_ms)"
            " VALUES (503, 100, -800, -100, 3, 4)"
        )
        # Promotional credit can never go below zero, whatever the transfer.
        db.execute("INSERT INTO accounts (id, kind, owner_user_id, created_at_ms) VALUES (102, 'client_promo', 10, 4)")
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(
                "INSERT INTO ledger_entries (transfer_id, account_id, amount_cents, balance_after_cents, sequence, created_at_ms)"
                " VALUES (503, 102, -5, -5, 1, 4)"
            )
        db.rollback()
