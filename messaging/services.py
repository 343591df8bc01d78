"""Messages: creation and every status change. The ONLY writer of ``Message.status``.

Every move is a compare-and-set: rows are locked, the legal sources of the target status
(``models.LEGAL_SOURCES``) are checked, and the UPDATE repeats the status it saw in its
WHERE clause. A move repeated (a duplicate report from a phone) finds the message already
in the target status and changes nothing; an illegal move changes nothing and is reported
as rejected. Each real move writes one history row in the same transaction.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from devices.models import Device
from gateway.models import Account
from gateway.phones import normalize_phone
from messaging.encoding import segment_count
from messaging.models import FAILURES, LEGAL_SOURCES, Message, MessageStatusChange, Status

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 1600
MAX_SEGMENTS = 10


class MessageNotFound(Exception):
    pass


class InvalidMessage(ValueError):
    """Input that cannot become a message; the text is meant for the API client."""


@dataclass
class MoveResult:
    moved: list[int] = field(default_factory=list)
    # Already in the target status: the move had happened before.
    unchanged: list[int] = field(default_factory=list)
    # Not found in scope, or the move is illegal from the message's current status.
    rejected: list[int] = field(default_factory=list)


def _fields_for(target: Status, now: datetime, detail: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"status": target, "status_changed_at": now}
    if target == Status.SENT:
        fields["sent_at"] = Coalesce(F("sent_at"), now)
    elif target == Status.DELIVERED:
        fields["sent_at"] = Coalesce(F("sent_at"), now)
        fields["delivered_at"] = now
    if target in FAILURES or target in (Status.NOT_DELIVERED, Status.UNKNOWN, Status.EXPIRED):
        fields["error_detail"] = detail[:500]
    return fields


def move(
    message_ids: Iterable[int],
    target: Status | int,
    *,
    account: Account | None = None,
    device: Device | None = None,
    only_from: Iterable[Status] | None = None,
    source: str = "",
    detail: str = "",
    extra: dict[str, Any] | None = None,
) -> MoveResult:
    """Move messages to ``target`` where that is a legal move; idempotent.

    ``account`` and ``device`` scope the messages: an id outside the scope is rejected
    exactly like an id that does not exist. ``only_from`` narrows the legal sources further
    (a lease reaper moves TAKEN back to NEW, never anything else). ``extra`` sets more
    columns in the same UPDATE; only services pass it.
    """
    target = Status(target)
    sources = set(LEGAL_SOURCES[target])
    if only_from is not None:
        sources &= {Status(s) for s in only_from}
    ids = sorted({int(i) for i in message_ids})
    result = MoveResult()
    if not ids:
        return result
    now = timezone.now()
    with transaction.atomic():
        scoped = Message.objects.filter(id__in=ids)
        if account is not None:
            scoped = scoped.filter(account=account)
        if device is not None:
            scoped = scoped.filter(device=device)
        # Locked in id order, so two concurrent moves of overlapping sets cannot deadlock.
        current = dict(scoped.select_for_update().order_by("id").values_list("id", "status"))
        by_source: dict[int, list[int]] = defaultdict(list)
        for message_id in ids:
            status = current.get(message_id)
            if status is None:
                result.rejected.append(message_id)
            elif status == target:
                result.unchanged.append(message_id)
            elif status in sources:
                by_source[status].append(message_id)
            else:
                result.rejected.append(message_id)
        fields = {**_fields_for(target, now, detail), **(extra or {})}
        history: list[MessageStatusChange] = []
        for from_status, group in by_source.items():
            updated = Message.objects.filter(id__in=group, status=from_status).update(**fields)
            # The rows are locked, so the compare-and-set cannot miss; if it ever did, the
            # history would lie, and that is worth failing the transaction for.
            if updated != len(group):
                raise RuntimeError(f"status of messages {group} changed under a row lock")
            result.moved.extend(group)
            history.extend(
                MessageStatusChange(
                    message_id=message_id,
                    from_status=from_status,
                    to_status=target,
                    changed_at=now,
                    source=source[:50],
                    detail=detail[:500],
                )
                for message_id in group
            )
        MessageStatusChange.objects.bulk_create(history)
    result.moved.sort()
    if result.moved:
        log.info("moved %d message(s) to %s (%s)", len(result.moved), target.name, source)
    return result


def create_message(
    account: Account,
    *,
    device: Device,
    phone: str,
    body: str,
    sim: int = 0,
    send_at: datetime | None = None,
    urgent: bool = False,
    customer_id: int | None = None,
) -> Message:
    """Store one outgoing SMS as NEW. The device must be the account's; not idempotent."""
    if device.account_id != account.pk:
        raise InvalidMessage("Device not found")
    if not body:
        raise InvalidMessage("Message body is empty")
    if len(body) > MAX_BODY_CHARS:
        raise InvalidMessage(f"Message body is longer than {MAX_BODY_CHARS} characters")
    segments = segment_count(body)
    if segments > MAX_SEGMENTS:
        raise InvalidMessage(f"Message needs {segments} SMS parts; at most {MAX_SEGMENTS}")
    try:
        normalized = normalize_phone(phone)
    except ValueError as exc:
        raise InvalidMessage(str(exc)) from None
    now = timezone.now()
    return Message.objects.create(
        account=account,
        device=device,
        sim=sim,
        phone=normalized,
        phone_raw=phone[:64],
        body=body,
        send_at=max(send_at or now, now),
        urgent=urgent,
        customer_id=customer_id,
        segments=segments,
        created_at=now,
        status_changed_at=now,
    )


def get_message(account: Account, message_id: int) -> Message:
    """The account's message with this id; another account's id is simply not found."""
    try:
        return Message.objects.for_account(account).get(pk=message_id)
    except Message.DoesNotExist:
        raise MessageNotFound(message_id) from None
