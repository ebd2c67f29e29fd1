"""Helpers for the payout tests: advisors with real earnings (reading charges
through the ledger), their PayPal receiver, the PayPal stand-in's webhooks
delivered to the Worker, and the cron's payout jobs run on one advisor or
payout (the job itself picks whichever are due among every test's)."""

import time
from typing import Any

import local_runtime

from clairvora import clearance, payout_cron, payout_flow
from clairvora.config import Settings
from clairvora.db import Database, sql
from money_support import charge_minute_statements, start_reading
from support import Client, Resp, database, unique
from world import Actor, actor, credit, make_advisor

DAY_MS = 86_400_000
WEBHOOK = "/v1/webhooks/paypal"


def settings(**overrides: str) -> Settings:
    return Settings.from_env(local_runtime.env_with(overrides or None))


def now_ms() -> int:
    return int(time.time() * 1000)


async def earn(advisor_id: int, minutes: int, at_ms: int, *, rate: int = 100) -> int:
    """`minutes` paid minutes of a reading with a funded client, charged at `at_ms`;
    the advisor's earnings (70% of the rate at the default fee)."""
    client = await actor("pcl")
    await credit(client.id, minutes * rate)
    reading = await start_reading(database(), client.id, advisor_id, rate, now_ms=at_ms)
    for minute in range(1, minutes + 1):
        # A Database per call: like a request, each one is capped at D1's 50 calls.
        await database().batch(charge_minute_statements(reading, minute, at_ms))
    await database().run(
        sql(
            "UPDATE readings SET status = 'ended', end_reason = 'client_ended', ended_at_ms = ? WHERE id = ?",
            at_ms,
            reading["id"],
        )
    )
    return int(reading["advisor_part"]) * minutes


async def balances(advisor_id: int) -> dict[str, int]:
    row = await database().first(
        sql(
            """SELECT (SELECT balance_cents FROM accounts WHERE owner_user_id = ?1 AND kind = 'advisor_earnings') AS pending,
                      (SELECT balance_cents FROM accounts WHERE owner_user_id = ?1 AND kind = 'advisor_cleared') AS cleared,
                      (SELECT balance_cents FROM accounts WHERE id = 4) AS in_transit,
                      (SELECT balance_cents FROM accounts WHERE id = 5) AS clearing""",
            advisor_id,
        )
    )
    assert row is not None
    return {k: int(v) for k, v in row.items()}


async def set_method(a: Actor, receiver: str, recipient_type: str = "EMAIL") -> Resp:
    current = await a.client.get("/v1/advisors/me/payout-method")
    assert current.status == 200, current.text
    return await a.client.put(
        "/v1/advisors/me/payout-method",
        json_body={"recipient_type": recipient_type, "receiver": receiver},
        headers={"if-match": current.headers["etag"]},
    )


def receiver(tag: str = "") -> str:
    """A unique email the stand-in treats per its tag (fail, unclaimed, invalid, timeout)."""
    name = unique("adv")
    return f"{name}+{tag}@example.com" if tag else f"{name}@example.com"


async def clear(advisor_id: int, at_ms: int, **overrides: str) -> dict[str, int]:
    """The cron's clearance, on this advisor only."""
    return await clearance.clear_advisors(database(), settings(**overrides), [advisor_id], at_ms, 45)


async def cleared_advisor(cents_minutes: int = 20, *, tag: str = "", hold_days: int = 7) -> tuple[Actor, int, str]:
    """An advisor with `cents_minutes` minutes of earnings, cleared, and a receiver:
    (actor, cleared cents, receiver)."""
    a = await make_advisor(await actor("pad"))
    earned_at = now_ms() - (hold_days + 1) * DAY_MS
    earned = await earn(a.id, cents_minutes, earned_at)
    result = await clear(a.id, now_ms())
    assert result["cleared_cents"] == earned, result
    email = receiver(tag)
    r = await set_method(a, email)
    assert r.status == 200, r.text
    return a, earned, email


async def request_payout(a: Actor, body: dict[str, Any] | None = None, key: str | None = None) -> Resp:
    return await a.client.post(
        "/v1/advisors/me/payouts", json=body or {}, headers={"idempotency-key": key or unique("pk")}
    )


async def deliver_webhooks() -> list[tuple[dict[str, Any], Resp]]:
    """Every signed notification the stand-in has queued, POSTed to the Worker as PayPal would."""
    out = []
    for delivery in local_runtime.paypalControl.takeWebhooks():
        headers = {k: str(v) for k, v in dict(delivery["headers"]).items()}
        r = await Client().request("POST", WEBHOOK, body=str(delivery["body"]), headers=headers)
        out.append((dict(delivery), r))
    return out


async def payout_row(payout_id: int | str) -> dict[str, Any]:
    row = await payout_flow.load(database(), int(payout_id))
    assert row is not None
    return row


async def resume(payout_id: int | str, at_ms: int | None = None, db: Database | None = None) -> dict[str, Any]:
    """The cron's resume of this payout (send again, or look up), then its row."""
    row = await payout_row(payout_id)
    await payout_cron.resume_payout(db or database(), settings(), row, at_ms or now_ms())
    return await payout_row(payout_id)
