"""Export and erasure of issue 14's records (docs/PRIVACY.md; data_export.py,
erasure.py, migration 0098): every object made through the API shows in its
owner's export as its own route shows it, never in a stranger's; erasure
erases their free text, keeps the money records, and removes the payout
receiver; the SQL lets nothing else change."""

from typing import Any

import pytest

from card_support import deposit, refund
from clairvora.db import TriggerAbort, sql
from market_support import active_reading, at, market_pair, now_ms
from payout_support import cleared_advisor, deliver_webhooks, request_payout
from promo_support import admin, create_code, redeem
from support import Client, Resp, database, unique
from world import assert_books_clean

ERASED = "[erased]"


async def _erase(client: Client, **headers: str) -> Resp:
    version = (await client.get("/v1/me")).headers["etag"]
    return await client.delete("/v1/me", headers={"if-match": version, **headers})


async def _ended(client: Client, advisor: Client, advisor_id: int, t: int) -> str:
    """A one-minute reading paid from the wallet, ended at t + 1000; its id."""
    reading = await active_reading(client, advisor, advisor_id, t)
    r = await client.post(f"/v1/readings/{reading['id']}/end", headers=at(t + 1000))
    assert r.status == 200 and r.json()["billed_minutes"] == 1, r.text
    return reading["id"]


async def _claim(client: Client, reading_id: str, reason: str, t: int) -> dict[str, Any]:
    r = await client.post(
        f"/v1/readings/{reading_id}/satisfaction-claim",
        {"reason": reason},
        headers=at(t, **{"idempotency-key": unique("sc")}),
    )
    assert r.status == 201, r.text
    return r.json()["claim"]


async def _chargeback(admin_client: Client, deposit_id: str, note: str) -> dict[str, Any]:
    r = await admin_client.post(
        f"/v1/admin/payments/{deposit_id}/chargebacks",
        {"note": note, "reason_code": "10.4"},
        headers={"idempotency-key": unique("cb")},
    )
    assert r.status == 201, r.text
    return r.json()["chargeback"]


async def _resolve(admin_client: Client, chargeback_id: str, note: str) -> dict[str, Any]:
    r = await admin_client.post(
        f"/v1/admin/chargebacks/{chargeback_id}/resolve",
        {"outcome": "lost", "note": note},
        headers={"idempotency-key": unique("cr")},
    )
    assert r.status == 200, r.text
    return r.json()["chargeback"]


async def _settle() -> None:
    """PayPal's queued notifications delivered, so no payout of these tests is left
    in transit for a later test's count of the in-transit account."""
    for _delivery, r in await deliver_webhooks():
        assert r.status == 200, r.text


async def _client_with_everything(adm: Client, advisor: Client, advisor_id: int, client: Client, t: int) -> dict:
    """A claim, two redemptions (credit: a grant; free minutes: an offer), a refund
    of unused funds and a resolved chargeback, all through the API."""
    rid = await _ended(client, advisor, advisor_id, t)
    made: dict[str, Any] = {"reason": f"It did not help {unique('why')}"}
    made["claim"] = await _claim(client, rid, made["reason"], t + 2000)
    credit = await create_code(adm, t, credit_cents=300)
    free = await create_code(adm, t, free_minutes=2, max_cents_per_minute=100)
    r = await redeem(client, credit["code"], t + 3000)
    assert r.status == 201, r.text
    made["credit"] = r.json()["redemption"]
    r = await redeem(client, free["code"], t + 4000)
    assert r.status == 201, r.text
    made["free"] = r.json()["redemption"]
    refunded = await deposit(client, 2000)
    r = await refund(client, {"amount_cents": 1500})
    assert r.status == 201, r.text
    made["refund_id"], made["refunded_deposit"] = r.json()["refund"]["id"], refunded["id"]
    made["charged_deposit"] = (await deposit(client, 1000))["id"]
    made["note"], made["resolution"] = f"Processor notice {unique('n')}", f"Lost {unique('r')}"
    opened = await _chargeback(adm, made["charged_deposit"], made["note"])
    made["chargeback"] = await _resolve(adm, opened["id"], made["resolution"])
    return made


async def test_the_export_holds_the_clients_money_records_as_their_routes_show_them_and_no_strangers(monkeypatch):
    adm = await admin()
    client, _cid, advisor, aid = await market_pair(rate=100, funds=5_000)
    stranger, _sid, adv2, aid2 = await market_pair(rate=100, funds=5_000)
    t = now_ms()
    mine = await _client_with_everything(adm, advisor, aid, client, t)
    # A stranger makes the same kinds of objects (with another advisor).
    theirs = await _client_with_everything(adm, adv2, aid2, stranger, t)

    r = await client.get("/v1/me/export")
    assert r.status == 200, r.text
    # Still the caller lookup, then the whole export in one batch.
    assert "calls=2 " in r.headers["server-timing"], r.headers["server-timing"]
    data = r.json()
    assert data["truncated"] is False
    # Every account the client owns, each with its entries.
    accounts = {a["kind"]: a for a in data["accounts"]}
    assert set(accounts) == {"client_wallet", "client_promo"}
    promo = accounts["client_promo"]
    assert promo["balance_cents"] == 100 + 300 and promo["entries"]["truncated"] is False
    assert sorted(e["kind"] for e in promo["entries"]["items"]) == ["promo_grant", "satisfaction_credit"]
    wallet_kinds = [e["kind"] for e in accounts["client_wallet"]["entries"]["items"]]
    assert {"wallet_refund", "chargeback", "reading_charge", "deposit"} <= set(wallet_kinds)
    # Refunds of unused funds with their parts, as GET /v1/wallet/refunds/{id} shows them.
    shown = (await client.get(f"/v1/wallet/refunds/{mine['refund_id']}")).json()
    assert data["wallet_refunds"] == {"items": [shown], "truncated": False}
    assert [p["deposit_id"] for p in shown["parts"]] == [mine["refunded_deposit"]]
    # Chargebacks on the client's deposits, as the admin routes show them (less the advisors' clawbacks).
    expected = {k: v for k, v in mine["chargeback"].items() if k != "clawbacks"}
    assert data["chargebacks"] == {"items": [expected], "truncated": False}
    assert expected["note"] == mine["note"] and expected["resolution_note"] == mine["resolution"]
    deposits = {p["id"]: p for p in data["payments"]["items"]}
    assert deposits[mine["refunded_deposit"]]["refunded_cents"] == 1500
    assert deposits[mine["charged_deposit"]]["charged_back_cents"] == 1000
    # Promo grants, redemptions (as the redeem route answered), offers, claims (with the reason).
    grants = data["promo_grants"]["items"]
    assert [(g["source"], g["amount_cents"]) for g in grants] == [("promo_code", 300), ("satisfaction", 100)]
    assert grants[0]["redemption_id"] == mine["credit"]["id"] and grants[1]["claim_id"] == mine["claim"]["id"]
    assert data["promo_redemptions"]["items"] == [mine["free"], mine["credit"]], "newest first"
    (offer,) = data["free_minute_offers"]["items"]
    assert (offer["source"], offer["redemption_id"], offer["minutes"]) == ("promo_code", mine["free"]["id"], 2)
    assert offer["reading_id"] is None and offer["used_at"] is None
    assert data["satisfaction_claims"]["items"] == [mine["claim"]]
    assert data["satisfaction_claims"]["items"][0]["reason"] == mine["reason"]
    # Not an advisor: no payouts, no payout method.
    assert data["payouts"]["items"] == [] and data["payout_method"] is None
    # Nothing of the stranger's.
    for value in (
        theirs["reason"],
        theirs["note"],
        theirs["resolution"],
        theirs["refund_id"],
        theirs["claim"]["id"],
        theirs["credit"]["id"],
        theirs["free"]["id"],
        theirs["chargeback"]["id"],
        theirs["charged_deposit"],
    ):
        assert value not in r.text
    # The new sections are capped like the others, and say so.
    from clairvora import data_export

    for name in ("promo_grants", "promo_redemptions", "ledger_entries_per_account"):
        monkeypatch.setitem(data_export.EXPORT_LIMITS, name, 1)
    r = await client.get("/v1/me/export")
    assert "calls=2 " in r.headers["server-timing"], r.headers["server-timing"]
    data = r.json()
    assert [g["source"] for g in data["promo_grants"]["items"]] == ["promo_code"], "the newest"
    assert data["promo_grants"]["truncated"] and data["promo_redemptions"]["truncated"] and data["truncated"]
    assert all(len(a["entries"]["items"]) == 1 and a["entries"]["truncated"] for a in data["accounts"])
    assert data["wallet_refunds"]["truncated"] is False and data["satisfaction_claims"]["truncated"] is False
    await assert_books_clean()


async def test_the_export_holds_the_advisors_payouts_and_the_masked_payout_method_only():
    a, earned, email = await cleared_advisor(20)
    other, _earned, other_email = await cleared_advisor(20)
    r = await request_payout(a)
    assert r.status == 201, r.text
    payout = r.json()
    r = await request_payout(other)
    assert r.status == 201, r.text
    theirs = r.json()

    r = await a.client.get("/v1/me/export")
    assert r.status == 200, r.text
    assert "calls=2 " in r.headers["server-timing"], r.headers["server-timing"]
    data = r.json()
    shown = (await a.client.get(f"/v1/advisors/me/payouts/{payout['id']}")).json()
    assert data["payouts"] == {"items": [shown], "truncated": False}
    method = await a.client.get("/v1/advisors/me/payout-method")
    assert data["payout_method"] == method.json()
    assert data["payout_method"]["receiver_masked"] == email[0] + "***@example.com"
    assert email not in r.text, "the receiver is shown masked, never decrypted"
    accounts = {x["kind"]: x for x in data["accounts"]}
    cleared = [e["kind"] for e in accounts["advisor_cleared"]["entries"]["items"]]
    assert cleared == ["payout", "earnings_clearance"] and accounts["advisor_cleared"]["balance_cents"] == 0
    assert accounts["advisor_earnings"]["entries"]["items"][0]["kind"] == "earnings_clearance"
    assert earned == payout["amount_cents"]
    assert theirs["id"] not in r.text and other_email not in r.text
    await _settle()


async def test_erasure_erases_claim_reasons_and_chargeback_notes_keeps_the_money_and_sql_allows_nothing_else():
    adm = await admin()
    client, cid, advisor, aid = await market_pair(rate=100, funds=5_000)
    stranger, _sid, adv2, aid2 = await market_pair(rate=100, funds=5_000)
    t = now_ms()
    reason = f"Not what I hoped {unique('why')}"
    first = await _ended(client, advisor, aid, t)
    second = await _ended(client, advisor, aid, t + 2000)  # paid from the wallet too; no claim on it
    claim = await _claim(client, first, reason, t + 4000)
    code = await create_code(adm, t, credit_cents=300)
    assert (await redeem(client, code["code"], t + 5000)).status == 201
    note = f"Processor notice {unique('n')}"
    chargeback = await _chargeback(adm, (await deposit(client, 1000))["id"], note)  # left open
    stranger_reason = f"Theirs {unique('why')}"
    stranger_claim = await _claim(stranger, await _ended(stranger, adv2, aid2, t), stranger_reason, t + 2000)
    stranger_cb = await _chargeback(adm, (await deposit(stranger, 1000))["id"], "Their notice")
    db = database()
    grants_before = await db.first(sql("SELECT count(*) AS n FROM promo_grants WHERE client_id = ?", cid))

    r = await _erase(client)
    assert r.status == 200, r.text
    removed = r.json()["removed"]
    assert (removed["satisfaction_claim_reasons"], removed["chargeback_notes"], removed["payout_method"]) == (
        1,
        1,
        False,
    )
    row = await db.first(sql("SELECT reason, amount_cents FROM satisfaction_claims WHERE id = ?", int(claim["id"])))
    assert row == {"reason": ERASED, "amount_cents": claim["amount_cents"]}, "the record stays, the words go"
    row = await db.first(sql("SELECT note, state, amount_cents FROM chargebacks WHERE id = ?", int(chargeback["id"])))
    assert row == {"note": ERASED, "state": "open", "amount_cents": 1000}
    assert await db.first(sql("SELECT count(*) AS n FROM promo_grants WHERE client_id = ?", cid)) == grants_before
    for table, column, value in (
        ("satisfaction_claims", "reason", stranger_reason),
        ("chargebacks", "note", "Their notice"),
    ):
        ident = stranger_claim["id"] if table == "satisfaction_claims" else stranger_cb["id"]
        kept = await db.first(sql(f"SELECT {column} AS v FROM {table} WHERE id = ?", int(ident)))  # noqa: S608
        assert kept == {"v": value}, "someone else's record is untouched"
    # The open chargeback still resolves (its money moves as ever); its note stays erased.
    resolved = await _resolve(adm, chargeback["id"], "Lost after the erasure")
    assert resolved["state"] == "lost" and resolved["note"] == ERASED
    # Nothing new with the client's or anyone's words for the erased client.
    r = await adm.post(
        f"/v1/admin/readings/{second}/satisfaction-credit",
        {"amount_cents": 50, "reason": "Goodwill"},
        headers={"idempotency-key": unique("sg")},
    )
    assert (r.status, r.json()["code"]) == (409, "account_erased"), r.text
    # The triggers let exactly the erasure's change through, for an erased user only.
    refused = [
        sql("UPDATE satisfaction_claims SET reason = ? WHERE id = ?", ERASED, int(stranger_claim["id"])),
        sql("UPDATE satisfaction_claims SET amount_cents = amount_cents + 1 WHERE id = ?", int(claim["id"])),
        sql("UPDATE satisfaction_claims SET reason = 'back' WHERE id = ?", int(claim["id"])),
        sql("UPDATE chargebacks SET note = ? WHERE id = ?", ERASED, int(stranger_cb["id"])),
        sql("UPDATE chargebacks SET note = ?, clawback_cents = 1 WHERE id = ?", ERASED, int(chargeback["id"])),
        sql("UPDATE chargebacks SET note = 'back' WHERE id = ?", int(chargeback["id"])),
    ]
    for statement in refused:
        with pytest.raises(TriggerAbort) as info:
            await db.run(statement)
        assert info.value.code in ("ledger_append_only", "chargeback_not_open"), info.value.code
    await assert_books_clean()


async def test_erasing_an_advisor_removes_the_payout_receiver_and_keeps_the_payouts():
    a, _earned, email = await cleared_advisor(20)
    r = await request_payout(a)
    assert r.status == 201, r.text
    payout = r.json()
    r = await _erase(a.client)
    assert r.status == 200, r.text
    assert r.json()["removed"]["payout_method"] is True
    db = database()
    assert await db.first(sql("SELECT count(*) AS n FROM payout_methods WHERE user_id = ?", a.id)) == {"n": 0}
    row = await db.first(
        sql(
            "SELECT status, amount_cents, receiver_masked, receiver_ciphertext_b64 FROM payouts WHERE id = ?",
            int(payout["id"]),
        )
    )
    assert row == {
        "status": payout["status"],
        "amount_cents": payout["amount_cents"],
        "receiver_masked": None,
        "receiver_ciphertext_b64": None,
    }
    assert email not in str(row)
    await _settle()  # the erased advisor's payout still settles
    assert (await db.first(sql("SELECT status FROM payouts WHERE id = ?", int(payout["id"]))))["status"] == "succeeded"
    await assert_books_clean()
