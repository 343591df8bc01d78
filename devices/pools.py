"""Pools: messages routed across the SIMs of several phones, with per-SIM caps.

A pooled message is *routed* when it is created: the pool's strategy picks one of the SIMs
that may send now and writes it into the message's ``device`` and ``sim``, so the phones
claim it exactly as a message sent to them directly (both phone protocols, unchanged). The
route is a proposal while the message waits (NEW): the routing sweep moves waiting messages
away from SIMs that went offline, were disabled, drained, reached a cap or started failing,
and routes those no SIM could take yet (``device`` None, ``hold_reason`` says why). It is
final once a phone takes the message: the lease is the binding, and the lifecycle's
compare-and-set (NEW -> TAKEN) under the row lock is what makes a sweep's move and a
phone's claim exclusive. docs/pools.md argues each fault.

Caps are enforced where a SIM is handed work (``Quota``, in ``devices.handoff.poll``), so
they hold for pooled and direct messages alike; routing only avoids piling work onto a SIM
that cannot take it.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone

from devices import queries, wake
from devices.models import Device, Pool, PoolMember, SimSlot
from gateway.models import Account
from messaging import lifecycle
from messaging.models import CONFIRMED, FAILURES, OUTCOMES, Message, Status

# Statuses that mean "this SIM was handed the message" for its caps (a lease returned to
# the queue is NEW again and stops counting).
_HANDED = Q(not_before_at__isnull=False) & ~Q(status__in=[Status.NEW, Status.INCOMING])
# The health verdict: a SIM is failing when, of the outcomes of what it was handed in the
# last hour, at least FAILING_MIN_OUTCOMES arrived and at least half are failures.
FAILING_WINDOW = timedelta(hours=1)
FAILING_MIN_OUTCOMES = 5
MAX_REASON = 200
# A SIM whose remaining quota is taken by what already waits for it: it gets no new
# routes, keeps what it can still send, and only the excess moves.
FULL = "cap reached by the messages already waiting for it"


class PoolNotFound(Exception):
    pass


def create_pool(
    account: Account | int,
    name: str,
    strategy: str = Pool.Strategy.ROUND_ROBIN,
    *,
    is_default: bool = False,
) -> Pool:
    """A new pool, with its handle (the id SMSGateway24 clients send to)."""
    account_id = account if isinstance(account, int) else account.pk
    with transaction.atomic():
        handle = Device.all_rows.create(
            account_id=account_id, title=name[:150], protocol=Device.Protocol.POOL
        )
        if is_default:
            Pool.objects.filter(account_id=account_id, is_default=True).update(is_default=False)
        return Pool.objects.create(
            handle=handle,
            account_id=account_id,
            name=name[:150],
            strategy=strategy,
            is_default=is_default,
        )


def save_pool(pool: Pool) -> Pool:
    """Create or update a pool as the admin edits it: one default per account."""
    if pool._state.adding:
        return create_pool(pool.account_id, pool.name, pool.strategy, is_default=pool.is_default)
    with transaction.atomic():
        if pool.is_default:
            Pool.objects.filter(account_id=pool.account_id, is_default=True).exclude(
                pk=pool.pk
            ).update(is_default=False)
        pool.save()
        Device.all_rows.filter(pk=pool.pk).update(title=pool.name)
    return pool


def delete_pool(pool: Pool) -> None:
    """Delete a pool (its handle row with it). Its messages keep their routes; those no
    SIM had taken yet stay waiting where they were routed (or held, until cancelled)."""
    Device.all_rows.filter(pk=pool.pk, protocol=Device.Protocol.POOL).delete()


def pools_by_id(account: Account, ids: Iterable[int | None]) -> dict[int, Pool]:
    wanted = [i for i in set(ids) if isinstance(i, int)]
    if not wanted:  # the common case, every id a device's: not even a query to build
        return {}
    return {p.pk: p for p in Pool.objects.for_account(account).filter(pk__in=wanted)}


def account_pools(account: Account) -> list[Pool]:
    return list(Pool.objects.for_account(account).order_by("-pk"))


def get_pool(account: Account, pool_id: int) -> Pool:
    try:
        return Pool.objects.for_account(account).get(pk=pool_id)
    except Pool.DoesNotExist:
        raise PoolNotFound(pool_id) from None


def default_pool(account: Account) -> Pool | None:
    return Pool.objects.for_account(account).filter(is_default=True).first()


# --- Caps -----------------------------------------------------------------------------------


def _zone(account_id: int) -> ZoneInfo:
    name = Account.objects.filter(pk=account_id).values_list("time_zone", flat=True).first()
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError):
        return ZoneInfo("UTC")


def _quiet_until(slot: SimSlot, local: datetime) -> datetime | None:
    """The end of the quiet hours ``local`` is in, or None when it is not in them."""
    start, end = slot.quiet_from, slot.quiet_until
    if start is None or end is None or start == end:
        return None
    now_t = local.time()
    inside = start <= now_t < end if start < end else (now_t >= start or now_t < end)
    if not inside:
        return None
    day = local.date() if now_t < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=local.tzinfo)


@dataclass
class Quota:
    """What one SIM may still be handed now under its caps. ``blocked``: why nothing (and
    ``reopens_at``, when that changes); ``left``: how many more messages (None: no cap);
    recipients: those it already wrote to this day/month, and how many new ones it may add."""

    blocked: str | None = None
    reopens_at: datetime | None = None
    left: int | None = None
    day_recipients: set[str] | None = None
    day_new_left: int | None = None
    month_recipients: set[str] | None = None
    month_new_left: int | None = None
    # The SIM and the account's zone, when the SIM has quiet hours (for quiet_at).
    quiet_slot: SimSlot | None = None
    zone: ZoneInfo | None = None

    def quiet_at(self, when: datetime) -> bool:
        """Whether ``when`` (a paced send time, maybe after the poll) is in quiet hours."""
        if self.quiet_slot is None or self.zone is None:
            return False
        return _quiet_until(self.quiet_slot, when.astimezone(self.zone)) is not None

    def admit(self, phone: str) -> bool:
        """Whether one more message to ``phone`` fits; if so, count it."""
        if self.blocked is not None or self.left == 0:
            return False
        new_day = self.day_recipients is not None and phone not in self.day_recipients
        new_month = self.month_recipients is not None and phone not in self.month_recipients
        if (new_day and self.day_new_left == 0) or (new_month and self.month_new_left == 0):
            return False
        if self.left is not None:
            self.left -= 1
        if new_day:
            assert self.day_recipients is not None and self.day_new_left is not None
            self.day_recipients.add(phone)
            self.day_new_left -= 1
        if new_month:
            assert self.month_recipients is not None and self.month_new_left is not None
            self.month_recipients.add(phone)
            self.month_new_left -= 1
        return True


def quota(
    slot: SimSlot,
    account_id: int,
    now: datetime,
    zone: ZoneInfo | None = None,
    *,
    replaces: int | None = None,
) -> Quota:
    """The SIM's quota now, from what it was handed (its messages by paced send time),
    counting what the same SIM sent as the device this one replaces (``replaces``: an
    SMSGate app registered again) too."""
    result = Quota()
    if not slot.has_caps:
        return result
    zone = zone or _zone(account_id)
    local = now.astimezone(zone)
    if slot.quiet_from is not None and slot.quiet_until is not None:
        result.quiet_slot, result.zone = slot, zone
    quiet_end = _quiet_until(slot, local)
    if quiet_end is not None:
        result.blocked = f"quiet hours until {quiet_end:%H:%M}"
        result.reopens_at = quiet_end
        return result
    day_start = datetime.combine(local.date(), time(0), tzinfo=zone)
    month_start = day_start.replace(day=1)
    hour_ago = now - timedelta(hours=1)
    owners = [slot.device_id] if replaces is None else [slot.device_id, replaces]
    handed = Message.objects.filter(_HANDED, device_id__in=owners, sim=slot.slot)
    lefts: list[tuple[int, str, datetime]] = []
    if slot.max_per_hour is not None:
        window = handed.filter(not_before_at__gt=hour_ago).aggregate(
            n=Count("id"), first=Min("not_before_at")
        )
        first = window["first"] or now
        lefts.append((slot.max_per_hour - window["n"], "hourly cap", first + timedelta(hours=1)))
    if slot.max_per_day is not None:
        n = handed.filter(not_before_at__gte=day_start).count()
        lefts.append((slot.max_per_day - n, "daily cap", day_start + timedelta(days=1)))
    for left, what, reopens in lefts:
        if left <= 0:
            result.blocked = f"{what} reached until {reopens.astimezone(zone):%Y-%m-%d %H:%M}"
            result.reopens_at = reopens
            return result
        result.left = left if result.left is None else min(result.left, left)
    if slot.max_recipients_per_day is not None:
        seen = set(
            handed.filter(not_before_at__gte=day_start).values_list("phone", flat=True).distinct()
        )
        result.day_recipients = seen
        result.day_new_left = max(slot.max_recipients_per_day - len(seen), 0)
    if slot.max_recipients_per_month is not None:
        seen = set(
            handed.filter(not_before_at__gte=month_start).values_list("phone", flat=True).distinct()
        )
        result.month_recipients = seen
        result.month_new_left = max(slot.max_recipients_per_month - len(seen), 0)
    return result


# --- Which SIMs may take messages ------------------------------------------------------------


@dataclass
class Candidate:
    """A pool member as routing sees it now."""

    member: PoolMember
    device: Device
    slot: SimSlot
    reason: str | None  # why it may take nothing now; None: eligible
    quota: Quota = field(default_factory=Quota)
    waiting: int = 0  # due messages waiting for this SIM (routed, or sent to it directly)
    # When its caps are filled by what already waits for it (reason FULL): how many of
    # those it may still send in this window. The rest are moved by the sweep.
    keeps: int = 0

    @property
    def label(self) -> str:
        return f"SIM {self.slot.slot + 1} of {self.device.title} (#{self.device.pk})"

    @property
    def pace(self) -> float:
        """Seconds this SIM needs per message, as its pacing allows."""
        per_minute = 60.0 / max(self.device.segments_per_minute, 1)
        return max(float(self.device.delay_between_sms or 0), per_minute)

    def takes(self, phone: str) -> bool:
        """Whether this SIM may be routed a message to ``phone`` (and count it)."""
        return self.quota.admit(phone)


def candidates(pool: Pool, now: datetime | None = None, *, lock: bool = False) -> list[Candidate]:
    """Every member of the pool, with why it may not take messages now (None: it may)."""
    now = now or timezone.now()
    members = PoolMember.objects.filter(pool=pool).select_related("sim__device").order_by("id")
    if lock:
        members = members.select_for_update(of=("self",))
    zone: ZoneInfo | None = None
    found: list[Candidate] = []
    for member in members:
        slot = member.sim
        device = slot.device
        reason: str | None = None
        q = Quota()
        if device.protocol == Device.Protocol.POOL or device.account_id != pool.account_id:
            reason = "not a phone of this account"
        elif not device.enabled:
            reason = "phone disabled"
        elif not queries.is_online(device, now):
            reason = "phone offline"
        elif member.draining:
            reason = "draining"
        elif member.failing:
            reason = "failing: most of its recent SMS failed"
        elif slot.has_caps:
            zone = zone or _zone(pool.account_id)
            q = quota(slot, pool.account_id, now, zone, replaces=device.replaces_id)
            reason = q.blocked
        found.append(Candidate(member, device, slot, reason, q))
    eligible = [c for c in found if c.reason is None]
    if eligible and (
        pool.strategy == Pool.Strategy.LEAST_LOADED
        or any(c.quota.left is not None for c in eligible)
    ):
        counts = {
            (d, s): n
            for d, s, n in Message.objects.filter(
                status=Status.NEW, send_at__lte=now, device_id__in={c.device.pk for c in eligible}
            )
            .values_list("device_id", "sim")
            .annotate(n=Count("id"))
            .order_by()
        }
        for c in eligible:
            c.waiting = counts.get((c.device.pk, c.slot.slot), 0)
    for c in eligible:
        _count_waiting(c, now)
    return found


def _count_waiting(c: Candidate, now: datetime) -> None:
    """What already waits for a capped SIM uses its quota too, so routing does not pile
    more onto it than its caps will let it send."""
    q = c.quota
    if q.left is not None:
        c.keeps = min(q.left, c.waiting)
        q.left = max(q.left - c.waiting, 0)
        if q.left == 0:
            c.reason = FULL
    if q.day_recipients is None and q.month_recipients is None:
        return
    waiting = set(
        Message.objects.filter(
            status=Status.NEW, send_at__lte=now, device_id=c.device.pk, sim=c.slot.slot
        )
        .values_list("phone", flat=True)
        .distinct()
    )
    for seen_attr, left_attr in (
        ("day_recipients", "day_new_left"),
        ("month_recipients", "month_new_left"),
    ):
        seen = getattr(q, seen_attr)
        if seen is not None:
            fresh = waiting - seen
            seen |= fresh
            setattr(q, left_attr, max(getattr(q, left_attr) - len(fresh), 0))


def _held_reason(found: Sequence[Candidate]) -> str:
    if not found:
        return "the pool has no SIMs"
    parts = [f"{c.label}: {c.reason or 'cap reached'}" for c in found]
    text = "no SIM of the pool may send it now (" + "; ".join(parts) + ")"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 4] + " ...)"


# --- Routing ---------------------------------------------------------------------------------

Route = tuple[int | None, int, str]  # (device id, SIM slot, hold reason)


def _sticky_score(phone: str, member_id: int, weight: int) -> float:
    digest = hashlib.blake2b(f"{member_id}:{phone}".encode(), digest_size=8).digest()
    unit = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
    return -weight / math.log(unit)


def _choose(pool: Pool, found: list[Candidate], phones: Sequence[str]) -> list[Route]:
    """One route per phone, by the pool's strategy, among the eligible candidates."""
    eligible = [c for c in found if c.reason is None]
    held = _held_reason(found)
    routes: list[Route] = []
    strategy = pool.strategy
    if strategy in (Pool.Strategy.ROUND_ROBIN, Pool.Strategy.WEIGHTED):
        return _smooth_weighted(eligible, phones, held, strategy == Pool.Strategy.ROUND_ROBIN)
    for phone in phones:
        chosen: Candidate | None = None
        if strategy == Pool.Strategy.STICKY:
            ranked = sorted(
                eligible,
                key=lambda c: _sticky_score(phone, c.member.pk, c.member.weight),
                reverse=True,
            )
            chosen = next((c for c in ranked if c.takes(phone)), None)
        elif strategy == Pool.Strategy.LEAST_LOADED:
            for c in sorted(eligible, key=lambda c: ((c.waiting + 1) * c.pace, c.member.pk)):
                if c.takes(phone):
                    chosen = c
                    break
        if chosen is None:
            routes.append((None, 0, held))
        else:
            chosen.waiting += 1
            routes.append((chosen.device.pk, chosen.slot.slot, ""))
    return routes


def _smooth_weighted(
    eligible: list[Candidate], phones: Sequence[str], held: str, equal: bool
) -> list[Route]:
    """Smooth weighted round-robin (every weight 1 when ``equal``): each pick adds every
    candidate's weight to its credit and takes the total from the winner's, so any window
    of picks follows the weights within one message. The credits persist in the members.
    Plain lists in the loop: it runs once per message and candidate."""
    weights = [1 if equal else c.member.weight for c in eligible]
    credit = [c.member.credit for c in eligible]
    rank = [-c.member.pk for c in eligible]  # ties go to the oldest member
    route_of = [(c.device.pk, c.slot.slot, "") for c in eligible]
    everyone = list(range(len(eligible)))
    total_all = sum(weights)
    routes: list[Route] = []
    for phone in phones:
        open_, total, chosen = everyone, total_all, None
        while open_ and chosen is None:
            for i in open_:
                credit[i] += weights[i]
            best = max(open_, key=lambda i: (credit[i], rank[i]))
            credit[best] -= total
            if eligible[best].takes(phone):
                chosen = best
            else:
                open_ = [i for i in open_ if i != best]
                total = sum(weights[i] for i in open_)
        if chosen is None:
            routes.append((None, 0, held))
        else:
            eligible[chosen].waiting += 1
            routes.append(route_of[chosen])
    for c, value in zip(eligible, credit, strict=True):
        c.member.credit = value
    return routes


def route(pool_id: int, phones: Sequence[str], now: datetime | None = None) -> list[Route]:
    """Routes for new messages of the pool to ``phones``, inside the caller's transaction
    (the pool's members are locked until it ends: concurrent batches route in turn)."""
    pool = Pool.objects.get(pk=pool_id)
    found = candidates(pool, now, lock=True)
    routes = _choose(pool, found, phones)
    if pool.strategy in (Pool.Strategy.ROUND_ROBIN, Pool.Strategy.WEIGHTED):
        PoolMember.objects.bulk_update([c.member for c in found], ["credit"])
    return routes


# --- The routing sweep ----------------------------------------------------------------------


def refresh_health(pool: Pool, now: datetime) -> None:
    """The members' failing verdicts, from the outcomes of what they were handed lately."""
    members = list(PoolMember.objects.filter(pool=pool).select_related("sim"))
    if not members:
        return
    stats = {
        (d, s): (reported, failed)
        for d, s, reported, failed in Message.objects.filter(
            device_id__in={m.sim.device_id for m in members},
            not_before_at__gte=now - FAILING_WINDOW,
            status__in=[*OUTCOMES, Status.UNKNOWN],
        )
        .values_list("device_id", "sim")
        .annotate(
            reported=Count("id"),
            failed=Count("id", filter=Q(status__in=[*FAILURES, Status.UNKNOWN])),
        )
        .order_by()
    }
    for member in members:
        reported, failed = stats.get((member.sim.device_id, member.sim.slot), (0, 0))
        failing = reported >= FAILING_MIN_OUTCOMES and 2 * failed >= reported
        if failing != member.failing:
            PoolMember.objects.filter(pk=member.pk).update(failing=failing)


def sweep_pool(pool: Pool, *, limit: int = 5000, now: datetime | None = None) -> int:
    """Route again the pool's waiting messages whose SIM may not take them (offline,
    disabled, draining, capped, failing, no longer in the pool) and those held for want of
    a SIM. Bounded, idempotent. Returns how many moved."""
    now = now or timezone.now()
    refresh_health(pool, now)
    moved: dict[tuple[int | None, int, str], list[int]] = defaultdict(list)
    with transaction.atomic():
        found = candidates(pool, now, lock=True)
        fine = Q(pk__in=[])
        for c in found:
            here = Q(device_id=c.device.pk, sim=c.slot.slot)
            if c.reason is None:
                fine |= here
            elif c.reason == FULL:
                # What it can still send in this window stays (in the order it would be
                # handed out), and so does what is not due yet; only the excess moves.
                kept = (
                    Message.objects.filter(here, status=Status.NEW, send_at__lte=now)
                    .order_by("-urgent", "send_at", "id")
                    .values_list("id", flat=True)[: c.keeps]
                )
                fine |= (here & Q(send_at__gt=now)) | Q(pk__in=list(kept))
        stranded = (
            Message.objects.filter(pool=pool, status=Status.NEW)
            .exclude(fine)
            .order_by("send_at", "id")
        )
        if connection.vendor == "postgresql":
            stranded = stranded.select_for_update(skip_locked=True, of=("self",))
        rows = list(
            stranded.values_list("id", "phone", "device_id", "sim", "hold_reason", "revoked_from")[
                :limit
            ]
        )
        _request_revocations(pool, found, now)
        if not rows:
            return 0
        # A message a phone gave back never goes to that phone again.
        by_exclusion: dict[int | None, list[tuple[Any, ...]]] = defaultdict(list)
        for row in rows:
            by_exclusion[row[5]].append(row)
        for excluded, group in by_exclusion.items():
            allowed = [c for c in found if c.device.pk != excluded]
            routes = _choose(pool, allowed, [r[1] for r in group])
            for (message_id, _, device_id, sim, reason, _), target in zip(
                group, routes, strict=True
            ):
                if target != (device_id, sim, reason):
                    moved[target].append(message_id)
        for (to_device, to_sim, why), ids in moved.items():
            # Only while still waiting: a phone that claimed it meanwhile keeps it.
            Message.objects.filter(pk__in=ids, status=Status.NEW).update(
                device_id=to_device, sim=to_sim, hold_reason=why
            )
        if pool.strategy in (Pool.Strategy.ROUND_ROBIN, Pool.Strategy.WEIGHTED):
            PoolMember.objects.bulk_update([c.member for c in found], ["credit"])
        targets = {d for d, _, _ in moved if d is not None}
        transaction.on_commit(lambda: wake.ring(targets))
    return sum(len(ids) for (d, _, _), ids in moved.items() if d is not None)


def _overdue_confirmed(now: datetime) -> Q:
    """Confirmed messages without an outcome POOL_REVOKE_SECONDS after their send time, not
    asked back yet, before their deadline. outcome_deadline_at is the send time +
    DEVICE_OUTCOME_SECONDS (or later), so this reads the outcome-deadline index."""
    cutoff = now + timedelta(seconds=settings.DEVICE_OUTCOME_SECONDS - settings.POOL_REVOKE_SECONDS)
    return CONFIRMED & Q(
        outcome_deadline_at__lt=cutoff, outcome_deadline_at__gte=now, revoke_requested_at=None
    )


def _request_revocations(pool: Pool, found: list[Candidate], now: datetime) -> None:
    """Ask phones to give back the pool's overdue confirmed messages (_overdue_confirmed)
    where another phone of the pool may send them now. Only the phone's answer moves them
    (take_back); a phone that never answers keeps them, and they end unknown (22) at their
    deadline, never sent twice. Rows locked elsewhere are skipped (a phone reporting on
    them, or giving them back): the sweep holds the pool's member locks and must not wait."""
    eligible = {c.device.pk for c in found if c.reason is None}
    phones = [d for d in {c.device.pk for c in found} if eligible - {d}]
    if not phones:
        return
    overdue = Message.objects.filter(_overdue_confirmed(now), pool=pool, device_id__in=phones)
    if connection.vendor == "postgresql":
        overdue = overdue.select_for_update(skip_locked=True, of=("self",))
    rows = list(overdue.values_list("id", "device_id")[:1000])
    if not rows:
        return
    Message.objects.filter(pk__in=[i for i, _ in rows]).update(revoke_requested_at=now)
    asked = {d for _, d in rows}
    transaction.on_commit(lambda: wake.ring(asked))


def take_back(device: Device, message_ids: Iterable[int]) -> lifecycle.MoveResult:
    """The phone says it has not sent these messages it was asked to give back, and never
    will: they return to their pools, held for routing to any other phone (see
    _request_revocations), and the pools are swept at once."""
    with transaction.atomic():
        result = lifecycle.return_revoked(device, message_ids, source=f"device {device.pk}")
        if result.moved:
            Message.objects.filter(pk__in=result.moved, status=Status.NEW).update(
                device=None, sim=0, hold_reason=f"given back by phone #{device.pk}; routing"
            )
            pool_ids = set(
                Message.objects.filter(pk__in=result.moved).values_list("pool_id", flat=True)
            )
            for pool in Pool.objects.filter(pk__in=pool_ids):
                sweep_pool(pool)
    return result


def sweep(*, limit: int = 5000) -> int:
    """Beat: every pool swept (see sweep_pool), so the members' failing verdicts stay
    current even while a pool has nothing waiting. A pool costs a few indexed queries."""
    now = timezone.now()
    return sum(
        sweep_pool(pool, limit=limit, now=now)
        for pool in Pool.objects.filter(members__isnull=False).distinct().order_by("pk")
    )


# --- For the operator and the APIs ----------------------------------------------------------


@dataclass
class PoolStatus:
    pool: Pool
    members: list[Candidate]
    waiting: int
    held: int
    last_seen_at: datetime | None

    @property
    def online(self) -> bool:
        return any(c.reason is None for c in self.members)


def status(pools: Sequence[Pool], now: datetime | None = None) -> list[PoolStatus]:
    now = now or timezone.now()
    counts = {
        p: (n, h)
        for p, n, h in Message.objects.filter(status=Status.NEW, pool__in=list(pools))
        .values_list("pool_id")
        .annotate(n=Count("id"), h=Count("id", filter=Q(device__isnull=True)))
        .values_list("pool_id", "n", "h")
        .order_by()
    }
    found = {pool.pk: candidates(pool, now) for pool in pools}
    members = [c for listed in found.values() for c in listed]
    # What waits for each member SIM (routed there, or sent to it directly): one query.
    waiting = {
        (d, s): n
        for d, s, n in Message.objects.filter(
            status=Status.NEW, device_id__in={c.device.pk for c in members}
        )
        .values_list("device_id", "sim")
        .annotate(n=Count("id"))
        .order_by()
    }
    result = []
    for pool in pools:
        for c in found[pool.pk]:
            c.waiting = waiting.get((c.device.pk, c.slot.slot), 0)
        seen = [c.device.last_seen_at for c in found[pool.pk] if c.device.last_seen_at]
        n, h = counts.get(pool.pk, (0, 0))
        result.append(PoolStatus(pool, found[pool.pk], n, h, max(seen) if seen else None))
    return result
