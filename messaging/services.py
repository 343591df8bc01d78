"""Messages: creation, listing, and what operators and clients do to them.

Creation (outgoing from the APIs, incoming from phones, newsletter fan-out) is the one
place rows are written with their first status. Every later status change goes through
``messaging.lifecycle``, the only writer of status; cancel, resend, reassign and
mark_failed here are the clients' and operators' verbs on top of it.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.db.models import CharField, DateTimeField, F, Func, Q, QuerySet, Value
from django.utils import timezone

from contacts.models import Newsletter
from devices import pools, queries, wake
from devices.models import Device, PhoneWebhookReceipt, Pool
from gateway import metrics
from gateway.models import Account
from gateway.phones import InvalidPhone, normalize_phone, split_recipients
from messaging import lifecycle, webhooks
from messaging.encoding import segment_count
from messaging.lifecycle import MoveResult
from messaging.models import IdempotencyKey, Message, MessageStatusChange, Status, WebhookEvent

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 1600
MAX_SEGMENTS = 10
# A data SMS is one SMS: its payload after the port header (Android sends no multipart data).
MAX_DATA_BYTES = 133
# Ciphertext of an encrypted SMS: base64 of the padded text, with its salt and parameters.
MAX_ENCRYPTED_CHARS = 12_000
MAX_KEPT_PHONE = 128
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


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    """One client request to send ``body`` to ``phone`` (a number or a comma-separated list).

    ``device_id``: a device, or a pool (its id), or None for the account's default pool;
    through a pool, ``sim`` is the pool's choice."""

    device_id: int | None
    phone: str
    body: str
    sim: int = 0
    send_at: datetime | None = None
    urgent: bool = False
    customer_id: int | None = None
    # The client's own id of the message (SMSGate's integration API), kept on every row.
    external_id: str = ""
    # The last moment it may be sent (SMSGate's ttl/validUntil); None: MESSAGE_EXPIRY_HOURS
    # after its send time.
    valid_until: datetime | None = None
    # SMSGate's integration API: a data SMS to this port (the body is its payload in
    # base64); body and recipient encrypted end to end by the client (passed through to
    # the phone untouched); a recipient kept as given (not checked as a phone number).
    data_port: int | None = None
    encrypted: bool = False
    keep_phone: bool = False
    delivery_report: bool = True

    @property
    def needs_app(self) -> bool:
        """Only an SMSGate app phone can send it (our own agent sends plain text SMS)."""
        return self.data_port is not None or self.encrypted


@dataclass
class InvalidBatch(Exception):
    """Some requests of a batch are invalid; nothing of the batch was stored."""

    errors: list[tuple[int, str]]  # (index of the request, what is wrong)

    def __str__(self) -> str:
        shown = "; ".join(f"item {i}: {m}" for i, m in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        return shown + more


# Every new message row is written with these columns, in this order, whoever creates it
# (an API's batch, a phone's upload, a newsletter's fan-out) and however (bulk_create,
# COPY, INSERT ... SELECT). The rest keep their defaults until the lifecycle moves it.
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
    "sent_at",
    "newsletter_id",
    "pool_id",
    "hold_reason",
    "valid_until",
    "data_port",
    "encrypted",
    "delivery_report",
)


def _row(
    account_id: int,
    device_id: int | None,
    sim: int,
    phone: str | None,
    phone_raw: str | None,
    body: str,
    status: Status,
    send_at: datetime,
    segments: int,
    now: datetime,
    *,
    urgent: bool = False,
    customer_id: int | None = None,
    external_id: str = "",
    sent_at: datetime | None = None,
    newsletter_id: int | None = None,
    pool_id: int | None = None,
    valid_until: datetime | None = None,
    data_port: int | None = None,
    encrypted: bool = False,
    delivery_report: bool = True,
) -> tuple[Any, ...]:
    """One new message as a row of _MESSAGE_COLUMNS."""
    return (
        account_id,
        device_id,
        sim,
        phone,
        phone_raw,
        body,
        status,
        send_at,
        urgent,
        customer_id,
        segments,
        "",
        external_id,
        now,
        now,
        sent_at,
        newsletter_id,
        pool_id,
        "",
        valid_until,
        data_port,
        encrypted,
        delivery_report,
    )


def _segments(request: OutgoingSms) -> int:
    """The SMS parts ``request`` takes (what pacing and caps count); raises InvalidMessage."""
    if request.encrypted:  # the text is unknown: estimated from the ciphertext's size
        if not request.body or len(request.body) > MAX_ENCRYPTED_CHARS:
            raise InvalidMessage(
                f"Encrypted content must be 1 to {MAX_ENCRYPTED_CHARS} characters", field="body"
            )
        if request.data_port is not None:
            return 1
        size = len(request.body.rsplit("$", 1)[-1]) * 3 // 4
        return 1 if size <= 160 else min(MAX_SEGMENTS, -(-size // 153))
    if request.data_port is not None:
        try:
            payload = base64.b64decode(request.body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidMessage("Data must be base64", field="body") from None
        if not 1 <= len(payload) <= MAX_DATA_BYTES:
            raise InvalidMessage(f"A data SMS carries 1 to {MAX_DATA_BYTES} bytes", field="body")
        return 1
    return check_body(request.body)


def _recipients(request: OutgoingSms) -> list[tuple[str, str]]:
    """``(stored number, as the client wrote it)`` for each recipient of ``request``; one
    kept as given (encrypted, or not to be checked) is stored as it came."""
    if request.keep_phone or request.encrypted:
        kept = request.phone.strip()
        if not 1 <= len(kept) <= MAX_KEPT_PHONE:
            raise InvalidMessage(
                f"Recipient must be 1 to {MAX_KEPT_PHONE} characters", field="phone"
            )
        return [(kept, "")]
    recipients = split_recipients(request.phone)
    if not recipients:
        raise InvalidMessage("Recipient phone number is empty")
    if len(recipients) > MAX_RECIPIENTS:
        raise InvalidMessage(f"At most {MAX_RECIPIENTS} recipients per message")
    found = []
    for raw_phone in recipients:
        try:
            found.append((normalize_phone(raw_phone), raw_phone.strip()[:64]))
        except InvalidPhone as exc:
            raise InvalidMessage(str(exc)) from None
    return found


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
    wanted = {r.device_id for r in requests}
    slots = queries.sim_slots_by_device(account, [d for d in wanted if d is not None])
    app_phones = (
        set(
            Device.objects.for_account(account)
            .filter(
                pk__in=[r.device_id for r in requests if r.needs_app and r.device_id is not None]
            )
            .filter(protocol=Device.Protocol.SMSGATE)
            .values_list("pk", flat=True)
        )
        if any(r.needs_app for r in requests)
        else set()
    )
    pooled = pools.pools_by_id(account, wanted - slots.keys())
    if None in wanted:
        default = pools.default_pool(account)
        if default is not None:
            pooled[None] = default  # type: ignore[index]
    now = timezone.now()
    rows: list[tuple[Any, ...]] = []
    errors: list[tuple[int, str]] = []
    segments_of: dict[tuple[str, int | None, bool], int] = {}
    for index, request in enumerate(requests):
        try:
            device_id, sim, pool_id = request.device_id, request.sim, None
            device_slots = slots.get(device_id) if device_id is not None else None
            if device_slots is None:
                pool = pooled.get(device_id)  # type: ignore[arg-type]
                if pool is None:
                    raise InvalidMessage(
                        "Device not found"
                        if device_id is not None
                        else "No device given, and the account has no default pool",
                        field="device_id",
                    )
                device_id, sim, pool_id = None, 0, pool.pk
            elif sim not in device_slots:
                raise InvalidMessage(f"Device has no SIM slot {sim}", field="sim")
            if request.needs_app and (pool_id is not None or device_id not in app_phones):
                raise InvalidMessage(
                    "Data SMS and encrypted SMS are sent by one SMSGate app phone: choose one "
                    "(not a pool, not a phone of our own protocol)",
                    field="device_id",
                )
            kind = (request.body, request.data_port, request.encrypted)
            segments = segments_of.get(kind)
            if segments is None:
                segments = segments_of[kind] = _segments(request)
            targets = _recipients(request)
            send_at = now if request.send_at is None or request.send_at < now else request.send_at
            for phone, raw_phone in targets:
                rows.append(
                    _row(
                        account.pk,
                        device_id,
                        sim,
                        phone,
                        raw_phone,
                        request.body,
                        Status.NEW,
                        send_at,
                        segments,
                        now,
                        urgent=request.urgent,
                        customer_id=request.customer_id,
                        external_id=request.external_id[:64],
                        pool_id=pool_id,
                        valid_until=request.valid_until,
                        data_port=request.data_port,
                        encrypted=request.encrypted,
                        delivery_report=request.delivery_report,
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
        if any(row[_POOL] is not None for row in rows):
            rows = _routed(rows)
        if return_ids or connection.vendor != "postgresql":
            created = Message.objects.bulk_create(
                [Message(**dict(zip(_MESSAGE_COLUMNS, row, strict=True))) for row in rows],
                batch_size=1000,
            )
            ids = [m.pk for m in created]
        else:
            _copy_rows(rows)
            ids = []
        devices = {row[_DEVICE] for row in rows if row[_DEVICE] is not None}
        # Wake phones waiting in a long poll, once the messages are visible to them.
        transaction.on_commit(lambda: wake.ring(devices))
        metrics.status_changed("new", {account.pk: len(rows)})
    log.info("account %s: %d SMS submitted", account.pk, len(rows))
    return ids


_DEVICE, _SIM, _PHONE = (_MESSAGE_COLUMNS.index(c) for c in ("device_id", "sim", "phone"))
_POOL, _HOLD = (_MESSAGE_COLUMNS.index(c) for c in ("pool_id", "hold_reason"))


def _routed(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows with each pooled message's route (devices.pools.route), in the caller's
    transaction."""
    by_pool: dict[int, list[int]] = {}
    for index, row in enumerate(rows):
        if row[_POOL] is not None:
            by_pool.setdefault(row[_POOL], []).append(index)
    out = list(rows)
    for pool_id, indices in by_pool.items():
        routes = pools.route(pool_id, [rows[i][_PHONE] for i in indices])
        for index, (device_id, sim, reason) in zip(indices, routes, strict=True):
            cells = list(out[index])
            cells[_DEVICE], cells[_SIM], cells[_HOLD] = device_id, sim, reason
            out[index] = tuple(cells)
    return out


def _copy_rows(rows: list[tuple[Any, ...]]) -> None:
    # COPY is several times faster than INSERT for thousands of rows: no SQL per row.
    columns = ", ".join(_MESSAGE_COLUMNS)
    with connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg cursor under Django's wrapper
        with raw.copy(f"COPY messaging_message ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


@dataclass(frozen=True)
class IncomingSms:
    """An SMS a phone received, as it uploads it."""

    external_id: str  # the phone's own id of the SMS
    sender: str
    body: str
    sim: int = 0
    received_at: datetime | None = None


def store_incoming(
    device: Device, items: Sequence[IncomingSms]
) -> tuple[dict[str, int], list[tuple[int, str, str]]]:
    """Store SMS a phone received as INCOMING; the phone's own id makes it idempotent.

    Returns {phone's id: our message id} (the same ids when an upload is repeated) and the
    newly stored ones as (id, sender, body), each announced to webhooks once. Callers wrap
    it in their transaction when they act on the new ones (keywords).
    """
    now = timezone.now()
    rows = []
    for item in items:
        try:
            sender = normalize_phone(item.sender)
        except InvalidPhone:
            sender = item.sender.strip()[:32]  # alphanumeric senders ("VODAFONE") stay as sent
        received = item.received_at or now
        rows.append(
            Message(
                **dict(
                    zip(
                        _MESSAGE_COLUMNS,
                        _row(
                            device.account_id,
                            device.pk,
                            item.sim,
                            sender,
                            item.sender[:64],
                            item.body,
                            Status.INCOMING,
                            received,
                            segment_count(item.body) if item.body else 1,
                            now,
                            external_id=item.external_id[:64],
                            sent_at=received,
                        ),
                        strict=True,
                    )
                )
            )
        )
    mine = Message.objects.filter(
        device=device,
        status=Status.INCOMING,
        external_id__in=[i.external_id[:64] for i in items],
    )
    with transaction.atomic():
        known = set(mine.values_list("id", flat=True))
        Message.objects.bulk_create(rows, ignore_conflicts=True)
        stored = dict(mine.values_list("external_id", "id"))
        fresh = [
            (message_id, row.phone, row.body)
            for row in rows
            if (message_id := stored.get(row.external_id)) and message_id not in known
        ]
        webhooks.received([message_id for message_id, _, _ in fresh])
        if fresh:
            metrics.status_changed("incoming", {device.account_id: len(fresh)})
    return stored, fresh


def store_newsletter(newsletter: Newsletter, recipients: tuple[str, list[Any]]) -> int:
    """One NEW message per phone of ``recipients`` (SQL selecting a ``phone`` column, and
    its parameters), sent as the newsletter says: one INSERT ... SELECT, no per-contact
    Python. A phone that has its message already is skipped (the unique (newsletter,
    phone) constraint), so a repeated run writes nothing. Returns how many were written.
    """
    now = timezone.now()
    # A newsletter sent to a pool (its device is the pool's handle) is written held, then
    # routed as one batch, like a pooled addalotofsms.
    sender = newsletter.device_id
    pool_id = sender if sender is not None and Pool.objects.filter(pk=sender).exists() else None
    constants = _row(
        newsletter.account_id,
        None if pool_id else newsletter.device_id,
        0 if pool_id else newsletter.sim,
        None,
        None,
        newsletter.body,
        Status.NEW,
        now,
        segment_count(newsletter.body),
        now,
        newsletter_id=newsletter.pk,
        pool_id=pool_id,
    )
    from_recipient = ("phone", "phone_raw")
    select = ", ".join("r.phone" if c in from_recipient else "%s" for c in _MESSAGE_COLUMNS)
    params = [
        v for c, v in zip(_MESSAGE_COLUMNS, constants, strict=True) if c not in from_recipient
    ]
    sql, recipient_params = recipients
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO messaging_message ({', '.join(_MESSAGE_COLUMNS)}) "  # noqa: S608
            f"SELECT {select} FROM ({sql}) r WHERE true ON CONFLICT DO NOTHING",
            [*params, *recipient_params],
        )
        written = max(cursor.rowcount, 0)
    metrics.status_changed("new", {newsletter.account_id: written})
    if pool_id is not None and written:
        _route_newsletter(newsletter.pk, pool_id)
    return written


def _route_newsletter(newsletter_id: int, pool_id: int, chunk: int = 10_000) -> None:
    """Routes for a pooled newsletter's fresh messages, one UPDATE per route and chunk."""
    rows = list(
        Message.objects.filter(
            newsletter_id=newsletter_id, pool_id=pool_id, device__isnull=True, status=Status.NEW
        )
        .order_by("id")
        .values_list("id", "phone")
    )
    by_route: dict[pools.Route, list[int]] = {}
    for (message_id, _), target in zip(
        rows, pools.route(pool_id, [phone for _, phone in rows]), strict=True
    ):
        by_route.setdefault(target, []).append(message_id)
    for (device_id, sim, reason), ids in by_route.items():
        for start in range(0, len(ids), chunk):
            Message.objects.filter(pk__in=ids[start : start + chunk]).update(
                device_id=device_id, sim=sim, hold_reason=reason
            )
    targets = {device_id for device_id, _, _ in by_route if device_id is not None}
    transaction.on_commit(lambda: wake.ring(targets))


def get_message(account: Account, message_id: int) -> Message:
    """The account's message with this id; another account's id is simply not found."""
    try:
        return Message.objects.for_account(account).get(pk=message_id)
    except Message.DoesNotExist:
        raise MessageNotFound(message_id) from None


MAX_PAGE = 1000


@dataclass(frozen=True)
class MessageFilter:
    """Which of an account's messages a listing shows; every API's filters map onto it."""

    device_id: int | None = None
    status: int | None = None
    created_from: datetime | None = None  # inclusive
    created_to: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    sim: int | None = None
    customer_id: int | None = None
    phone: str | None = None  # normalized
    newsletter_id: int | None = None
    incoming: bool | None = None  # True: only incoming, False: only outgoing


LISTED_TIMES = ("created_at", "sent_at", "send_at")
# The columns of a listed row, in order (list_messages' tuples); the times come last.
LISTED_FIELDS = (
    "id",
    "phone",
    "body",
    "customer_id",
    "status",
    "device_id",
    "urgent",
    "sim",
    "newsletter_id",
    "newsletter__title",
    "newsletter__body",
    *LISTED_TIMES,
)


def filtered_messages(account: Account, query: MessageFilter) -> QuerySet[Message]:
    """The account's messages that ``query`` selects, unordered (the listing orders)."""
    messages = Message.objects.for_account(account)
    device_column = "device_id"
    if query.device_id is not None and pools.pools_by_id(account, [query.device_id]):
        device_column = "pool_id"  # a pool's id: what was sent through it
    for column, value in (
        (device_column, query.device_id),
        ("status", query.status),
        ("created_at__gte", query.created_from),
        ("created_at__lte", query.created_to),
        ("created_at__lt", query.created_before),
        ("sim", query.sim),
        ("customer_id", query.customer_id),
        ("phone", query.phone),
        ("newsletter_id", query.newsletter_id),
    ):
        if value is not None:
            messages = messages.filter(**{column: value})
    if query.incoming is True:
        messages = messages.filter(status=Status.INCOMING)
    elif query.incoming is False:
        messages = messages.exclude(status=Status.INCOMING)
    return messages


LOCAL_FORMAT = "%Y-%m-%d %H:%M:%S"


def list_messages(
    account: Account,
    query: MessageFilter,
    *,
    limit: int = MAX_PAGE,
    after_id: int | None = None,
    newest_first: bool = False,
    local_times: ZoneInfo | None = None,
) -> tuple[list[tuple[Any, ...]], bool]:
    """One page of the account's messages (incoming included) as tuples of LISTED_FIELDS'
    values, by id.

    ``after_id`` continues a previous page (keyset paging: any depth costs the same).
    ``local_times``: the LISTED_TIMES come as text in that zone (LOCAL_FORMAT, to the
    second, None for none) instead of datetimes; PostgreSQL formats them, which saves
    parsing and converting three timestamps per row here. Tuples, not dicts: a 500-row
    page spent as long building and renaming dicts as PostgreSQL spent finding the rows.
    Returns the rows and whether more follow. Reads only.
    """
    messages = filtered_messages(account, query)
    # A date window is read in creation order from the (account, created_at, id) index;
    # ids follow creation time, so this is the id order in all but name. Walking the id
    # index instead would skip every row before the window first.
    by_time = any(
        t is not None for t in (query.created_from, query.created_to, query.created_before)
    )
    if after_id is not None:
        messages = _after(account, messages, after_id, newest_first=newest_first, by_time=by_time)
    order = ["created_at", "id"] if by_time else ["id"]
    if newest_first:
        order = ["-" + field for field in order]
    limit = max(1, min(limit, MAX_PAGE))
    page = messages.order_by(*order)
    fields = LISTED_FIELDS[: -len(LISTED_TIMES)]
    rows: list[tuple[Any, ...]]
    if local_times is not None and _zone_in_postgresql(local_times):
        local = {f"local_{name}": _local_text(name, local_times) for name in LISTED_TIMES}
        rows = list(page.annotate(**local).values_list(*fields, *local)[: limit + 1])
    else:
        rows = list(page.values_list(*LISTED_FIELDS)[: limit + 1])
        if local_times is not None:
            rows = [(*row[: len(fields)], *(_local(t, local_times) for t in row[len(fields) :]))
                    for row in rows]  # fmt: skip
    return rows[:limit], len(rows) > limit


def _local(value: datetime | None, zone: ZoneInfo) -> str | None:
    return None if value is None else f"{value.astimezone(zone):{LOCAL_FORMAT}}"


def _local_text(field: str, zone: ZoneInfo) -> Func:
    """``field`` as text in ``zone``, to the second (PostgreSQL's to_char truncates, as
    LOCAL_FORMAT does)."""
    local = Func(Value(zone.key), F(field), function="timezone", output_field=DateTimeField())
    return Func(local, Value("YYYY-MM-DD HH24:MI:SS"), function="to_char",
                output_field=CharField())  # fmt: skip


_POSTGRESQL_ZONES: dict[str, bool] = {}


def _zone_in_postgresql(zone: ZoneInfo) -> bool:
    """Whether PostgreSQL formats times in ``zone`` (its time zone names may lag Python's;
    asked once per zone and process)."""
    if connection.vendor != "postgresql":
        return False
    if zone.key not in _POSTGRESQL_ZONES:
        with connection.cursor() as cursor:
            cursor.execute("SELECT EXISTS (SELECT FROM pg_timezone_names WHERE name = %s)",
                           [zone.key])  # fmt: skip
            _POSTGRESQL_ZONES[zone.key] = bool(cursor.fetchone()[0])
    return _POSTGRESQL_ZONES[zone.key]


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
    return int(filtered_messages(account, query).count())


def cancel(account: Account, message_ids: Iterable[int], *, source: str = "") -> MoveResult:
    """Cancel the account's messages that no phone has sent yet. Idempotent.

    A message not yet confirmed by its phone never reaches it (a confirmation that comes
    later is refused). One the phone already confirmed is cancelled too, and the phone hears
    of it on its next poll; it may have sent it already, and a "sent" report then wins.
    """
    return lifecycle.move(message_ids, Status.CANCELLED, account=account, source=source or "cancel")


def expire_stale(*, limit: int = 5000) -> int:
    """Messages still waiting (NEW) past their own validity (``valid_until``), or whose send
    time is older than MESSAGE_EXPIRY_HOURS, end EXPIRED.

    Bounded per run (a backlog drains over runs); idempotent. Returns how many moved.
    """
    now = timezone.now()
    # Those past a validity of their own (SMSGate's ttl/validUntil), then those too old.
    sweeps = [(Q(valid_until__lt=now), "valid_until", "not sent before its validity ended")]
    if settings.MESSAGE_EXPIRY_HOURS:
        hours = settings.MESSAGE_EXPIRY_HOURS
        too_old = Q(send_at__lt=now - timedelta(hours=hours))
        sweeps.append((too_old, "send_at", f"not taken by a phone within {hours} h"))
    moved = 0
    for where, order, detail in sweeps:
        ids = list(
            Message.objects.filter(where, status=Status.NEW)
            .order_by(order)
            .values_list("id", flat=True)[:limit]
        )
        moved += len(
            lifecycle.move(
                ids, Status.EXPIRED, only_from=[Status.NEW], detail=detail, source="expiry"
            ).moved
        )
    return moved


def prune_history(*, limit: int = 10_000) -> int:
    """Delete status history and finished webhook events older than HISTORY_RETENTION_DAYS.

    Messages are kept. Bounded per run; idempotent. Returns how many rows went.
    """
    IdempotencyKey.objects.filter(created_at__lt=timezone.now() - IdempotencyKey.KEEP).delete()
    # A phone retries a webhook for about 45 h (the SMSGate app): its receipts are kept 3 days.
    PhoneWebhookReceipt.objects.filter(received_at__lt=timezone.now() - timedelta(days=3)).delete()
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
    # A pooled message's copy goes through its pool again (which picks the SIM anew).
    requests = [
        OutgoingSms(m.pool_id or m.device_id, m.phone, m.body, m.sim, None, m.urgent, m.customer_id)
        for m in originals.order_by("id")
        if m.pool_id is not None or m.device_id is not None
    ]
    return submit(account, requests) if requests else []


def reassign(
    account: Account,
    message_ids: Iterable[int],
    device_id: int,
    sim: int,
    *,
    keep_pool: bool = False,
) -> int:
    """Move the account's waiting messages to another device or SIM slot (out of their
    pool, if they were pooled, unless ``keep_pool``: a phone taking its own place).

    Only messages no phone holds (NEW) move; a lease not yet confirmed is first returned
    to the queue. The device must be the account's and have the slot. Compare-and-set on
    the status, so a message taken meanwhile stays where it is. Returns how many moved.
    """
    if sim not in queries.sim_slots_by_device(account, [device_id]).get(device_id, set()):
        raise InvalidMessage("Device not found, or it has no such SIM slot")
    ids = list(
        Message.objects.for_account(account)
        .filter(id__in=list(message_ids))
        .values_list("id", flat=True)
    )
    with transaction.atomic():
        # Not a phone that sends before it confirms (the SMSGate app): it may hold them.
        returnable = Message.objects.filter(id__in=ids).exclude(
            device__protocol=Device.Protocol.SMSGATE
        )
        lifecycle.return_unconfirmed(
            list(returnable.values_list("id", flat=True)), account=account, source="reassigned"
        )
        # The operator's choice takes a pooled message out of its pool (else the routing
        # sweep could move it on).
        out_of_pool: dict[str, Any] = {} if keep_pool else {"pool_id": None, "hold_reason": ""}
        moved = Message.objects.filter(id__in=ids, status=Status.NEW).update(
            device_id=device_id, sim=sim, **out_of_pool
        )
        transaction.on_commit(lambda: wake.ring([device_id]))
    return int(moved)


def mark_failed(account: Account, message_ids: Iterable[int], reason: str) -> MoveResult:
    """An operator's verdict: the messages failed (code 9). Only where that move is legal."""
    return lifecycle.move(
        message_ids,
        Status.GENERIC_FAILURE,
        account=account,
        detail=reason[:500],
        source="operator",
    )
