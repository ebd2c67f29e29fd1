"""Helpers for the marketplace tests: advisors, funded wallets, readings."""

import time
from typing import Any

from clairvora import ledger, promo
from clairvora.db import sql
from clairvora.ids import new_id
from support import Client, database, new_user, token_for, unique


async def user_id_of(client: Client) -> int:
    r = await client.get("/v1/me")
    assert r.status == 200, r.text
    return int(r.json()["id"])


async def new_advisor(
    prefix: str = "adv",
    *,
    rate: int = 100,
    categories: list[str] | None = None,
    status: str | None = "online",
    headline: str = "Clear answers",
) -> tuple[Client, dict[str, Any]]:
    """A fresh user who became an advisor (and went online unless status=None)."""
    _sub, client = await new_user(prefix)
    r = await client.post(
        "/v1/advisors",
        json={
            "headline": headline,
            "bio": "Twenty years of readings.",
            "categories": categories or ["tarot"],
            "rate_cents_per_minute": rate,
        },
    )
    assert r.status == 201, r.text
    advisor = r.json()
    if status is not None and status != advisor["status"]:
        r = await client.patch("/v1/advisors/me", json={"status": status}, headers={"if-match": r.headers["etag"]})
        assert r.status == 200, r.text
        advisor = r.json()
    return client, advisor


async def reading_row(reading_id: Any) -> dict[str, Any]:
    """The readings row as D1 holds it (for assertions)."""
    return await database().first(sql("SELECT * FROM readings WHERE id = ?", int(reading_id)))


async def wallet_cents(user_id: int) -> int:
    """The client's wallet balance, from its account row."""
    row = await database().first(
        sql("SELECT balance_cents FROM accounts WHERE owner_user_id = ? AND kind = 'client_wallet'", user_id)
    )
    return int(row["balance_cents"])


async def fund(user_id: int, amount_cents: int) -> None:
    """A deposit as the deposits route books it: a payment row and a transfer
    from the gateway clearing account, through the real ledger triggers."""
    db = database()
    payment_id, transfer_id = new_id(), new_id()
    await db.batch(
        [
            sql(
                """INSERT INTO payments (id, user_id, amount_cents, status, gateway_transaction_id,
                                     created_at_ms, updated_at_ms)
               VALUES (?, ?, ?, 'approved', ?, 0, 0)""",
                payment_id,
                user_id,
                amount_cents,
                f"t{payment_id}",
            ),
            *ledger.transfer(
                transfer_id=transfer_id,
                key=f"deposit:payment:{payment_id}",
                kind="deposit",
                legs=[
                    ledger.Leg(ledger.wallet_of(user_id), amount_cents),
                    ledger.Leg(ledger.GATEWAY_CLEARING, -amount_cents),
                ],
                now_ms=0,
                reference_type="payment",
                reference_id=payment_id,
            ),
        ]
    )


async def funded_client(amount_cents: int, prefix: str = "cli") -> tuple[Client, int]:
    _sub, client = await new_user(prefix)
    uid = await user_id_of(client)
    if amount_cents:
        await fund(uid, amount_cents)
    return client, uid


MINUTE_MS = 60_000  # BILLING_PERIOD_SECONDS in the test configuration


def now_ms() -> int:
    return int(time.time() * 1000)


async def long_lived_user(prefix: str) -> tuple[Client, int]:
    """A user whose token stays valid while tests move the clock hours ahead."""
    sub = f"user_{unique(prefix)}"
    now_s = int(time.time())
    client = Client(await token_for(sub, iat=now_s - 2 * 86400, nbf=now_s - 2 * 86400, exp=now_s + 7 * 86400))
    return client, await user_id_of(client)


def at(ms: int, **headers: str) -> dict[str, str]:
    """Headers that fix the Worker's clock for one request."""
    return {"x-test-now-ms": str(ms), **headers}


async def market_pair(
    rate: int = 100, funds: int = 1000, categories: list[str] | None = None
) -> tuple[Client, int, Client, int]:
    """(client, client_id, advisor, advisor_id): an online advisor and a funded client."""
    advisor, advisor_id = await long_lived_user("adv")
    r = await advisor.post(
        "/v1/advisors",
        json={"headline": "Readings", "bio": "", "categories": categories or ["tarot"], "rate_cents_per_minute": rate},
    )
    assert r.status == 201, r.text
    r = await advisor.patch("/v1/advisors/me", json={"status": "online"}, headers={"if-match": r.headers["etag"]})
    assert r.status == 200, r.text
    client, client_id = await long_lived_user("cli")
    if funds:
        await fund(client_id, funds)
    return client, client_id, advisor, advisor_id


async def request_reading(client: Client, advisor_id: int, t_ms: int, key: str | None = None) -> Any:
    return await client.post(
        "/v1/readings",
        json={"advisor_id": str(advisor_id), "channel": "chat"},
        headers=at(t_ms, **{"idempotency-key": key or unique("k")}),
    )


async def active_reading(client: Client, advisor: Client, advisor_id: int, t_ms: int) -> dict[str, Any]:
    r = await request_reading(client, advisor_id, t_ms)
    assert r.status == 201, r.text
    reading = r.json()
    r = await advisor.post(f"/v1/readings/{reading['id']}/accept", headers=at(t_ms))
    assert r.status == 200, r.text
    return r.json()


_OPEN = "e.id > coalesce((SELECT max(last_entry_id) FROM ledger_segments), 0)"


async def assert_ledger_consistent() -> None:
    """The reconciliation report of GET /v1/admin/ledger/check (money's), and
    the billing invariants of this feature, checked over every row in D1."""
    from money_support import admin_client

    _admin_id, admin = await admin_client()
    r = await admin.get("/v1/admin/ledger/check")
    assert r.status == 200, r.text
    report = r.json()
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]
    db = database()
    checks = {
        "transfers sum to zero": """
            SELECT transfer_id FROM ledger_entries GROUP BY transfer_id HAVING sum(amount_cents) <> 0 LIMIT 5""",
        # A transfer without entries is one a closed ledger period took to R2 (periods.py).
        "every transfer posted with >= 2 entries": """
            SELECT t.id FROM transfers t WHERE t.posted = 0
               OR (SELECT count(*) FROM ledger_entries e WHERE e.transfer_id = t.id)
                  IN (1, CASE WHEN EXISTS (SELECT 1 FROM ledger_segments) THEN 1 ELSE 0 END) LIMIT 5""",
        "account balance = closing balance + its open entries, sequence likewise": f"""
            SELECT a.id FROM accounts a LEFT JOIN account_closings c ON c.account_id = a.id
            WHERE a.balance_cents <> coalesce(c.balance_cents, 0) +
                  (SELECT coalesce(sum(amount_cents), 0) FROM ledger_entries e WHERE e.account_id = a.id AND {_OPEN})
               OR a.last_sequence - coalesce(c.sequence, 0) <>
                  (SELECT count(*) FROM ledger_entries e WHERE e.account_id = a.id AND {_OPEN}) LIMIT 5""",  # noqa: S608
        "billed_minutes = number of charges = last minute, charges at the rate": """
            SELECT r.id FROM readings r
            WHERE r.billed_minutes <> (SELECT count(*) FROM reading_charges c WHERE c.reading_id = r.id)
               OR r.billed_minutes <> (SELECT coalesce(max(minute), 0) FROM reading_charges c WHERE c.reading_id = r.id)
               OR EXISTS (SELECT 1 FROM reading_charges c WHERE c.reading_id = r.id
                          AND c.amount_cents <> r.rate_cents_per_minute) LIMIT 5""",
        # promo.py: a promo-paid cent pays the advisor its promo share and the rest to promotions (account 3)
        "one charge transfer per minute, split as fixed on the reading": f"""
            SELECT c.reading_id, c.minute FROM reading_charges c JOIN readings r ON r.id = c.reading_id
            JOIN transfers t ON t.id = c.transfer_id
            WHERE EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transfer_id = t.id)
              AND (t.transfer_key <> 'reading:' || c.reading_id || ':minute:' || c.minute
               OR (SELECT coalesce(sum(e.amount_cents), 0) FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
                   WHERE e.transfer_id = t.id AND a.kind = 'advisor_earnings' AND a.owner_user_id = r.advisor_id)
                  <> {promo.CHARGE_ADVISOR_CENTS}
               OR (SELECT coalesce(sum(e.amount_cents), 0) FROM ledger_entries e
                   WHERE e.transfer_id = t.id AND e.account_id = 3) <> {promo.CHARGE_PROMOTIONS_CENTS}
               OR (SELECT coalesce(sum(e.amount_cents), 0) FROM ledger_entries e
                   WHERE e.transfer_id = t.id AND e.account_id = 1)
                  <> c.amount_cents - {promo.CHARGE_ADVISOR_CENTS} - {promo.CHARGE_PROMOTIONS_CENTS}
               OR (c.promo_cents = 0 AND (SELECT coalesce(sum(e.amount_cents), 0) FROM ledger_entries e
                   WHERE e.transfer_id = t.id AND e.account_id = 1) <> r.platform_cents_per_minute))
            LIMIT 5""",  # noqa: S608 - constant fragments
        "reading charge transfers all belong to a charge row": """
            SELECT t.id FROM transfers t WHERE t.kind = 'reading_charge'
              AND NOT EXISTS (SELECT 1 FROM reading_charges c WHERE c.transfer_id = t.id) LIMIT 5""",
        "ended readings were active": """
            SELECT id FROM readings WHERE status = 'ended' AND (accepted_at_ms IS NULL OR ended_at_ms IS NULL) LIMIT 5""",
    }
    for name, query in checks.items():
        bad = (await db.all(sql(query))).rows
        assert not bad, f"{name}: {bad}"


async def fetch_with_env(
    overrides: dict[str, str],
    method: str,
    path: str,
    *,
    token: str,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """One request through the runtime's dispatch (fault header honoured, waitUntil
    work awaited) with some env values replaced for it (e.g. rotated MESSAGE_KEYS,
    a 1-second billing period)."""
    import json

    import js
    import local_runtime
    from pyodide.ffi import to_js

    from support import Resp

    all_headers = {"authorization": f"Bearer {token}", **(headers or {})}
    init: dict[str, Any] = {"method": method}
    if json_body is not None:
        init["body"] = json.dumps(json_body)
        all_headers["content-type"] = "application/json"
    init["headers"] = to_js(all_headers, dict_converter=js.Object.fromEntries)
    request = js.Request.new(local_runtime.baseUrl + path, to_js(init, dict_converter=js.Object.fromEntries))
    result = await local_runtime.dispatchFetch(request, to_js(overrides, dict_converter=js.Object.fromEntries))
    response = result.response
    data = (await response.arrayBuffer()).to_bytes()
    return Resp(int(response.status), {k.lower(): v for k, v in response.headers.entries()}, data)
