"""The SMSGate app's wire format: its dates, states and shapes, in one place.

What the app writes and reads is described in docs/android-app.md (from the app's source):
dates with 3 fraction digits (or none) and an offset, states by exact name, one element per
message. Nothing here touches the database.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from devices.handoff import Lease
from devices.services import SimInfo
from gateway import inputs
from messaging.models import Status

# The app's processing states (message and recipient).
PENDING = "Pending"
PROCESSED = "Processed"
SENT = "Sent"
DELIVERED = "Delivered"
FAILED = "Failed"
CANCELLING = "Cancelling"
CANCELLED = "Cancelled"
STATES = frozenset({PENDING, PROCESSED, SENT, DELIVERED, FAILED, CANCELLING, CANCELLED})
# What each state tells us beyond "the phone has it": the outcome, in lifecycle codes.
OUTCOME_OF = {SENT: Status.SENT, DELIVERED: Status.DELIVERED, FAILED: Status.GENERIC_FAILURE}
# The app's message priority at and above which it sends a message first (spec §5.4).
EXPEDITED = 100
# Webhook events the phone sends us (GET /webhooks lists our receiver for each).
RECEIVED_EVENTS = ("sms:received", "sms:sent", "sms:delivered", "sms:failed", "system:ping",
                   "app:started")  # fmt: skip
MAX_SIMS = 8


class WireError(ValueError):
    """The phone's request does not have the app's shape."""


def date(value: datetime) -> str:
    """A date as the app reads it exactly: UTC, 3 fraction digits, ``Z``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


# Android 5/6 write a negative offset as "+-5:00".
_QUIRK_OFFSET = re.compile(r"\+-(\d{1,2}):?(\d{2})$")


def parse_date(value: object) -> datetime | None:
    """A date as the app writes it (its zone's offset, ``Z``, ``+0000``, and Android 5/6's
    malformed ``+-5:00``), or None when it cannot be read: the caller then uses its own
    time rather than refusing the report."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    text = _QUIRK_OFFSET.sub(lambda m: f"-{int(m.group(1)):02d}:{m.group(2)}", value.strip())
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def stored_date(value: object) -> datetime | None:
    """parse_date, None also for a date no column can hold."""
    parsed = parse_date(value)
    if parsed is None:
        return None
    try:
        return inputs.stored_time(parsed, "date")
    except inputs.InvalidInput:
        return None


def health_checks(value: object) -> dict[str, dict[str, Any]]:
    """The checks of a ``system:ping``, as much as the operator is shown: at most 20, each
    its status, observed value and unit, and description, bounded."""
    if not isinstance(value, dict):
        return {}
    checks: dict[str, dict[str, Any]] = {}
    for name, check in list(value.items())[:20]:
        if not isinstance(name, str) or not isinstance(check, dict):
            continue
        kept: dict[str, Any] = {}
        for key, limit in (("status", 8), ("observedUnit", 20), ("description", 200)):
            if isinstance(check.get(key), str):
                kept[key] = inputs.check_text(check[key][:limit], key)
        observed = check.get("observedValue")
        if isinstance(observed, bool | int | float) and abs(observed) < 10**15:
            kept["observedValue"] = observed
        checks[inputs.check_text(name[:50], "checks")] = kept
    return checks


def content_of(body: str, data_port: int | None) -> dict[str, Any]:
    """A message's content as SMSGate writes it (both its APIs): a data SMS's payload and
    port, or its text."""
    if data_port is not None:
        return {"dataMessage": {"data": body, "port": data_port}}
    return {"textMessage": {"text": body}}


def element(lease: Lease, *, state: str, sim_known: bool, now: datetime) -> dict[str, Any]:
    """One message of GET /message: every field valid for the app, or the app would drop
    the whole list (spec §7)."""
    item: dict[str, Any] = {
        "id": lease.served_id,
        **content_of(lease.body, lease.data_port),
        "phoneNumbers": [lease.phone],
        "withDeliveryReport": lease.delivery_report,
        "isEncrypted": lease.encrypted,
        "priority": EXPEDITED if lease.urgent else 0,
        "validUntil": date(lease.valid_until),
        "createdAt": date(lease.created_at),
        "state": state,
    }
    if sim_known:
        item["simNumber"] = lease.sim + 1
    if lease.not_before_at is not None and lease.not_before_at > now:
        item["scheduleAt"] = date(lease.not_before_at)
    return item


def _text(item: dict[str, Any], key: str, limit: int) -> str:
    value = item.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WireError(f"simCards[].{key} must be a string")
    return inputs.check_text(value[:limit], f"simCards[].{key}")


def sims(value: object) -> tuple[SimInfo, ...]:
    """The app's ``simCards`` (redacted or not) as our SIM inventory."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_SIMS:
        raise WireError(f"simCards must be a list of at most {MAX_SIMS} SIM cards")
    found: dict[int, SimInfo] = {}
    for item in value:
        if not isinstance(item, dict):
            raise WireError("simCards[] must be objects")
        slot = item.get("slotIndex")
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < MAX_SIMS:
            number = item.get("simNumber")
            if isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= 8:
                slot = number - 1
            else:
                raise WireError("simCards[].slotIndex must be 0-7")
        found[slot] = SimInfo(
            slot=slot,
            iccid=_text(item, "iccid", 32),
            number=_text(item, "phoneNumber", 32),
            carrier_name=_text(item, "carrierName", 100),
        )
    return tuple(found[slot] for slot in sorted(found))


def state_report(item: object) -> tuple[str, str, str | None, str]:
    """One PATCH /message element as (served id, message state, the recipient's state,
    error). Our messages have one recipient each; with several, the message state counts."""
    if not isinstance(item, dict):
        raise WireError("each state report must be an object")
    served, state = item.get("id"), item.get("state")
    if not isinstance(served, str) or not served or len(served) > 64:
        raise WireError("id must be a message id")
    if not isinstance(state, str):
        raise WireError("state must be a string")
    recipients = item.get("recipients") or []
    if not isinstance(recipients, list) or len(recipients) > 100:
        raise WireError("recipients must be a list")
    recipient_state, error = None, ""
    if len(recipients) == 1 and isinstance(recipients[0], dict):
        candidate = recipients[0].get("state")
        recipient_state = candidate if isinstance(candidate, str) else None
        raw_error = recipients[0].get("error")
        error = inputs.check_text(raw_error[:500], "error") if isinstance(raw_error, str) else ""
    return served, state, recipient_state, error
