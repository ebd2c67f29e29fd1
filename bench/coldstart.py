"""Cold start on the real workerd (wrangler dev), from the two sides that can see it.

- The host (runtime/cli.mjs run, in `harness.run["host"]`): wrangler dev spawned ->
  workerd's first answer (`ready_ms`; the host polls every 200 ms, so this is
  up to 200 ms late), then the first `GET /health` (a D1 read) right after it.
  One sample per `run` (one wrangler dev start), of the *test* Worker, which
  bundles pytest and Hypothesis besides the project's code and SDK.
- Inside workerd, at the harness module's import (`harness.IMPORT_MS`): the
  workers SDK import and `import entry`, timed with `time.perf_counter`. They
  read 0 ms: workerd's clock does not advance while the isolate runs its top
  level (it does inside a request). So:
- The first import replayed inside a request: the modules `import entry`
  loaded at the isolate's start (`harness.ENTRY_LOADED`: entry, every
  `clairvora` module and the few stdlib modules only they use) dropped from
  `sys.modules` and `entry` imported again (source compiled again), several
  times; then as many replays with each module's own import time (its
  execution minus the modules it imported meanwhile), averaged.
- A scan of each module's top level for calls (work done at import, not in
  handlers).

workerd's clock advances in 1 ms steps locally (and, deployed, only across
I/O), so every figure here is a wall-clock figure with 1 ms resolution.
"""

import ast
import importlib
import importlib.abc
import importlib.machinery
import os
import statistics
import sys
import time

import harness

BUNDLE = "/session/metadata"
WORKER_FILES = ("entry.py", "clairvora")  # what the deployed Worker imports (src/)
_ALLOWED_TOP_LEVEL_CALLS = {"TypeVar", "dataclass", "field", "Literal"}


def _first_import() -> list[str]:
    """The modules `import entry` loaded at the isolate's start, built-in C modules
    aside (they are initialised once per process, not re-importable)."""
    return [name for name in harness.ENTRY_LOADED if name not in sys.builtin_module_names]


def _purge(names: list[str]) -> None:
    for name in names:
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


def reimport_ms(times: int) -> list[float]:
    """Wall ms of each replay of the first `import entry`."""
    names, out = _first_import(), []
    for _ in range(times):
        _purge(names)
        started = time.perf_counter()
        importlib.import_module("entry")
        out.append((time.perf_counter() - started) * 1000)
    return out


class _OwnTime(importlib.abc.MetaPathFinder):
    """Finds the given modules as usual and times each one's execution minus
    the modules it imported meanwhile: its own import time."""

    def __init__(self, names: list[str]) -> None:
        self.names = set(names)
        self.own_ms: dict[str, float] = {}
        self._children_ms: list[float] = []

    def find_spec(self, name, path, target=None):
        if name not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module) -> None:
            self._children_ms.append(0.0)
            started = time.perf_counter()
            try:
                execute(module)
            finally:
                total = (time.perf_counter() - started) * 1000
                children = self._children_ms.pop()
                self.own_ms[name] = self.own_ms.get(name, 0.0) + total - children
                if self._children_ms:
                    self._children_ms[-1] += total

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def per_module_ms(times: int) -> list[tuple[str, float]]:
    """Each module's own import time (without the modules it imports), the mean
    of `times` replays: single readings have 1 ms steps, their mean is finer."""
    names = _first_import()
    timer = _OwnTime(names)
    sys.meta_path.insert(0, timer)
    try:
        for _ in range(times):
            _purge(names)
            importlib.import_module("entry")
    finally:
        sys.meta_path.remove(timer)
    return [(name, total / times) for name, total in timer.own_ms.items()]


def _call_names(node: ast.AST) -> list[str]:
    return [ast.unparse(sub.func) for sub in ast.walk(node) if isinstance(sub, ast.Call)]


def _worker_sources() -> list[str]:
    paths = []
    for item in WORKER_FILES:
        path = os.path.join(BUNDLE, item)
        if os.path.isfile(path):
            paths.append(path)
        for directory, _dirs, files in os.walk(path):
            paths += [os.path.join(directory, f) for f in sorted(files) if f.endswith(".py")]
    return paths


def top_level_work() -> list[tuple[str, int, str]]:
    """(module file, line, call) for every call made at a module's top level
    (outside functions and classes' methods)."""
    found = []
    for path in _worker_sources():
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        for stmt in tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(stmt, ast.ClassDef):
                # class bodies run at import too; methods do not
                nodes = [s for s in stmt.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
                nodes += stmt.decorator_list
            else:
                nodes = [stmt]
            for node in nodes:
                for name in _call_names(node):
                    if name.split(".")[-1] not in _ALLOWED_TOP_LEVEL_CALLS:
                        found.append((os.path.relpath(path, BUNDLE), getattr(node, "lineno", stmt.lineno), name))
    return found


def report(reps: int) -> tuple[str, dict[str, float]]:
    host = harness.run.get("host") or {}
    health = host.get("first_health") or {}
    versions = host.get("versions") or {}
    ready_ms = float(host.get("ready_ms", float("nan")))
    health_ms = ready_ms + float(health.get("ms_after_ready", float("nan")))
    sdk_ms, entry_ms = float(harness.IMPORT_MS["workers_sdk"]), float(harness.IMPORT_MS["entry"])
    again = reimport_ms(reps)
    modules = per_module_ms(reps)
    work = top_level_work()
    figures = {
        "ready_ms": ready_ms,
        "first_health_ms": health_ms,
        "entry_import_ms": entry_ms,
        "sdk_import_ms": sdk_ms,
        "reimport_median_ms": statistics.median(again),
        "reimport_max_ms": max(again),
    }
    lines = [
        f"Measured on workerd {versions.get('workerd', '?')} through wrangler dev {versions.get('wrangler', '?')} "
        "(the test Worker: the project's src/ and vendored SDK, plus the harness, pytest and Hypothesis), "
        "one wrangler dev start. Wall clock; workerd's clock has 1 ms steps here.",
        "",
        "| step | ms | measured by |",
        "|---|---:|---|",
        f"| `wrangler dev` spawned -> workerd's first answer (Python Worker loaded) | {ready_ms:,.0f} | host "
        "(polls every 200 ms) |",
        f"| `wrangler dev` spawned -> first `GET /health` 200 (a D1 read) | {health_ms:,.0f} | host "
        f"(HTTP {health.get('status', '?')}) |",
        f"| `from workers import ...` (the SDK) at the isolate's start | {sdk_ms:.0f} | inside workerd "
        "(the clock stands still during the top level) |",
        f"| `import entry` at the isolate's start | {entry_ms:.0f} | inside workerd (same) |",
        f"| `import entry` replayed in a request ({len(_first_import())} modules dropped first), {reps} times: "
        f"median (max) | {figures['reimport_median_ms']:.0f} ({figures['reimport_max_ms']:.0f}) | inside workerd |",
        "",
        f"| module | own import, ms (mean of {reps}) |",
        "|---|---:|",
    ]
    for name, ms in sorted(modules, key=lambda m: -m[1]):
        lines.append(f"| `{name}` | {ms:.1f} |")
    lines += ["", "Calls at module top level (run once per isolate, at import):", ""]
    lines += [f"- `{path}:{line}` `{name}(...)`" for path, line, name in work] or ["- none"]
    return "\n".join(lines), figures


async def main(argv) -> None:
    """`node runtime/cli.mjs run bench/coldstart.py [reps]`: the cold-start report alone
    (one more wrangler dev start per run; `make bench` includes it)."""
    reps = int(argv[0]) if len(argv) else 10
    text, _figures = report(reps)
    print(text)
