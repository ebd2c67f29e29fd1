"""GET /v1/wallet and GET /v1/wallet/transactions on real local D1."""

from money_support import credit, user_with_wallet
from support import Client, database


async def test_new_wallet_is_empty():
    _uid, client = await user_with_wallet("w")
    resp = await client.get("/v1/wallet")
    assert resp.status == 200
    assert resp.json() == {
        "available_cents": 0,
        "held_cents": 0,
        "currency": "USD",
        "promo_cents": 0,
        "promo_next_expires_at": None,
        "promo_next_expiring_cents": None,
    }
    assert "x-d1-bookmark" in resp.headers
    page = (await client.get("/v1/wallet/transactions")).json()
    assert page == {"items": [], "next_cursor": None}


async def test_balance_is_one_row_and_follows_credits():
    user_id, client = await user_with_wallet("w")
    await credit(database(), user_id, 1234)
    await credit(database(), user_id, 66)
    resp = await client.get("/v1/wallet")
    assert resp.json()["available_cents"] == 1300
    # authenticate (1 call) + the wallet row (1 call); rows read do not depend on ledger length
    assert "calls=2" in resp.headers["server-timing"]


async def test_transactions_newest_first_with_keyset_pages():
    user_id, client = await user_with_wallet("w")
    for cents in (100, 200, 300, 400, 500):
        await credit(database(), user_id, cents)
    first = (await client.get("/v1/wallet/transactions?limit=2")).json()
    assert [i["amount_cents"] for i in first["items"]] == [500, 400]
    assert [i["balance_after_cents"] for i in first["items"]] == [1500, 1000]
    assert first["items"][0]["kind"] == "deposit" and first["items"][0]["reference"] is None
    assert first["items"][0]["created_at"].endswith("Z") and isinstance(first["items"][0]["id"], str)
    second = (await client.get(f"/v1/wallet/transactions?limit=2&cursor={first['next_cursor']}")).json()
    assert [i["amount_cents"] for i in second["items"]] == [300, 200]
    third = (await client.get(f"/v1/wallet/transactions?limit=2&cursor={second['next_cursor']}")).json()
    assert [i["amount_cents"] for i in third["items"]] == [100]
    assert third["next_cursor"] is None


async def test_transactions_are_only_the_callers():
    owner_id, _owner = await user_with_wallet("w")
    await credit(database(), owner_id, 700)
    _other_id, other = await user_with_wallet("w")
    assert (await other.get("/v1/wallet/transactions")).json()["items"] == []
    assert (await other.get("/v1/wallet")).json()["available_cents"] == 0


async def test_transactions_refuse_bad_queries():
    _uid, client = await user_with_wallet("w")
    for query in ("limit=0", "limit=101", "limit=x", "cursor=abc", "cursor=-1", "other=1"):
        resp = await client.get(f"/v1/wallet/transactions?{query}")
        assert resp.status == 400, query
        assert resp.headers["content-type"] == "application/problem+json"


async def test_wallet_requires_a_caller():
    assert (await Client().get("/v1/wallet")).status == 401
    assert (await Client().get("/v1/wallet/transactions")).status == 401


async def test_openapi_describes_the_money_routes():
    doc = (await Client().get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    expected = {
        ("/v1/wallet", "get"): "WalletBalances",
        ("/v1/wallet/transactions", "get"): "WalletTransactionPage",
        ("/v1/wallet/deposits", "post"): "DepositResult",
        ("/v1/webhooks/authorizenet", "post"): "WebhookReceipt",
        ("/v1/admin/readings/{reading_id}/refund", "post"): "ReadingRefund",
        ("/v1/admin/ledger/check", "get"): "LedgerCheck",
    }
    for (path, method), schema in expected.items():
        op = doc["paths"][path][method]
        refs = [
            c["schema"]["$ref"]
            for r in op["responses"].values()
            for c in r.get("content", {}).values()
            if "$ref" in c.get("schema", {})
        ]
        assert f"#/components/schemas/{schema}" in refs, (path, refs)
        for ref in refs:
            assert ref.rsplit("/", 1)[1] in schemas, ref
    deposit = doc["paths"]["/v1/wallet/deposits"]["post"]
    assert {"402", "409", "422", "502", "504"} <= set(deposit["responses"])
    assert "payment_token_invalid" in deposit["responses"]["422"]["description"]
    assert "payment_duplicate" in deposit["responses"]["409"]["description"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in deposit["parameters"])
    body = deposit["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["amount_cents", "opaque_data"]
    assert set(body["properties"]["opaque_data"]["properties"]) == {"data_descriptor", "data_value"}
    assert doc["paths"]["/v1/webhooks/authorizenet"]["post"]["security"] == []
    assert "403" in doc["paths"]["/v1/admin/ledger/check"]["get"]["responses"]
    query = {p["name"] for p in doc["paths"]["/v1/wallet/transactions"]["get"]["parameters"] if p["in"] == "query"}
    assert query == {"cursor", "limit"}
    # every schema a money route points to resolves, nested ones included
    for name in ("Wallet", "WalletTransaction", "Deposit", "DepositResult", "ReadingRefund", "LedgerCheck"):
        assert name in schemas
