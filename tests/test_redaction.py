"""clairvora.logs.redact: what must never reach a log, and what must stay readable."""

import json

from clairvora import logs
from clairvora.logs import luhn_valid, redact

JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6Imluc18xIiwidHlwIjoiSldUIn0"
    ".eyJzdWIiOiJ1c2VyXzEyMyIsImlzcyI6Imh0dHBzOi8vY2xlcmsuZXhhbXBsZSJ9"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)


def flat(value) -> str:
    return json.dumps(redact(value))


def test_bearer_tokens_and_jwts_are_removed_anywhere():
    for text in (
        f"Authorization: Bearer {JWT}",
        f"bearer {JWT}",
        f"got token {JWT} from client",
        f"__session={JWT}; other=1",
        "Bearer opaque-token_value.123",
    ):
        out = redact(text)
        assert "eyJ" not in out and "opaque-token" not in out and "c2lnbmF0dXJl" not in out, out


def test_authorization_and_cookie_headers_are_dropped_whatever_their_case():
    record = {
        "headers": {
            "Authorization": "Basic dXNlcjpwYXNz",
            "COOKIE": "a=b",
            "x-anet-signature": "sha512=ABC",
            "content-type": "application/json",
        }
    }
    out = redact(record)["headers"]
    assert out["Authorization"] == out["COOKIE"] == out["x-anet-signature"] == "[redacted]"
    assert out["content-type"] == "application/json"


def test_card_numbers_are_removed_in_any_grouping():
    for card in (
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "378282246310005",
        "6011000990139424",
        "5555555555554444",
        "4222222222222",
    ):
        out = redact(f"card {card} declined")
        assert "[redacted-card]" in out and card not in out and card.replace(" ", "")[-4:] not in out, out
    assert redact({"cardNumber": "4111111111111111", "cardCode": "123", "expirationDate": "2030-12"}) == {
        "cardNumber": "[redacted]",
        "cardCode": "[redacted]",
        "expirationDate": "[redacted]",
    }


def test_ids_and_timestamps_that_are_not_card_numbers_stay_readable():
    # 52-bit ids and ms timestamps are 13-16 digits; redaction keeps the ones
    # that fail the Luhn check (most of them) so logs stay useful.
    for number in ("1764201600001", "4503599627370497", "1099511627777"):
        assert not luhn_valid(number)
        assert redact(f"reading {number} ended") == f"reading {number} ended"
    assert redact({"reading_id": 4503599627370496, "amount_cents": 500}) == {
        "reading_id": 4503599627370496,
        "amount_cents": 500,
    }


def test_payment_tokens_and_opaque_data_are_removed():
    assert "tok_" not in redact("charge with tok_1NxYz2AbCdEf failed")
    out = redact(
        {
            "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": "eyJjb2RlIjoi"},
            "dataValue": "9471471570959063005001",
            "transactionKey": "standinTxnKey123",
        }
    )
    assert out == {"opaque_data": "[redacted]", "dataValue": "[redacted]", "transactionKey": "[redacted]"}


def test_message_bodies_and_comments_are_dropped():
    out = redact(
        {
            "body": "I am afraid my husband is cheating",
            "comment": "She knew my name",
            "messages": [{"body": "secret"}],
            "reading_id": "123",
        }
    )
    assert out == {"body": "[redacted]", "comment": "[redacted]", "messages": "[redacted]", "reading_id": "123"}


def test_emails_are_removed_in_keys_and_free_text():
    assert redact({"email": "ann@example.com"}) == {"email": "[redacted]"}
    out = redact("user ann.smith+tag@mail.example.co.uk signed in")
    assert "ann.smith" not in out and "[redacted-email]" in out


def test_nested_lists_and_tuples_are_walked():
    out = flat({"a": [{"b": ("x", f"Bearer {JWT}")}], "c": [["ann@example.com"]]})
    assert "eyJ" not in out and "ann@example.com" not in out


def test_long_strings_are_truncated():
    assert len(redact("a" * 10_000)) == logs.MAX_LOG_STRING_CHARS


def test_log_lines_are_json_and_redacted(capsys):
    logs.error(
        "payment_failed",
        request_id="r1",
        authorization=f"Bearer {JWT}",
        detail="card 4111 1111 1111 1111 for ann@example.com, tok_abc123",
        display_name="Ann",
    )
    line = capsys.readouterr().out.strip()
    record = json.loads(line)
    assert record["level"] == "error" and record["event"] == "payment_failed" and record["request_id"] == "r1"
    for secret in ("eyJ", "4111", "ann@example.com", "tok_abc123", "Ann"):
        assert secret not in line, secret
