"""tooling/sql_scope_check.py: src/ passes, and the check catches what it is for."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tooling"))

import sql_scope_check  # noqa: E402


def test_every_statement_in_src_is_scoped_or_allowed():
    findings = sql_scope_check.check_tree(ROOT / "src")
    assert not findings, "\n".join(map(str, findings))


def test_allow_list_entries_are_all_still_needed():
    used = set()
    for path in sorted((ROOT / "src").rglob("*.py")):
        for _line, text in sql_scope_check._literals(sql_scope_check.ast.parse(path.read_text())):
            flat = " ".join(text.split())
            used |= {(n, f) for (n, f) in sql_scope_check.ALLOWED if path.name == n and f in flat}
    assert set(sql_scope_check.ALLOWED) <= used, set(sql_scope_check.ALLOWED) - used


def test_unscoped_statements_are_caught():
    source = """
from .db import sql
_LEAK = "SELECT body FROM messages WHERE reading_id = ?"
def a(rc):
    return sql("UPDATE readings SET status = 'ended' WHERE id = ?", 1)
def b(rc):
    return sql("SELECT * FROM payments WHERE user_id = ?", rc.user_id)
def c(rc, reading_id):
    return sql(f"SELECT * FROM readings WHERE id = ? AND (client_id = ? OR advisor_id = ?)", reading_id, 1, 1)
def d(rc):
    return sql("INSERT INTO reviews (reading_id, client_id) SELECT id, client_id FROM readings WHERE id = ?", 1)
"""
    findings = sql_scope_check.check_source(Path("example.py"), source)
    assert [(f.line, f.tables) for f in findings] == [(3, ("messages",)), (5, ("readings",)), (11, ("readings",))]


def test_the_caller_named_by_its_clerk_sub_scopes_a_statement():
    """Route(caller_batch=True): statements sent with the caller lookup name the
    caller by sub; `me.id` counts only where the statement's own CTE defines `me`."""
    source = """
from .db import sql
_BY_SUB = "SELECT * FROM payments WHERE user_id = (SELECT id FROM users WHERE clerk_user_id = ?)"
_OTHER = "SELECT * FROM payments WHERE user_id = (SELECT id FROM users WHERE display_name = ?)"
_CTE = "WITH me AS ({me}) SELECT * FROM accounts w JOIN me ON w.owner_user_id = me.id"
_NO_CTE = "SELECT * FROM accounts w WHERE w.owner_user_id = me.id"
"""
    findings = sql_scope_check.check_source(Path("example.py"), source)
    assert [(f.line, f.tables) for f in findings] == [(4, ("payments", "users")), (6, ("accounts",))]
