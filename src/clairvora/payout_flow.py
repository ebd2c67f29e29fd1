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


# The claim: the payout row, its amount and sealed receiver taken by SQL from the
# cleared balance and the payout method as the batch finds them, made only if the
# caller is an advisor with a method, the amount (?2, or the whole cleared balance
# when NULL) is between the minimum (?3) and that balance, and the Idempotency-Key
# (?8) is not already there (NULL for the cron: `= NULL` is never true). `me` is
# the advisor: by Clerk sub (the route, sent with the caller lookup:
# Route(caller_batch=True)) or by id (the cron). Nothing found: nothing written.
_CLAIM = f"""
INSERT INTO payouts (id, advisor_id, amount_cents, status, origin, recipient_type, receiver_masked,
                     receiver_key_version, receiver_iv_b64, receiver_ciphertext_b64,
                     next_attempt_at_ms, created_at_ms, updated_at_ms)
WITH me AS ({{me}})
SELECT ?1, me.id, coalesce(?2, c.balance_cents), 'requested', ?4, m.recipient_type, m.receiver_masked,
       m.key_version, m.iv_b64, m.ciphertext_b64, ?5, ?6, ?6
FROM me
JOIN advisors a ON a.user_id = me.id
JOIN payout_methods m ON m.user_id = me.id
JOIN accounts c ON c.owner_user_id = me.id AND c.kind = 'advisor_cleared'
WHERE coalesce(?2, c.balance_cents) BETWEEN ?3 AND c.balance_cents
  AND NOT EXISTS (SELECT 1 FROM idempotency_keys WHERE user_id = me.id AND idempotency_key = ?8)
RETURNING {PAYOUT_COLUMNS}"""  # noqa: S608 - constant columns
_CLAIM_BY_SUB = _CLAIM.format(me="SELECT id FROM users WHERE clerk_user_id = ?7")
_CLAIM_BY_ID = _CLAIM.format(me="SELECT ?7 AS id")
# The claimed payout, as the claim's transfer reads it (ledger.FromRow).
_CLAIMED = "SELECT amount_cents, advisor_id AS owner_user_id FROM payouts WHERE id = ? AND status = 'requested'"


def claim_statements(
    *,
    payout_id: int,
    origin: Literal["request", "schedule"],
    amount_cents: int | None,
    min_cents: int,
    now_ms: int,
    caller_sub: str | None = None,
    advisor_id: int | None = None,
    unless_key: str | None = None,
) -> list[Statement]:
    """The claim, one batch's statements: the payout row (the INSERT's RETURNING
    gives it, or nothing), its money cleared -> in transit with the amount SQL put
    in the row (the accounts' CHECK refuses more than the cleared balance), and the
    automatic payout disarmed. The advisor is named by `caller_sub` or `advisor_id`."""
    assert (caller_sub is None) != (advisor_id is None), "the advisor by sub or by id"
    claim = _CLAIM_BY_SUB if caller_sub is not None else _CLAIM_BY_ID
    return [
        sql(
            claim,
            payout_id,
            amount_cents,
            min_cents,
            origin,
            now_ms + CLAIM_GRACE_MS,
            now_ms,
            caller_sub if caller_sub is not None else advisor_id,
            unless_key,
        ),
        *ledger.transfer_from_row(
            transfer_id=new_id(),
            key=f"payout:{payout_id}",
            kind="payout",
            source=ledger.FromRow(_CLAIMED, (payout_id,)),
            legs=[(ledger.AccountRef(kind="advisor_cleared"), -1), (ledger.PAYOUTS_IN_TRANSIT, 1)],
            now_ms=now_ms,
            reference_type="payout",
            reference_id=payout_id,
            requested_by_owner=origin == "request",
        ),
        sql(
            "UPDATE advisor_payout_state SET last_payout_at_ms = ?, auto_payout_due_at_ms = NULL, updated_at_ms = ? "
            "WHERE advisor_id = (SELECT advisor_id FROM payouts WHERE id = ?)",
            now_ms,
            now_ms,
            payout_id,
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
