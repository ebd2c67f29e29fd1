"""Project check: every SQL statement in src/ that reads or changes a per-user
table names its owner or participant in the statement itself.

D1 has no row-level security, so the WHERE clause is the authorization. This
finds every SQL string literal in src/ (module constants, arguments of sql(),
f-string fragments), and for each SELECT / UPDATE / DELETE (and the SELECT
inside INSERT ... SELECT) that touches a per-user table, requires a condition
on an owner column bound to a parameter (`user_id = ?`, `a.owner_user_id = ?`,
`client_id = ? OR advisor_id = ?`, `:user_id`..., or the caller by Clerk sub:
`user_id = (SELECT id FROM users WHERE clerk_user_id = ?)`). The exceptions are listed
in ALLOWED with the reason each is safe.

    python3 tooling/sql_scope_check.py [src]     exit 1 and a list when a statement is unscoped
"""

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# Per-user tables and the columns that name their owner or participants.
OWNER_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("id", "clerk_user_id"),
    "accounts": ("owner_user_id",),
    "ledger_entries": ("account_id", "owner_user_id"),
    "payments": ("user_id",),
    "idempotency_keys": ("user_id",),
    "readings": ("client_id", "advisor_id"),
    "reading_charges": ("client_id", "advisor_id"),
    "reading_refunds": ("client_id", "advisor_id"),
    "messages": ("client_id", "advisor_id", "sender_id"),
    "reviews": ("client_id", "advisor_id"),
    "advisor_blocks": ("advisor_id", "client_id"),
    # 0091: promotional credit
    "promo_grants": ("client_id",),
    "promo_redemptions": ("client_id",),
    "free_minute_offers": ("client_id",),
    "satisfaction_claims": ("client_id", "advisor_id"),
    "wallet_refunds": ("user_id",),
    "wallet_refund_parts": ("user_id",),
    "chargebacks": ("user_id",),
    "payout_methods": ("user_id",),
    "payouts": ("advisor_id",),
    "earnings_clearances": ("advisor_id",),
    "advisor_payout_state": ("advisor_id",),
}

# (file name, a fragment of the statement) -> why it may go unscoped.
ALLOWED: dict[tuple[str, str], str] = {
    (
        "ledger.py",
        "FROM accounts a WHERE a.id = ?",
    ): "the fixed platform accounts (platform revenue, gateway clearing); per-user legs use owner_user_id",
    (
        "ledger.py",
        "SELECT balance_cents FROM accounts WHERE id = ?",
    ): "balance of a fixed platform account (AccountRef with account_id)",
    (
        "ledger.py",
        "FROM transfers t, ({source}) r JOIN accounts a ON {account}",
    ): "an entry of ledger.transfer_from_row: a fixed platform account (a.id = ?) or the account of the "
    "owner the caller's row query names (that query is written, and scoped, in the caller's module)",
    ("promo_checks.py", ""): "admin reconciliation's promo invariants (run by reconcile.check): every row by design",
    (
        "promo.py",
        "FROM promo_grants WHERE remaining_cents > 0 AND expires_at_ms <= ?",
    ): "the cron's expiry sweep: every client's expired grants (bounded, oldest first); each is then written "
    "WHERE id = ? AND client_id = ?",
    (
        "satisfaction.py",
        "FROM readings r WHERE r.id = ?",
    ): "the admin grant (auth='admin') reads any reading by id; the client's claim appends "
    "AND (r.client_id = ? OR r.advisor_id = ?) (_FOR_PARTICIPANT); the subqueries follow that reading's id",
    (
        "satisfaction.py",
        "SELECT r.id, r.client_id, r.advisor_id, r.status, r.ended_at_ms, (SELECT coalesce(sum(amount_cents - "
        "promo_cents), 0) FROM reading_charges WHERE reading_id = r.id)",
    ): "the same statement's first part (before an f-string fragment): sums of that reading's rows",
    ("reconcile.py", ""): "admin reconciliation (GET /v1/admin/ledger/check, auth='admin'): checks every row by design",
    ("periods.py", ""): "the ledger's period close (the cron and admin routes, auth='admin'): moves every "
    "account's closed entries to R2 by design",
    ("cron.py", ""): "the cron: bounded maintenance over all rows (idempotency purge, settling stale readings)",
    (
        "deposit_resolution.py",
        "SELECT * FROM payments WHERE status = 'pending' AND updated_at_ms < ?",
    ): "the cron's gateway lookup: every user's deposits still waiting for the gateway (bounded, oldest first); "
    "each is then written WHERE id = ? AND user_id = ?",
    ("refunds.py", "FROM readings r WHERE r.id = ?"): "admin refund (auth='admin'): any reading, by id",
    (
        "card_checks.py",
        "",
    ): "the admin reconciliation's card-money checks (run by reconcile.check): every row by design",
    (
        "chargebacks.py",
        "",
    ): "admin chargeback routes (auth='admin'): any client's deposit, chargeback and the readings it paid for",
    (
        "refund_resolution.py",
        "FROM wallet_refund_parts WHERE state = 'in_transit' AND updated_at_ms < ?",
    ): "the cron's gateway lookup: every user's refund parts still in transit (bounded, oldest first); each is "
    "then written WHERE id = ? AND user_id = ?",
    (
        "webhooks.py",
        "",
    ): "Authorize.Net webhooks: authenticated by the body's HMAC signature, act on the payment it names",
    (
        "payments.py",
        "WHERE id = ?",
    ): "the caller's own payment: its id comes from this request's insert or the caller's "
    "idempotency record (read WHERE user_id = ?)",
    (
        "deposit_outcomes.py",
        "WHERE id = ?",
    ): "a deposit's payment by its id: the deposit route's own (inserted by its claim for the caller), or "
    "the one the signed webhook or the cron's gateway lookup matched (the settle and credit statements are shared)",
    (
        "deposit_attempts.py",
        "FROM payments p WHERE p.id = ?",
    ): "the deposit attempt of the payment this same claim batch inserted for the caller (a fresh id)",
    (
        "payments.py",
        "AND p.user_id = k.user_id WHERE k.user_id = (SELECT id FROM users WHERE clerk_user_id = ?)",
    ): "the payment a key of the caller's names, and only if that payment is the caller's too",
    (
        "advisors.py",
        "FROM advisors a JOIN users u ON u.id = a.user_id",
    ): "public advisor profiles: the advisor's own display name, joined on the advisor's id",
    (
        "billing.py",
        "",
    ): "per-minute billing shared by the participant routes (which first load the reading WHERE id = ? AND "
    "the caller is its client or advisor) and the cron; every statement is keyed by that reading's id and "
    "guarded by its state",
    (
        "reading_transitions.py",
        "UPDATE readings SET status = 'expired'",
    ): "expiring a request past its deadline: state-guarded and idempotent, whoever triggers it",
    (
        "messages.py",
        "FROM messages WHERE reading_id = ? AND (created_at_ms, id) > (?, ?)",
    ): "a page of one reading's chat, read after the participant-scoped check of that reading",
    (
        "reviews.py",
        "FROM reviews v JOIN users u ON u.id = v.client_id",
    ): "reviews are public (GET /v1/advisors/{id}/reviews), shown with the reviewer's display name",
    (
        "reviews.py",
        "WHERE user_id = (SELECT advisor_id FROM reviews WHERE id = ?)",
    ): "the reviewed advisor's public rating aggregate, in the batch that inserted the caller's own review",
    ("schema.py", ""): "schema introspection (sqlite_master / pragma), no user data",
    (
        "chat_archive.py",
        "FROM readings r LEFT JOIN message_archives a ON a.reading_id = r.id WHERE r.id = ?",
    ): "a chat's archive facts: scoped by the caller's sub or id in the route's read; used unscoped only "
    "for the reading that read already found the caller in (again, in the batch of the D1 page)",
    (
        "chat_archive_job.py",
        "",
    ): "the cron's chat archive (every ended reading's chat, bounded per run) and the erasure's rewrites "
    "(the erased user's own readings): every statement is keyed by an archive this run claimed (reading id "
    "and the run's random token); nothing is returned to a caller",
    ("clearance.py", ""): "the cron's earnings clearance: every advisor whose look is due (bounded), each "
    "statement keyed by that advisor's id",
    ("payout_cron.py", ""): "the cron's payout jobs: every open payout or due automatic payout (bounded), "
    "each then written WHERE id = ?",
    ("payout_checks.py", ""): "admin reconciliation (reconcile.py's checks): every payout and clearance by design",
    (
        "payout_webhooks.py",
        "",
    ): "PayPal webhooks: authenticated by PayPal's verification of the notification, act on the payout it names",
    (
        "payout_flow.py",
        "WHERE id = ?",
    ): "a payout by its id, after the caller's own payout was found WHERE advisor_id = ? (route), or by the "
    "cron or a verified webhook",
}

_STATEMENT = re.compile(r"^\s*(SELECT|UPDATE|DELETE|INSERT|WITH)\b", re.I)
_TABLE = re.compile(r"\b(?:FROM|JOIN|UPDATE|INTO)\s+([a-z_][a-z0-9_]*)", re.I)
# A bound parameter, or the caller named by its Clerk sub (Route(caller_batch=True):
# the statement travels with the caller lookup, before the caller's id is known).
_PARAM = r"(?:\?|:[a-z_]+|\(SELECT id FROM users WHERE clerk_user_id = \?\))"
# `me.id` where the statement's `WITH me AS (...)` is the caller: its id bound
# (`SELECT ? AS id`) or its row by Clerk sub (reading_requests.py's precheck).
_CALLER_CTE = re.compile(r"\bWITH\s+me\s+AS\s*\(", re.I)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    tables: tuple[str, ...]
    text: str

    def __str__(self) -> str:
        one_line = " ".join(self.text.split())[:140]
        return f"{self.path}:{self.line}: no owner condition on {', '.join(self.tables)}: {one_line}"


def _owner_condition(text: str, table: str) -> bool:
    columns = "|".join(OWNER_COLUMNS[table])
    param = rf"(?:{_PARAM}|me\.id\b)" if _CALLER_CTE.search(text) else _PARAM
    condition = rf"\b(?:[a-z_]+\.)?(?:{columns})\s*(?:=\s*{param}|IN\s*\()"
    return re.search(condition, text, re.I) is not None


def _literals(tree: ast.AST) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            # f-strings: the constant parts, with each interpolation as a marker.
            parts = [v.value if isinstance(v, ast.Constant) else " {} " for v in node.values]
            out.append((node.lineno, "".join(str(p) for p in parts)))
    return out


def _allowed(path: Path, text: str) -> bool:
    flat = " ".join(text.split())
    return any(path.name == name and fragment in flat for (name, fragment) in ALLOWED)


def check_source(path: Path, source: str) -> list[Finding]:
    findings = []
    for line, text in _literals(ast.parse(source)):
        if not _STATEMENT.match(text):
            continue
        if re.match(r"^\s*INSERT\b", text, re.I) and not re.search(r"\bSELECT\b", text, re.I):
            continue  # INSERT ... VALUES reads nothing; what it writes is the handler's caller's
        tables = sorted({t.lower() for t in _TABLE.findall(text)} & OWNER_COLUMNS.keys())
        if re.match(r"^\s*INSERT\b", text, re.I):
            into = re.search(r"\bINTO\s+([a-z_]+)", text, re.I)
            tables = [
                t
                for t in tables
                if not into or t != into.group(1).lower() or len(re.findall(rf"\b{t}\b", text, re.I)) > 1
            ]
        unscoped = tuple(t for t in tables if not _owner_condition(text, t))
        if unscoped and not _allowed(path, text):
            findings.append(Finding(str(path), line, unscoped, text))
    return findings


def check_tree(root: Path) -> list[Finding]:
    findings = []
    for path in sorted(root.rglob("*.py")):
        findings += check_source(path, path.read_text())
    return findings


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "src"
    findings = check_tree(root)
    for f in findings:
        print(f)
    print(f"sql scope check: {len(findings)} unscoped statement(s) in {root}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
