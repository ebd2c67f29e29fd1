"""The test Worker's entrypoint: pytest (and benchmark scripts) inside workerd.

The host (runtime/cli.mjs test|run) serves this Worker with `wrangler dev` on a
fresh local D1 and POSTs:
- /__harness/pytest  {"run": {...}, "args": [...]}     -> {"exit_code", "output"}
- /__harness/script  {"run": {...}, "path": "bench/x.py", "argv": [...]} -> {"result", "output"}
Every other request is served by the project's own entrypoint (`entry.Default`),
so tests that need real HTTP reach the same code through workerd's own dispatch.

Async tests block on D1 with `pyodide.ffi.run_sync` (JSPI), which workerd's
Python supports; `tests/conftest.py` drives coroutine tests through it.
"""

import contextlib
import importlib.util
import io
import json
import os
import sys
import time
import traceback
from typing import Any

# What the Worker's import costs, seen from inside workerd (bench/coldstart.py reports it).
# Timers are allowed at import (entropy is not), but workerd's clock stands still while
# the isolate runs its top level, so these read 0 ms today; the modules `import entry`
# loads are recorded too, so a script can re-import exactly those inside a request.
_started = time.perf_counter()
from workers import Response, WorkerEntrypoint  # noqa: E402

_sdk_done, _before_entry = time.perf_counter(), set(sys.modules)
import entry  # noqa: E402

_entry_done = time.perf_counter()
IMPORT_MS = {"workers_sdk": (_sdk_done - _started) * 1000, "entry": (_entry_done - _sdk_done) * 1000}
ENTRY_LOADED = sorted(set(sys.modules) - _before_entry)
import local_runtime  # noqa: E402

# The run description the host sent with the current request (scripts read its `host` part).
run: dict[str, Any] = {}

BUNDLE_ROOT = "/session/metadata"
MAX_OUTPUT_CHARS = 4_000_000  # a run's report, not a log archive


def _prepare(description: dict[str, Any], env: Any) -> None:
    os.chdir(BUNDLE_ROOT)
    for path in (f"{BUNDLE_ROOT}/tests", BUNDLE_ROOT):
        if path not in sys.path:
            sys.path.insert(0, path)
    run.clear()
    run.update(description)
    local_runtime.configure(description, env)


class _Capture(io.TextIOBase):
    """Keeps what a run writes (up to MAX_OUTPUT_CHARS) for the reply; the host prints it."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size_chars = 0

    def write(self, text: str) -> int:
        if self.size_chars < MAX_OUTPUT_CHARS:
            self.parts.append(text)
            self.size_chars += len(text)
        return len(text)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return "".join(self.parts)


def _run_pytest(args: list[str]) -> tuple[int, str]:
    import pytest

    out = _Capture()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = int(pytest.main(["-p", "no:cacheprovider", *args]))
        except BaseException:  # noqa: BLE001 - pytest itself broke: report it as this run's error
            traceback.print_exc()
            print("1 error")
            code = int(pytest.ExitCode.INTERNAL_ERROR)
    return code, out.text()


async def _run_script(path: str, argv: list[str]) -> tuple[Any, str]:
    spec = importlib.util.spec_from_file_location("__clairvora_script__", os.path.join(BUNDLE_ROOT, path))
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    out = _Capture()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        spec.loader.exec_module(module)
        result = await module.main(argv)
    return result, out.text()


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        path = request.url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
        if path == "__harness/pytest" and request.method == "POST":
            body = json.loads(await request.text())
            _prepare(body["run"], self.env._env)
            code, output = _run_pytest(body["args"])
            return Response.json({"exit_code": code, "output": output})
        if path == "__harness/script" and request.method == "POST":
            body = json.loads(await request.text())
            _prepare(body["run"], self.env._env)
            result, output = await _run_script(body["path"], body["argv"])
            return Response.json({"result": result, "output": output})
        return await entry.Default(self.ctx, self.env).fetch(request)

    async def scheduled(self, controller, env, ctx):
        await entry.Default(self.ctx, self.env).scheduled(controller, env, ctx)
