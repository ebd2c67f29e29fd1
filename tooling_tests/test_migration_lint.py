"""tooling/migration_lint.py: catches what must not ship, passes what we ship."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tooling"))

import migration_lint  # noqa: E402
from migration_lint import lint_files, lint_sql  # noqa: E402


def problems(sql: str) -> list[str]:
    return [f"{f.line}: {f.message}" for f in lint_sql("m.sql", sql)]


@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA foreign_keys = OFF;",
        "pragma FOREIGN_KEYS=off;",
        "PRAGMA foreign_keys = 0;",
        "PRAGMA main.foreign_keys = false;",
        "PRAGMA foreign_keys('off');",
        "PRAGMA ignore_check_constraints = ON;",
    ],
)
def test_switching_off_foreign_keys_or_checks_is_always_refused(sql):
    found = problems("-- destructive-ok: we really mean it\n" + sql + "\nCREATE TABLE t (id INTEGER);")
    assert len(found) == 1 and found[0].startswith("2: PRAGMA"), found


def test_defer_foreign_keys_and_foreign_keys_on_are_fine():
    assert problems("PRAGMA defer_foreign_keys = true;\nPRAGMA foreign_keys = ON;") == []


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("DROP TABLE users;", "DROP TABLE"),
        ('drop table if exists "users";', "DROP TABLE"),
        ("DROP INDEX accounts_by_owner;", "DROP INDEX"),
        ("DROP TRIGGER ledger_entries_no_update;", "DROP TRIGGER"),
        ("DROP VIEW v;", "DROP VIEW"),
        ("ALTER TABLE users DROP COLUMN time_zone;", "DROP COLUMN"),
        ("ALTER TABLE users DROP time_zone;", "DROP COLUMN"),
        ("ALTER TABLE users RENAME TO people;", "RENAME"),
        ("ALTER TABLE users RENAME COLUMN time_zone TO tz;", "RENAME"),
        ('ALTER TABLE "users" RENAME time_zone TO tz;', "RENAME"),
        ("DELETE FROM payments WHERE status = 'error';", "DELETE FROM"),
        ("REPLACE INTO categories (slug, name) VALUES ('tarot', 'Tarot');", "REPLACE INTO"),
        ("INSERT OR REPLACE INTO categories (slug, name) VALUES ('tarot', 'Tarot');", "REPLACE INTO"),
    ],
)
def test_destructive_statements_need_a_marker(sql, what):
    found = problems("CREATE TABLE t (id INTEGER);\n\n" + sql)
    assert len(found) == 1 and found[0].startswith("3: ") and what in found[0] and "destructive-ok" in found[0], found
    assert problems(f"CREATE TABLE t (id INTEGER);\n-- destructive-ok: table rebuild, data copied above\n{sql}") == []
    assert problems(f"{sql} -- destructive-ok: table rebuild, data copied above") == []


def test_a_marker_covers_only_its_own_statement():
    sql = "-- destructive-ok: old staging table, never used\nDROP TABLE scratch;\nDELETE FROM users;\n"
    found = problems(sql)
    assert len(found) == 1 and found[0].startswith("3: DELETE FROM"), found
    # A marker after a statement on its line belongs to that statement, not the next one.
    found = problems("DROP TABLE a; -- destructive-ok: replaced by b in 0012\nDROP TABLE c;\n")
    assert len(found) == 1 and found[0].startswith("2: DROP TABLE"), found


def test_a_marker_needs_a_reason():
    found = problems("-- destructive-ok:\nDROP TABLE scratch;")
    assert any("needs a reason" in f for f in found) and any("DROP TABLE is destructive" in f for f in found)


def test_words_in_comments_and_strings_do_not_trip_the_rules():
    sql = """
    -- We never DROP TABLE users; and never use PRAGMA foreign_keys = OFF;
    /* DELETE FROM ledger_entries; ALTER TABLE x RENAME TO y; */
    INSERT INTO categories (slug, name) VALUES ('drop', 'DROP TABLE users; DELETE FROM x;');
    CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT DEFAULT 'it''s; DROP TABLE t');
    """
    assert problems(sql) == []


def test_statements_inside_trigger_bodies_are_not_migration_time_changes():
    sql = """
    CREATE TRIGGER sessions_expire AFTER INSERT ON sessions
    BEGIN
      DELETE FROM sessions WHERE expires_at_ms < NEW.created_at_ms;
      SELECT CASE WHEN NEW.id < 0 THEN RAISE(ABORT, 'bad_id') END;
    END;
    DELETE FROM sessions;
    """
    found = problems(sql)
    assert len(found) == 1 and found[0].startswith("7: DELETE FROM"), found


def test_explicit_transactions_are_refused():
    for sql in ("BEGIN TRANSACTION;", "BEGIN;", "COMMIT;", "END TRANSACTION;", "SAVEPOINT a;", "ROLLBACK;"):
        found = problems(f"{sql}\nCREATE TABLE t (id INTEGER);")
        assert len(found) == 1 and "transactions" in found[0], (sql, found)


def test_file_names_and_duplicate_numbers(tmp_path):
    (tmp_path / "0011_a.sql").write_text("CREATE TABLE a (id INTEGER);")
    (tmp_path / "0011_b.sql").write_text("CREATE TABLE b (id INTEGER);")
    (tmp_path / "12_c.sql").write_text("CREATE TABLE c (id INTEGER);")
    messages = [f.message for f in lint_files(sorted(tmp_path.glob("*.sql")))]
    assert any("0011 is also used by 0011_a.sql" in m for m in messages)
    assert any("NNNN_snake_case" in m for m in messages)
    assert len(messages) == 2


def test_the_real_migrations_pass():
    files = sorted((ROOT / "migrations").glob("*.sql"))
    assert len(files) >= 3
    assert [str(f) for f in lint_files(files)] == []


def test_command_line_exit_status_and_output(tmp_path):
    bad = tmp_path / "0099_bad.sql"
    bad.write_text("CREATE TABLE t (id INTEGER);\nPRAGMA foreign_keys = OFF;\nDROP TABLE t;\n")
    run = subprocess.run(
        [sys.executable, str(ROOT / "tooling" / "migration_lint.py"), str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert run.stdout.splitlines() == [
        f"{bad}:2: PRAGMA foreign_keys = OFF is not allowed (D1 ignores it in migrations): "
        "use PRAGMA defer_foreign_keys = true",
        f"{bad}:3: DROP TABLE is destructive: add a comment '-- destructive-ok: <why this is safe>' just above it",
    ]
    ok = subprocess.run(
        [sys.executable, str(ROOT / "tooling" / "migration_lint.py")], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0 and "OK" in ok.stdout
    missing = subprocess.run(
        [sys.executable, str(ROOT / "tooling" / "migration_lint.py"), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert migration_lint.main([str(tmp_path / "nope")]) == 2
