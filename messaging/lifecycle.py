"""The message lifecycle in motion: the ONLY code that writes ``Message.status``.

Every move is a compare-and-set: rows are locked, the legal sources of the target status
(``models.LEGAL_SOURCES``) are checked, and the UPDATE repeats the status it saw in its
WHERE clause. A move repeated (a duplicate report from a phone) finds the message already
in the target status and changes nothing; an illegal move changes nothing and is reported
as rejected. Each real move writes one history row, its webhook outbox rows and its
newsletter counters in the same transaction.

The hand-off to phones has named verbs here (``lease``, ``take_over_leases``,
``confirm_lease``, ``return_unconfirmed``, ``record_outcomes``, ``settle_overdue``): they
own the lease columns (``lease_id``, ``lease_expires_at``, ``confirmed_at``,
``not_before_at``, ``outcome_deadline_at``) as well, so a device protocol drives a phone
through them without touching the ORM. Messages are created (as NEW or INCOMING) by
``messaging.services``; everything after that happens here.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import BooleanField, DateTimeField, ExpressionWrapper, F, Q, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from contacts.models import Newsletter
from devices import wake
from devices.models import Device
from gateway import metrics
from gateway.models import Account
from gateway.rows import from_db
from messaging import webhooks
from messaging.models import (
    CONFIRMED,
    FAILED,
    FAILURES,
    LEGAL_SOURCES,
    OUTCOMES,
    UNCONFIRMED,
    Message,
    MessageStatusChange,
    Status,
    served_id,
)

log = logging.getLogger(__name__)


@dataclass
class MoveResult:
    moved: list[int] = field(default_factory=list)
    # Already in the target status: the move had happened before.
    unchanged: list[int] = field(default_factory=list)
    # Not found in scope, or the move is illegal from the message's current status.
    rejected: list[int] = field(default_factory=list)


def _fields_for(
    target: Status, now: datetime, detail: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The columns a move to ``target`` sets: (always, only where still NULL)."""
    fields: dict[str, Any] = {"status": int(target), "status_changed_at": now}
    first_time: dict[str, Any] = {}
    if target == Status.NEW:
        # Back in the queue: the next poll leases and paces it afresh.
        fields["lease_expires_at"] = None
        fields["lease_id"] = None
        fields["not_before_at"] = None
        fields["confirmed_at"] = None
        fields["outcome_deadline_at"] = None
        fields["revoke_requested_at"] = None
    elif target == Status.SENT:
        first_time["sent_at"] = now
    elif target == Status.DELIVERED:
        first_time["sent_at"] = now
        fields["delivered_at"] = now
    if target in FAILURES or target in (Status.NOT_DELIVERED, Status.UNKNOWN, Status.EXPIRED):
        fields["error_detail"] = detail[:500]
    return fields, first_time


# A move runs as plain SQL (the same statements the ORM would send, without building them
# per call): it is most of what a phone's poll or report costs.
_TABLE = Message._meta.db_table
_HISTORY_TABLE = MessageStatusChange._meta.db_table


def _marks(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def _db_value(column: str, value: Any) -> Any:
    """A Python value as the message table's ``column`` stores it on this database."""
    field = Message._meta.get_field(column)
    assert isinstance(field, models.Field)
    return field.get_db_prep_value(value, connection, prepared=False)


# (id, status, newsletter, account, device, status webhooks listened): what a move reads of
# each row, under lock.
LockedRow = tuple[int, int, int | None, int, int | None, bool]
LOCKED_COLUMNS = ("id", "status", "newsletter_id", "account_id", "device_id", "listened")


def lockable(queryset: models.QuerySet[Message]) -> models.QuerySet[Message]:
    """``queryset`` able to read LOCKED_COLUMNS: its ``values_list(*LOCKED_COLUMNS)``, read
    with ``select_for_update`` in the caller's transaction, is each row's LockedRow."""
    listened = RawSQL(webhooks.status_listened_sql(_TABLE), (), BooleanField())  # noqa: S611
    return queryset.annotate(listened=listened)


def locked_rows_sql(
    ids: Sequence[int],
    devices: Sequence[int] | None = None,
    *,
    account: int | None = None,
    extra: Sequence[str] = (),
) -> tuple[str, list[Any]]:
    """SQL and parameters reading the LockedRow of each message in ``ids`` (of ``devices``
    / ``account`` when given), then the ``extra`` columns, in id order, locked (FOR UPDATE)
    where the database has row locks."""
    columns = ", ".join(f"m.{c}" for c in extra)
    sql = (
        "SELECT m.id, m.status, m.newsletter_id, m.account_id, m.device_id, "  # noqa: S608
        f"{webhooks.status_listened_sql('m')}{', ' + columns if columns else ''} "
        f"FROM {_TABLE} m WHERE m.id IN ({_marks(ids)})"
    )
    params: list[Any] = list(ids)
    if account is not None:
        sql += " AND m.account_id = %s"
        params.append(account)
    if devices is not None:
        sql += f" AND m.device_id IN ({_marks(devices)})"
        params += list(devices)
    sql += " ORDER BY m.id"
    if connection.features.has_select_for_update:
        sql += " FOR UPDATE OF m" if connection.features.has_select_for_update_of else " FOR UPDATE"
    return sql, params


def _locked_rows(ids: list[int], account: Account | None, device: Device | None) -> list[LockedRow]:
    """The LockedRow of each message in scope, locked in id order."""
    with connection.cursor() as cursor:
        cursor.execute(
            *locked_rows_sql(
                ids,
                [device.pk] if device is not None else None,
                account=account.pk if account is not None else None,
            )
        )
        return cursor.fetchall()


def _update_rows(
    group: list[int],
    from_status: int,
    fields: Mapping[str, Any],
    first_time: Mapping[str, Any],
    per_message: Mapping[int, Mapping[str, Any]] | None,
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """UPDATE ``group`` (still in ``from_status``): ``fields`` set, ``first_time`` set where
    still NULL, ``per_message`` each message's own value (CASE on the id). One row per
    message updated: its ``returning`` columns afterwards, as the ORM reads them."""
    sets: list[str] = []
    params: list[Any] = []
    for column, value in fields.items():
        sets.append(f"{column} = %s")
        params.append(_db_value(column, value))
    for column, value in first_time.items():
        sets.append(f"{column} = COALESCE({column}, %s)")
        params.append(_db_value(column, value))
    own = per_message or {}
    for column in sorted({c for i in group for c in own.get(i, {})}):
        whens = [(i, own[i][column]) for i in group if column in own.get(i, {})]
        sets.append(
            f"{column} = CASE id {' '.join(['WHEN %s THEN %s'] * len(whens))} ELSE {column} END"
        )
        for message_id, value in whens:
            params += [message_id, _db_value(column, value)]
    sql = f"UPDATE {_TABLE} SET {', '.join(sets)} WHERE id IN ({_marks(group)}) AND status = %s"  # noqa: S608 - model names
    fields_back = [Message._meta.get_field(c) for c in returning]
    columns = [str(f.column) for f in fields_back if isinstance(f, models.Field)] or ["id"]
    with connection.cursor() as cursor:
        # RETURNING: PostgreSQL, and SQLite from 3.35 (required, gateway.settings).
        cursor.execute(f"{sql} RETURNING {', '.join(columns)}", [*params, *group, from_status])
        return [
            tuple(from_db(f, v) for f, v in zip(fields_back, row, strict=False))
            for row in cursor.fetchall()
        ]


def _write_history(
    group: list[int], from_status: int, target: Status, now: datetime, source: str, detail: str
) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_HISTORY_TABLE} "  # noqa: S608 - model names
            "(message_id, from_status, to_status, changed_at, source, detail) "
            f"SELECT id, %s, %s, %s, %s, %s FROM {_TABLE} WHERE id IN ({_marks(group)})",
            [
                from_status,
                int(target),
                _db_value("status_changed_at", now),
                source[:50],
                detail[:500],
                *group,
            ],
        )


# Newsletter progress counters: how many of its messages are in each bucket right now.
# move() keeps them exact by adding (in bucket after) - (in bucket before) for every move, so
# reading progress never counts the message table.
NEWSLETTER_BUCKETS = {
    "sent_count": frozenset({Status.SENT, Status.DELIVERED, Status.NOT_DELIVERED}),
    "delivered_count": frozenset({Status.DELIVERED}),
    "failed_count": FAILED,
}


def _count_for_newsletters(moves: list[tuple[int | None, Status]], target: Status) -> None:
    deltas: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for newsletter_id, source in moves:
        if newsletter_id is None:
            continue
        for counter, bucket in NEWSLETTER_BUCKETS.items():
            change = (target in bucket) - (source in bucket)
            if change:
                deltas[newsletter_id][counter] += change
    for newsletter_id, changes in deltas.items():
        # progressed_at: when its SMS last reached an outcome (the problem sweep's "stalled").
        Newsletter.objects.filter(pk=newsletter_id).update(
            progressed_at=timezone.now(),
            **{counter: F(counter) + change for counter, change in changes.items() if change},
        )


def move(
    message_ids: Iterable[int],
    target: Status | int,
    *,
    account: Account | None = None,
    device: Device | None = None,
    only_from: Iterable[Status] | None = None,
    source: str = "",
    detail: str = "",
) -> MoveResult:
    """Move messages to ``target`` where that is a legal move; idempotent.

    ``account`` and ``device`` scope the messages: an id outside the scope is rejected
    exactly like an id that does not exist. ``only_from`` narrows the legal sources further
    (an operator's cancel of what is still waiting, say). Moves of the hand-off (lease,
    return, outcome) have their own verbs below.
    """
    return _move(
        message_ids,
        target,
        account=account,
        device=device,
        only_from=only_from,
        source=source,
        detail=detail,
    )


def _move(
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
    locked: Mapping[int, LockedRow] | None = None,
    joined: bool = False,
) -> MoveResult:
    """move(), plus: ``where``, a condition the rows must meet at the moment of the move;
    ``extra``, more columns set in the same UPDATE; ``per_message``, columns set per
    message (CASE on the id, still one UPDATE); ``locked``, the rows as the caller read
    them under lock in its own transaction (locked_rows_sql), not read again; ``joined``,
    run in the caller's transaction without a savepoint of its own (an error fails the
    caller's whole transaction). Only this module's verbs pass them."""
    target = Status(target)
    sources = set(LEGAL_SOURCES.get(target, ()))
    if only_from is not None:
        sources &= {Status(s) for s in only_from}
    ids = sorted({int(i) for i in message_ids})
    result = MoveResult()
    if not ids:
        return result
    now = timezone.now()
    if locked is not None and (
        where is not None or not transaction.get_connection().in_atomic_block
    ):
        raise RuntimeError(
            "rows read under lock need no condition and the transaction that locked them"
        )
    # With the caller's locked rows the caller's transaction is this move's.
    with transaction.atomic(savepoint=locked is None and not joined):
        # Locked in id order, so two concurrent moves of overlapping sets cannot deadlock.
        if locked is not None:
            locked_rows = [
                locked[i]
                for i in ids
                if i in locked
                and (device is None or locked[i][4] == device.pk)
                and (account is None or locked[i][3] == account.pk)
            ]
        elif where is None:
            locked_rows = _locked_rows(ids, account, device)
        else:
            scoped = Message.objects.filter(where, id__in=ids)
            if account is not None:
                scoped = scoped.filter(account=account)
            if device is not None:
                scoped = scoped.filter(device=device)
            locked_rows = list(
                lockable(scoped.select_for_update(of=("self",)))
                .order_by("id")
                .values_list(*LOCKED_COLUMNS)
            )
        rows = {r[0]: r for r in locked_rows}
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
        fields, first_time = _fields_for(target, now, detail)
        history: list[tuple[int, int]] = []  # (message, from status)
        spans: list[tuple[Any, ...]] = []  # the times a latency metric is taken between
        for from_status, group in by_source.items():
            updated = _update_rows(
                group,
                from_status,
                {**fields, **(extra or {})},
                first_time,
                per_message,
                returning=_LATENCY_SPANS.get(target, ()),
            )
            if target in _LATENCY_SPANS:
                spans += updated
            # The rows are locked, so the compare-and-set cannot miss; if it ever did, the
            # history would lie, and that is worth failing the transaction for.
            if len(updated) != len(group):
                raise RuntimeError(f"status of messages {group} changed under a row lock")
            _write_history(group, from_status, target, now, source, detail)
            result.moved.extend(group)
            history.extend((message_id, from_status) for message_id in group)
        # Outbox rows in this same transaction: an event exists exactly when its move does.
        webhooks.status_changed(
            [(message_id, rows[message_id][3], rows[message_id][4]) for message_id, _ in history],
            target,
            listened=any(rows[message_id][5] for message_id, _ in history),
        )
        _count_for_newsletters(
            [(rows[message_id][2], Status(source_status)) for message_id, source_status in history],
            target,
        )
        if target == Status.CANCELLED and history:
            _tell_phones_of_cancels([message_id for message_id, _ in history])
        if history:
            _count(target, [rows[message_id][3] for message_id, _ in history], spans)
    result.moved.sort()
    if result.moved:
        log.info("moved %d message(s) to %s (%s)", len(result.moved), target.name, source)
    return result


# Per status moved to: the two times its latency metric spans, as the move leaves them.
_LATENCY_SPANS = {
    Status.SENT: ("created_at", "sent_at"),
    Status.DELIVERED: ("sent_at", "delivered_at"),
}


def _count(target: Status, accounts: list[int], spans: list[tuple[Any, ...]]) -> None:
    """The moves for the metrics (gateway.metrics), with the latencies of sent/delivered
    (``spans``: each moved message's _LATENCY_SPANS)."""
    # Only where "sent" came first: a delivery report alone sets both times at once.
    latencies = [
        (start, end)
        for start, end in spans
        if start is not None and end is not None and (target != Status.DELIVERED or start < end)
    ]
    metrics.status_changed(target.name.lower(), Counter(accounts), latencies)


def _tell_phones_of_cancels(message_ids: list[int]) -> None:
    """Cancelled messages a phone was served: its event stream hears of each (on commit)."""
    served = list(
        Message.objects.filter(
            id__in=message_ids, lease_id__isnull=False, device__isnull=False
        ).values_list("id", "created_at", "device_id")
    )
    for message_id, created_at, device_id in served:
        notice = served_id(message_id, created_at)
        transaction.on_commit(
            lambda d=device_id, n=notice: wake.signal([d], wake.CANCELLED, n)  # type: ignore[misc]
        )


def cancel_acknowledged(device: Device, message_ids: Iterable[int]) -> int:
    """The phone answered about cancelled messages it was served (it cancelled them, or never
    had them): they are no longer offered to it as "Cancelling". Only the lease id goes;
    the status stays. Returns how many changed."""
    return int(
        Message.objects.filter(
            id__in=list(message_ids), device=device, status=Status.CANCELLED
        ).update(lease_id=None)
    )


# --- The hand-off -----------------------------------------------------------------------------


def lease(
    device: Device,
    claims: Mapping[int, tuple[datetime, datetime]],
    lease_id: uuid.UUID,
    *,
    source: str,
    locked: Mapping[int, LockedRow] | None = None,
) -> list[int]:
    """Lease waiting messages of this device to one poll: NEW -> TAKEN under ``lease_id``.

    ``claims`` maps each message to its paced not-before time and its lease expiry. A
    message no longer NEW (cancelled, taken meanwhile) is left alone. ``locked``: the
    claimed rows as the caller's transaction read them under lock (``lockable``), not read
    again. Returns the ids leased, in id order.
    """
    per_message = {
        message_id: {"not_before_at": not_before, "lease_expires_at": expires}
        for message_id, (not_before, expires) in claims.items()
    }
    return _move(
        list(claims),
        Status.TAKEN,
        device=device,
        only_from=[Status.NEW],
        per_message=per_message,
        extra={"lease_id": lease_id},
        source=source,
        locked=locked,
    ).moved


def take_over_leases(device: Device, message_ids: Iterable[int], lease_id: uuid.UUID) -> set[int]:
    """Give the device's unconfirmed leases among ``message_ids`` to the poll ``lease_id``.

    A re-poll after a lost answer gets the same messages again under its own lease, and
    the earlier poll's lease id stops being accepted by confirm_lease: of two processes
    polling with one device token, only the one that polled last can confirm, so no
    message is ever confirmed to both. Compare-and-set on "still unconfirmed"; returns the
    ids this poll now holds (a lease confirmed meanwhile is not among them).
    """
    ids = list(message_ids)
    Message.objects.filter(UNCONFIRMED, id__in=ids, device=device).update(lease_id=lease_id)
    return set(
        Message.objects.filter(UNCONFIRMED, id__in=ids, lease_id=lease_id).values_list(
            "id", flat=True
        )
    )


@dataclass
class ConfirmResult:
    confirmed: list[int]
    refused: list[int]
    # Among the refused: still leased to this device, but under another poll's lease (a
    # later poll with the same device token took it over). Not this poller's to send.
    superseded: list[int] = field(default_factory=list)


def confirm_lease(
    device: Device, message_ids: Iterable[int], lease_id: uuid.UUID | str | None
) -> ConfirmResult:
    """The phone has the messages and will send them: they are never handed out again.

    Confirms this device's live, unconfirmed leases held by the poll ``lease_id``;
    confirming again with the same lease id changes nothing and answers confirmed. A lease
    that expired, a cancelled message, another device's, or one another poll holds (or
    confirmed) is refused, and the phone must not send it. Each confirmed message owes an
    outcome by its not-before time plus DEVICE_OUTCOME_SECONDS, else settle_overdue ends
    it UNKNOWN (never re-sent).
    """
    now = timezone.now()
    ids = sorted({int(i) for i in message_ids})
    try:
        holder = lease_id if isinstance(lease_id, uuid.UUID) else uuid.UUID(str(lease_id))
    except ValueError:
        return ConfirmResult(confirmed=[], refused=ids)
    mine = Message.objects.filter(id__in=ids, device=device, status=Status.TAKEN)
    # One compare-and-set UPDATE: only live, unconfirmed leases of this poll change.
    mine.filter(UNCONFIRMED, lease_id=holder, lease_expires_at__gte=now).update(
        confirmed_at=now,
        outcome_deadline_at=ExpressionWrapper(
            Greatest(Coalesce(F("not_before_at"), Value(now)), Value(now))
            + timedelta(seconds=settings.DEVICE_OUTCOME_SECONDS),
            output_field=DateTimeField(),
        ),
    )
    confirmed, superseded = [], []
    for message_id, held_by, confirmed_at in mine.order_by("id").values_list(
        "id", "lease_id", "confirmed_at"
    ):
        if held_by != holder:
            superseded.append(message_id)
        elif confirmed_at is not None:
            confirmed.append(message_id)
    done = set(confirmed)
    return ConfirmResult(
        confirmed=confirmed, refused=[i for i in ids if i not in done], superseded=superseded
    )


def return_unconfirmed(
    message_ids: Iterable[int],
    *,
    account: Account | None = None,
    device: Device | None = None,
    expired_before: datetime | None = None,
    source: str,
) -> list[int]:
    """Leases the phone never confirmed go back to the queue: TAKEN -> NEW, lease cleared.

    For the reaper (``expired_before``: only leases that expired by then), a re-paired
    phone (its new installation cannot know them) and an operator moving messages. A
    confirmation that wins the race keeps its lease: the condition is re-checked under the
    row lock. Idempotent; returns the ids returned.
    """
    where = UNCONFIRMED
    if expired_before is not None:
        where &= Q(lease_expires_at__lt=expired_before)
    return _move(
        message_ids,
        Status.NEW,
        account=account,
        device=device,
        only_from=[Status.TAKEN],
        where=where,
        source=source,
    ).moved


def give_up_unreported(
    message_ids: Iterable[int], *, expired_before: datetime, source: str
) -> list[int]:
    """Fenced leases that ran out without a report, of pooled messages: TAKEN -> UNKNOWN.

    The phone (the SMSGate app) sends before it confirms, so it may have sent them; past
    its validUntil it can no longer, but a report may have been lost. Never offered to
    another phone; a late report still replaces UNKNOWN. Idempotent; returns the ids moved.
    """
    return _move(
        message_ids,
        Status.UNKNOWN,
        only_from=[Status.TAKEN],
        where=UNCONFIRMED & Q(lease_expires_at__lt=expired_before),
        detail="served to the phone, which reported nothing before its validUntil: it may "
        "have sent it, so it is not offered to another phone",
        source=source,
    ).moved


def return_revoked(device: Device, message_ids: Iterable[int], *, source: str) -> MoveResult:
    """Confirmed messages the server asked this phone to give back, and that the phone says
    it has not sent and never will: TAKEN -> NEW, remembering the phone (``revoked_from``)
    so the pool routes them elsewhere. Only messages with a revocation request move: a
    phone cannot hand back what nobody asked for. Idempotent."""
    return _move(
        message_ids,
        Status.NEW,
        device=device,
        only_from=[Status.TAKEN],
        where=CONFIRMED & Q(revoke_requested_at__isnull=False, pool__isnull=False),
        extra={"revoked_from": device.pk},
        source=source,
    )


def cancel_unconfirmed(message_ids: Iterable[int], *, account: Account, source: str) -> list[int]:
    """Cancel the messages no phone has confirmed (waiting, or leased but unconfirmed):
    those confirmed go out as the phone has them. Idempotent; returns the ids cancelled."""
    return _move(
        message_ids,
        Status.CANCELLED,
        account=account,
        where=Q(confirmed_at__isnull=True),
        source=source,
    ).moved


@dataclass(frozen=True)
class Outcome:
    """What a phone says happened to one message it took."""

    message_id: int
    status: int  # an outcome code: 6, 7, 8, 9-12, 100, 101
    error: str = ""
    parts: int | None = None


def record_outcomes(
    device: Device, outcomes: Sequence[Outcome], *, locked: Mapping[int, LockedRow] | None = None
) -> list[str]:
    """Apply a phone's outcome reports in order, each on its own; idempotent, monotonic.

    Answers, per item, "applied", "unchanged" (it had happened: in an earlier call, or
    earlier in this batch) or "refused" (another device's or no message, not an outcome,
    or a move the lifecycle forbids, such as "sent" after "delivered"). Consecutive items
    of the same kind share one move, and all of them one transaction (the caller's, if it
    has one).
    """
    if locked is not None and len({o.message_id for o in outcomes}) != len(outcomes):
        locked = None  # a second move of a message must see what the first one did
    with transaction.atomic(savepoint=False):
        return _record_outcomes(device, outcomes, locked)


def _record_outcomes(
    device: Device, outcomes: Sequence[Outcome], locked: Mapping[int, LockedRow] | None
) -> list[str]:
    results: list[str] = []
    for (target, error), group in groupby(outcomes, key=lambda o: (o.status, o.error)):
        items = list(group)
        if target not in OUTCOMES:
            results += ["refused"] * len(items)
            continue
        parts = {i.message_id: {"parts_sent": i.parts} for i in items if i.parts is not None}
        moved = _move(
            [i.message_id for i in items],
            Status(target),
            device=device,
            detail=error,
            per_message=parts or None,
            source=f"device {device.pk}",
            locked=locked,
            joined=True,
        )
        applied, unchanged = set(moved.moved), set(moved.unchanged)
        for item in items:
            if item.message_id in applied:
                results.append("applied")
                # The same report again in this group finds it done: the move happened once.
                applied.discard(item.message_id)
                unchanged.add(item.message_id)
            else:
                results.append("unchanged" if item.message_id in unchanged else "refused")
    return results


def settle_overdue(*, limit: int = 1000) -> int:
    """Confirmed messages whose outcome never came by their deadline end UNKNOWN.

    They are not sent again: the phone took them and may have sent them. Bounded;
    idempotent. Returns how many moved.
    """
    ids = list(
        Message.objects.filter(CONFIRMED, outcome_deadline_at__lt=timezone.now())
        .order_by("outcome_deadline_at")
        .values_list("id", flat=True)[:limit]
    )
    moved = _move(
        ids,
        Status.UNKNOWN,
        only_from=[Status.TAKEN],
        detail="no outcome reported by the phone before the deadline",
        source="deadline",
    ).moved
    if moved:
        metrics.OUTCOMES_OVERDUE.inc(len(moved))
    return len(moved)
