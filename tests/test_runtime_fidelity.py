"""What the Worker relies on in the runtime it is tested on (real workerd, its
Pyodide, the vendored SDK): waitUntil work awaited, vars and secrets in env,
the D1 binding wrapped by the vendored SDK (the built-in copy does not wrap D1
results: every D1 route answered 500), and the local differences guarded."""

import ast
import importlib
import json
import pkgutil
import sys
from pathlib import Path

import local_runtime
import pytest

from probe_routes import background_done, probe_routes  # noqa: F401 - the fixture
from support import Client

pytestmark = pytest.mark.usefixtures("probe_routes")


async def test_wait_until_work_finishes_before_dispatch_returns():
    marker = f"m{len(background_done)}-{id(object())}"
    r = await Client().post("/test/wait-until", headers={"x-marker": marker})
    assert r.status == 200 and r.json() == {"scheduled": marker}
    assert marker in background_done


async def test_a_failing_wait_until_task_neither_breaks_the_reply_nor_the_others(capsys):
    marker = f"f{len(background_done)}-{id(object())}"
    capsys.readouterr()
    r = await Client().post("/test/wait-until", headers={"x-marker": marker, "x-fail": "yes"})
    assert r.status == 200 and marker in background_done
    # The failure is one structured line: the task and the exception type, not its text.
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"background_task_failed"' in line]
    assert [(x["level"], x["task"], x["error"]) for x in lines] == [("error", "probe_failing", "RuntimeError")]
    assert "background task failed" not in json.dumps(lines)
    assert (await Client().get("/health")).status == 200


async def test_vars_and_secrets_reach_env():
    var_names = local_runtime.vars.keys()
    secret_names = ["CLERK_JWT_KEY", "MESSAGE_KEYS", "ANET_SIGNATURE_KEY", "ANET_API_LOGIN_ID", "ANET_TRANSACTION_KEY"]
    assert {"CLERK_ISSUER", "MAX_BODY_BYTES", "SERVER_TIMING", "TEST_HOOKS"} <= set(var_names)
    r = await Client().get("/test/env", headers={"x-names": ",".join(var_names + secret_names)})
    values = r.json()["values"]
    # wrangler.toml's vars, except what the test run overrides (the local stand-ins).
    overrides = {k: getattr(local_runtime.overrides, k) for k in local_runtime.overrides.keys()}
    assert overrides["ANET_ENDPOINT"].startswith("http://127.0.0.1:")
    for name in var_names:
        assert values[name] == overrides.get(name, str(getattr(local_runtime.vars, name))), name
    for name in secret_names:
        assert values[name] == str(getattr(local_runtime.secrets, name)), name
    assert values["CLERK_JWT_KEY"].startswith("-----BEGIN PUBLIC KEY-----")
    # The test-only private half is never handed to the Worker.
    r = await Client().get("/test/env", headers={"x-names": "CLERK_TEST_PRIVATE_KEY"})
    assert r.json()["values"]["CLERK_TEST_PRIVATE_KEY"] is None


async def test_d1_binding_is_wrapped_by_the_sdk_and_returns_python_objects():
    body = (await Client().get("/test/env")).json()
    assert body["db_wrapper"] == "_BindingWrapper" and body["db_js_class"] == "D1Database"
    assert body["result_type"] == "dict" and body["rows_type"] == "list" and body["row_types"] == ["dict"]
    assert body["rows"] == [{"slug": "astrology"}, {"slug": "career"}]


def test_the_workers_sdk_in_use_is_the_vendored_one():
    """workerd's built-in SDK copy (used when python_modules/ lacks the SDK) does not wrap D1
    results; what the tests run, like what is deployed, is python_modules/workers."""
    import workers

    assert workers.__file__.startswith("/session/metadata/python_modules/workers/"), workers.__file__
    metadata = Path("/session/metadata/python_modules/workers_runtime_sdk-1.9.5.dist-info/METADATA").read_text()
    assert "Version: 1.9.5" in metadata


# Locally the standard-library extras that workerd preloads are empty archives
# (runtime/bundle/build.mjs): these modules exist in production but not here, so
# the Worker must not use them, or local runs would differ from production.
LOCALLY_MISSING = ("ssl", "sqlite3", "lzma", "_hashlib", "_pydecimal", "pydoc_data")


@pytest.mark.parametrize("name", LOCALLY_MISSING)
def test_the_locally_missing_extras_really_are_missing(name):
    sys.modules.pop(name, None)
    with pytest.raises(ImportError):
        importlib.import_module(name)


def _imported_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_worker_imports_none_of_the_locally_missing_extras():
    import clairvora
    import entry

    files = [Path(entry.__file__), *Path(clairvora.__file__).parent.glob("*.py")]
    used = {str(f.name): _imported_names(f.read_text()) & set(LOCALLY_MISSING) for f in files}
    assert not {f: names for f, names in used.items() if names}
    # And nothing the Worker imports pulls one in indirectly.
    for module in pkgutil.iter_modules(clairvora.__path__):
        importlib.import_module(f"clairvora.{module.name}")
    assert not set(LOCALLY_MISSING) & set(sys.modules)


def test_hashing_and_decimal_work_without_the_extras():
    import decimal
    import hashlib
    import hmac
    import secrets
    import zlib

    assert hashlib.sha256(b"x").hexdigest().startswith("2d711642")
    assert hmac.compare_digest(hmac.new(b"k", b"m", "sha512").hexdigest(), hmac.new(b"k", b"m", "sha512").hexdigest())
    assert len(secrets.token_bytes(8)) == 8 and zlib.decompress(zlib.compress(b"z")) == b"z"
    assert decimal.Decimal("0.1") + decimal.Decimal("0.2") == decimal.Decimal("0.3")
