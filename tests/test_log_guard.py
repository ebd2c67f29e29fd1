"""The log guard itself: it sees the Worker's output and finds what leaks."""

from clairvora import logs
from log_guard import findings
from support import new_user, token_for


async def test_guard_finds_tokens_signatures_emails_and_sent_values():
    token = await token_for("user_guard")
    assert findings(f"auth {token}", set()) == ["jwt (1x)"]
    assert "bearer credential (1x)" in findings("Authorization: Bearer abcdefghijklmnopqrstuvwxyz", set())
    assert findings("x-anet-signature: sha512=" + "AB" * 64, set()) == ["webhook signature (1x)"]
    assert findings("reach me at ann@example.com", set()) == ["email address (1x)"]
    assert findings("the card tok_4111 was refused", {"tok_4111"})[0].startswith("1 value(s)")
    assert findings('{"event":"ok","user_id":"4503599627370495"}', {"tok_4111"}) == []


def test_worker_logs_are_redacted_before_the_guard_sees_them(capsys):
    logs.error(
        "probe",
        authorization="Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJlc2lnbmF0dXJl",
        email="a@b.co",
        detail="token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl for ann@example.com",
    )
    out = capsys.readouterr().out
    assert '"event":"probe"' in out
    assert findings(out, set()) == []


async def test_worker_output_during_requests_is_captured_for_the_guard(capsys):
    # A request that logs (a transient D1 error is logged as a warning) lands in pytest's capture,
    # which the conftest hook hands to the guard at the end of the run.
    _sub, client = await new_user("guard")
    r = await client.get("/v1/me", headers={"x-test-d1-fault": "1"})
    assert r.status == 503
    assert '"event":"d1_transient"' in capsys.readouterr().out
