#!/usr/bin/env python3
"""Per-environment release of the Worker and its D1 migrations (host CPython, stdlib only).

    python3 tooling/deploy.py check    --env staging|production   # offline: migration lint, bundle dry run
                                                                  # compared file by file with src/ +
                                                                  # python_modules/ (the pinned workers SDK),
                                                                  # migrations applied to a scratch D1
    python3 tooling/deploy.py digest                              # the digest of that set, from the tree
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
import base64
import csv
import hashlib
import json
import os
import re
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

# The vendored `workers` SDK (make install: pip install --target python_modules, as pywrangler lays it
# out). workerd's built-in copy does not wrap D1 results, so a bundle without it answers 500 on D1 routes.
PYTHON_MODULES = ROOT / "python_modules"
RUNTIME_REQUIREMENTS = ROOT / "runtime" / "requirements-pyodide-runtime.txt"
SDK_DISTRIBUTION = "workers-runtime-sdk"
SDK_MODULE = "python_modules/workers/__init__.py"
# What wrangler leaves out of python_modules/ (its default `[python_modules] exclude`). The set is
# fixed here, not read from wrangler.toml: an exclude added there drops files the tests still load,
# and the check must then fail.
VENDOR_EXCLUDES = ("**/*.pyc",)
# The digest of the checked set (one hex line) and its manifest (`<sha256>  <module name>` lines,
# sorted): written by a passing `check`, removed when a check starts.
BUNDLE_DIGEST = ROOT / ".cache" / "deploy-bundle.sha256"
BUNDLE_MANIFEST = ROOT / ".cache" / "deploy-bundle.manifest"
# What the last PASSING runtime suite loaded into workerd, in the same manifest format: written
# by `node runtime/cli.mjs test` from the test Worker's own copies of src/ and python_modules/.
TESTED_MANIFEST = ROOT / ".cache" / "tested-bundle.manifest"
# `wrangler deploy --dry-run --outdir` writes this note beside the modules (not a module).
WRANGLER_NOTE = ("README.md", b"This folder contains the built output assets")

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
FORBIDDEN_NAMES = ("conftest.py", "support.py", "harness.py", "local_runtime.py", ".dev.vars")


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


# --- the bundle, file by file, against the tree the tests run ---------------------------


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def glob_regexp(pattern: str) -> re.Pattern[str]:
    """glob-to-regexp 0.4.1 with {globstar: true}, which wrangler applies to python_modules/ names
    (`**/` also matches nothing, `*` stays within one path segment, anything else is literal)."""
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            start = i
            while i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
            before = pattern[start - 1] if start else "/"
            after = pattern[i + 1] if i + 1 < len(pattern) else "/"
            if i > start and before == "/" and after == "/":
                out += "((?:[^/]*(?:/|$))*)"
                i += 1  # the "/" after ** is part of the group
            else:
                out += "([^/]*)"
        else:
            out += re.escape(char)
        i += 1
    return re.compile(f"^{out}$")


def module_root(env: str) -> Path:
    """The directory wrangler names the Worker's modules from: the one holding `main`."""
    with open(ROOT / "wrangler.toml", "rb") as handle:
        top = tomllib.load(handle)
    return (ROOT / config(env).get("main", top["main"])).parent


def tree_files(env: str) -> dict[str, Path]:
    """What the Worker is made of, by module name: src/**/*.py (named from src/, as wrangler names
    them) and every file of python_modules/ but the excluded bytecode (named python_modules/<path>).
    The same files the test suite loads into workerd."""
    source = module_root(env)
    files = {p.relative_to(source).as_posix(): p for p in source.rglob("*.py") if p.is_file()}
    if PYTHON_MODULES.is_dir():
        excludes = [glob_regexp(pattern) for pattern in VENDOR_EXCLUDES]
        for path in PYTHON_MODULES.rglob("*"):
            name = path.relative_to(PYTHON_MODULES).as_posix()
            if path.is_file() and not any(rx.match(name) for rx in excludes):
                files[f"python_modules/{name}"] = path
    return files


def bundle_files(outdir: str) -> dict[str, Path]:
    """What `wrangler deploy --dry-run --outdir` wrote, by module name (its README.md note aside)."""
    root = Path(outdir)
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    note = files.get(WRANGLER_NOTE[0])
    if note is not None and note.read_bytes().startswith(WRANGLER_NOTE[1]):
        del files[WRANGLER_NOTE[0]]
    return files


def manifest_of(hashes: dict[str, str]) -> str:
    return "".join(f"{hashes[name]}  {name}\n" for name in sorted(hashes))


def digest_of(hashes: dict[str, str]) -> str:
    """sha256 of the manifest (`<sha256>  <name>` lines sorted by name): one value for the set."""
    return hashlib.sha256(manifest_of(hashes).encode()).hexdigest()


def tree_digest(env: str = ENVIRONMENTS[0]) -> str:
    return digest_of({name: sha256_of(path) for name, path in tree_files(env).items()})


def pinned_version(distribution: str) -> str:
    """The `name==version` pin of runtime/requirements-pyodide-runtime.txt."""
    wanted = canonical(distribution)
    for line in RUNTIME_REQUIREMENTS.read_text().splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9._-]+)\s*==\s*([^\s;#]+)\s*(#.*)?", line)
        if match and canonical(match[1]) == wanted:
            return match[2]
    raise Refused(f"{RUNTIME_REQUIREMENTS.relative_to(ROOT)} does not pin {distribution}==<version>")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def metadata_field(text: str, field: str) -> str | None:
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line
        key, _, value = line.partition(":")
        if key.strip().lower() == field.lower():
            return value.strip()
    return None


def dist_infos_of(shipped: dict[str, Path]) -> list[str]:
    return sorted(
        name.rsplit("/", 1)[0] for name in shipped if re.fullmatch(r"python_modules/[^/]+\.dist-info/METADATA", name)
    )


def sdk_problems(shipped: dict[str, Path]) -> tuple[str | None, list[str]]:
    """The SDK in the bundle: python_modules/workers/__init__.py and one workers-runtime-sdk
    dist-info whose METADATA version is the pin. Returns (vendored SDK version, problems)."""
    problems = []
    if SDK_MODULE not in shipped:
        problems.append(
            f"the workers SDK is not in the bundle ({SDK_MODULE} missing): workerd's built-in copy would "
            f"answer 500 on every D1 route; `make install` vendors {SDK_DISTRIBUTION} into python_modules/"
        )
    pin = pinned_version(SDK_DISTRIBUTION)
    versions = {}
    for dist_info in dist_infos_of(shipped):
        text = shipped[f"{dist_info}/METADATA"].read_text(errors="replace")
        if canonical(metadata_field(text, "Name") or "") == canonical(SDK_DISTRIBUTION):
            versions[dist_info] = metadata_field(text, "Version")
    version = None
    if not versions:
        problems.append(f"no {SDK_DISTRIBUTION} dist-info (METADATA) in the bundle's python_modules/")
    elif len(versions) > 1:
        problems.append(f"{len(versions)} {SDK_DISTRIBUTION} dist-infos in python_modules/: {', '.join(versions)}")
    else:
        version = next(iter(versions.values()))
        if version != pin:
            problems.append(
                f"vendored {SDK_DISTRIBUTION} is {version}, {RUNTIME_REQUIREMENTS.relative_to(ROOT)} pins {pin} "
                "(run `make install`)"
            )
    return version, problems


def record_problems(shipped: dict[str, Path]) -> list[str]:
    """Every python_modules/ file as its wheel's RECORD lists it (sha256), none that no vendored
    package lists: python_modules/ is what pip unpacked, not a local edit of it."""
    problems = []
    excludes = [glob_regexp(pattern) for pattern in VENDOR_EXCLUDES]
    recorded: set[str] = set()
    for dist_info in dist_infos_of(shipped):
        record = shipped.get(f"{dist_info}/RECORD")
        if record is None:
            problems.append(f"{dist_info}/RECORD missing")
            continue
        package = dist_info.removeprefix("python_modules/").removesuffix(".dist-info")
        for row in csv.reader(record.read_text().splitlines()):
            if not row or row[0].startswith(("..", "/")):
                continue
            name = f"python_modules/{row[0]}"
            recorded.add(name)
            if any(rx.match(row[0]) for rx in excludes) or len(row) < 2 or not row[1]:
                continue
            algorithm, _, expected = row[1].partition("=")
            if name not in shipped:
                problems.append(f"{name} ({package} RECORD) is not in the bundle")
            elif algorithm != "sha256":
                problems.append(f"{name}: RECORD hash {algorithm} is not sha256")
            else:
                actual = base64.urlsafe_b64encode(bytes.fromhex(sha256_of(shipped[name]))).rstrip(b"=").decode()
                if actual != expected:
                    problems.append(f"{name} differs from the {package} wheel (sha256 in its RECORD)")
    for name in sorted(shipped):
        if name.startswith("python_modules/") and name not in recorded:
            problems.append(f"{name} is not listed by any vendored package's RECORD")
    return problems


def compare_bundle(env: str, outdir: str) -> tuple[dict[str, str], str | None, list[str]]:
    """The dry run's files against the tree's (tree_files), by sha256, then the vendored SDK.
    Returns (name -> sha256 of what ships, vendored SDK version, problems; most telling first)."""
    expected = {name: sha256_of(path) for name, path in tree_files(env).items()}
    shipped_files = bundle_files(outdir)
    shipped = {name: sha256_of(path) for name, path in shipped_files.items()}
    version, problems = sdk_problems(shipped_files)
    missing = sorted(set(expected) - set(shipped))
    extra = sorted(set(shipped) - set(expected))
    differ = sorted(name for name in set(expected) & set(shipped) if expected[name] != shipped[name])
    problems += [f"{name} is in the tree (the tests load it) but not in the bundle" for name in missing]
    problems += [f"{name} is in the bundle but not in src/**/*.py or python_modules/" for name in extra]
    problems += [f"{name} in the bundle differs from the tree (sha256)" for name in differ]
    problems += record_problems(shipped_files)
    problems += bundle_problems(outdir)
    return shipped, version, problems


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)


def wrangler_version() -> str:
    package = ROOT / "node_modules" / "wrangler" / "package.json"
    return json.loads(package.read_text()).get("version", "?") if package.exists() else "?"


def tested_problems(shipped: dict[str, str]) -> list[str]:
    """The bundle against what the last passing runtime suite ran (TESTED_MANIFEST)."""
    if not TESTED_MANIFEST.is_file():
        return [f"no passing runtime suite is recorded ({TESTED_MANIFEST.relative_to(ROOT)}): run `make test` first"]
    tested = dict(reversed(line.split("  ", 1)) for line in TESTED_MANIFEST.read_text().splitlines() if line)
    differing = sorted(name for name in set(tested) | set(shipped) if tested.get(name) != shipped.get(name))
    return [f"{name} differs from what the runtime suite ran (run `make test` again)" for name in differing]


def check(env: str, against_tested: bool = False) -> str:
    """Offline release check; returns the bundle digest (also written to .cache/deploy-bundle.sha256).
    against_tested: the bundle must also equal what the last passing runtime suite loaded."""
    started = time.monotonic()
    for stale in (BUNDLE_DIGEST, BUNDLE_MANIFEST):
        stale.unlink(missing_ok=True)
    lint_migrations()
    with tempfile.TemporaryDirectory(prefix=f"clairvora-{env}-bundle-") as outdir:
        dry_run(env, outdir)
        shipped, version, problems = compare_bundle(env, outdir)
    if against_tested and not problems:
        problems = tested_problems(shipped)
    if len(problems) > 1:
        for problem in problems[:20]:
            print(f"  {problem}", file=sys.stderr)
        if len(problems) > 20:
            print(f"  ... {len(problems) - 20} more", file=sys.stderr)
    if problems:
        more = f" (+{len(problems) - 1} more above)" if len(problems) > 1 else ""
        raise Refused(f"the {env} bundle is not shippable: {problems[0]}{more}")
    test_migrations(env)
    digest = digest_of(shipped)
    write_atomically(BUNDLE_MANIFEST, manifest_of(shipped))
    write_atomically(BUNDLE_DIGEST, digest + "\n")
    vendored = sum(name.startswith("python_modules/") for name in shipped)
    print(
        f"{env} bundle (wrangler {wrangler_version()} deploy --dry-run): {len(shipped)} files compared by sha256, "
        f"equal to the tree ({len(shipped) - vendored} src/**/*.py + {vendored} python_modules/)\n"
        f"  workers SDK: {SDK_DISTRIBUTION} {version} (pinned), {SDK_MODULE} present, python_modules/ = its RECORD\n"
        f"  bundle digest: {digest} -> {BUNDLE_DIGEST.relative_to(ROOT)}\n"
        + (
            f"  equal to what the last passing runtime suite ran ({TESTED_MANIFEST.relative_to(ROOT)})\n"
            if against_tested
            else ""
        )
        + f"{env}: migrations lint + apply cleanly, bundle OK ({time.monotonic() - started:.1f} s)",
        file=sys.stderr,
    )
    return digest


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
    check(env, against_tested=True)
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
    parser.add_argument("command", choices=("preflight", "check", "release", "rollback", "digest"))
    parser.add_argument("--env", help="staging|production (every command but digest)")
    parser.add_argument("--bookmark", help="rollback: D1 Time Travel bookmark to restore")
    parser.add_argument("--version", help="rollback: Worker version id (default: the previous one)")
    parser.add_argument("--confirm", help="production: must be 'production'")
    parser.add_argument(
        "--against-tested", action="store_true", help="check: the bundle must equal what the last passing suite ran"
    )
    args = parser.parse_args(argv)
    if args.command == "digest":  # the set `check` compares the bundle with, hashed from the tree
        print(tree_digest())
        return 0
    if args.env is None:
        parser.error("--env is required")
    try:
        config(args.env)
        if args.command == "preflight":  # fail fast, before `make test` runs
            require_token(args.env, args.confirm)
        elif args.command == "check":
            check(args.env, against_tested=args.against_tested)
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
