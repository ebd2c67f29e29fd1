"""The deploy pipeline, offline: `wrangler deploy --dry-run` per environment
bundles exactly the Worker, and the remote steps refuse without a token."""

import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tooling"))

import deploy  # noqa: E402


def _dry_run(env: str) -> tuple[str, str, list[str]]:
    with tempfile.TemporaryDirectory(prefix=f"dry-run-{env}-") as outdir:
        output = deploy.dry_run(env, outdir)
        shipped = sorted(str(p.relative_to(outdir)) for p in Path(outdir).rglob("*.py"))
        return output, "\n".join(shipped), deploy.bundle_problems(outdir)


def test_dry_run_bundles_the_worker_for_staging_and_production():
    with ThreadPoolExecutor(max_workers=2) as pool:  # ~3 s each; side by side
        results = dict(zip(deploy.ENVIRONMENTS, pool.map(_dry_run, deploy.ENVIRONMENTS), strict=True))
    for env, (output, shipped, problems) in results.items():
        assert "--dry-run: exiting now." in output, output
        assert problems == [], f"{env}: {problems}"
        assert "entry.py" in shipped.splitlines() and "clairvora/ledger.py" in shipped.splitlines()
        # Each environment binds its own database and forbids the test hooks.
        assert f"env.DB (clairvora-db-{env})" in output, output
        assert 'env.TEST_HOOKS ("forbidden")' in output, output
    assert 'env.SERVER_TIMING ("off")' in results["production"][0]


def test_bundle_check_rejects_test_and_runtime_files():
    with tempfile.TemporaryDirectory() as outdir:
        for name in ("entry.py", "tests/support.py", "_local_runtime.py", "clairvora/__pycache__/db.cpython-313.pyc"):
            path = Path(outdir, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
        problems = deploy.bundle_problems(outdir)
    assert "must not ship: tests/support.py" in problems
    assert "must not ship: _local_runtime.py" in problems
    assert "must not ship: clairvora/__pycache__/db.cpython-313.pyc" in problems
    assert "missing clairvora/app.py" in problems


@pytest.mark.parametrize(
    "command", [["release", "--env", "staging"], ["rollback", "--env", "production", "--bookmark", "00000000-0000"]]
)
def test_remote_steps_refuse_without_a_token(command):
    env = {k: v for k, v in os.environ.items() if k != "CLOUDFLARE_API_TOKEN"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tooling" / "deploy.py"), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "CLOUDFLARE_API_TOKEN is not set" in result.stderr
    assert "+ wrangler" not in result.stderr  # refused before any wrangler call


def test_production_needs_explicit_confirmation():
    env = {**os.environ, "CLOUDFLARE_API_TOKEN": "not-a-real-token"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tooling" / "deploy.py"), "release", "--env", "production"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "--confirm production" in result.stderr, result.stderr
    assert "+ wrangler" not in result.stderr


def test_unknown_environment_is_refused():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tooling" / "deploy.py"), "check", "--env", "prod"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "unknown environment 'prod'" in result.stderr
