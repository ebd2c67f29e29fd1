#!/usr/bin/env python3
"""Lint D1 migrations before they are applied (make lint, CI, the deploy pipeline).

    python3 tooling/migration_lint.py [migrations/ | file.sql ...]

Exit status 0 when clean, 1 with one `file:line: message` per problem.

Refused always:
  - `PRAGMA foreign_keys = OFF` (D1 ignores it inside migrations, so it only
    gives false comfort; use `PRAGMA defer_foreign_keys = true`), and
    `PRAGMA ignore_check_constraints = ON` (our invariants live in CHECKs);
  - explicit transactions (BEGIN/COMMIT/ROLLBACK/SAVEPOINT): D1 refuses them,
    and wrangler applies each migration file atomically anyway;
  - file names other than NNNN_snake_case.sql, and two files with one number.
Refused unless the statement carries a `-- destructive-ok: <reason>` comment
(on a line of its own just above it, or on its first line):
  - DROP TABLE / INDEX / TRIGGER / VIEW, ALTER TABLE ... DROP COLUMN,
    ALTER TABLE ... RENAME, DELETE FROM, REPLACE INTO / INSERT OR REPLACE.
Statements inside a trigger's BEGIN ... END body run later, on the rows the
trigger fires for, so they are not migration-time changes and are not checked.
Standard library only.
"""

import re
import sys
from dataclasses import dataclass
from pathlib import Path

MARKER_RE = re.compile(r"--\s*destructive-ok:\s*(\S.{3,})", re.IGNORECASE)
FILE_NAME_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

DESTRUCTIVE = (
    (re.compile(r"^DROP\s+(TABLE|INDEX|TRIGGER|VIEW)\b"), "DROP {0}"),
    (re.compile(r"^ALTER\s+TABLE\s+\S+\s+DROP\b"), "ALTER TABLE ... DROP COLUMN"),
    (re.compile(r"^ALTER\s+TABLE\s+\S+\s+RENAME\b"), "ALTER TABLE ... RENAME"),
    (re.compile(r"^DELETE\s+FROM\b"), "DELETE FROM"),
    (re.compile(r"^(REPLACE|INSERT\s+OR\s+REPLACE)\s+INTO\b"), "REPLACE INTO (deletes the rows it replaces)"),
)
FORBIDDEN = (
    (
        re.compile(r"^PRAGMA\s+(\w+\.)?FOREIGN_KEYS\s*(=\s*|\(\s*)['\"]?(OFF|0|FALSE|NO)\b"),
        "PRAGMA foreign_keys = OFF is not allowed (D1 ignores it in migrations): use PRAGMA defer_foreign_keys = true",
    ),
    (
        re.compile(r"^PRAGMA\s+(\w+\.)?IGNORE_CHECK_CONSTRAINTS\s*(=\s*|\(\s*)['\"]?(ON|1|TRUE|YES)\b"),
        "PRAGMA ignore_check_constraints is not allowed: CHECKs carry the invariants",
    ),
    (
        re.compile(r"^(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|END)\b"),
        "explicit transactions are not allowed in D1 migrations (each file is applied atomically)",
    ),
)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class Statement:
    code: str  # upper-cased SQL, comments removed, whitespace collapsed
    line: int  # line of its first token
    comments: list[tuple[int, str]]  # (line, text) of the comments above it, inside it and after it on its last line


_TRIGGER_HEAD = (["CREATE", "TRIGGER"], ["CREATE", "TEMP", "TRIGGER"], ["CREATE", "TEMPORARY", "TRIGGER"])


def _is_trigger(words: list[str]) -> bool:
    return any(words[: len(head)] == head for head in _TRIGGER_HEAD)


def _scan(text: str) -> list[Statement]:
    """Split SQL into top-level statements, keeping comments apart so words in
    them never match a rule (rules are anchored at a statement's start, so
    quoted text cannot match either). A CREATE TRIGGER statement runs to the
    END of its body, across the `;` inside it."""
    statements: list[Statement] = []
    code: list[str] = []
    words: list[str] = []
    comments: list[tuple[int, str]] = []
    line, start_line, last_end_line = 1, 0, 0
    depth = 0  # BEGIN/CASE ... END nesting inside a CREATE TRIGGER
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith("--", i) or text.startswith("/*", i):
            if text.startswith("--", i):
                end = text.find("\n", i)
                end = n if end == -1 else end
            else:
                end = text.find("*/", i + 2)
                end = n if end == -1 else end + 2
            comment = (line, text[i:end])
            # `DROP TABLE t; -- destructive-ok: ...` belongs to the statement it follows.
            if not "".join(code).strip() and statements and line == last_end_line:
                statements[-1].comments.append(comment)
            else:
                comments.append(comment)
            line += text.count("\n", i, end)
            i = end
            continue
        if ch == "\n":
            line += 1
        elif not ch.isspace() and not start_line and ch != ";":
            start_line = line
        if ch in "'\"`[":
            close = "]" if ch == "[" else ch
            end = i + 1
            while end < n and not (text[end] == close and text[end + 1 : end + 2] != close):
                end += 2 if text[end] == close else 1  # a doubled quote stays inside
            line += text.count("\n", i, end)
            code.append(text[i : end + 1])
            i = end + 1
            continue
        if ch.isalpha() or ch == "_":
            end = i
            while end < n and (text[end].isalnum() or text[end] == "_"):
                end += 1
            word = text[i:end].upper()
            words.append(word)
            if _is_trigger(words) and word in ("BEGIN", "CASE", "END"):
                depth += -1 if word == "END" else 1
            code.append(text[i:end])
            i = end
            continue
        if ch == ";" and depth == 0:
            body = " ".join("".join(code).upper().split())
            if body:
                statements.append(Statement(body, start_line, comments))
                comments, last_end_line = [], line
            code, words, start_line = [], [], 0
            i += 1
            continue
        code.append(ch)
        i += 1
    body = " ".join("".join(code).upper().split())
    if body:
        statements.append(Statement(body, start_line, comments))
    return statements


def _marker(statement: Statement) -> str | None:
    for _line, comment in statement.comments:
        if m := MARKER_RE.search(comment):
            return m.group(1).strip()
    return None


def lint_sql(path: str, text: str) -> list[Finding]:
    findings: list[Finding] = []
    for st in _scan(text):
        for pattern, message in FORBIDDEN:
            if pattern.search(st.code):
                findings.append(Finding(path, st.line, message))
        if _is_trigger(st.code.split()):
            continue
        for pattern, label in DESTRUCTIVE:
            if m := pattern.search(st.code):
                what = label.format(*m.groups())
                if _marker(st) is None:
                    findings.append(
                        Finding(
                            path,
                            st.line,
                            f"{what} is destructive: add a comment "
                            f"'-- destructive-ok: <why this is safe>' just above it",
                        )
                    )
        for line, comment in st.comments:
            if re.search(r"destructive-ok", comment, re.IGNORECASE) and not MARKER_RE.search(comment):
                findings.append(
                    Finding(path, line, "destructive-ok marker needs a reason: '-- destructive-ok: <why this is safe>'")
                )
    return findings


def lint_files(files: list[Path]) -> list[Finding]:
    findings: list[Finding] = []
    numbers: dict[str, str] = {}
    for file in sorted(files):
        m = FILE_NAME_RE.match(file.name)
        if not m:
            findings.append(Finding(str(file), 1, "migration files are named NNNN_snake_case.sql"))
        elif m.group(1) in numbers:
            findings.append(Finding(str(file), 1, f"number {m.group(1)} is also used by {numbers[m.group(1)]}"))
        else:
            numbers[m.group(1)] = file.name
        findings += lint_sql(str(file), file.read_text(encoding="utf-8"))
    return findings


def main(argv: list[str]) -> int:
    targets = [Path(a) for a in argv] or [Path(__file__).resolve().parent.parent / "migrations"]
    files: list[Path] = []
    for target in targets:
        if target.is_dir():
            files += sorted(target.glob("*.sql"))
        elif target.is_file():
            files.append(target)
        else:
            print(f"migration_lint: no such file or directory: {target}", file=sys.stderr)
            return 2
    findings = lint_files(files)
    for finding in findings:
        print(finding)
    if findings:
        print(f"migration_lint: {len(findings)} problem(s) in {len(files)} file(s)", file=sys.stderr)
        return 1
    print(f"migration_lint: {len(files)} migration file(s) OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
