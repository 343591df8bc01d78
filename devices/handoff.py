"""The hand-off of messages to phones: poll (lease and pace), long-poll wait, confirm,
report outcomes, upload incoming SMS, and the sweeps that settle what phones left open.

This is what a device protocol adapter calls (our device API, and any other phone
protocol): it never touches the message rows itself. The status moves and lease columns
are written by ``messaging.lifecycle``'s hand-off verbs; this module adds the device's
side: which SIM slots, how many at once, pacing per SIM (``Pacer``), and waiting.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from contacts import services as contacts
from contacts.models import Newsletter
from devices import pools, wake
from devices.models import Device, SimSlot
from devices.queries import LONG_POLL_SECONDS
from gateway import metrics
from messaging import lifecycle
from messaging import services as messaging
from messaging.lifecycle import ConfirmResult, Outcome
from messaging.models import UNCONFIRMED, Message, Status, served_id
from messaging.services import IncomingSms

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
    send_at: datetime
    created_at: datetime
    pool_id: int | None = None
    # The message's own validity (SMSGate's ttl/validUntil), if it has one.
    until: datetime | None = None
    # A data SMS to this port (body: base64), and end-to-end encrypted content.
    data_port: int | None = None
    encrypted: bool = False
    delivery_report: bool = True

    @property
    def served_id(self) -> str:
        return served_id(self.id, self.created_at)

    @property
    def valid_until(self) -> datetime:
        return valid_until(self.send_at, self.not_before_at if self.pool_id else None, self.until)


@dataclass
class PollResult:
    messages: list[Lease]
    cancelled: list[int]
    next_poll_seconds: int
    # The identity of this poll's lease on ``messages``; confirm must present it.
    lease_id: uuid.UUID | None = None
    # Confirmed pooled messages the server asks the phone to give back (devices.pools).
    revoke: list[int] = field(default_factory=list)


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
        send_at=row["send_at"],
        created_at=row["created_at"],
        pool_id=row["pool_id"],
        until=row["valid_until"],
        data_port=row["data_port"],
        encrypted=row["encrypted"],
        delivery_report=row["delivery_report"],
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
    "send_at",
    "created_at",
    "pool_id",
    "valid_until",
    "data_port",
    "encrypted",
    "delivery_report",
)

# What a claim reads of each candidate: what it is served with, and what its move needs.
_CLAIM_FIELDS = tuple(
    dict.fromkeys(
        [f for f in _LEASE_FIELDS if f not in ("not_before_at", "lease_expires_at")]
        + list(lifecycle.LOCKED_COLUMNS)
    )
)

# A phone protocol whose phone starts sending without confirming first (the SMSGate app:
# its first state report is the confirmation) cannot have a lease return to the queue while
# the phone may still send it. Its leases are fenced instead: the phone is told the
# message's expiry (validUntil) and refuses to send after it, and the lease lasts until then
# plus this margin for a phone clock running late.
FENCE_MARGIN = timedelta(minutes=10)
# With MESSAGE_EXPIRY_HOURS=0 (waiting messages never expire) a fence still needs a time.
DEFAULT_FENCE_HOURS = 7 * 24


def valid_until(
    send_at: datetime, pooled_at: datetime | None = None, until: datetime | None = None
) -> datetime:
    """The last moment a phone may send a message whose send time is ``send_at``; for a
    pooled one handed out for ``pooled_at``, sooner (POOL_VALID_SECONDS after it), so that
    what a silent phone was served can go back to the pool (docs/pools.md); never after the
    message's own validity ``until``."""
    last = send_at + timedelta(hours=settings.MESSAGE_EXPIRY_HOURS or DEFAULT_FENCE_HOURS)
    if pooled_at is not None:
        last = min(last, pooled_at + timedelta(seconds=settings.POOL_VALID_SECONDS))
    return last if until is None else min(last, until)


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
        self._before = self.next_send_at  # next_send_at before the last schedule()

    def schedule(self, now: datetime, urgent: bool, segments: int) -> datetime:
        self._before = self.next_send_at
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

    def undo(self) -> None:
        """Forget the last schedule(): that message is not handed out now."""
        self.recent.pop()
        self.next_send_at = self._before

    def save(self) -> None:
        SimSlot.objects.filter(pk=self.slot.pk).update(
            next_send_at=self.next_send_at, recent_sends=self.recent
        )


def _slots(device: Device, sims: list[int] | None) -> list[int]:
    """The SIM slots a poll is for: those asked for that the device has (default: all)."""
    # The device is authenticated already: only its SIM slots are read.
    all_slots = sorted(SimSlot.objects.filter(device=device).values_list("slot", flat=True)) or [0]
    return sorted(set(sims) & set(all_slots)) if sims is not None else all_slots


def _open_leases(device: Device, sims: list[int]) -> list[dict[str, Any]]:
    return list(
        Message.objects.filter(UNCONFIRMED, device=device, sim__in=sims)
        .order_by("-urgent", "not_before_at", "id")
        .values(*_LEASE_FIELDS)
    )


def _due(device: Device, sims: list[int], now: datetime) -> Any:
    """This device's messages a poll may hand out now: NEW, due, not of a paused newsletter."""
    paused = Newsletter.objects.filter(pk=OuterRef("newsletter_id"), state=Newsletter.State.PAUSED)
    return Message.objects.filter(
        Q(valid_until__isnull=True) | Q(valid_until__gt=now),
        device=device,
        sim__in=sims,
        status=Status.NEW,
        send_at__lte=now,
    ).filter(~Exists(paused))


# Confirmed pooled messages the phone is asked to give back (devices.pools).
_REVOKE = Q(status=Status.TAKEN, revoke_requested_at__isnull=False)

# Both lists in one statement; each part reads its own partial index with its own limit.
_MESSAGES = Message._meta.db_table
_CANCELLATIONS_SQL = (
    f"SELECT 0, id FROM (SELECT id FROM {_MESSAGES} WHERE device_id = %s AND status = %s "  # noqa: S608 - model names
    "AND confirmed_at IS NOT NULL AND status_changed_at >= %s ORDER BY id LIMIT 100) c "
    "UNION ALL "
    f"SELECT 1, id FROM (SELECT id FROM {_MESSAGES} WHERE device_id = %s AND status = %s "
    "AND revoke_requested_at IS NOT NULL ORDER BY id LIMIT 100) r"
)


def _cancellations(device: Device, now: datetime) -> tuple[list[int], list[int]]:
    """What the phone must hear of: (cancelled after it confirmed them, asked back), each
    list at most 100, in id order, so neither can crowd out the other."""
    since = Message._meta.get_field("status_changed_at").get_db_prep_value(
        now - timedelta(hours=CANCEL_NOTICE_HOURS), connection
    )
    with connection.cursor() as cursor:
        cursor.execute(
            _CANCELLATIONS_SQL,
            [device.pk, int(Status.CANCELLED), since, device.pk, int(Status.TAKEN)],
        )
        rows = cursor.fetchall()
    lists: tuple[list[int], list[int]] = ([], [])
    for which, message_id in sorted(rows):
        lists[which].append(message_id)
    return lists


def return_expired_leases(device: Device | None = None, *, limit: int = 1000) -> int:
    """Unconfirmed leases past their expiry go back to NEW (the phone never got them or
    crashed before confirming). Bounded; idempotent. Returns how many moved."""
    now = timezone.now()
    expired = Message.objects.filter(UNCONFIRMED, lease_expires_at__lt=now)
    if device is not None:
        expired = expired.filter(device=device)
    rows = list(
        expired.order_by("lease_expires_at").values_list("id", "pool_id", "device__protocol")[
            :limit
        ]
    )
    # A pooled message served to a phone that sends before it confirms (the SMSGate app)
    # may have gone out although no report came: it is not offered to another phone. Any
    # other lease goes back to its own phone's queue, where the same id is offered again.
    unreported = [i for i, pool, protocol in rows if pool and protocol == Device.Protocol.SMSGATE]
    returned = [
        i for i, pool, protocol in rows if not (pool and protocol == Device.Protocol.SMSGATE)
    ]
    moved = lifecycle.return_unconfirmed(returned, expired_before=now, source="lease expired")
    given_up = lifecycle.give_up_unreported(unreported, expired_before=now, source="lease expired")
    if moved:
        metrics.LEASES_RETURNED.inc(len(moved))
    if given_up:
        metrics.OUTCOMES_OVERDUE.inc(len(given_up))
    return len(moved) + len(given_up)


def poll(
    device: Device,
    sims: list[int] | None = None,
    *,
    now: datetime | None = None,
    fenced: bool = False,
) -> PollResult:
    """Hand the device up to batch_size due messages for the SIM slots asked for.

    First its own unconfirmed leases again, taken over by this poll (a re-poll after a
    lost answer gets the same leases, not new copies, under a new lease id), then new
    claims: NEW, send time reached, urgent first, then send time, then id; each given a
    paced not-before time, and only those due within the next poll interval (the rest stay
    NEW, still cancellable). Claims lock rows with SKIP LOCKED on PostgreSQL; SQLite
    serializes writers. A poll with nothing to hand out only reads. ``fenced``: the leases
    last until the message's valid_until plus FENCE_MARGIN (see FENCE_MARGIN).
    """
    now = now or timezone.now()
    sims = _slots(device, sims)
    leases = _open_leases(device, sims)
    if any(row["lease_expires_at"] < now for row in leases):
        return_expired_leases(device)
        leases = _open_leases(device, sims)
    lease_id = uuid.uuid4()
    if leases:
        held = lifecycle.take_over_leases(device, [row["id"] for row in leases], lease_id)
        leases = [row for row in leases if row["id"] in held]
    cancelled, revoke = _cancellations(device, now)
    room = device.batch_size - len(leases)
    horizon = now + timedelta(seconds=device.delay_between_requests + 30)
    if room > 0 and device.enabled and _due(device, sims, now).exists():
        claims: dict[int, tuple[datetime, datetime]] = {}
        claimed: dict[int, dict[str, Any]] = {}
        with transaction.atomic():
            slots = {
                s.slot: s
                for s in SimSlot.objects.select_for_update().filter(device=device, slot__in=sims)
            }
            for sim in sims:
                if room <= 0 or sim not in slots:
                    continue
                slot = slots[sim]
                # The SIM's caps (devices.pools), counted under the slot's lock.
                quota = (
                    pools.quota(slot, device.account_id, now, replaces=device.replaces_id)
                    if slot.has_caps
                    else None
                )
                if quota is not None and (quota.blocked or quota.left == 0):
                    continue
                pacer = Pacer(slot, device.delay_between_sms or 0, device.segments_per_minute, now)
                # Read whole, as they are served, under the lock the lease needs.
                candidates = (
                    lifecycle.lockable(_due(device, [sim], now))
                    .order_by("-urgent", "send_at", "id")
                    .select_for_update(skip_locked=True, of=("self",))
                    .values(*_CLAIM_FIELDS)[:room]
                )
                for row in candidates:
                    message_id, urgent, due_at = row["id"], row["urgent"], row["send_at"]
                    pool_id, until = row["pool_id"], row["valid_until"]
                    if quota is not None and not quota.admit(row["phone"]):
                        continue
                    send_at = pacer.schedule(now, urgent, row["segments"])
                    if until is not None and send_at > until:
                        # Paced past its own validity: never handed out (it expires).
                        pacer.undo()
                        continue
                    # Not due within this poll's horizon, or paced into the SIM's quiet
                    # hours: not handed out now (give the pacing slot back).
                    if send_at > horizon or (quota is not None and quota.quiet_at(send_at)):
                        pacer.undo()
                        break
                    expires = (
                        valid_until(due_at, send_at if pool_id else None, until) + FENCE_MARGIN
                        if fenced
                        else send_at + timedelta(seconds=settings.DEVICE_LEASE_SECONDS)
                    )
                    claims[message_id] = (send_at, expires)
                    claimed[message_id] = row
                    room -= 1
                pacer.save()
            moved = lifecycle.lease(
                device,
                claims,
                lease_id,
                source=f"poll by device {device.pk}",
                locked={
                    i: tuple(row[c] for c in lifecycle.LOCKED_COLUMNS) for i, row in claimed.items()
                },
            )
        fresh = [
            {**claimed[i], "not_before_at": claims[i][0], "lease_expires_at": claims[i][1]}
            for i in moved
        ]
        leases += sorted(fresh, key=lambda r: (not r["urgent"], r["not_before_at"], r["id"]))
    return PollResult(
        messages=[_lease_of(row) for row in leases],
        cancelled=cancelled,
        next_poll_seconds=device.delay_between_requests,
        lease_id=lease_id if leases else None,
        revoke=revoke,
    )


def next_due_in(device: Device, sims: list[int], now: datetime) -> float | None:
    """Seconds until this device's next scheduled message falls due (for long polls)."""
    first = (
        Message.objects.filter(device=device, sim__in=sims, status=Status.NEW, send_at__gt=now)
        .order_by("send_at")
        .values_list("send_at", flat=True)
        .first()
    )
    return None if first is None else (first - now).total_seconds()


# Long polls hold a web thread while they wait; at most this many wait at once per process,
# so waiting phones can never take every thread from the APIs. Beyond it, polls answer at
# once (the phone then polls at its interval).
_waiters = threading.BoundedSemaphore(settings.LONG_POLL_MAX_WAITERS)


def poll_or_wait(device: Device, sims: list[int] | None, wait: int) -> PollResult:
    """poll(), and when it has nothing and the phone allows ``wait`` seconds, wait for work.

    The wait ends as soon as a message for the device is created (the Redis doorbell), or
    a scheduled one falls due, or ``wait`` passes. Without Redis, or when every waiting
    slot of this process is in use, it answers at once: both are normal answers.
    """
    result = poll(device, sims)
    if result.messages or wait <= 0 or not wake.enabled() or not _waiters.acquire(False):
        return result
    try:
        deadline = time.monotonic() + min(wait, MAX_WAIT_SECONDS)
        slots = _slots(device, sims)
        with wake.Doorbell(device.pk) as bell:
            while True:
                # Checked after subscribing, so a ring between check and wait is not lost.
                result = poll(device, sims)
                remaining = deadline - time.monotonic()
                if result.messages or remaining <= 0:
                    return result
                due = next_due_in(device, slots, timezone.now())
                step = remaining if due is None else min(remaining, due + 0.05)
                # A waiting phone must not pin a database connection.
                connection.close()
                bell.wait(step)
    finally:
        _waiters.release()


def confirm(
    device: Device, message_ids: list[int], lease_id: uuid.UUID | str | None
) -> ConfirmResult:
    """The phone confirms what the poll ``lease_id`` offered: see lifecycle.confirm_lease."""
    return lifecycle.confirm_lease(device, message_ids, lease_id)


@dataclass
class ReportResult:
    message_id: int
    result: str  # "applied", "unchanged" or "refused"
    status: int | None  # the message's status afterwards (None: not this device's)


# A report's "status" that is no outcome: the phone has not sent the message it was asked
# to give back (PollResult.revoke) and never will (devices.pools.take_back).
REVOKED = 0


def report(device: Device, outcomes: list[Outcome]) -> list[ReportResult]:
    """Apply the phone's outcome reports; each item on its own, idempotent, monotonic.

    A report about another device's (or no) message is refused for that item only. Moves
    that the lifecycle forbids (a "sent" after "delivered") are refused and change nothing.
    REVOKED items hand messages back to their pool (applied), or are refused where no
    revocation was asked for; "unchanged" when it was handed back already.
    """
    given = [o.message_id for o in outcomes if o.status == REVOKED]
    answers = _give_back(device, given) if given else {}
    recorded = iter(lifecycle.record_outcomes(device, [o for o in outcomes if o.status != REVOKED]))
    results = []
    for item in outcomes:
        if item.status != REVOKED:
            results.append(next(recorded))
            continue
        results.append(answers[item.message_id])
        if answers[item.message_id] == "applied":  # the same item again finds it done
            answers[item.message_id] = "unchanged"
    # Each message's status afterwards: the target of its last outcome applied (or found
    # done); read back only for the others.
    statuses: dict[int, int | None] = {}
    for item, result in zip(outcomes, results, strict=True):
        if item.status != REVOKED and result != "refused":
            statuses[item.message_id] = int(item.status)
    unknown = {o.message_id for o in outcomes} - statuses.keys()
    if unknown:
        statuses.update(
            Message.objects.filter(id__in=unknown, device=device).values_list("id", "status")
        )
    return [
        ReportResult(item.message_id, result, statuses.get(item.message_id))
        for item, result in zip(outcomes, results, strict=True)
    ]


def _give_back(device: Device, message_ids: list[int]) -> dict[int, str]:
    """Per id: "applied" (handed back to its pool now), "unchanged" (this phone had handed
    it back before) or "refused" (nobody asked for it back)."""
    moved = set(pools.take_back(device, message_ids).moved)
    before = set(
        Message.objects.filter(
            id__in=[i for i in message_ids if i not in moved], revoked_from=device.pk
        ).values_list("id", flat=True)
    )
    return {
        i: "applied" if i in moved else "unchanged" if i in before else "refused"
        for i in message_ids
    }


def record(
    device: Device, outcomes: list[Outcome], *, locked: list[Served] | None = None
) -> list[str]:
    """report() for a protocol that needs no answer per item (the SMSGate app). ``locked``:
    those messages as find_served read them in this transaction, unchanged since."""
    rows = {s.id: s.locked for s in locked} if locked else None
    return lifecycle.record_outcomes(device, outcomes, locked=rows)


def receive(device: Device, items: list[IncomingSms]) -> dict[str, int]:
    """Store SMS the phone received as INCOMING; the phone's own id makes it idempotent.

    A new SMS whose first word is an opt-out/opt-in keyword updates the sender's contact
    (once per SMS). Returns {phone's id: our message id}, the same ids when an upload is
    repeated.
    """
    with transaction.atomic():
        stored, fresh = messaging.store_incoming(device, items)
        contacts.apply_keywords(device.account_id, fresh)
    return stored


# --- For phones that confirm by reporting (the SMSGate app) ---------------------------------


def confirm_held(device: Device, message_ids: list[int]) -> ConfirmResult:
    """The phone says it holds these messages (any state report): confirm them.

    For a protocol with no lease id in its reports: whichever of this device's polls holds
    the lease, it is the phone's. A message whose fenced lease ran out and went back to the
    queue (still this device's, still waiting) is leased to the phone again and confirmed:
    the phone has it, so it must never go to another. Idempotent.
    """
    now = timezone.now()
    held = list(
        Message.objects.filter(UNCONFIRMED, id__in=message_ids, device=device).values_list(
            "id", "lease_id"
        )
    )
    waiting = list(
        Message.objects.filter(id__in=message_ids, device=device, status=Status.NEW).values_list(
            "id", flat=True
        )
    )
    if waiting:
        lease_id = uuid.uuid4()
        expires = now + timedelta(seconds=settings.DEVICE_LEASE_SECONDS)
        moved = lifecycle.lease(
            device,
            {i: (now, expires) for i in waiting},
            lease_id,
            source=f"reported by device {device.pk}",
        )
        held += [(i, lease_id) for i in moved]
    result = ConfirmResult(confirmed=[], refused=[])
    by_lease: dict[uuid.UUID, list[int]] = {}
    for message_id, lease in held:
        if lease is not None:
            by_lease.setdefault(lease, []).append(message_id)
    for lease, ids in by_lease.items():
        part = lifecycle.confirm_lease(device, ids, lease)
        result.confirmed += part.confirmed
        result.refused += part.refused
    return result


@dataclass(frozen=True)
class Served:
    """A message of a device as a phone protocol refers to it later (by its served id)."""

    id: int
    device_id: int
    status: int
    served_id: str
    # What a move needs of the row, as find_served read it under lock.
    locked: lifecycle.LockedRow


def find_served(device: Device, message_ids: list[int]) -> dict[int, Served]:
    """This device's messages among ``message_ids``, and those of the device it replaced
    (the same phone registered again still reports what it got before), locked as a move
    locks them: inside a transaction, ``record(..., locked=...)`` moves them without
    reading them again.
    """
    owners = [device.pk] + ([device.replaces_id] if device.replaces_id else [])
    if not message_ids:
        return {}
    # Plain SQL: every state report of a phone starts here.
    with connection.cursor() as cursor:
        cursor.execute(*lifecycle.locked_rows_sql(message_ids, owners, extra=("created_at",)))
        rows = cursor.fetchall()
    return {
        row[0]: Served(row[0], row[4], row[1], served_id(row[0], _aware(row[6])), row[:6])
        for row in rows
    }


def _aware(value: datetime) -> datetime:
    # SQLite hands plain SQL its stored UTC times without a zone.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def cancelling(device: Device, now: datetime | None = None) -> list[Lease]:
    """Cancelled messages this device was served and has not answered about: the phone is
    told (again, on every fetch) until it does, or until it can no longer send them. Also
    the pooled messages it is asked to give back (devices.pools): its "Cancelled" answer
    hands them back to the pool."""
    now = now or timezone.now()
    # Sent before this, a message is past its valid_until (and margin): the phone refuses it.
    oldest = now - (valid_until(now) - now) - FENCE_MARGIN
    cancelled = Message.objects.filter(
        device=device, status=Status.CANCELLED, lease_id__isnull=False, send_at__gte=oldest
    )
    revoke = Message.objects.filter(_REVOKE, device=device)
    rows = [
        *cancelled.order_by("send_at", "id").values(*_LEASE_FIELDS)[:100],
        *revoke.order_by("id").values(*_LEASE_FIELDS)[:100],
    ]
    return [_lease_of(row) for row in rows]


def acknowledge_cancel(device: Device, message_ids: list[int]) -> int:
    return lifecycle.cancel_acknowledged(device, message_ids)


def next_offer_in(device: Device, now: datetime | None = None) -> float | None:
    """Seconds until a poll by this device would hand out something it would not now: a
    scheduled message falling due, or a waiting one its SIM's pacing lets through. 0: now.
    None: nothing is waiting. For event streams, which tell the phone when to fetch."""
    now = now or timezone.now()
    sims = _slots(device, None)
    times: list[float] = []
    due = next_due_in(device, sims, now)
    if due is not None:
        times.append(max(due, 0.0))
    lookahead = device.delay_between_requests + 30
    waiting = set(_due(device, sims, now).values_list("sim", flat=True).distinct().order_by())
    if waiting and device.enabled:
        for next_send_at in SimSlot.objects.filter(device=device, slot__in=waiting).values_list(
            "next_send_at", flat=True
        ):
            if next_send_at is None:
                times.append(0.0)
            else:
                times.append(max((next_send_at - now).total_seconds() - lookahead, 0.0))
    return min(times) if times else None
