"""The offline Pyodide bundle (runtime/bundle/build.mjs): the same inputs give the same
bytes in any tree, a rebuild happens only when an input changes, and a missing input is
one clear line. (That workerd accepts the bundle is what every runtime test stands on.)"""

import hashlib
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = Path(".cache/workerd/bundle/pyodide_0.28.2_2025-01-16_9.capnp.bin")
PACKAGES = Path(".cache/workerd/packages")


def _tree(dest: Path, *, with_node_modules: bool = True) -> Path:
    shutil.copytree(ROOT / "runtime" / "bundle", dest / "runtime" / "bundle")
    if with_node_modules:
        (dest / "node_modules").symlink_to(ROOT / "node_modules")
    return dest


def _build(root: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node
    return subprocess.run(
        [node, str(root / "runtime" / "bundle" / "build.mjs")], capture_output=True, text=True, timeout=120
    )


def test_same_inputs_same_bytes_and_no_rebuild_without_a_change(tmp_path):
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    first, second = _build(a), _build(b)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    digest = hashlib.sha256((a / BUNDLE).read_bytes()).hexdigest()
    assert digest == hashlib.sha256((b / BUNDLE).read_bytes()).hexdigest()
    assert f"sha256={digest}" in first.stderr and "built" in first.stderr
    assert sorted(p.name for p in (a / PACKAGES).iterdir()) == sorted(p.name for p in (b / PACKAGES).iterdir())
    assert len(list((a / PACKAGES).iterdir())) == 7
    again = _build(a)
    assert again.returncode == 0 and "up to date" in again.stderr, again.stderr
    # A changed input (the glue) rebuilds.
    glue = a / "runtime" / "bundle" / "setup.mjs"
    glue.write_text(glue.read_text() + "\n// changed\n")
    changed = _build(a)
    assert changed.returncode == 0 and "built" in changed.stderr, changed.stderr


def test_a_missing_input_is_one_clear_line(tmp_path):
    root = _tree(tmp_path / "bare", with_node_modules=False)
    result = _build(root)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: node_modules/pyodide/package.json is missing: run `make install` (npm ci installs pyodide and esbuild)"
    ]
