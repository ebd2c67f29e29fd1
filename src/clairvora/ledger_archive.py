"""The archive format of a closed ledger segment, and the proof that it is sound.

Pure functions (no D1, no R2): periods.py uses them to write a segment before
its entries leave D1, and to prove a closed period against its objects later.

One segment is one R2 object of JSON lines, in entry-id order:

    {"t":"transfer", "id":..., "transfer_key":..., "kind":..., ...}   once per transfer,
    {"t":"entry", "id":..., "transfer_id":..., "account_id":..., ...} before its entries
    ...
    {"t":"segment", "period_id":..., "first_entry_id":..., "last_entry_id":...,
     "entries":n, "transfers":m, "accounts":[[account_id, opening_balance_cents,
     opening_sequence, balance_cents, sequence], ...], "body_sha256":"..."}

The last line (the trailer) carries the sha256 of every byte before it, so a
truncated or edited object is caught even without the D1 record; the D1 record
(ledger_segments.sha256) is the sha256 of the whole object, which R2 itself
verified on the put.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

TRANSFER_FIELDS = (
    "id",
    "transfer_key",
    "kind",
    "reference_type",
    "reference_id",
    "requested_by_user_id",
    "posted",
    "created_at_ms",
)
ENTRY_FIELDS = ("id", "transfer_id", "account_id", "amount_cents", "balance_after_cents", "sequence", "created_at_ms")


class SegmentInvalid(ValueError):
    """The entries (or an archived object) break a ledger invariant; says which."""


@dataclass(frozen=True, slots=True)
class AccountSpan:
    """One account's entries in a segment: where they start from and end."""

    account_id: int
    opening_balance_cents: int
    opening_sequence: int
    balance_cents: int
    sequence: int


@dataclass(frozen=True, slots=True)
class Segment:
    period_id: int
    first_entry_id: int
    last_entry_id: int
    entries: int
    transfers: int
    accounts: tuple[AccountSpan, ...]


def verify(rows: list[dict[str, Any]], openings: dict[int, tuple[int, int]]) -> dict[int, AccountSpan]:
    """Check entry rows (entry fields + transfer_* fields, in id order) continue
    each account from `openings` (account_id -> (balance_cents, sequence); absent:
    (0, 0)) without a gap, and that every transfer is posted, has two or more
    entries, sums to zero and is contiguous. Returns each account's span."""
    spans: dict[int, AccountSpan] = {}
    transfer_sums: dict[int, list[int]] = {}
    previous_id = 0
    current_transfer = -1
    for row in rows:
        if row["id"] <= previous_id:
            raise SegmentInvalid(f"entry {row['id']} is out of id order")
        previous_id = row["id"]
        if row["transfer_id"] != current_transfer:
            if row["transfer_id"] in transfer_sums:
                raise SegmentInvalid(f"transfer {row['transfer_id']} is split by another transfer's entries")
            current_transfer = row["transfer_id"]
            transfer_sums[current_transfer] = [0, 0]
            if row["transfer_posted"] != 1:
                raise SegmentInvalid(f"transfer {current_transfer} is not posted")
        transfer_sums[current_transfer][0] += row["amount_cents"]
        transfer_sums[current_transfer][1] += 1
        account = row["account_id"]
        span = spans.get(account)
        balance, sequence = (span.balance_cents, span.sequence) if span else openings.get(account, (0, 0))
        if row["sequence"] != sequence + 1 or row["balance_after_cents"] != balance + row["amount_cents"]:
            raise SegmentInvalid(f"entry {row['id']} does not continue account {account}")
        opening = (span.opening_balance_cents, span.opening_sequence) if span else (balance, sequence)
        spans[account] = AccountSpan(account, opening[0], opening[1], row["balance_after_cents"], row["sequence"])
    for transfer_id, (total, count) in transfer_sums.items():
        if count < 2 or total != 0:
            raise SegmentInvalid(f"transfer {transfer_id} is unbalanced ({count} entries, sum {total})")
    return spans


def encode(period_id: int, rows: list[dict[str, Any]], spans: dict[int, AccountSpan]) -> bytes:
    """The segment's object: transfer and entry lines, then the trailer."""
    assert rows, "a segment holds at least one transfer"
    lines: list[str] = []
    transfers = 0
    current_transfer = None
    for row in rows:
        if row["transfer_id"] != current_transfer:
            current_transfer = row["transfer_id"]
            transfers += 1
            transfer = {"t": "transfer", **{f: row[f"transfer_{f}"] for f in TRANSFER_FIELDS if f != "id"}}
            lines.append(_line({**transfer, "id": current_transfer}))
        lines.append(_line({"t": "entry", **{f: row[f] for f in ENTRY_FIELDS}}))
    body = "".join(lines).encode()
    trailer = {
        "t": "segment",
        "period_id": period_id,
        "first_entry_id": rows[0]["id"],
        "last_entry_id": rows[-1]["id"],
        "entries": len(rows),
        "transfers": transfers,
        "accounts": [
            [s.account_id, s.opening_balance_cents, s.opening_sequence, s.balance_cents, s.sequence]
            for s in sorted(spans.values(), key=lambda s: s.account_id)
        ],
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    return body + _line(trailer).encode()


def decode(data: bytes) -> tuple[Segment, list[dict[str, Any]]]:
    """Parse an archived object back into (trailer, entry rows as verify() takes
    them), checking the trailer's checksum and counts; verify() then re-proves
    the chain from the trailer's openings."""
    body, _, last = data.rstrip(b"\n").rpartition(b"\n")
    body = body + b"\n" if body else b""
    trailer = json.loads(last)
    if trailer.get("t") != "segment" or hashlib.sha256(body).hexdigest() != trailer.get("body_sha256"):
        raise SegmentInvalid("the trailer's checksum does not match the segment's lines")
    rows: list[dict[str, Any]] = []
    transfer: dict[str, Any] | None = None
    transfers = 0
    for raw in body.splitlines():
        line = json.loads(raw)
        if line["t"] == "transfer":
            transfer, transfers = line, transfers + 1
        elif line["t"] == "entry" and transfer is not None and line["transfer_id"] == transfer["id"]:
            row = {f: line[f] for f in ENTRY_FIELDS}
            row.update({f"transfer_{f}": transfer[f] for f in TRANSFER_FIELDS if f != "id"})
            rows.append(row)
        else:
            raise SegmentInvalid("an entry line does not follow its transfer line")
    accounts = tuple(AccountSpan(*(int(v) for v in a)) for a in trailer["accounts"])
    segment = Segment(
        int(trailer["period_id"]),
        int(trailer["first_entry_id"]),
        int(trailer["last_entry_id"]),
        int(trailer["entries"]),
        int(trailer["transfers"]),
        accounts,
    )
    if not rows or (segment.entries, segment.transfers) != (len(rows), transfers):
        raise SegmentInvalid("the trailer's counts do not match the segment's lines")
    if (segment.first_entry_id, segment.last_entry_id) != (rows[0]["id"], rows[-1]["id"]):
        raise SegmentInvalid("the trailer's entry range does not match the segment's lines")
    return segment, rows


def _line(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=False) + "\n"
