"""SMSGate's integration ("3rd-party") API on the wire: its dates, states and shapes, in one
place (docs/smsgate-api.md). Nothing here touches the database.

An SMSGate message has up to 100 recipients and a string id; ours are one row per recipient.
A message sent through this API keeps its id in the rows' ``external_id``; a message created
through another API is one SMSGate message of one recipient whose id is its row id.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from devices.mobile.wire import content_of
from messaging.models import FAILED, Status

PENDING, PROCESSED, SENT, DELIVERED = "Pending", "Processed", "Sent", "Delivered"
FAILED_STATE, CANCELLING, CANCELLED = "Failed", "Cancelling", "Cancelled"
STATES = (PENDING, PROCESSED, SENT, DELIVERED, FAILED_STATE, CANCELLING, CANCELLED)
# Statuses shown as each state (the filter of GET /messages?state=).
STATUSES_OF: dict[str, frozenset[int]] = {
    PENDING: frozenset({Status.NEW, Status.TAKEN}),
    PROCESSED: frozenset({Status.TAKEN}),
    SENT: frozenset({Status.SENT}),
    DELIVERED: frozenset({Status.DELIVERED}),
    FAILED_STATE: frozenset(FAILED),
    CANCELLING: frozenset({Status.CANCELLED}),
    CANCELLED: frozenset({Status.CANCELLED}),
}
# How far along each state is, for a message whose recipients differ.
_PROGRESS = {PENDING: 0, CANCELLING: 1, PROCESSED: 2, SENT: 3, DELIVERED: 4}
# The columns of a message row these shapes read.
COLUMNS = (
    "id",
    "external_id",
    "device_id",
    "sim",
    "phone",
    "body",
    "status",
    "confirmed_at",
    "lease_id",
    "error_detail",
    "created_at",
    "status_changed_at",
    "sent_at",
    "delivered_at",
    "data_port",
    "encrypted",
)
_ID_ALPHABET = string.ascii_letters + string.digits + "_-"
EXPEDITED = 100


def new_id() -> str:
    """A message id as SMSGate makes them: 21 URL-safe characters."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(21))


def date(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with at most 6 fraction digits (what every SDK parses)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def row_state(row: dict[str, Any]) -> str:
    status = row["status"]
    if status == Status.NEW:
        return PENDING
    if status == Status.TAKEN:
        return PROCESSED if row["confirmed_at"] is not None else PENDING
    if status == Status.SENT:
        return SENT
    if status == Status.DELIVERED:
        return DELIVERED
    if status == Status.CANCELLED:
        # Served to an SMSGate app phone that has not answered the cancel yet.
        return CANCELLING if row["lease_id"] is not None else CANCELLED
    return FAILED_STATE


def message_state(states: Sequence[str]) -> str:
    """One state for a message whose recipients are in ``states``: the same state when they
    agree; else the least advanced of those still under way; Failed once every recipient
    is final and one failed; Cancelled when every one was cancelled."""
    distinct = set(states)
    if len(distinct) == 1:
        return states[0]
    under_way = [s for s in distinct if s in (PENDING, CANCELLING, PROCESSED, SENT)]
    if under_way:
        return min(under_way, key=_PROGRESS.__getitem__)
    if FAILED_STATE in distinct:
        return FAILED_STATE
    return DELIVERED if DELIVERED in distinct else CANCELLED


def key_of(row: dict[str, Any]) -> str:
    return row["external_id"] or str(row["id"])


def state_object(rows: Sequence[dict[str, Any]], *, content: bool) -> dict[str, Any]:
    """The message state object (spec §4.2) of one message's rows."""
    first = rows[0]
    states = [row_state(row) for row in rows]
    reached: dict[str, datetime] = {PENDING: min(row["created_at"] for row in rows)}
    for row, state in zip(rows, states, strict=True):
        when = {
            SENT: row["sent_at"],
            DELIVERED: row["delivered_at"],
            PROCESSED: row["status_changed_at"],
            FAILED_STATE: row["status_changed_at"],
            CANCELLED: row["status_changed_at"],
            CANCELLING: row["status_changed_at"],
        }.get(state)
        if state == DELIVERED and row["sent_at"] is not None:
            reached[SENT] = min(reached.get(SENT, row["sent_at"]), row["sent_at"])
        if when is not None:
            reached[state] = min(reached.get(state, when), when)
    recipients = []
    for row, state in zip(rows, states, strict=True):
        recipient: dict[str, Any] = {"phoneNumber": row["phone"], "state": state}
        if state == FAILED_STATE:
            recipient["error"] = row["error_detail"] or Status(row["status"]).label
        recipients.append(recipient)
    answer: dict[str, Any] = {
        "id": key_of(first),
        "deviceId": str(first["device_id"]) if first["device_id"] is not None else "",
        "state": message_state(states),
        "isHashed": False,
        "isEncrypted": first["encrypted"],
        "recipients": recipients,
        "states": {state: date(when) for state, when in reached.items()},
        "createdAt": date(reached[PENDING]),
    }
    if content:
        answer.update(content_of(first["body"], first["data_port"]))
    return answer


def device(phone: Any, cards: Sequence[Any]) -> dict[str, Any]:
    """A device of GET /devices (spec §7)."""
    answer: dict[str, Any] = {
        "id": str(phone.pk),
        "name": phone.title or "",
        "createdAt": date(phone.created_at),
        "updatedAt": date(phone.last_seen_at or phone.created_at),
        "lastSeen": date(phone.last_seen_at or phone.created_at),
    }
    sims = []
    for card in cards:
        sim: dict[str, Any] = {"slotIndex": card.slot, "simNumber": card.slot + 1}
        for key, value in (
            ("phoneNumber", card.number),
            ("carrierName", card.carrier_name),
            ("iccid", card.iccid),
        ):
            if value:
                sim[key] = value
        sims.append(sim)
    if sims:
        answer["simCards"] = sims
    return answer


def incoming(row: dict[str, Any]) -> dict[str, Any]:
    """An SMS of GET /inbox: its text whole as ``contentPreview`` (SMS are short)."""
    answer: dict[str, Any] = {
        "id": str(row["id"]),
        "type": "SMS",
        "sender": row["phone"],
        "simNumber": row["sim"] + 1,
        "contentPreview": row["body"],
        "createdAt": date(row["sent_at"] or row["created_at"]),
    }
    if row.get("device__number"):
        answer["recipient"] = row["device__number"]
    return answer


def log_entry(change: Mapping[str, Any]) -> dict[str, Any]:
    """A status change as an entry of GET /logs."""
    target = Status(change["to_status"])
    key = change["message__external_id"] or str(change["message_id"])
    text = (
        f"SMS {key} to {change['message__phone']}: {Status(change['from_status']).label} -> "
        f"{target.label}"
    )
    if change["detail"]:
        text += f" ({change['detail']})"
    return {
        "id": change["id"],
        "priority": "WARN" if target in FAILED else "INFO",
        "module": "messages",
        "message": text,
        "context": {
            "messageId": key,
            "deviceId": str(change["message__device_id"] or ""),
            "status": int(target),
            "source": change["source"],
        },
        "createdAt": date(change["changed_at"]),
    }


PROBLEM_MODULES = {"device_silent": "devices", "sim_failing": "devices",
                   "webhook_failing": "webhooks"}  # fmt: skip


def problem_entries(problem: Any, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """A fleet problem (messaging.problems) as entries of GET /logs: its opening and, once
    it is over, its resolution, those within the window. Negative ids: they never meet the
    status changes' ids."""
    context: dict[str, Any] = {"problemId": problem.pk, "kind": problem.kind}
    if problem.device_id is not None:
        context["deviceId"] = str(problem.device_id)
    if problem.sim is not None:
        context["simNumber"] = problem.sim + 1
    module = PROBLEM_MODULES.get(problem.kind, "messages")
    entries = []
    for when, offset, priority, text in (
        (problem.opened_at, 0, "WARN", f"{problem.get_kind_display()}: {problem.detail}"),
        (problem.resolved_at, 1, "INFO", f"Resolved: {problem.get_kind_display()}"),
    ):
        if when is not None and since <= when <= until:
            entries.append({"id": -(2 * problem.pk + offset), "priority": priority,
                            "module": module, "message": text, "context": context,
                            "createdAt": date(when)})  # fmt: skip
    return entries


def settings_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A settings body with SMSGate's snake_case keys: the camelCase spellings some SDKs'
    typings use (``limitPeriod``, ``signingKey``) are read as the same keys."""

    def snake(name: str) -> str:
        return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)

    return {
        section: (
            {snake(key): value for key, value in keys.items()} if isinstance(keys, dict) else keys
        )
        for section, keys in data.items()
    }
