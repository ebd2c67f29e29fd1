"""Host-side fixtures: wrangler applies every migration, from scratch, to a
fresh local D1 for each environment (top level, staging, production) at once.
The results are read straight from the SQLite file local D1 keeps (one
wrangler start costs seconds of CPU; sqlite3 from the standard library, none)."""

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WRANGLER = [os.environ.get("NODE", "node"), str(ROOT / "node_modules" / "wrangler" / "bin" / "wrangler.js")]
ENVIRONMENTS = {"": "clairvora-db", "staging": "clairvora-db-staging", "production": "clairvora-db-production"}
WRANGLER_ENV = {**os.environ, "CI": "true", "WRANGLER_SEND_METRICS": "false"}


@dataclass
class MigratedState:
    env: str
    database: str
    persist_dir: Path
    apply_output: str

    def database_file(self) -> Path:
        """The SQLite file behind this local D1 (what workerd's D1 reads and writes)."""
        files = [f for f in (self.persist_dir / "v3" / "d1").rglob("*.sqlite") if f.name != "metadata.sqlite"]
        assert len(files) == 1, files
        return files[0]

    def query(self, sql: str) -> list[dict]:
        with closing(sqlite3.connect(self.database_file())) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(sql)]

    @property
    def env_flag(self) -> list[str]:
        return ["--env", self.env] if self.env else []


@pytest.fixture(scope="session")
def migrated(tmp_path_factory) -> dict[str, MigratedState]:
    """Each environment's migrations applied by wrangler into its own temp --persist-to dir."""
    running = {}
    for env, database in ENVIRONMENTS.items():
        persist_dir = tmp_path_factory.mktemp(f"d1-{env or 'local'}")
        command = [
            *WRANGLER,
            "d1",
            "migrations",
            "apply",
            database,
            "--local",
            *(["--env", env] if env else []),
            "--persist-to",
            str(persist_dir),
        ]
        running[env] = (
            database,
            persist_dir,
            subprocess.Popen(
                command, cwd=ROOT, env=WRANGLER_ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            ),
        )
    states = {}
    for env, (database, persist_dir, process) in running.items():
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 0, f"migrations apply failed for env {env or 'top level'}:\n{output}"
        states[env] = MigratedState(env, database, persist_dir, output)
    return states


# --- a scratch server: fresh D1, the Worker served over HTTP, actors with tokens ---
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scratch import Scratch  # noqa: E402 - after the path insert above


@pytest.fixture(scope="session")
def scratch():
    """One scratch server per session (tooling_tests/scratch.py): 3 clients and 3 advisors, the
    first of each for the tests that edit them (the contract fuzzer), the others for the load run."""
    server = Scratch("3")
    try:
        yield server
    finally:
        server.close()
        # Kept for diagnosis after a failure (.cache is ignored by git).
        (ROOT / ".cache").mkdir(exist_ok=True)
        (ROOT / ".cache" / "scratch-worker.log").write_text(server.worker_log())
        server.cleanup()
