"""Helpers for the marketplace tests: advisors, funded wallets, readings."""

from typing import Any

from clairvora import ledger
from clairvora.db import sql
from clairvora.ids import new_id
from support import Client, database, new_user


async def user_id_of(client: Client) -> int:
    r = await client.get("/v1/me")
    assert r.status == 200, r.text
    return int(r.json()["id"])


async def new_advisor(prefix: str = "adv", *, rate: int = 100, categories: list[str] | None = None,
                      status: str | None = "online", headline: str = "Clear answers") -> tuple[Client, dict[str, Any]]:
    """A fresh user who became an advisor (and went online unless status=None)."""
    _sub, client = await new_user(prefix)
    r = await client.post("/v1/advisors", json={"headline": headline, "bio": "Twenty years of readings.",
                                                "categories": categories or ["tarot"],
                                                "rate_cents_per_minute": rate})
    assert r.status == 201, r.text
    advisor = r.json()
    if status is not None and status != advisor["status"]:
        r = await client.patch("/v1/advisors/me", json={"status": status},
                               headers={"if-match": r.headers["etag"]})
        assert r.status == 200, r.text
        advisor = r.json()
    return client, advisor


async def fund(user_id: int, amount_cents: int) -> None:
    """A deposit as the deposits route books it: a payment row and a transfer
    from the gateway clearing account, through the real ledger triggers."""
    db = database()
    payment_id, transfer_id = new_id(), new_id()
    await db.batch([
        sql("""INSERT INTO payments (id, user_id, amount_cents, status, gateway_transaction_id,
                                     created_at_ms, updated_at_ms)
               VALUES (?, ?, ?, 'approved', ?, 0, 0)""", payment_id, user_id, amount_cents, f"t{payment_id}"),
        *ledger.transfer(transfer_id=transfer_id, key=f"deposit:payment:{payment_id}", kind="deposit",
                         legs=[ledger.Leg(ledger.wallet_of(user_id), amount_cents),
                               ledger.Leg(ledger.GATEWAY_CLEARING, -amount_cents)],
                         now_ms=0, reference_type="payment", reference_id=payment_id),
    ])


async def funded_client(amount_cents: int, prefix: str = "cli") -> tuple[Client, int]:
    _sub, client = await new_user(prefix)
    uid = await user_id_of(client)
    if amount_cents:
        await fund(uid, amount_cents)
    return client, uid
