"""The offline runtime behaves like workerd where the Worker can tell:
a fresh entrypoint per event, waitUntil work awaited, vars and secrets in env,
the D1 binding wrapped by the SDK, entropy refused while the module imports."""

import json
import os
import sys

import _local_runtime
import js
import local_runtime
import pytest

from probe_routes import background_done, probe_routes  # noqa: F401 - the fixture
from support import Client

pytestmark = pytest.mark.usefixtures("probe_routes")


async def test_every_request_gets_a_fresh_entrypoint_instance():
    before = _local_runtime.instances_created
    first = await Client().get("/test/env")
    second = await Client().get("/test/env")
    assert _local_runtime.instances_created == before + 2
    a, b = _local_runtime.recent_instances
    assert a is not b and type(a).__name__ == type(b).__name__ == "Default"
    assert a.ctx is not b.ctx and a.env is not b.env
    assert first.json()["instance_id"] != second.json()["instance_id"]


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
    var_names = [str(k) for k in js.Object.keys(local_runtime.vars)]
    secret_names = ["CLERK_JWT_KEY", "MESSAGE_KEYS", "ANET_SIGNATURE_KEY", "ANET_API_LOGIN_ID", "ANET_TRANSACTION_KEY"]
    assert {"CLERK_ISSUER", "MAX_BODY_BYTES", "SERVER_TIMING", "TEST_HOOKS"} <= set(var_names)
    r = await Client().get("/test/env", headers={"x-names": ",".join(var_names + secret_names)})
    values = r.json()["values"]
    # wrangler.toml's vars, except what the test run overrides (the local stand-ins).
    overrides = {str(k): str(getattr(local_runtime.overrides, k)) for k in js.Object.keys(local_runtime.overrides)}
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


@pytest.mark.parametrize(
    "source",
    [
        "import os\nX = os.urandom(8)\n",
        "import secrets\nX = secrets.token_hex(8)\n",
        "import uuid\nX = uuid.uuid4()\n",
        "import random\nX = random.SystemRandom().random()\n",
        "from clairvora.ids import new_id\nX = new_id()\n",
    ],
)
def test_entropy_at_import_time_is_refused(source, tmp_path):
    name = f"entropy_probe_{abs(hash(source))}"
    (tmp_path / f"{name}.py").write_text(source + "class Default:\n    pass\n")
    sys.modules.pop(name, None)
    with pytest.raises(RuntimeError, match="forbidden in workerd"):
        _local_runtime.import_entrypoint(str(tmp_path), name, "Default")
    # Outside the import, entropy works again (handlers may use it).
    assert len(os.urandom(8)) == 8


def test_entrypoint_without_entropy_imports(tmp_path):
    (tmp_path / "calm_probe.py").write_text("import random\nclass Default:\n    pass\n")
    assert _local_runtime.import_entrypoint(str(tmp_path), "calm_probe", "Default").__name__ == "Default"


async def test_js_side_entropy_is_refused_during_the_worker_import():
    # The boot ran the Worker's import with crypto.getRandomValues refusing; the
    # same function works in a handler (the tests themselves sign tokens with it).
    out = js.Uint8Array.new(8)
    js.crypto.getRandomValues(out)
    assert len(out.to_py()) == 8
