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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from devices import wake
from devices.models import Device
from gateway.models import Account
from gateway.phones import InvalidPhone, normalize_phone, split_recipients
from messaging import webhooks
from messaging.encoding import segment_count
from messaging.models import FAILURES, LEGAL_SOURCES, Message, MessageStatusChange, Status

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 1600
MAX_SEGMENTS = 10
MAX_RECIPIENTS = 1000  # per request (comma-separated numbers)
MAX_BATCH = 10_000  # SMS per submit call, after expanding recipient lists


class MessageNotFound(Exception):
    pass


class InvalidMessage(ValueError):
    """Input that cannot become a message; the text is meant for the API client.

    ``field`` names the input at fault (``body``, ``sim``, ...), for APIs and forms that
    show errors per field.
    """

    def __init__(self, message: str, *, field: str = "body") -> None:
        super().__init__(message)
        self.field = field


@dataclass
class MoveResult:
    moved: list[int] = field(default_factory=list)
    # Already in the target status: the move had happened before.
    unchanged: list[int] = field(default_factory=list)
    # Not found in scope, or the move is illegal from the message's current status.
    rejected: list[int] = field(default_factory=list)


def _fields_for(target: Status, now: datetime, detail: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"status": target, "status_changed_at": now}
    if target == Status.NEW:
        # Back in the queue: the next poll leases and paces it afresh.
        fields["lease_expires_at"] = None
        fields["lease_id"] = None
        fields["not_before_at"] = None
    elif target == Status.SENT:
        fields["sent_at"] = Coalesce(F("sent_at"), now)
    elif target == Status.DELIVERED:
        fields["sent_at"] = Coalesce(F("sent_at"), now)
        fields["delivered_at"] = now
    if target in FAILURES or target in (Status.NOT_DELIVERED, Status.UNKNOWN, Status.EXPIRED):
        fields["error_detail"] = detail[:500]
    return fields


# Newsletter progress counters: how many of its messages are in each bucket right now.
# move() keeps them exact by adding (in bucket after) - (in bucket before) for every move, so
# reading progress never counts the message table.
NEWSLETTER_BUCKETS = {
    "sent_count": frozenset({Status.SENT, Status.DELIVERED, Status.NOT_DELIVERED}),
    "delivered_count": frozenset({Status.DELIVERED}),
    "failed_count": FAILURES | {Status.NOT_DELIVERED, Status.EXPIRED, Status.UNKNOWN},
}


def _count_for_newsletters(moves: list[tuple[int | None, Status]], target: Status) -> None:
    from contacts.models import Newsletter

    deltas: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for newsletter_id, source in moves:
        if newsletter_id is None:
            continue
        for counter, bucket in NEWSLETTER_BUCKETS.items():
            change = (target in bucket) - (source in bucket)
            if change:
                deltas[newsletter_id][counter] += change
    for newsletter_id, changes in deltas.items():
        Newsletter.objects.filter(pk=newsletter_id).update(
            **{counter: F(counter) + change for counter, change in changes.items() if change}
        )


def _per_message_cases(ids: list[int], per_message: Mapping[int, dict[str, Any]]) -> dict[str, Any]:
    """Column -> CASE id WHEN ... expression setting each message's own value."""
    columns = {column for i in ids for column in per_message.get(i, {})}
    cases: dict[str, Any] = {}
    for column in columns:
        field = Message._meta.get_field(column)
        assert isinstance(field, models.Field)
        whens = [
            When(id=i, then=Value(per_message[i][column], output_field=field))
            for i in ids
            if column in per_message.get(i, {})
        ]
        cases[column] = Case(*whens, default=F(column), output_field=field)
    return cases


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
    per_message: Mapping[int, dict[str, Any]] | None = None,
    where: Q | None = None,
) -> MoveResult:
    """Move messages to ``target`` where that is a legal move; idempotent.

    ``account`` and ``device`` scope the messages: an id outside the scope is rejected
    exactly like an id that does not exist. ``only_from`` narrows the legal sources further
    (a lease reaper moves TAKEN back to NEW, never anything else), and ``where`` adds any
    other condition the rows must meet at the moment of the move. ``extra`` sets more
    columns in the same UPDATE, ``per_message`` sets columns per message (CASE on the id,
    still one UPDATE); only services pass them.
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
        if where is not None:
            scoped = scoped.filter(where)
        # Locked in id order, so two concurrent moves of overlapping sets cannot deadlock.
        locked = scoped.select_for_update().order_by("id")
        rows = {
            r[0]: r
            for r in locked.values_list("id", "status", "newsletter_id", "account_id", "device_id")
        }
        current = {message_id: row[1] for message_id, row in rows.items()}
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
            group_fields = dict(fields)
            if per_message:
                group_fields.update(_per_message_cases(group, per_message))
            updated = Message.objects.filter(id__in=group, status=from_status).update(
                **group_fields
            )
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
        # Outbox rows in this same transaction: an event exists exactly when its move does.
        webhooks.status_changed(
            [(h.message_id, rows[h.message_id][3], rows[h.message_id][4]) for h in history], target
        )
        _count_for_newsletters(
            [(rows[h.message_id][2], Status(h.from_status)) for h in history], target
        )
    result.moved.sort()
    if result.moved:
        log.info("moved %d message(s) to %s (%s)", len(result.moved), target.name, source)
    return result


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    """One client request to send ``body`` to ``phone`` (a number or a comma-separated list)."""

    device_id: int
    phone: str
    body: str
    sim: int = 0
    send_at: datetime | None = None
    urgent: bool = False
    customer_id: int | None = None


@dataclass
class InvalidBatch(Exception):
    """Some requests of a batch are invalid; nothing of the batch was stored."""

    errors: list[tuple[int, str]]  # (index of the request, what is wrong)

    def __str__(self) -> str:
        shown = "; ".join(f"item {i}: {m}" for i, m in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        return shown + more


_MESSAGE_COLUMNS = (
    "account_id",
    "device_id",
    "sim",
    "phone",
    "phone_raw",
    "body",
    "status",
    "send_at",
    "urgent",
    "customer_id",
    "segments",
    "error_detail",
    "external_id",
    "created_at",
    "status_changed_at",
)


def check_body(body: str) -> int:
    """The body's segment count, or InvalidMessage if it is empty or too long."""
    if not body:
        raise InvalidMessage("Message body is empty")
    if len(body) > MAX_BODY_CHARS:
        raise InvalidMessage(f"Message body is longer than {MAX_BODY_CHARS} characters")
    segments = segment_count(body)
    if segments > MAX_SEGMENTS:
        raise InvalidMessage(f"Message needs {segments} SMS parts; at most {MAX_SEGMENTS}")
    return segments


def submit(
    account: Account, requests: Sequence[OutgoingSms], *, return_ids: bool = True
) -> list[int]:
    """Validate and store outgoing SMS as NEW, one per recipient; all or nothing.

    Every request is checked (see prepare) before anything is written; any error raises
    InvalidBatch and stores nothing, so a client can fix its input and resend the whole
    batch without creating duplicates. Returns the new ids in request order when
    ``return_ids``; the bulk path skips that to write with COPY on PostgreSQL.
    Not idempotent: each call creates new messages.
    """
    return store(account, prepare(account, requests), return_ids=return_ids)


@dataclass(frozen=True)
class PreparedBatch:
    rows: list[tuple[Any, ...]]


def prepare(account: Account, requests: Sequence[OutgoingSms]) -> PreparedBatch:
    """Check a batch and turn it into rows; raise InvalidBatch naming every bad request.

    Checks: the device is the account's and has the SIM slot, the body is non-empty and
    within bounds, every recipient is a phone number, the batch is within MAX_BATCH SMS. A
    send time in the past means now. Reads only.
    """
    from devices.services import sim_slots_by_device

    slots = sim_slots_by_device(account, {r.device_id for r in requests})
    now = timezone.now()
    rows: list[tuple[Any, ...]] = []
    errors: list[tuple[int, str]] = []
    segments_of: dict[str, int] = {}
    for index, request in enumerate(requests):
        try:
            device_slots = slots.get(request.device_id)
            if device_slots is None:
                raise InvalidMessage("Device not found")
            if request.sim not in device_slots:
                raise InvalidMessage(f"Device has no SIM slot {request.sim}")
            segments = segments_of.get(request.body)
            if segments is None:
                segments = segments_of[request.body] = check_body(request.body)
            recipients = split_recipients(request.phone)
            if not recipients:
                raise InvalidMessage("Recipient phone number is empty")
            if len(recipients) > MAX_RECIPIENTS:
                raise InvalidMessage(f"At most {MAX_RECIPIENTS} recipients per message")
            send_at = now if request.send_at is None or request.send_at < now else request.send_at
            for raw_phone in recipients:
                try:
                    phone = normalize_phone(raw_phone)
                except InvalidPhone as exc:
                    raise InvalidMessage(str(exc)) from None
                rows.append(
                    (
                        account.pk,
                        request.device_id,
                        request.sim,
                        phone,
                        raw_phone.strip()[:64],
                        request.body,
                        Status.NEW,
                        send_at,
                        request.urgent,
                        request.customer_id,
                        segments,
                        "",
                        "",
                        now,
                        now,
                    )
                )
        except InvalidMessage as exc:
            errors.append((index, str(exc)))
        if len(rows) > MAX_BATCH:
            raise InvalidBatch([(index, f"More than {MAX_BATCH} SMS in one request")])
    if errors:
        raise InvalidBatch(errors)
    return PreparedBatch(rows)


def store(account: Account, batch: PreparedBatch, *, return_ids: bool = True) -> list[int]:
    """Write a prepared batch in one transaction (see submit)."""
    rows = batch.rows
    with transaction.atomic():
        if return_ids or connection.vendor != "postgresql":
            created = Message.objects.bulk_create(
                [Message(**dict(zip(_MESSAGE_COLUMNS, row, strict=True))) for row in rows],
                batch_size=1000,
            )
            ids = [m.pk for m in created]
        else:
            _copy_rows(rows)
            ids = []
        devices = {row[1] for row in rows}
        # Wake phones waiting in a long poll, once the messages are visible to them.
        transaction.on_commit(lambda: wake.ring(devices))
    log.info("account %s: %d SMS submitted", account.pk, len(rows))
    return ids


def _copy_rows(rows: list[tuple[Any, ...]]) -> None:
    # COPY is several times faster than INSERT for thousands of rows: no SQL per row.
    columns = ", ".join(_MESSAGE_COLUMNS)
    with connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg cursor under Django's wrapper
        with raw.copy(f"COPY messaging_message ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


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
    """Store one outgoing SMS to one recipient as NEW (see submit)."""
    request = OutgoingSms(device.pk, phone, body, sim, send_at, urgent, customer_id)
    try:
        (message_id,) = submit(account, [request])
    except InvalidBatch as exc:
        raise InvalidMessage(exc.errors[0][1]) from None
    except ValueError:
        raise InvalidMessage("Exactly one recipient expected") from None
    return Message.objects.get(pk=message_id)


def get_message(account: Account, message_id: int) -> Message:
    """The account's message with this id; another account's id is simply not found."""
    try:
        return Message.objects.for_account(account).get(pk=message_id)
    except Message.DoesNotExist:
        raise MessageNotFound(message_id) from None


MAX_PAGE = 1000


@dataclass(frozen=True)
class MessageFilter:
    device_id: int | None = None
    status: int | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    sim: int | None = None
    customer_id: int | None = None
    phone: str | None = None  # normalized


LISTED_FIELDS = (
    "id",
    "phone",
    "body",
    "customer_id",
    "status",
    "device_id",
    "urgent",
    "created_at",
    "sent_at",
    "send_at",
    "sim",
    "newsletter_id",
    "newsletter__title",
    "newsletter__body",
)


def _filtered(account: Account, query: MessageFilter) -> Any:
    messages = Message.objects.for_account(account)
    if query.device_id is not None:
        messages = messages.filter(device_id=query.device_id)
    if query.status is not None:
        messages = messages.filter(status=query.status)
    if query.created_from is not None:
        messages = messages.filter(created_at__gte=query.created_from)
    if query.created_to is not None:
        messages = messages.filter(created_at__lte=query.created_to)
    if query.sim is not None:
        messages = messages.filter(sim=query.sim)
    if query.customer_id is not None:
        messages = messages.filter(customer_id=query.customer_id)
    if query.phone is not None:
        messages = messages.filter(phone=query.phone)
    return messages


def list_messages(
    account: Account,
    query: MessageFilter,
    *,
    limit: int = MAX_PAGE,
    after_id: int | None = None,
    newest_first: bool = False,
) -> tuple[list[dict[str, Any]], bool]:
    """One page of the account's messages (incoming included) as plain dicts, by id.

    ``after_id`` continues a previous page (keyset paging: any depth costs the same).
    Returns the rows and whether more follow. Reads only.
    """
    messages = _filtered(account, query)
    # A date window is read in creation order from the (account, created_at, id) index;
    # ids follow creation time, so this is the id order in all but name. Walking the id
    # index instead would skip every row before the window first.
    by_time = query.created_from is not None or query.created_to is not None
    if after_id is not None:
        messages = _after(account, messages, after_id, newest_first=newest_first, by_time=by_time)
    order = ["created_at", "id"] if by_time else ["id"]
    if newest_first:
        order = ["-" + field for field in order]
    limit = max(1, min(limit, MAX_PAGE))
    rows = list(messages.order_by(*order).values(*LISTED_FIELDS)[: limit + 1])
    return rows[:limit], len(rows) > limit


def _after(
    account: Account, messages: Any, after_id: int, *, newest_first: bool, by_time: bool
) -> Any:
    """Keyset paging: the rows after ``after_id`` in the listing's order.

    The id is resolved inside the account: another account's id pages exactly like one
    that does not exist, so the answer reveals nothing about ids elsewhere.
    """
    if not by_time:
        return (
            messages.filter(id__lt=after_id) if newest_first else messages.filter(id__gt=after_id)
        )
    created = (
        Message.objects.for_account(account)
        .filter(pk=after_id)
        .values_list("created_at", flat=True)
        .first()
    )
    if created is None:
        return messages.none()
    if newest_first:
        return messages.filter(created_at__lte=created).filter(
            Q(created_at__lt=created) | Q(id__lt=after_id)
        )
    return messages.filter(created_at__gte=created).filter(
        Q(created_at__gt=created) | Q(id__gt=after_id)
    )


def count_messages(account: Account, query: MessageFilter) -> int:
    """Exact count of the account's messages matching ``query`` (asked for explicitly)."""
    return int(_filtered(account, query).count())


def cancel(account: Account, message_ids: Iterable[int], *, source: str = "") -> MoveResult:
    """Cancel the account's messages that no phone has sent yet. Idempotent.

    A message not yet confirmed by its phone never reaches it (a confirmation that comes
    later is refused). One the phone already confirmed is cancelled too, and the phone hears
    of it on its next poll; it may have sent it already, and a "sent" report then wins.
    """
    return move(message_ids, Status.CANCELLED, account=account, source=source or "cancel")


def expire_stale(*, limit: int = 5000) -> int:
    """Queued messages whose send time is older than MESSAGE_EXPIRY_HOURS end EXPIRED.

    Bounded per run (a backlog drains over runs); idempotent. Returns how many moved.
    """
    if not settings.MESSAGE_EXPIRY_HOURS:
        return 0
    cutoff = timezone.now() - timedelta(hours=settings.MESSAGE_EXPIRY_HOURS)
    ids = list(
        Message.objects.filter(status=Status.NEW, send_at__lt=cutoff)
        .order_by("send_at")
        .values_list("id", flat=True)[:limit]
    )
    detail = f"not taken by a phone within {settings.MESSAGE_EXPIRY_HOURS} h"
    return len(
        move(ids, Status.EXPIRED, only_from=[Status.NEW], detail=detail, source="expiry").moved
    )


def prune_history(*, limit: int = 10_000) -> int:
    """Delete status history and finished webhook events older than HISTORY_RETENTION_DAYS.

    Messages are kept. Bounded per run; idempotent. Returns how many rows went.
    """
    from messaging.models import IdempotencyKey, WebhookEvent

    # Idempotency keys are promised for 24 hours, whatever the retention.
    IdempotencyKey.objects.filter(created_at__lt=timezone.now() - timedelta(days=1)).delete()
    if not settings.HISTORY_RETENTION_DAYS:
        return 0
    cutoff = timezone.now() - timedelta(days=settings.HISTORY_RETENTION_DAYS)
    old_changes = list(
        MessageStatusChange.objects.filter(changed_at__lt=cutoff)
        .order_by("changed_at")
        .values_list("id", flat=True)[:limit]
    )
    deleted = MessageStatusChange.objects.filter(id__in=old_changes).delete()[0]
    old_events = list(
        WebhookEvent.objects.filter(created_at__lt=cutoff)
        .exclude(state=WebhookEvent.State.PENDING)
        .values_list("id", flat=True)[:limit]
    )
    return deleted + WebhookEvent.objects.filter(id__in=old_events).delete()[0]


def resend(account: Account, message_ids: Iterable[int]) -> list[int]:
    """Queue a copy of each of the account's (outgoing) messages as a new message.

    The originals keep their history; the copies start as NEW. Not idempotent.
    """
    originals = (
        Message.objects.for_account(account)
        .filter(id__in=list(message_ids))
        .exclude(status=Status.INCOMING)
    )
    requests = [
        OutgoingSms(m.device_id, m.phone, m.body, m.sim, None, m.urgent, m.customer_id)
        for m in originals.order_by("id")
        if m.device_id is not None
    ]
    return submit(account, requests) if requests else []


def reassign(account: Account, message_ids: Iterable[int], device_id: int, sim: int) -> int:
    """Move the account's queued messages to another device or SIM slot.

    Only messages no phone holds (NEW) move; a lease not yet confirmed is first returned
    to the queue. The device must be the account's and have the slot. Compare-and-set on
    the status, so a message taken meanwhile stays where it is. Returns how many moved.
    """
    from devices.services import sim_slots_by_device

    if sim not in sim_slots_by_device(account, [device_id]).get(device_id, set()):
        raise InvalidMessage("Device not found, or it has no such SIM slot")
    ids = list(
        Message.objects.for_account(account)
        .filter(id__in=list(message_ids))
        .values_list("id", flat=True)
    )
    with transaction.atomic():
        move(
            ids,
            Status.NEW,
            account=account,
            only_from=[Status.TAKEN],
            where=Q(confirmed_at__isnull=True),
            source="reassigned",
        )
        moved = Message.objects.filter(id__in=ids, status=Status.NEW).update(
            device_id=device_id, sim=sim
        )
        transaction.on_commit(lambda: wake.ring([device_id]))
    return int(moved)


def mark_failed(account: Account, message_ids: Iterable[int], reason: str) -> MoveResult:
    """An operator's verdict: the messages failed (code 9). Only where that move is legal."""
    return move(
        message_ids,
        Status.GENERIC_FAILURE,
        account=account,
        detail=reason[:500],
        source="operator",
    )
