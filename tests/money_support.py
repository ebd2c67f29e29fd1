"""Helpers for the money tests: users with wallets, direct ledger movements
(realistic rows, through the same ledger module the Worker uses), readings."""

from typing import Any

from clairvora import ledger
from clairvora.db import Database, sql
from clairvora.ids import new_id
from support import Client, database, new_user


async def user_with_wallet(prefix: str = "m") -> tuple[int, Client]:
    _sub, client = await new_user(prefix)
    me = (await client.get("/v1/me")).json()
    return int(me["id"]), client


async def admin_client() -> tuple[int, Client]:
    user_id, client = await user_with_wallet("admin")
    await database().run(sql("UPDATE users SET is_admin = 1 WHERE id = ?", user_id))
    return user_id, client


async def credit(db: Database, user_id: int, cents: int, now_ms: int = 1) -> int:
    """A deposit-kind credit without a card payment (the way other features' tests fund wallets)."""
    transfer_id = new_id()
    legs = [ledger.Leg(ledger.wallet_of(user_id), cents), ledger.Leg(ledger.GATEWAY_CLEARING, -cents)]
    await db.batch(
        ledger.transfer(
            transfer_id=transfer_id, key=f"test:credit:{transfer_id}", kind="deposit", legs=legs, now_ms=now_ms
        )
    )
    return transfer_id


async def make_advisor(db: Database, user_id: int, rate_cents_per_minute: int, now_ms: int = 1) -> None:
    await db.batch(
        [
            sql(
                """INSERT INTO advisors (user_id, headline, bio, rate_cents_per_minute, status, created_at_ms,
                                     updated_at_ms) VALUES (?, 'Tarot', '', ?, 'online', ?, ?)""",
                user_id,
                rate_cents_per_minute,
                now_ms,
                now_ms,
            ),
            sql(
                """INSERT INTO accounts (id, kind, owner_user_id, created_at_ms)
               VALUES (?, 'advisor_earnings', ?, ?) ON CONFLICT DO NOTHING""",
                new_id(),
                user_id,
                now_ms,
            ),
        ]
    )


async def start_reading(
    db: Database, client_id: int, advisor_id: int, rate: int, fee_bps: int = 3000, now_ms: int = 1
) -> dict[str, Any]:
    """An active reading with the rate split fixed at request time (as the readings feature stores it)."""
    advisor_part, platform_part = ledger.split_rate(rate, fee_bps)
    reading_id = new_id()
    await db.run(
        sql(
            """INSERT INTO readings (id, client_id, advisor_id, status, rate_cents_per_minute, advisor_cents_per_minute,
                                 platform_cents_per_minute, billing_period_seconds, requested_at_ms,
                                 accepted_at_ms, last_heartbeat_at_ms)
           VALUES (?, ?, ?, 'active', ?, ?, ?, 60, ?, ?, ?)""",
            reading_id,
            client_id,
            advisor_id,
            rate,
            advisor_part,
            platform_part,
            now_ms,
            now_ms,
            now_ms,
        )
    )
    return {
        "id": reading_id,
        "client_id": client_id,
        "advisor_id": advisor_id,
        "rate": rate,
        "advisor_part": advisor_part,
        "platform_part": platform_part,
    }


def charge_minute_statements(reading: dict[str, Any], minute: int, now_ms: int = 1) -> list[Any]:
    """Minute k of a reading: one balanced transfer + its reading_charges row, for one batch."""
    transfer_id = new_id()
    legs = [
        ledger.Leg(ledger.wallet_of(reading["client_id"]), -reading["rate"]),
        ledger.Leg(ledger.earnings_of(reading["advisor_id"]), reading["advisor_part"]),
    ]
    if reading["platform_part"]:
        legs.append(ledger.Leg(ledger.PLATFORM_REVENUE, reading["platform_part"]))
    return [
        *ledger.transfer(
            transfer_id=transfer_id,
            key=f"reading:{reading['id']}:minute:{minute}",
            kind="reading_charge",
            legs=legs,
            now_ms=now_ms,
            reference_type="reading",
            reference_id=reading["id"],
        ),
        sql(
            """INSERT INTO reading_charges (reading_id, minute, transfer_id, amount_cents, charged_at_ms)
               VALUES (?, ?, ?, ?, ?)""",
            reading["id"],
            minute,
            transfer_id,
            reading["rate"],
            now_ms,
        ),
        sql("UPDATE readings SET billed_minutes = max(billed_minutes, ?) WHERE id = ?", minute, reading["id"]),
    ]


async def charge_minute(db: Database, reading: dict[str, Any], minute: int, now_ms: int = 1) -> None:
    await db.batch(charge_minute_statements(reading, minute, now_ms))


async def balance(user_id: int) -> int:
    value = await ledger.balance_cents(database(), ledger.wallet_of(user_id))
    assert value is not None
    return value


async def clear_earnings_directly(advisor_id: int, cents: int, now_ms: int = 1) -> None:
    """Pending earnings moved to cleared as the payouts feature's clearance does it (clearance.py):
    its earnings_clearances record first (0093's trigger ties each such transfer to one), then the
    transfer, one batch. For tests that need cleared earnings without ageing entries past the hold."""
    db = database()
    await db.run(
        sql(
            """INSERT INTO accounts (id, kind, owner_user_id, created_at_ms) VALUES (?, 'advisor_cleared', ?, 1)
               ON CONFLICT DO NOTHING""",
            new_id(),
            advisor_id,
        )
    )
    transfer_id, clearance_id = new_id(), new_id()
    record = sql(
        """INSERT INTO earnings_clearances (id, advisor_id, transfer_id, amount_cents, through_sequence,
                                            pending_sequence, cutoff_ms, created_at_ms)
           SELECT ?, ?, ?, ?, last_sequence, last_sequence, ?, ? FROM accounts
           WHERE owner_user_id = ? AND kind = 'advisor_earnings'""",
        clearance_id,
        advisor_id,
        transfer_id,
        cents,
        now_ms,
        now_ms,
        advisor_id,
    )
    legs = [
        ledger.Leg(ledger.earnings_of(advisor_id), -cents),
        ledger.Leg(ledger.AccountRef(owner_user_id=advisor_id, kind="advisor_cleared"), cents),
    ]
    await db.batch(
        [
            record,
            *ledger.transfer(
                transfer_id=transfer_id,
                key=f"test:clear:{transfer_id}",
                kind="earnings_clearance",
                legs=legs,
                now_ms=now_ms,
                reference_type="earnings_clearance",
                reference_id=clearance_id,
            ),
        ]
    )
