"""The D1 fault switch cannot be turned on in staging or production configuration.

Boots the runtime with each deployed configuration (its wrangler.toml vars, on
scratch D1) with TEST_HOOKS=allowed forced through the process environment, and
sends the fault header: the request must succeed untouched. The same request
on the local configuration fails with 503, so the header itself is live."""

import json
import time

import pytest
from scratch import Scratch

FAULT = {"x-test-d1-fault": "1"}


def test_local_configuration_honours_the_switch(scratch):
    status, headers, body = scratch.request("GET", "/health", headers=FAULT)
    assert status == 503 and headers["retry-after"] == "1", body
    assert json.loads(body)["code"] == "temporarily_unavailable"


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_deployed_configurations_ignore_the_switch(environment, monkeypatch):
    monkeypatch.setenv("TEST_HOOKS", "allowed")  # even an override of the var cannot arm it
    server = Scratch(env=environment, setup=None)
    try:
        for header in ("1", "1;after", "1,2,3"):
            status, _headers, body = server.request("GET", "/health", headers={"x-test-d1-fault": header})
            assert status == 200, body
            assert json.loads(body)["environment"] == environment
        # The override did reach the Worker (wrangler lists a --var's value as hidden, a
        # configured one as itself), so the switch really was asked for and refused.
        deadline = time.monotonic() + 10  # serve-scratch passes wrangler's output on every 250 ms
        while 'env.TEST_HOOKS ("' not in server.worker_log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert 'env.TEST_HOOKS ("(hidden)")' in server.worker_log()
    finally:
        server.cleanup()
