"""Host-side handle on a scratch server: `node runtime/cli.mjs serve-scratch`
(fresh local D1, the Worker served over HTTP on a free port, the setup script's
actors and tokens in an info file), stopped when the test is done."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BOOT_TIMEOUT_S = 180


class Scratch:
    def __init__(
        self,
        *setup_args: str,
        env: str = "",
        setup: str | None = "tooling_tests/scratch_world.py",
        worker_vars: dict[str, str] | None = None,
    ) -> None:
        # worker_vars override Worker vars of the configuration (the runtime reads a
        # process variable named like a var), e.g. a 1-second billing period.
        self._worker_vars = dict(worker_vars or {})
        self._args = (setup_args, env, setup)
        self._start(*setup_args, env=env, setup=setup)

    def _start(self, *setup_args: str, env: str, setup: str | None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="clairvora-host-")
        self.info_path = Path(self._dir.name) / "info.json"
        # The Worker's own output (stdout+stderr) is kept: tests assert nothing secret reached it.
        self.log_path = Path(self._dir.name) / "worker.log"
        self._log = self.log_path.open("wb")
        node = shutil.which("node")
        assert node, "Node.js is required"
        self.proc = subprocess.Popen(
            [
                node,
                "runtime/cli.mjs",
                "serve-scratch",
                "--info",
                str(self.info_path),
                *(["--env", env] if env else []),
                *(["--setup", setup] if setup else []),
                *setup_args,
            ],
            cwd=ROOT,
            env={**os.environ, **self._worker_vars},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.info = self._wait_ready()
        self.base_url: str = self.info["base_url"]
        self.world: dict[str, Any] = self.info["setup"]

    def _wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.info_path.exists():
                return json.loads(self.info_path.read_text())
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve-scratch exited {self.proc.returncode}:\n{self.worker_log()}")
            time.sleep(0.2)
        self.close()
        raise RuntimeError("serve-scratch did not become ready in time")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30,
    ) -> tuple[int, dict[str, str], bytes]:
        all_headers = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers.setdefault("content-type", "application/json")
        if token:
            all_headers["authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=all_headers)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - localhost scratch server
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()

    def request_bytes(
        self,
        method: str,
        path: str,
        data: bytes,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 60,
    ) -> tuple[int, dict[str, str], bytes]:
        """A raw body (e.g. an image upload) with a real Content-Length."""
        all_headers = dict(headers or {})
        if token:
            all_headers["authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=all_headers)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - localhost scratch server
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()

    def worker_log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()

    def cleanup(self) -> None:
        self.close()
        self._dir.cleanup()
