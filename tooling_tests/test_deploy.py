"""The deploy pipeline, offline: `wrangler deploy --dry-run` per environment
bundles exactly the Worker (src/**/*.py and the vendored workers SDK in
python_modules/, file by file the tree the tests run), and the remote steps
refuse without a token. Destructive cases run on a copy of the project."""

import os
import re
import shutil
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
        return output, "\n".join(shipped), deploy.compare_bundle(env, outdir)[2]


def test_dry_run_bundles_the_worker_for_staging_and_production():
    with ThreadPoolExecutor(max_workers=2) as pool:  # ~3 s each; side by side
        results = dict(zip(deploy.ENVIRONMENTS, pool.map(_dry_run, deploy.ENVIRONMENTS), strict=True))
    for env, (output, shipped, problems) in results.items():
        assert "--dry-run: exiting now." in output, output
        assert problems == [], f"{env}: {problems}"
        assert "entry.py" in shipped.splitlines() and "clairvora/ledger.py" in shipped.splitlines()
        assert deploy.SDK_MODULE in shipped.splitlines()
        # Each environment binds its own database and forbids the test hooks.
        assert f"env.DB (clairvora-db-{env})" in output, output
        assert 'env.TEST_HOOKS ("forbidden")' in output, output
    assert 'env.SERVER_TIMING ("off")' in results["production"][0]


def test_bundle_check_rejects_test_and_runtime_files():
    with tempfile.TemporaryDirectory() as outdir:
        for name in ("entry.py", "tests/support.py", "local_runtime.py", "clairvora/__pycache__/db.cpython-313.pyc"):
            path = Path(outdir, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
        problems = deploy.bundle_problems(outdir)
    assert "must not ship: tests/support.py" in problems
    assert "must not ship: local_runtime.py" in problems
    assert "must not ship: clairvora/__pycache__/db.cpython-313.pyc" in problems
    assert "missing clairvora/app.py" in problems


def _check(root: Path, env: str = "staging") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "tooling" / "deploy.py"), "check", "--env", env],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_check_passes_on_the_real_tree_and_records_the_digest():
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(
            zip(deploy.ENVIRONMENTS, pool.map(lambda env: _check(ROOT, env), deploy.ENVIRONMENTS), strict=True)
        )
    digest = deploy.tree_digest()
    for env, result in results.items():
        assert result.returncode == 0, result.stderr
        report = result.stderr
        assert f"{env}: migrations lint + apply cleanly, bundle OK" in report
        assert "workers-runtime-sdk 1.9.5 (pinned)" in report
        files = re.search(
            r"(\d+) files compared by sha256, equal to the tree \((\d+) src/\*\*/\*\.py \+ (\d+) ", report
        )
        assert files, report
        assert int(files[1]) == len(deploy.tree_files(env)) and int(files[3]) >= 25, report
        assert f"bundle digest: {digest}" in report, report
    # Both environments ship the same set; `deploy.py digest` hashes it from the tree, without wrangler.
    assert deploy.BUNDLE_DIGEST.read_text() == digest + "\n"
    assert f"  {deploy.SDK_MODULE}\n" in deploy.BUNDLE_MANIFEST.read_text()
    printed = subprocess.run(
        [sys.executable, str(ROOT / "tooling" / "deploy.py"), "digest"], capture_output=True, text=True, check=True
    )
    assert printed.stdout == digest + "\n"


def test_compare_reports_every_file_the_bundle_gets_wrong():
    """A bundle that is not the tree: a vendored file and a module changed, an SDK file missing,
    a file the tree does not have."""
    with tempfile.TemporaryDirectory(prefix="dry-run-doctored-") as outdir:
        deploy.dry_run("staging", outdir)
        assert deploy.compare_bundle("staging", outdir)[2] == []
        out = Path(outdir)
        with open(out / "python_modules/workers/fetch.py", "a") as handle:
            handle.write("# patched\n")
        with open(out / "clairvora/app.py", "a") as handle:
            handle.write("# patched\n")
        (out / "python_modules/workers/rpc.py").unlink()
        (out / "clairvora/extra.py").write_text("")
        problems = deploy.compare_bundle("staging", outdir)[2]
    assert "python_modules/workers/fetch.py in the bundle differs from the tree (sha256)" in problems
    assert (
        "python_modules/workers/fetch.py differs from the workers_runtime_sdk-1.9.5 wheel (sha256 in its RECORD)"
        in problems
    )
    assert "clairvora/app.py in the bundle differs from the tree (sha256)" in problems
    assert "python_modules/workers/rpc.py is in the tree (the tests load it) but not in the bundle" in problems
    assert "clairvora/extra.py is in the bundle but not in src/**/*.py or python_modules/" in problems
    assert len(problems) == 6, problems  # + rpc.py missing against the SDK's RECORD


# Destructive cases, each on its own copy of the project (never the working tree).
def _no_python_modules(root: Path) -> None:
    shutil.rmtree(root / "python_modules")


def _no_workers_package(root: Path) -> None:
    shutil.rmtree(root / "python_modules" / "workers")


def _vendored_file_edited(root: Path) -> None:
    with open(root / "python_modules" / "workers" / "__init__.py", "a") as handle:
        handle.write("# local edit\n")


def _other_pin(root: Path) -> None:
    requirements = root / "runtime" / "requirements-pyodide-runtime.txt"
    requirements.write_text(
        requirements.read_text().replace("workers-runtime-sdk==1.9.5", "workers-runtime-sdk==1.9.6")
    )


def _wrangler_excludes_more(root: Path) -> None:
    # wrangler then ships fewer vendored files than the tests load.
    with open(root / "wrangler.toml", "a") as handle:
        handle.write('\n[python_modules]\nexclude = ["**/*.pyc", "**/*.pyi"]\n')


BROKEN = {
    "no python_modules": (
        _no_python_modules,
        "the workers SDK is not in the bundle (python_modules/workers/__init__.py missing)",
    ),
    "no workers package": (
        _no_workers_package,
        "the workers SDK is not in the bundle (python_modules/workers/__init__.py missing)",
    ),
    "vendored file edited": (
        _vendored_file_edited,
        "python_modules/workers/__init__.py differs from the workers_runtime_sdk-1.9.5 wheel (sha256 in its RECORD)",
    ),
    "other pin": (
        _other_pin,
        "vendored workers-runtime-sdk is 1.9.5, runtime/requirements-pyodide-runtime.txt pins 1.9.6",
    ),
    "wrangler excludes more": (
        _wrangler_excludes_more,
        "python_modules/_cloudflare_compat_flags.pyi is in the tree (the tests load it) but not in the bundle",
    ),
}


def _copy_project(dest: Path) -> Path:
    """What `deploy.py check` reads, copied; node_modules linked (read only)."""
    for name in ("wrangler.toml", "runtime/requirements-pyodide-runtime.txt"):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    for name in ("src", "python_modules", "migrations", "tooling"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "node_modules").symlink_to(ROOT / "node_modules")
    return dest


@pytest.fixture(scope="module")
def broken_checks(tmp_path_factory):
    def run(case: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        root = _copy_project(tmp_path_factory.mktemp(case.replace(" ", "-")))
        BROKEN[case][0](root)
        return _check(root), root

    with ThreadPoolExecutor(max_workers=2) as pool:  # ~4 s each
        return dict(zip(BROKEN, pool.map(run, BROKEN), strict=True))


@pytest.mark.parametrize("case", list(BROKEN))
def test_check_fails_on_a_bundle_without_the_pinned_sdk_or_unlike_the_tree(broken_checks, case):
    result, root = broken_checks[case]
    assert result.returncode == 2, result.stderr
    reason = result.stderr.strip().splitlines()[-1]
    assert reason.startswith(f"refused: the staging bundle is not shippable: {BROKEN[case][1]}"), result.stderr
    assert "bundle OK" not in result.stderr
    assert not (root / ".cache" / "deploy-bundle.sha256").exists()  # no digest for a bundle that failed


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


def _check_against_tested(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "tooling" / "deploy.py"), "check", "--against-tested", "--env", "staging"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_check_against_tested_needs_the_bundle_the_suite_ran(tmp_path_factory):
    """`make deploy-check` compares the dry run with .cache/tested-bundle.manifest, which a
    passing `node runtime/cli.mjs test` writes from the test Worker's own copies."""
    root = _copy_project(tmp_path_factory.mktemp("tested"))
    manifest = root / ".cache" / "tested-bundle.manifest"
    result = _check_against_tested(root)
    assert result.returncode == 2 and "no passing runtime suite is recorded" in result.stderr, result.stderr
    manifest.parent.mkdir(exist_ok=True)
    hashes = {name: deploy.sha256_of(path) for name, path in deploy.tree_files("staging").items()}
    manifest.write_text(deploy.manifest_of(hashes))
    result = _check_against_tested(root)
    assert result.returncode == 0, result.stderr
    assert "equal to what the last passing runtime suite ran" in result.stderr
    # The Worker changed after the suite ran: refused, naming the file.
    entry = root / "src" / "entry.py"
    entry.write_text(entry.read_text() + "\n# changed after the tests\n")
    result = _check_against_tested(root)
    assert result.returncode == 2, result.stderr
    assert "entry.py differs from what the runtime suite ran" in result.stderr.strip().splitlines()[-1]
