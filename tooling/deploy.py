#!/usr/bin/env python3
"""Per-environment release of the Worker and its D1 migrations (host CPython, stdlib only).

    python3 tooling/deploy.py check    --env staging|production   # offline: lint + apply migrations to a
                                                                  # scratch D1 + bundle dry run
    python3 tooling/deploy.py release  --env staging|production   # check, Time Travel bookmark, remote
                                                                  # migrations, then wrangler deploy
    python3 tooling/deploy.py rollback --env ... [--bookmark B] [--version V]
                                                                  # D1 restore to B (if given), then the
                                                                  # previous (or given) Worker version

`make deploy-check|deploy|rollback ENV=...` call these. The order is fixed:
migrations are applied BEFORE `wrangler deploy` (which never applies them), so
every migration must keep the running (previous) Worker working: add columns
and tables, never drop or rename one that deployed code still reads.

Remote steps need CLOUDFLARE_API_TOKEN (and, for a token spanning several
accounts, CLOUDFLARE_ACCOUNT_ID); without a token the command refuses before
touching anything. Production also needs `--confirm production`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = ("staging", "production")
WRANGLER = [os.environ.get("NODE", "node"), str(ROOT / "node_modules" / "wrangler" / "bin" / "wrangler.js")]
BOOKMARK_DIR = ROOT / ".deploy"
MIGRATION_LINT = ROOT / "tooling" / "migration_lint.py"

# What a deployable bundle may and must hold.
REQUIRED_MODULES = ("entry.py", "clairvora/__init__.py", "clairvora/app.py", "clairvora/db.py")
FORBIDDEN_PARTS = (
    "tests",
    "tooling_tests",
    "runtime",
    "bench",
    "node_modules",
    ".venv",
    ".wrangler",
    "__pycache__",
    "migrations",
)
FORBIDDEN_NAMES = ("conftest.py", "support.py", "_local_runtime.py", ".dev.vars")


class Refused(Exception):
    """A step that must not run (missing token, unknown environment, bad bundle)."""


def config(env: str) -> dict:
    if env not in ENVIRONMENTS:
        raise Refused(f"unknown environment {env!r}: use one of {', '.join(ENVIRONMENTS)}")
    with open(ROOT / "wrangler.toml", "rb") as handle:
        return tomllib.load(handle)["env"][env]


def database_name(env: str) -> str:
    bindings = [b for b in config(env).get("d1_databases", []) if b.get("binding") == "DB"]
    if len(bindings) != 1:
        raise Refused(f"[env.{env}] must bind exactly one D1 database as DB")
    return bindings[0]["database_name"]


def wrangler(*args: str, capture: bool = False) -> str:
    """Runs wrangler from node_modules; non-interactive (CI=true), no metrics."""
    env = {**os.environ, "CI": "true", "WRANGLER_SEND_METRICS": "false"}
    print("+ wrangler " + " ".join(args), file=sys.stderr, flush=True)
    result = subprocess.run([*WRANGLER, *args], cwd=ROOT, env=env, text=True, capture_output=capture, check=False)
    if result.returncode != 0:
        detail = (result.stdout or "") + (result.stderr or "") if capture else ""
        raise subprocess.CalledProcessError(result.returncode, ["wrangler", *args], detail)
    return result.stdout or ""


def require_token(env: str, confirm: str | None) -> None:
    if not os.environ.get("CLOUDFLARE_API_TOKEN"):
        raise Refused(
            "CLOUDFLARE_API_TOKEN is not set: remote steps (migrations, deploy, Time Travel, rollback) need an API "
            "token with D1 Edit and Workers Scripts Edit permissions. Nothing was changed."
        )
    if env == "production" and confirm != "production":
        raise Refused(
            "production needs `--confirm production` (make deploy ENV=production CONFIRM=production). "
            "Nothing was changed."
        )


# --- offline checks -------------------------------------------------------------------


def lint_migrations() -> None:
    """tooling/migration_lint.py: destructive statements need a reason, no FK-off, no transactions."""
    subprocess.run([sys.executable, str(MIGRATION_LINT), str(ROOT / "migrations")], cwd=ROOT, check=True)


def test_migrations(env: str) -> None:
    """Every migration applied in order to an empty D1 with this environment's config."""
    with tempfile.TemporaryDirectory(prefix=f"clairvora-{env}-d1-") as scratch:
        wrangler(
            "d1",
            "migrations",
            "apply",
            database_name(env),
            "--local",
            "--env",
            env,
            "--persist-to",
            scratch,
            capture=True,
        )


def dry_run(env: str, outdir: str) -> str:
    """`wrangler deploy --dry-run`: validates the configuration and writes the bundle."""
    return wrangler("deploy", "--dry-run", "--env", env, "--outdir", outdir, capture=True)


def bundle_problems(outdir: str) -> list[str]:
    """What is wrong with a dry-run bundle: missing Worker modules, or files that
    must never ship (tests, the local runtime, bench, secrets, bytecode)."""
    root = Path(outdir)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    problems = [f"missing {m}" for m in REQUIRED_MODULES if m not in files]
    source = ROOT / "src" / "clairvora"
    for module in sorted(source.glob("*.py")):
        if f"clairvora/{module.name}" not in files:
            problems.append(f"missing clairvora/{module.name}")
    for name in files:
        parts = Path(name).parts
        if any(part in FORBIDDEN_PARTS for part in parts) or parts[-1] in FORBIDDEN_NAMES:
            problems.append(f"must not ship: {name}")
    return problems


def check(env: str) -> None:
    lint_migrations()
    test_migrations(env)
    with tempfile.TemporaryDirectory(prefix=f"clairvora-{env}-bundle-") as outdir:
        dry_run(env, outdir)
        problems = bundle_problems(outdir)
    if problems:
        raise Refused(f"the {env} bundle is not shippable: " + "; ".join(problems))
    print(f"{env}: migrations lint + apply cleanly, bundle OK", file=sys.stderr)


# --- remote steps ------------------------------------------------------------------------


def time_travel_bookmark(env: str) -> str:
    """The database's current Time Travel bookmark (the point to restore to)."""
    out = wrangler("d1", "time-travel", "info", database_name(env), "--env", env, "--json", capture=True)
    bookmark = json.loads(out[out.index("{") :]).get("bookmark")
    if not isinstance(bookmark, str) or not bookmark:
        raise Refused(f"no bookmark in `wrangler d1 time-travel info` output: {out[:300]}")
    return bookmark


def release(env: str, confirm: str | None) -> None:
    require_token(env, confirm)
    check(env)
    db = database_name(env)
    wrangler("d1", "migrations", "list", db, "--remote", "--env", env)
    bookmark = time_travel_bookmark(env)
    BOOKMARK_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    record = BOOKMARK_DIR / f"{env}-{stamp}.json"
    record.write_text(json.dumps({"env": env, "database": db, "bookmark": bookmark, "taken_at": stamp}) + "\n")
    print(
        f"{env}: D1 bookmark before migrating: {bookmark} (saved in {record.relative_to(ROOT)})\n"
        f"  restore with: make rollback ENV={env} BOOKMARK={bookmark}",
        file=sys.stderr,
    )
    wrangler("d1", "migrations", "apply", db, "--remote", "--env", env)
    wrangler("deploy", "--env", env)
    print(f"{env}: released. Check GET /health (migrations_applied) on the {env} host.", file=sys.stderr)


def rollback(env: str, bookmark: str | None, version: str | None, confirm: str | None) -> None:
    require_token(env, confirm)
    if bookmark:
        # Every write after the bookmark is lost, including deposits already
        # captured at Authorize.Net: reconcile them afterwards (docs/DEPLOY.md).
        wrangler("d1", "time-travel", "restore", database_name(env), f"--bookmark={bookmark}", "--env", env)
    args = [
        "rollback",
        *([version] if version else []),
        "--env",
        env,
        "--message",
        f"rollback {env}" + (f" to D1 bookmark {bookmark}" if bookmark else ""),
        "--yes",
    ]
    wrangler(*args)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("preflight", "check", "release", "rollback"))
    parser.add_argument("--env", required=True)
    parser.add_argument("--bookmark", help="rollback: D1 Time Travel bookmark to restore")
    parser.add_argument("--version", help="rollback: Worker version id (default: the previous one)")
    parser.add_argument("--confirm", help="production: must be 'production'")
    args = parser.parse_args(argv)
    try:
        config(args.env)
        if args.command == "preflight":  # fail fast, before `make test` runs
            require_token(args.env, args.confirm)
        elif args.command == "check":
            check(args.env)
        elif args.command == "release":
            release(args.env, args.confirm)
        else:
            rollback(args.env, args.bookmark, args.version, args.confirm)
    except Refused as refusal:
        print(f"refused: {refusal}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as failure:
        print(f"failed: {' '.join(failure.cmd)} exited {failure.returncode}\n{failure.output or ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
