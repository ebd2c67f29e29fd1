"""Helpers for the card-money tests (refunds of unused funds, chargebacks):
clients with real card deposits through the Worker and the stand-in, settled
at the stand-in by moving their transaction into the past (its daily cut-offs
then settle it), and the ledger check."""

import json
from typing import Any

import local_runtime

from clairvora import reconcile
from clairvora.db import sql
from support import Client, Resp, database, unique

SETTLED_AGO_S = 2 * 86400  # a transaction submitted this long ago has passed a cut-off
REFUNDS = "/v1/wallet/refunds"


def deposit_body(amount_cents: int) -> dict[str, Any]:
    return {
        "amount_cents": amount_cents,
        "opaque_data": {"data_descriptor": "COMMON.ACCEPT.INAPP.PAYMENT", "data_value": f"tok_approved.{unique()}"},
    }


async def deposit(client: Client, amount_cents: int, *, settled: bool = True, now_ms: int | None = None) -> dict:
    """An approved card deposit (201), settled at the gateway unless told otherwise."""
    headers = {"idempotency-key": unique("dk")}
    if now_ms is not None:
        headers["x-test-now-ms"] = str(now_ms)
    r = await client.post("/v1/wallet/deposits", deposit_body(amount_cents), headers=headers)
    assert r.status == 201, r.text
    dep = r.json()["deposit"]
    if settled:
        local_runtime.anetControl.ageTransaction(dep["gateway_transaction_id"], SETTLED_AGO_S)
    return dep


async def refund(client: Client, body: dict | None = None, key: str | None = None, **headers: str) -> Resp:
    return await client.post(
        REFUNDS, body if body is not None else {}, headers={"idempotency-key": key or unique("rk"), **headers}
    )


def requests_for(invoice: str) -> list[dict]:
    """The refundTransaction requests the stand-in received for one invoice number."""
    return json.loads(str(local_runtime.anetControl.received(invoice)))


def plan(trans_id: str, *behaviours: str) -> None:
    local_runtime.anetControl.planRefunds(trans_id, list(behaviours))


async def parts_of(refund_id: str) -> list[dict]:
    result = await database().all(
        sql(
            "SELECT p.* FROM wallet_refund_parts p JOIN payments y ON y.id = p.payment_id WHERE p.refund_id = ? ORDER BY y.created_at_ms DESC, y.id DESC",
            int(refund_id),
        )
    )
    return result.rows


async def payment(payment_id: str) -> dict:
    row = await database().first(sql("SELECT * FROM payments WHERE id = ?", int(payment_id)))
    assert row is not None
    return row


async def books_clean(now_ms: int | None = None) -> dict:
    """The ledger check (every invariant, card money included) holds; its report."""
    report = await reconcile.check(database(), now_ms)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert not failed, failed
    return report


async def in_transit_cents() -> int:
    row = await database().first(sql("SELECT balance_cents FROM accounts WHERE kind = 'refunds_in_transit'"))
    assert row is not None
    return int(row["balance_cents"])
