"""Devices: lookups scoped to an account, and their online state."""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, Exists, ExpressionWrapper, F, OuterRef, Q, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from devices import wake
from devices.models import Device, PairingCode, SimSlot
from gateway.models import Account
from gateway.phones import InvalidPhone, normalize_phone
from gateway.services import hash_token
from messaging.encoding import segment_count

log = logging.getLogger(__name__)

# A device polls every delay_between_requests seconds, and a long poll can hold a request
# open for up to LONG_POLL_SECONDS before the next one starts. Two missed polls plus that
# window and a margin for a slow network is when we call it offline.
LONG_POLL_SECONDS = 25
OFFLINE_GRACE_SECONDS = 30


class DeviceNotFound(Exception):
    pass


def get_device(account: Account, device_id: int) -> Device:
    """The account's device with this id; another account's id is simply not found."""
    try:
        return Device.objects.for_account(account).get(pk=device_id)
    except Device.DoesNotExist:
        raise DeviceNotFound(device_id) from None


def sim_slots_by_device(account: Account, device_ids: Iterable[int]) -> dict[int, set[int]]:
    """For each of the account's devices among ``device_ids``, the SIM slots it can send on.

    A device that has not reported its SIM inventory yet can send on slot 0 (every phone
    has one); once it has, only the slots it reported.
    """
    ids = [d for d in set(device_ids) if isinstance(d, int)]
    devices = {
        d: set[int]()
        for d in Device.objects.for_account(account).filter(pk__in=ids).values_list("pk", flat=True)
    }
    for device_id, slot in SimSlot.objects.filter(device_id__in=list(devices)).values_list(
        "device_id", "slot"
    ):
        devices[device_id].add(slot)
    for slots in devices.values():
        if not slots:
            slots.add(0)
    return devices


def offline_after(device: Device) -> timedelta:
    return timedelta(
        seconds=2 * device.delay_between_requests + LONG_POLL_SECONDS + OFFLINE_GRACE_SECONDS
    )


def is_online(device: Device, now: datetime | None = None) -> bool:
    if device.last_seen_at is None:
        return False
    return (now or timezone.now()) - device.last_seen_at <= offline_after(device)


def list_devices(account: Account) -> list[Device]:
    """The account's devices, newest first, with their SIM slots loaded."""
    return list(Device.objects.for_account(account).prefetch_related("sims").order_by("-id"))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def is_app_version_current(device: Device) -> bool:
    """Whether the device runs at least DEVICE_CURRENT_APP_VERSION (no setting: always)."""
    current = settings.DEVICE_CURRENT_APP_VERSION
    if not current or not device.app_version:
        return True
    return _version_key(device.app_version) >= _version_key(current)


# --- Pairing --------------------------------------------------------------------------------

PAIRING_CODE_TTL = timedelta(minutes=15)
# No 0/O, 1/I/L: read aloud or typed from a screen without mistakes.
_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
DEVICE_TOKEN_PREFIX = "dev_"  # noqa: S105 (a label, not a secret)


class PairingRefused(Exception):
    """The code is unknown, used or expired (one message for all: nothing to probe)."""


@dataclass(frozen=True)
class SimInfo:
    slot: int
    iccid: str = ""
    number: str = ""
    roaming: bool = False
    country_iso: str = ""
    carrier_name: str = ""


@dataclass(frozen=True)
class DeviceDetails:
    """What a phone tells about itself when it pairs (and, partly, in heartbeats)."""

    title: str = ""
    imei: str = ""
    serial_number: str = ""
    app_version: str = ""
    sims: tuple[SimInfo, ...] | None = None
    segments_per_minute: int | None = None


def _normalize_code(code: str) -> str:
    return "".join(c for c in code.upper() if c.isalnum())


def create_pairing_code(account: Account) -> tuple[PairingCode, str]:
    """A new single-use code for pairing one phone with the account, valid 15 minutes.

    The code itself (``ABCD-EFGH``, 40 bits) is returned once; only its hash is stored.
    """
    code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))
    pairing = PairingCode.objects.create(
        account=account,
        code_hash=hash_token(code),
        expires_at=timezone.now() + PAIRING_CODE_TTL,
    )
    return pairing, f"{code[:4]}-{code[4:]}"


def _apply_sims(device: Device, sims: tuple[SimInfo, ...]) -> None:
    """Make the device's SIM slots exactly the reported ones, keeping pacing state."""
    reported = {sim.slot: sim for sim in sims}
    SimSlot.objects.filter(device=device).exclude(slot__in=list(reported)).delete()
    for sim in reported.values():
        SimSlot.objects.update_or_create(
            device=device,
            slot=sim.slot,
            defaults={
                "iccid": sim.iccid[:32],
                "number": sim.number[:32],
                "roaming": sim.roaming,
                "country_iso": sim.country_iso[:8],
                "carrier_name": sim.carrier_name[:100],
            },
        )


def _apply_details(device: Device, details: DeviceDetails) -> None:
    device.title = details.title[:150] or device.title
    device.imei = details.imei[:32] or device.imei
    device.serial_number = details.serial_number[:64] or device.serial_number
    device.app_version = details.app_version[:32] or device.app_version
    if details.segments_per_minute:
        device.segments_per_minute = details.segments_per_minute


def _pair(account: Account, details: DeviceDetails) -> tuple[Device, str]:
    """Register the phone (or re-register it) and give it a new device token.

    A phone that pairs again with the same IMEI (or serial number, when it reports no IMEI)
    gets its existing device back, so re-installing the app never piles up duplicates: its
    old token stops working and leases it never confirmed return to the queue at once (the
    new installation cannot know them). Messages it had confirmed keep their deadline.
    """
    from messaging import services as messaging
    from messaging.models import Message, Status

    now = timezone.now()
    device = None
    if details.imei:
        device = Device.objects.for_account(account).filter(imei=details.imei[:32]).first()
    elif details.serial_number:
        device = (
            Device.objects.for_account(account)
            .filter(imei="", serial_number=details.serial_number[:64])
            .first()
        )
    if device is None:
        device = Device(account=account, title=details.title[:150] or "Phone")
    _apply_details(device, details)
    token = DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)
    device.token_hash = hash_token(token)
    device.paired_at = now
    device.last_seen_at = now
    is_new = device.pk is None
    device.save()
    if details.sims is not None:
        _apply_sims(device, details.sims)
    elif is_new:
        _apply_sims(device, (SimInfo(slot=0),))
    unconfirmed = Message.objects.filter(
        device=device, status=Status.TAKEN, confirmed_at__isnull=True
    ).values_list("id", flat=True)
    messaging.move(
        list(unconfirmed),
        Status.NEW,
        device=device,
        only_from=[Status.TAKEN],
        where=Q(confirmed_at__isnull=True),
        source="re-pair",
    )
    log.info("account %s: device %s paired", account.pk, device.pk)
    return device, token


def pair_with_code(code: str, details: DeviceDetails) -> tuple[Device, str]:
    """Trade a pairing code for a device and its token. The code works once."""
    digest = hash_token(_normalize_code(code))
    now = timezone.now()
    with transaction.atomic():
        pairing = (
            PairingCode.objects.select_for_update()
            .select_related("account")
            .filter(code_hash=digest, used_at__isnull=True, expires_at__gt=now)
            .first()
        )
        if pairing is None:
            raise PairingRefused()
        device, token = _pair(pairing.account, details)
        pairing.used_at = now
        pairing.device = device
        pairing.save(update_fields=["used_at", "device"])
    return device, token


def pair_with_login(account: Account, details: DeviceDetails) -> tuple[Device, str]:
    """Pair a phone whose user logged in with the account's email and password."""
    with transaction.atomic():
        return _pair(account, details)


def authenticate_device(token: str) -> Device | None:
    """The device whose token this is, or None (device API only)."""
    if not token.startswith(DEVICE_TOKEN_PREFIX) or len(token) > 200:
        return None
    return Device.objects.select_related("account").filter(token_hash=hash_token(token)).first()


# --- Heartbeat ------------------------------------------------------------------------------

# last_seen_at is written at most this often, so a phone polling every few seconds does
# not turn every empty poll into a write. is_online's margin covers it.
LAST_SEEN_WRITE_SECONDS = 15


@dataclass(frozen=True)
class Heartbeat:
    app_version: str | None = None
    sims: tuple[SimInfo, ...] | None = None
    battery_percent: int | None = None
    charging: bool | None = None
    signal_dbm: int | None = None


def heartbeat(device: Device, beat: Heartbeat | None = None, now: datetime | None = None) -> None:
    """Note that the device is alive, and what it reports. Writes only what changed.

    last_seen_at is refreshed when it is older than LAST_SEEN_WRITE_SECONDS; the extras
    when they differ from what is stored. Idempotent.
    """
    now = now or timezone.now()
    changes: dict[str, Any] = {}
    if device.last_seen_at is None or (now - device.last_seen_at).total_seconds() >= (
        LAST_SEEN_WRITE_SECONDS
    ):
        changes["last_seen_at"] = now
    if beat is not None:
        for field in ("app_version", "battery_percent", "charging", "signal_dbm"):
            value = getattr(beat, field)
            if value is not None and getattr(device, field) != value:
                changes[field] = value
        if beat.sims is not None:
            known = [
                SimInfo(s.slot, s.iccid, s.number, s.roaming, s.country_iso, s.carrier_name)
                for s in device.sims.all()
            ]
            if sorted(known, key=lambda s: s.slot) != sorted(beat.sims, key=lambda s: s.slot):
                _apply_sims(device, beat.sims)
    if changes:
        if "last_seen_at" not in changes:
            changes["last_seen_at"] = now
        Device.objects.filter(pk=device.pk).update(**changes)
        for field, value in changes.items():
            setattr(device, field, value)


# --- Poll: lease, pace, confirm -------------------------------------------------------------

PACING_WINDOW_SECONDS = 60  # the platform limit's window
MAX_WAIT_SECONDS = LONG_POLL_SECONDS
CANCEL_NOTICE_HOURS = 24


@dataclass(frozen=True)
class Lease:
    id: int
    phone: str
    body: str
    sim: int
    urgent: bool
    segments: int
    not_before_at: datetime
    lease_expires_at: datetime


@dataclass
class PollResult:
    messages: list[Lease]
    cancelled: list[int]
    next_poll_seconds: int
    # The identity of this poll's lease on ``messages``; confirm must present it.
    lease_id: uuid.UUID | None = None


def _lease_of(row: dict[str, Any]) -> Lease:
    return Lease(
        id=row["id"],
        phone=row["phone"],
        body=row["body"],
        sim=row["sim"],
        urgent=row["urgent"],
        segments=row["segments"],
        not_before_at=row["not_before_at"],
        lease_expires_at=row["lease_expires_at"],
    )


_LEASE_FIELDS = (
    "id",
    "phone",
    "body",
    "sim",
    "urgent",
    "segments",
    "not_before_at",
    "lease_expires_at",
)


class Pacer:
    """Schedules sends on one SIM: the device's fixed delay between two SMS (not for urgent
    ones) and at most ``limit`` segments in any 60 s (for all)."""

    def __init__(self, slot: SimSlot, delay: int, limit: int, now: datetime) -> None:
        self.slot = slot
        self.delay = delay
        self.limit = limit
        cutoff = now.timestamp() - PACING_WINDOW_SECONDS
        self.recent: list[list[float]] = [
            [float(t), int(n)] for t, n in (slot.recent_sends or []) if float(t) > cutoff
        ]
        self.next_send_at = slot.next_send_at

    def schedule(self, now: datetime, urgent: bool, segments: int) -> datetime:
        at = now.timestamp()
        if not urgent and self.next_send_at is not None:
            at = max(at, self.next_send_at.timestamp())
        while True:
            window = [(t, n) for t, n in self.recent if at - PACING_WINDOW_SECONDS < t <= at]
            used = sum(n for _, n in window)
            if not window or used + segments <= self.limit:
                break
            # Wait until the oldest send in the window leaves it.
            at = min(t for t, _ in window) + PACING_WINDOW_SECONDS + 0.001
        self.recent.append([at, segments])
        send_at = datetime.fromtimestamp(at, tz=UTC)
        following = send_at + timedelta(seconds=self.delay)
        if self.next_send_at is None or following > self.next_send_at:
            self.next_send_at = following
        return send_at

    def save(self) -> None:
        SimSlot.objects.filter(pk=self.slot.pk).update(
            next_send_at=self.next_send_at, recent_sends=self.recent
        )


def _open_leases(device: Device, sims: list[int]) -> list[dict[str, Any]]:
    from messaging.models import Message, Status

    return list(
        Message.objects.filter(
            device=device, status=Status.TAKEN, confirmed_at__isnull=True, sim__in=sims
        )
        .order_by("-urgent", "not_before_at", "id")
        .values(*_LEASE_FIELDS)
    )


def _due(device: Device, sims: list[int], now: datetime) -> Any:
    """This device's messages a poll may hand out now: NEW, due, not of a paused newsletter."""
    from contacts.models import Newsletter
    from messaging.models import Message, Status

    paused = Newsletter.objects.filter(pk=OuterRef("newsletter_id"), state="paused")
    return Message.objects.filter(
        device=device, sim__in=sims, status=Status.NEW, send_at__lte=now
    ).filter(~Exists(paused))


def _cancellations(device: Device, now: datetime) -> list[int]:
    from messaging.models import Message, Status

    return list(
        Message.objects.filter(
            device=device,
            status=Status.CANCELLED,
            confirmed_at__isnull=False,
            status_changed_at__gte=now - timedelta(hours=CANCEL_NOTICE_HOURS),
        )
        .order_by("id")
        .values_list("id", flat=True)[:100]
    )


def return_expired_leases(device: Device | None = None, *, limit: int = 1000) -> int:
    """Unconfirmed leases past their expiry go back to NEW (the phone never got them or
    crashed before confirming). Bounded; idempotent. Returns how many moved."""
    from messaging import services as messaging
    from messaging.models import Message, Status

    now = timezone.now()
    expired = Message.objects.filter(
        status=Status.TAKEN, confirmed_at__isnull=True, lease_expires_at__lt=now
    )
    if device is not None:
        expired = expired.filter(device=device)
    ids = list(expired.order_by("lease_expires_at").values_list("id", flat=True)[:limit])
    result = messaging.move(
        ids,
        Status.NEW,
        only_from=[Status.TAKEN],
        # Re-checked under the row lock: a confirmation that won the race keeps its lease.
        where=Q(confirmed_at__isnull=True, lease_expires_at__lt=now),
        source="lease expired",
    )
    return len(result.moved)


def poll(
    device: Device, sims: list[int] | None = None, *, now: datetime | None = None
) -> PollResult:
    """Hand the device up to batch_size due messages for the SIM slots asked for.

    First its own unconfirmed leases again (a re-poll after a lost answer gets the same
    leases, not new copies), then new claims: NEW, send time reached, urgent first, then
    send time, then id; each given a paced not-before time, and only those due within the
    next poll interval (the rest stay NEW, still cancellable). Claims lock rows with SKIP
    LOCKED on PostgreSQL; SQLite serializes writers. A poll with nothing to hand out only
    reads.
    """
    from messaging import services as messaging
    from messaging.models import Message, Status

    now = now or timezone.now()
    # The device is authenticated already: only its SIM slots are read.
    all_slots = sorted(SimSlot.objects.filter(device=device).values_list("slot", flat=True)) or [0]
    sims = sorted(set(sims) & set(all_slots)) if sims is not None else all_slots
    leases = _open_leases(device, sims)
    if any(row["lease_expires_at"] < now for row in leases):
        return_expired_leases(device)
        leases = _open_leases(device, sims)
    lease_id = uuid.uuid4()
    if leases:
        leases = _take_over_leases(device, leases, lease_id)
    cancelled = _cancellations(device, now)
    room = device.batch_size - len(leases)
    horizon = now + timedelta(seconds=device.delay_between_requests + 30)
    if room > 0 and device.enabled and _due(device, sims, now).exists():
        claimed: dict[int, dict[str, Any]] = {}
        with transaction.atomic():
            slots = {
                s.slot: s
                for s in SimSlot.objects.select_for_update().filter(device=device, slot__in=sims)
            }
            for sim in sims:
                if room <= 0 or sim not in slots:
                    continue
                pacer = Pacer(
                    slots[sim], device.delay_between_sms or 0, device.segments_per_minute, now
                )
                candidates = (
                    _due(device, [sim], now)
                    .order_by("-urgent", "send_at", "id")
                    .select_for_update(skip_locked=True)
                    .values_list("id", "urgent", "segments")[:room]
                )
                for message_id, urgent, segments in candidates:
                    send_at = pacer.schedule(now, urgent, segments)
                    if send_at > horizon:
                        pacer.recent.pop()  # not handed out now: give the slot back
                        break
                    claimed[message_id] = {
                        "not_before_at": send_at,
                        "lease_expires_at": send_at
                        + timedelta(seconds=settings.DEVICE_LEASE_SECONDS),
                    }
                    room -= 1
                pacer.save()
            moved = messaging.move(
                list(claimed),
                Status.TAKEN,
                device=device,
                only_from=[Status.NEW],
                per_message=claimed,
                extra={"lease_id": lease_id},
                source=f"poll by device {device.pk}",
            ).moved
        if moved:
            fresh = Message.objects.filter(id__in=moved).values(*_LEASE_FIELDS)
            leases += sorted(fresh, key=lambda r: (not r["urgent"], r["not_before_at"], r["id"]))
    return PollResult(
        messages=[_lease_of(row) for row in leases],
        cancelled=cancelled,
        next_poll_seconds=device.delay_between_requests,
        lease_id=lease_id if leases else None,
    )


def _take_over_leases(
    device: Device, leases: list[dict[str, Any]], lease_id: uuid.UUID
) -> list[dict[str, Any]]:
    """Give the device's open (unconfirmed) leases to this poll; the rows it really got.

    A re-poll after a lost answer must get the same messages again, so it takes over their
    lease, and the earlier poll's lease id stops being accepted by confirm. Of two processes
    polling with one device token, only the one that polled last can confirm, so no message
    is ever confirmed to both. A lease confirmed meanwhile is not taken over (and not
    returned). Compare-and-set on "still leased, unconfirmed".
    """
    from messaging.models import Message, Status

    ids = [row["id"] for row in leases]
    Message.objects.filter(
        id__in=ids, device=device, status=Status.TAKEN, confirmed_at__isnull=True
    ).update(lease_id=lease_id)
    taken = set(
        Message.objects.filter(
            id__in=ids, lease_id=lease_id, confirmed_at__isnull=True
        ).values_list("id", flat=True)
    )
    return [row for row in leases if row["id"] in taken]


def next_due_in(device: Device, sims: list[int], now: datetime) -> float | None:
    """Seconds until this device's next scheduled message falls due (for long polls)."""
    from messaging.models import Message, Status

    first = (
        Message.objects.filter(device=device, sim__in=sims, status=Status.NEW, send_at__gt=now)
        .order_by("send_at")
        .values_list("send_at", flat=True)
        .first()
    )
    return None if first is None else (first - now).total_seconds()


@dataclass
class ConfirmResult:
    confirmed: list[int]
    refused: list[int]
    # Among the refused: still leased to this device, but under another poll's lease (a
    # later poll with the same device token took it over). Not this poller's to send.
    superseded: list[int] = dataclass_field(default_factory=list)


def confirm(device: Device, message_ids: list[int], lease_id: uuid.UUID | str) -> ConfirmResult:
    """The phone has the messages and will send them: they are never handed out again.

    Confirms this device's live, unconfirmed leases held by the poll that answered with
    ``lease_id``; confirming again with the same lease id changes nothing and answers
    confirmed. A lease that expired, a cancelled message, another device's, or one whose
    lease another poll holds (or confirmed) is refused, and the phone must not send it.
    Each confirmed message owes an outcome by its not-before time plus
    DEVICE_OUTCOME_SECONDS, else it ends UNKNOWN (never re-sent).
    """
    from messaging.models import Message, Status

    now = timezone.now()
    ids = sorted({int(i) for i in message_ids})
    try:
        lease = lease_id if isinstance(lease_id, uuid.UUID) else uuid.UUID(str(lease_id))
    except ValueError:
        return ConfirmResult(confirmed=[], refused=ids)
    mine = Message.objects.filter(id__in=ids, device=device, status=Status.TAKEN)
    # One compare-and-set UPDATE: only live, unconfirmed leases of this poll change.
    mine.filter(lease_id=lease, confirmed_at__isnull=True, lease_expires_at__gte=now).update(
        confirmed_at=now,
        outcome_deadline_at=ExpressionWrapper(
            Greatest(Coalesce(F("not_before_at"), Value(now)), Value(now))
            + timedelta(seconds=settings.DEVICE_OUTCOME_SECONDS),
            output_field=DateTimeField(),
        ),
    )
    confirmed, superseded = [], []
    for message_id, holder, confirmed_at in mine.order_by("id").values_list(
        "id", "lease_id", "confirmed_at"
    ):
        if holder != lease:
            superseded.append(message_id)
        elif confirmed_at is not None:
            confirmed.append(message_id)
    done = set(confirmed)
    return ConfirmResult(
        confirmed=confirmed, refused=[i for i in ids if i not in done], superseded=superseded
    )


def settle_overdue(*, limit: int = 1000) -> int:
    """Confirmed messages whose outcome never came by their deadline end UNKNOWN.

    They are not sent again: the phone took them and may have sent them. Bounded;
    idempotent. Returns how many moved.
    """
    from messaging import services as messaging
    from messaging.models import Message, Status

    now = timezone.now()
    ids = list(
        Message.objects.filter(
            status=Status.TAKEN, confirmed_at__isnull=False, outcome_deadline_at__lt=now
        )
        .order_by("outcome_deadline_at")
        .values_list("id", flat=True)[:limit]
    )
    return len(
        messaging.move(
            ids,
            Status.UNKNOWN,
            only_from=[Status.TAKEN],
            detail="no outcome reported by the phone before the deadline",
            source="deadline",
        ).moved
    )


# --- Reports and incoming SMS ---------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    message_id: int
    status: int  # an outcome code: 6, 7, 8, 9-12, 100, 101
    error: str = ""
    parts: int | None = None


@dataclass
class ReportResult:
    message_id: int
    result: str  # "applied", "unchanged" or "refused"
    status: int | None  # the message's status afterwards (None: not this device's)


def report(device: Device, reports: list[Report]) -> list[ReportResult]:
    """Apply the phone's outcome reports; each item on its own, idempotent, monotonic.

    A report about another device's (or no) message is refused for that item only. Moves
    that the lifecycle forbids (a "sent" after "delivered") are refused and change nothing.
    """
    from messaging import services as messaging
    from messaging.models import OUTCOMES, Message, Status

    # Applied in the order given; consecutive items of the same kind share one move.
    results: list[str] = []
    for (target, error), group in groupby(reports, key=lambda r: (r.status, r.error)):
        items = list(group)
        if target not in OUTCOMES:
            results += ["refused"] * len(items)
            continue
        parts = {i.message_id: {"parts_sent": i.parts} for i in items if i.parts is not None}
        moved = messaging.move(
            [i.message_id for i in items],
            Status(target),
            device=device,
            detail=error,
            per_message=parts or None,
            source=f"device {device.pk}",
        )
        applied, unchanged = set(moved.moved), set(moved.unchanged)
        for item in items:
            if item.message_id in applied:
                results.append("applied")
                # The same report again in this group found it done: the move happened once.
                applied.discard(item.message_id)
                unchanged.add(item.message_id)
            else:
                results.append("unchanged" if item.message_id in unchanged else "refused")
    statuses = dict(
        Message.objects.filter(id__in=[r.message_id for r in reports], device=device).values_list(
            "id", "status"
        )
    )
    return [
        ReportResult(item.message_id, result, statuses.get(item.message_id))
        for item, result in zip(reports, results, strict=True)
    ]


@dataclass(frozen=True)
class IncomingSms:
    external_id: str
    sender: str
    body: str
    sim: int = 0
    received_at: datetime | None = None


def receive(device: Device, items: list[IncomingSms]) -> dict[str, int]:
    """Store SMS the phone received as INCOMING; the phone's own id makes it idempotent.

    A new SMS whose first word is an opt-out/opt-in keyword updates the sender's contact.
    Returns {phone's id: our message id}, the same ids when an upload is repeated.
    """
    from contacts.services import apply_keywords
    from messaging import webhooks
    from messaging.models import Message, Status

    now = timezone.now()
    rows = []
    for item in items:
        try:
            sender = normalize_phone(item.sender)
        except InvalidPhone:
            sender = item.sender.strip()[:32]  # alphanumeric senders ("VODAFONE") stay as sent
        rows.append(
            Message(
                account_id=device.account_id,
                device=device,
                sim=item.sim,
                phone=sender,
                phone_raw=item.sender[:64],
                body=item.body,
                status=Status.INCOMING,
                send_at=item.received_at or now,
                sent_at=item.received_at or now,
                segments=segment_count(item.body) if item.body else 1,
                external_id=item.external_id[:64],
                created_at=now,
                status_changed_at=now,
            )
        )
    external_ids = [i.external_id[:64] for i in items]
    mine = Message.objects.filter(
        device=device, status=Status.INCOMING, external_id__in=external_ids
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
        # STOP / START from a contact changes its newsletter consent, once per SMS.
        apply_keywords(device.account_id, fresh)
        webhooks.received([message_id for message_id, _, _ in fresh])
    return stored


def announce_device_states(now: datetime | None = None) -> int:
    """Devices whose online state changed since last announced get a webhook event.

    Run by beat. The comparison is per device (each has its own poll interval); the
    announced state is updated with a compare-and-set, so two sweeps never announce twice.
    Returns how many changed.
    """
    from messaging import webhooks

    now = now or timezone.now()
    changes = []
    with transaction.atomic():
        for device in Device.objects.only(
            "pk",
            "account_id",
            "title",
            "last_seen_at",
            "delay_between_requests",
            "announced_online",
        ).iterator(chunk_size=2000):
            online = is_online(device, now)
            if device.announced_online is online:
                continue
            if device.announced_online is None and not online:
                # Never announced and offline: a device that has not started yet.
                Device.objects.filter(pk=device.pk).update(announced_online=False)
                continue
            if Device.objects.filter(pk=device.pk, announced_online=device.announced_online).update(
                announced_online=online
            ):
                changes.append(
                    (device.account_id, device.pk, device.title, online, device.last_seen_at)
                )
        webhooks.device_state_changed(changes)
    return len(changes)


@dataclass(frozen=True)
class PairingInstructions:
    code: str
    expires_at: datetime
    uri: str  # what the QR code holds, for apps that scan it
    command: str  # one line for a terminal (Termux on the phone, or a modem host)
    qr_svg: str


def pairing_instructions(pairing: PairingCode, code: str, server: str) -> PairingInstructions:
    """How to pair a phone with this code: QR code, app URI and a one-line agent command."""
    import segno

    server = server.rstrip("/")
    uri = "smsgw://pair?" + urlencode({"server": server, "code": code})
    command = (
        f"curl -fsSLo sms_agent.py {server}/api/device/v1/agent.py && "
        f"python3 sms_agent.py pair --server {server} --code {code} && "
        "python3 sms_agent.py run --sender termux"
    )
    svg = segno.make(uri, error="m").svg_inline(scale=5, dark="#111", light="#fff")
    return PairingInstructions(code, pairing.expires_at, uri, command, svg)


def queue_depth(device: Device) -> dict[str, int]:
    """Messages of the device waiting in the queue, and held by the phone."""
    from django.db.models import Count

    from messaging.models import Message, Status

    counts = dict(
        Message.objects.filter(device=device, status__in=[Status.NEW, Status.TAKEN])
        .values("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    return {"waiting": counts.get(Status.NEW, 0), "with_phone": counts.get(Status.TAKEN, 0)}


SETTABLE = (
    "title",
    "number",
    "enabled",
    "delay_between_sms",
    "delay_between_requests",
    "batch_size",
)


def update_settings(account: Account, device_id: int, **changes: Any) -> Device:
    """Change a device's operator settings (delays, batch size, enabled, name). Only those
    fields: what the phone reports, and the device's owner, are not settable."""
    device = get_device(account, device_id)
    unknown = set(changes) - set(SETTABLE)
    if unknown:
        raise ValueError(f"not settable: {sorted(unknown)}")
    for field, value in changes.items():
        setattr(device, field, value)
    device.save(update_fields=list(changes) or None)
    if changes.get("enabled"):
        wake.ring([device.pk])
    return device
