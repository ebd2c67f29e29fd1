"""The migrated schema (real local D1, every migration applied by wrangler)
against the row types declared in src/clairvora/schema.py."""

from clairvora import schema
from clairvora.schema import Column, declared_schema, drift, migrated_schema
from support import database


async def test_migrated_schema_matches_declared_row_types():
    migrated = await migrated_schema(database())
    problems = drift(declared_schema(), migrated)
    assert not problems, "schema.py and the migrations disagree:\n\n" + "\n\n".join(problems)


async def test_introspection_sees_types_nullability_and_excludes_internal_tables():
    migrated = await migrated_schema(database())
    assert not {"d1_migrations", "_cf_METADATA", "sqlite_sequence", "sqlite_schema"} & migrated.keys()
    users = migrated["users"]
    assert users["id"] == Column("INTEGER", False)  # rowid alias: never NULL
    assert users["display_name"] == Column("TEXT", True)
    assert users["time_zone"] == Column("TEXT", False)
    # WITHOUT ROWID primary keys are NOT NULL even where not declared so.
    assert migrated["idempotency_keys"]["user_id"] == Column("INTEGER", False)
    assert migrated["accounts"]["owner_user_id"] == Column("INTEGER", True)


async def test_drift_names_what_to_add_for_a_new_column_and_table():
    migrated = await migrated_schema(database())
    migrated["users"]["nickname"] = Column("TEXT", True)
    migrated["gift_cards"] = {
        "id": Column("INTEGER", False),
        "code": Column("TEXT", False),
        "note": Column("TEXT", True),
    }
    problems = drift(declared_schema(), migrated)
    assert len(problems) == 2, problems
    table_fix, column_fix = problems
    assert "class GiftCardRow(TypedDict):\n    id: int\n    code: str\n    note: str | None" in table_fix
    assert '"gift_cards": GiftCardRow,' in table_fix
    assert "add  `nickname: str | None`  to class UserRow" in column_fix


async def test_drift_reports_type_nullability_and_stale_declarations():
    migrated = await migrated_schema(database())
    migrated["payments"]["gateway_response_code"] = Column("TEXT", False)
    migrated["reviews"]["rating"] = Column("REAL", False)
    del migrated["messages"]["key_version"]
    del migrated["categories"]
    problems = "\n".join(drift(declared_schema(), migrated))
    assert "payments.gateway_response_code: the migrations say TEXT NOT NULL" in problems
    assert "change it to  `gateway_response_code: str`" in problems
    assert "change it to  `rating: float`" in problems
    assert "messages.key_version is declared in MessageRow but no migration creates it" in problems
    assert "table 'categories' is declared in schema.py (CategoryRow) but no migration creates it" in problems


def test_every_declared_table_uses_supported_types():
    declared = declared_schema()
    assert set(declared) == set(schema.TABLES)
    for table, columns in declared.items():
        assert columns, table
        assert all(c.sql_type in schema.PYTHON_TYPE_OF for c in columns.values()), table
