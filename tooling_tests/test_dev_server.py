"""`make dev`'s server is the project's own Worker on real workerd (wrangler dev with
wrangler.toml, src/ and the vendored SDK in python_modules/), not the test Worker.

The two bugs the Node.js imitation hid show here first: without the vendored SDK
every D1 route answers 500 (workerd's built-in SDK copy does not wrap D1 results),
and with `scheduled(self, controller)` workerd's cron call raises a TypeError.
Stopping it (Ctrl-C, SIGTERM) stops workerd too: nothing answers on its port after."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout_s: float = 30) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback server
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def test_dev_serves_the_project_worker_and_runs_its_cron(tmp_path):
    state = tempfile.mkdtemp(prefix="clairvora-dev-")
    node = shutil.which("node")
    assert node
    migrate = [node, "node_modules/wrangler/bin/wrangler.js", "d1", "migrations", "apply", "clairvora-db"]
    subprocess.run(
        [*migrate, "--local", "--persist-to", state],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "CI": "true", "WRANGLER_SEND_METRICS": "false"},
    )
    port = _free_port()
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [node, "runtime/cli.mjs", "dev", "--no-cron", "--port", str(port), "--persist-to", state],
            cwd=ROOT,
            # Any free port for the stand-in: 8788 (make dev's) may be held by a developer's `make dev`.
            env={**os.environ, "ANET_STANDIN_PORT": "0"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "Clairvora API (local) on" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.25)
        status, body = _get(f"http://127.0.0.1:{port}/health")
        assert status == 200, body
        assert json.loads(body)["environment"] == "local"
        status, body = _get(f"http://127.0.0.1:{port}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*")
        assert (status, body) == (200, b"ok"), body
        # `make scheduled` fires the same handler on a running server.
        fired = subprocess.run(
            [node, "runtime/cli.mjs", "scheduled", "--port", str(port)], cwd=ROOT, capture_output=True, text=True
        )
        assert fired.returncode == 0, fired.stderr
        deadline = time.monotonic() + 10
        while log_path.read_text(errors="replace").count('"event":"cron"') < 2:
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.25)
        assert "TypeError" not in log_path.read_text(errors="replace")
        # Ctrl-C's signal: wrangler dev (its own process group) must stop before the command exits.
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not _answers(port), "workerd still serves after `make dev` stopped"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        shutil.rmtree(state, ignore_errors=True)
