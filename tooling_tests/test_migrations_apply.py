"""Every migration applies from scratch to head with wrangler, for each
environment's local state, and leaves a consistent database."""

from conftest import ENVIRONMENTS, ROOT

MIGRATIONS = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
SCHEMA = """SELECT type, name, tbl_name, sql FROM sqlite_schema
            WHERE name NOT LIKE 'sqlite%' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' AND name <> 'd1_migrations'
            ORDER BY type, name"""


def test_every_environment_applies_all_migrations(migrated):
    assert set(migrated) == set(ENVIRONMENTS)
    for env, state in migrated.items():
        applied = [row["name"] for row in state.query("SELECT name FROM d1_migrations ORDER BY id")]
        assert applied == MIGRATIONS, env or "top level"
        for name in MIGRATIONS:
            assert name in state.apply_output, (env, name)


def test_foreign_key_check_is_clean(migrated):
    for env, state in migrated.items():
        assert state.query("PRAGMA foreign_key_check") == [], env or "top level"
        # The seed rows the migrations insert are there to be checked.
        assert state.query("SELECT count(*) AS n FROM categories")[0]["n"] >= 8


def test_one_schema_whatever_the_environment(migrated):
    schemas = {env: state.query(SCHEMA) for env, state in migrated.items()}
    tables = {row["name"] for row in schemas[""] if row["type"] == "table"}
    assert {"users", "accounts", "transfers", "ledger_entries", "payments", "readings", "messages"} <= tables
    assert any(row["type"] == "trigger" for row in schemas[""])
    assert schemas["staging"] == schemas[""] == schemas["production"]
