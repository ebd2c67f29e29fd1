"""A payout's life, shared by the route, the webhook and the cron: the claim
(payout row + money into transit, one batch), the send to PayPal with our
payout id as sender_batch_id, and every later move, each one batch whose
transfer and status change go together (migration 0093's triggers refuse a
status without its money and money without its status).

    requested --PayPal accepts--> sent --item SUCCEEDED--> succeeded --RETURNED--> returned
        |  ^ no answer: the cron sends again (same id)   \\--item FAILED/BLOCKED/DENIED/...--> failed
        \\--PayPal refuses (4xx)--> failed                 \\--UNCLAIMED--> unclaimed (PayPal returns it in 30 days)

The money: cleared -> in transit (claim); in transit -> payout clearing
(succeeded); in transit -> cleared (failed, returned); payout clearing ->
cleared (returned after a success). A return's transfer key is
`payout:<id>:return`, so whatever arrives (FAILED then RETURNED, a webhook and
a lookup, redeliveries) the money comes back exactly once.
"""

from dataclasses import dataclass
from typing import Any, Literal

from . import ledger, logs, paypal, sealing
from .clock import rfc3339
from .config import Settings
from .db import Database, Statement, sql
from .errors import Problem
from .ids import new_id

OPEN = ("requested", "sent", "unclaimed")
KEYRING_NAME = "PAYOUT_KEYS"
SETTLE_ATTEMPTS = 2
# A claim is left to its own request this long before the cron may send it again.
CLAIM_GRACE_MS = 60_000
POLL_SENT_AFTER_MS = 3600_000  # look a sent payout up if no webhook came within an hour
POLL_UNCLAIMED_EVERY_MS = 86_400_000  # PayPal holds an unclaimed item up to 30 days
RETRY_MAX_MS = 3600_000

Outcome = Literal["success", "failed", "returned", "unclaimed", "pending"]
_OUTCOME_OF_EVENT: dict[str, Outcome] = {
    "PAYMENT.PAYOUTS-ITEM.SUCCEEDED": "success",
    "PAYMENT.PAYOUTS-ITEM.FAILED": "failed",
    "PAYMENT.PAYOUTS-ITEM.BLOCKED": "failed",
    "PAYMENT.PAYOUTS-ITEM.DENIED": "failed",
    "PAYMENT.PAYOUTS-ITEM.CANCELED": "failed",
    "PAYMENT.PAYOUTS-ITEM.RETURNED": "returned",
    "PAYMENT.PAYOUTS-ITEM.REFUNDED": "returned",
    "PAYMENT.PAYOUTS-ITEM.UNCLAIMED": "unclaimed",
    "PAYMENT.PAYOUTS-ITEM.HELD": "pending",
}
_OUTCOME_OF_STATUS: dict[str, Outcome] = {
    "SUCCESS": "success",
    "FAILED": "failed",
    "BLOCKED": "failed",
    "DENIED": "failed",
    "RETURNED": "returned",
    "REFUNDED": "returned",
    "REVERSED": "returned",
    "UNCLAIMED": "unclaimed",
}


def outcome_of_event(event_type: str) -> Outcome | None:
    return _OUTCOME_OF_EVENT.get(event_type)


def outcome_of_status(transaction_status: str | None) -> Outcome:
    return _OUTCOME_OF_STATUS.get(transaction_status or "", "pending")


def cleared_of(user_id: int) -> ledger.AccountRef:
    return ledger.AccountRef(owner_user_id=user_id, kind="advisor_cleared")


def receiver_aad(user_id: int, recipient_type: str) -> bytes:
    return f"clairvora:payout_receiver:v1:{user_id}:{recipient_type}".encode()


def keyring(settings: Settings) -> sealing.Keyring:
    return sealing.parse_keyring(settings.payout_keys, KEYRING_NAME)


async def open_receiver(settings: Settings, row: dict[str, Any], user_id: int) -> str:
    unreadable = Problem(
        500, "payout_receiver_unreadable", "Internal error", "A stored payout receiver failed authentication."
    )
    plain = await sealing.open_sealed(
        keyring(settings),
        int(row["key_version"]),
        row["iv_b64"],
        row["ciphertext_b64"],
        receiver_aad(user_id, row["recipient_type"]),
        what="Payout receiver",
        unreadable=unreadable,
    )
    return plain.decode()


def payout_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "amount_cents": int(row["amount_cents"]),
        "currency": "USD",
        "status": row["status"],
        "origin": row["origin"],
        "recipient_type": row["recipient_type"],
        "receiver_masked": row["receiver_masked"],
        "paypal_batch_id": row.get("paypal_batch_id"),
        "item_status": row.get("item_status"),
        "failure_code": row.get("failure_code"),
        "created_at": rfc3339(row["created_at_ms"]),
        "updated_at": rfc3339(row["updated_at_ms"]),
    }


PAYOUT_COLUMNS = """id, advisor_id, amount_cents, status, origin, recipient_type, receiver_masked,
receiver_key_version, receiver_iv_b64, receiver_ciphertext_b64, paypal_batch_id, paypal_item_id,
batch_status, item_status, failure_code, attempts, next_attempt_at_ms, created_at_ms, updated_at_ms"""


def new_payout(
    *, advisor_id: int, amount_cents: int, origin: str, method: dict[str, Any], now_ms: int
) -> dict[str, Any]:
    """The payout row about to be claimed, with the sealed receiver copied from `method`."""
    return {
        "id": new_id(),
        "advisor_id": advisor_id,
        "amount_cents": amount_cents,
        "status": "requested",
        "origin": origin,
        "recipient_type": method["recipient_type"],
        "receiver_masked": method["receiver_masked"],
        "receiver_key_version": int(method["key_version"]),
        "receiver_iv_b64": method["iv_b64"],
        "receiver_ciphertext_b64": method["ciphertext_b64"],
        "paypal_batch_id": None,
        "paypal_item_id": None,
        "batch_status": None,
        "item_status": None,
        "failure_code": None,
        "attempts": 0,
        "next_attempt_at_ms": now_ms + CLAIM_GRACE_MS,
        "created_at_ms": now_ms,
        "updated_at_ms": now_ms,
    }


def claim_statements(payout: dict[str, Any], requested_by: int | None) -> list[Statement]:
    """The payout row and its money, cleared -> in transit (the accounts' CHECK
    refuses more than the cleared balance)."""
    p = payout
    return [
        sql(
            """INSERT INTO payouts (id, advisor_id, amount_cents, status, origin, recipient_type, receiver_masked,
                                    receiver_key_version, receiver_iv_b64, receiver_ciphertext_b64,
                                    next_attempt_at_ms, created_at_ms, updated_at_ms)
               VALUES (?, ?, ?, 'requested', ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            p["id"],
            p["advisor_id"],
            p["amount_cents"],
            p["origin"],
            p["recipient_type"],
            p["receiver_masked"],
            p["receiver_key_version"],
            p["receiver_iv_b64"],
            p["receiver_ciphertext_b64"],
            p["next_attempt_at_ms"],
            p["created_at_ms"],
            p["updated_at_ms"],
        ),
        *ledger.transfer(
            transfer_id=new_id(),
            key=f"payout:{p['id']}",
            kind="payout",
            legs=[
                ledger.Leg(cleared_of(p["advisor_id"]), -p["amount_cents"]),
                ledger.Leg(ledger.PAYOUTS_IN_TRANSIT, p["amount_cents"]),
            ],
            now_ms=p["created_at_ms"],
            reference_type="payout",
            reference_id=p["id"],
            requested_by_user_id=requested_by,
        ),
        sql(
            "UPDATE advisor_payout_state SET last_payout_at_ms = ?, auto_payout_due_at_ms = NULL, updated_at_ms = ? "
            "WHERE advisor_id = ?",
            p["created_at_ms"],
            p["created_at_ms"],
            p["advisor_id"],
        ),
    ]


@dataclass(frozen=True, slots=True)
class Move:
    """What an item outcome does to a payout: its new status (None: none) and the money."""

    status: str | None
    money: Literal["settle", "return_transit", "return_clearing"] | None


def move_for(status: str, outcome: Outcome) -> Move:
    if status in OPEN:
        if outcome == "success":
            return Move("succeeded", "settle")
        if outcome in ("failed", "returned"):
            return Move("failed" if outcome == "failed" else "returned", "return_transit")
        if outcome == "unclaimed" and status != "unclaimed":
            return Move("unclaimed", None)
    if status == "succeeded" and outcome == "returned":
        return Move("returned", "return_clearing")
    return Move(None, None)


def move_statements(payout: dict[str, Any], move: Move, now_ms: int) -> list[Statement]:
    """The move's transfer (if any), for the same batch as the status UPDATE that follows it."""
    pid, amount = payout["id"], int(payout["amount_cents"])
    if move.money is None:
        return []
    kind: ledger.TransferKind
    if move.money == "settle":
        kind, key, legs = (
            "payout_settlement",
            f"payout:{pid}:settlement",
            [ledger.Leg(ledger.PAYOUTS_IN_TRANSIT, -amount), ledger.Leg(ledger.PAYOUT_CLEARING, amount)],
        )
    else:
        source = ledger.PAYOUTS_IN_TRANSIT if move.money == "return_transit" else ledger.PAYOUT_CLEARING
        kind, key, legs = (
            "payout_return",
            f"payout:{pid}:return",
            [ledger.Leg(source, -amount), ledger.Leg(cleared_of(int(payout["advisor_id"])), amount)],
        )
    return ledger.transfer(
        transfer_id=new_id(), key=key, kind=kind, legs=legs, now_ms=now_ms, reference_type="payout", reference_id=pid
    )


def update_statement(
    payout_id: int,
    now_ms: int,
    *,
    status: str | None = None,
    only_from: str | None = None,
    batch_id: str | None = None,
    batch_status: str | None = None,
    item: paypal.Item | None = None,
    failure_code: str | None = None,
    next_attempt_at_ms: int | None = None,
    clear_receiver: bool = False,
    attempted: bool = False,
) -> Statement:
    """One UPDATE of the payout: each given field set, the others kept.

    A status that comes with money is set unconditionally, so the transition
    trigger judges it against the row as it is when the batch runs and, if
    another request moved the payout first, refuses it and rolls the money back
    with it. A status without money (`only_from`: sent, unclaimed) changes only
    from that status and is otherwise left alone."""
    return sql(
        """UPDATE payouts
           SET status = CASE WHEN ? IS NULL OR status = ? THEN coalesce(?, status) ELSE status END,
               paypal_batch_id = coalesce(paypal_batch_id, ?),
               batch_status = coalesce(?, batch_status),
               paypal_item_id = coalesce(?, paypal_item_id),
               item_status = coalesce(?, item_status),
               failure_code = coalesce(?, failure_code),
               next_attempt_at_ms = CASE WHEN (CASE WHEN ? IS NULL OR status = ? THEN coalesce(?, status) ELSE status END)
                                             IN ('requested', 'sent', 'unclaimed')
                                         THEN coalesce(?, next_attempt_at_ms) END,
               receiver_key_version = CASE WHEN ? THEN NULL ELSE receiver_key_version END,
               receiver_iv_b64 = CASE WHEN ? THEN NULL ELSE receiver_iv_b64 END,
               receiver_ciphertext_b64 = CASE WHEN ? THEN NULL ELSE receiver_ciphertext_b64 END,
               attempts = attempts + ?,
               updated_at_ms = ?
           WHERE id = ?""",
        only_from,
        only_from,
        status,
        batch_id,
        batch_status,
        item.item_id if item else None,
        item.transaction_status if item else None,
        failure_code or (item.error_name if item else None),
        only_from,
        only_from,
        status,
        next_attempt_at_ms,
        clear_receiver,
        clear_receiver,
        clear_receiver,
        1 if attempted else 0,
        now_ms,
        payout_id,
    )


def item_statements(
    payout: dict[str, Any], item: paypal.Item, outcome: Outcome, now_ms: int, batch_id: str | None = None
) -> tuple[list[Statement], Move]:
    """An item's word (a webhook or a lookup) applied: the move and the UPDATE, for one batch."""
    move = move_for(payout["status"], outcome)
    if outcome == "success" and payout["status"] in ("failed", "returned"):
        # Paid although its money came back (docs/PAYPAL.md, "What is not covered"): the ledger
        # check reports it until an operator reconciles it; nothing moves here.
        logs.error("payout_paid_after_return", payout_id=int(payout["id"]))
    poll_at = now_ms + (
        POLL_UNCLAIMED_EVERY_MS if (move.status or payout["status"]) == "unclaimed" else POLL_SENT_AFTER_MS
    )
    return [
        *move_statements(payout, move, now_ms),
        update_statement(
            int(payout["id"]),
            now_ms,
            status=move.status,
            only_from=payout["status"] if move.money is None else None,
            batch_id=batch_id,
            item=item,
            next_attempt_at_ms=poll_at,
            clear_receiver=True,  # PayPal holds the batch: the receiver is never needed again
        ),
    ], move


async def load(db: Database, payout_id: int) -> dict[str, Any] | None:
    return await db.first(sql(f"SELECT {PAYOUT_COLUMNS} FROM payouts WHERE id = ?", payout_id))  # noqa: S608
