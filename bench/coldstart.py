"""Cold start: the Worker module's import time inside Pyodide, and the work
each module does at import.

- The runtime's own boot figure (`local_runtime.timings.importMs`): the first
  import of `src/entry.py` in this Pyodide, compile from source included.
- Re-imports: every `entry`/`clairvora*` module dropped from `sys.modules` and
  `entry` imported again (source compiled again: Pyodide writes no .pyc here),
  several times; the median is the figure to watch.
- Per module, its own import time (dependencies already imported), and a scan
  of each module's top level for calls (work done at import, not in handlers).
"""

import ast
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable

import local_runtime

SRC = "/session/metadata"
_ALLOWED_TOP_LEVEL_CALLS = {"TypeVar", "dataclass", "field", "Literal"}


def _purge() -> list[str]:
    names = [n for n in sys.modules if n == "entry" or n == "clairvora" or n.startswith("clairvora.")]
    for name in names:
        del sys.modules[name]
    importlib.invalidate_caches()
    return names


def reimport_ms(times: int, cpu_clock_s: Callable[[], float]) -> tuple[list[float], list[float]]:
    """(wall ms, CPU ms) of each full re-import."""
    wall, cpu = [], []
    for _ in range(times):
        _purge()
        started, started_cpu = time.perf_counter(), cpu_clock_s()
        importlib.import_module("entry")
        cpu.append((cpu_clock_s() - started_cpu) * 1000)
        wall.append((time.perf_counter() - started) * 1000)
    return wall, cpu


def per_module_ms(cpu_clock_s: Callable[[], float]) -> list[tuple[str, float]]:
    """Each module's own import time: imported in the order the Worker imports
    them, so a module's dependencies are already loaded when it is timed."""
    _purge()
    before = set(sys.modules)
    importlib.import_module("entry")
    order = [n for n in sys.modules if n not in before and (n == "entry" or n.startswith("clairvora"))]
    _purge()
    out = []
    for name in order:
        started = cpu_clock_s()
        importlib.import_module(name)
        out.append((name, (cpu_clock_s() - started) * 1000))
    return out


def _call_names(node: ast.AST) -> list[str]:
    names = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            names.append(ast.unparse(sub.func))
    return names


def top_level_work() -> list[tuple[str, int, str]]:
    """(module file, line, call) for every call made at a module's top level
    (outside functions and classes' methods)."""
    found = []
    for directory, _dirs, files in os.walk(SRC):
        for file in sorted(files):
            if not file.endswith(".py"):
                continue
            path = os.path.join(directory, file)
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
                            found.append((os.path.relpath(path, SRC), getattr(node, "lineno", stmt.lineno), name))
    return found


def report(reps: int, cpu_clock_s: Callable[[], float]) -> tuple[str, dict[str, float]]:
    timings = local_runtime.timings
    boot_ms = float(timings.importMs)
    again, again_cpu = reimport_ms(reps, cpu_clock_s)
    modules = per_module_ms(cpu_clock_s)
    work = top_level_work()
    figures = {
        "boot_import_ms": boot_ms,
        "reimport_median_ms": statistics.median(again),
        "reimport_max_ms": max(again),
        "reimport_cpu_ms": statistics.median(again_cpu),
    }
    lines = [
        f"- first import of `src/entry.py` at runtime boot: **{boot_ms:.1f} ms** "
        f"(Pyodide itself: {float(timings.pyodideMs):.0f} ms, workers SDK: {float(timings.sdkMs):.0f} ms)",
        f"- re-import of `entry` + every `clairvora` module (sources compiled again), {reps} times: median "
        f"**{figures['reimport_cpu_ms']:.1f} ms of CPU**, {figures['reimport_median_ms']:.1f} ms wall "
        f"(max {figures['reimport_max_ms']:.1f} ms wall)",
        "",
        "| module | own import, CPU ms |",
        "|---|---|",
    ]
    for name, ms in sorted(modules, key=lambda m: -m[1]):
        lines.append(f"| `{name}` | {ms:.2f} |")
    lines += ["", "Calls at module top level (run once per isolate, at import):", ""]
    lines += [f"- `{path}:{line}` `{name}(...)`" for path, line, name in work] or ["- none"]
    return "\n".join(lines), figures
