"""Host-side handle on a scratch server: `node runtime/cli.mjs serve-scratch`
(fresh local D1, the Worker served over HTTP on a free port, the setup script's
actors and tokens in an info file), stopped when the test is done.

wrangler dev puts its ProxyWorker in front of the Worker and forwards each request
over a pool of keep-alive connections to workerd. A pooled connection dies when the
Worker answers without reading a body of more than 64 KiB (workerd discards that much
of an unread upload, then closes: every 413, and a 401/428 refused before the body is
read) and, rarely, when both ends' 5-second keep-alive timers meet
(cloudflare/workers-sdk#14641). The next request the proxy sends on it never reaches
the Worker: a POST/PUT/PATCH/DELETE is answered 503 "Your worker restarted
mid-request" with Retry-After: 0, and a GET/HEAD is parked until some other request
reaches the proxy. A client of the scratch server does what those two say: it sends
the 503'd request again, and a GET/HEAD that waits NUDGE_AFTER_S sends a HEAD /health
beside it, which releases it. `Scratch.proxy` counts both (retries, nudges).
Production has no such proxy; the Worker's own answers are always problem+json."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BOOT_TIMEOUT_S = 180
PROXY_503_TEXT = b"Your worker restarted mid-request."
PROXY_RETRIES = 3
NUDGE_AFTER_S = 2.0


def is_proxy_503(status: int, headers: dict[str, str], body: bytes) -> bool:
    """wrangler dev's own 503 for a request it could not hand to the Worker (never the Worker's)."""
    return status == 503 and body.startswith(PROXY_503_TEXT) and "problem+json" not in headers.get("content-type", "")


class ProxyCounters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.retries = 0
        self.nudges = 0

    def add(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


@contextmanager
def nudging(base_url: str, method: str, counters: ProxyCounters) -> Iterator[None]:
    """While a GET/HEAD is outstanding, a HEAD /health every NUDGE_AFTER_S (each in its own
    thread: a nudge may be parked too, and the next one releases both)."""
    if method.upper() not in ("GET", "HEAD"):
        yield
        return
    done = threading.Event()

    def nudge() -> None:
        try:
            req = urllib.request.Request(base_url + "/health", method="HEAD")  # noqa: S310
            urllib.request.urlopen(req, timeout=30).close()  # noqa: S310 - localhost scratch server
        except OSError:
            pass

    def watch() -> None:
        while not done.wait(NUDGE_AFTER_S):
            counters.add("nudges")
            threading.Thread(target=nudge, daemon=True).start()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()


def send_through_proxy(
    send: Callable[[], tuple[int, dict[str, str], bytes]], base_url: str, method: str, counters: ProxyCounters
) -> tuple[int, dict[str, str], bytes]:
    """send() once, again after a proxy 503 (at most PROXY_RETRIES times), GET/HEAD nudged."""
    for attempt in range(PROXY_RETRIES + 1):
        with nudging(base_url, method, counters):
            status, headers, body = send()
        if not is_proxy_503(status, headers, body) or attempt == PROXY_RETRIES:
            return status, headers, body
        counters.add("retries")
    raise AssertionError("unreachable")


def proxy_aware_session(base_url: str, counters: ProxyCounters):
    """A requests.Session (for Schemathesis) that does what `Scratch.request` does about the proxy."""
    import requests

    class Adapter(requests.adapters.HTTPAdapter):
        def send(self, request, **kwargs):
            box = {}

            def once() -> tuple[int, dict[str, str], bytes]:
                box["response"] = super(Adapter, self).send(request, **kwargs)
                response = box["response"]
                return response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content

            send_through_proxy(once, base_url, request.method, counters)
            return box["response"]

    session = requests.Session()
    session.mount("http://", Adapter())
    return session


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
        self.proxy = ProxyCounters()
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
        return self.request_bytes(method, path, data, token, all_headers, timeout_s)

    def request_bytes(
        self,
        method: str,
        path: str,
        data: bytes | None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 60,
    ) -> tuple[int, dict[str, str], bytes]:
        """A raw body (e.g. an image upload) with a real Content-Length."""
        all_headers = dict(headers or {})
        if token:
            all_headers["authorization"] = f"Bearer {token}"

        def once() -> tuple[int, dict[str, str], bytes]:
            req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=all_headers)  # noqa: S310
            try:
                with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - localhost scratch server
                    return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
            except urllib.error.HTTPError as err:
                return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()

        return send_through_proxy(once, self.base_url, method, self.proxy)

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
