"""Devices as the rest of the gateway reads them: scoped lookups, SIM slots, online state.

Reads only, and imports only models: every service and interface may use it, whichever
way their own imports point.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from devices.models import Device, SimSlot
from gateway.models import Account
from messaging.models import Message, MessageStatusChange, Status

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
    if not ids:
        return {}
    devices: dict[int, set[int]] = {}
    # One statement: each phone with its slots (None for one without any yet). Written
    # out, as every single create asks: compiling the ORM's join took longer than running it.
    sims = SimSlot._meta.get_field("device").column
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT d.id, s.slot FROM {Device._meta.db_table} d "  # noqa: S608
            f'LEFT JOIN {SimSlot._meta.db_table} s ON s."{sims}" = d.id '
            f"WHERE d.account_id = %s AND d.protocol <> %s AND d.id IN ({marks})",
            [account.pk, Device.Protocol.POOL.value, *ids],
        )
        rows = cursor.fetchall()
    for device_id, slot in rows:
        found = devices.setdefault(device_id, set())
        if slot is not None:
            found.add(slot)
    for slots in devices.values():
        if not slots:
            slots.add(0)
    return devices


def offline_after(device: Device) -> timedelta:
    if device.protocol == Device.Protocol.SMSGATE:
        # Seen at every fetch and report, and at least once a minute while its event
        # stream is open or its pings come (SMSGATE_PING_SECONDS).
        every = max(settings.SMSGATE_PING_SECONDS, 60)
        return timedelta(seconds=2 * every + OFFLINE_GRACE_SECONDS)
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


def _per_device(messages: QuerySet[Any], device_field: str = "device") -> Coalesce:
    """COUNT of ``messages`` per device, as a correlated subquery for annotating devices:
    evaluated only for the devices listed, each from an index, never a scan of all rows."""
    counted = (
        messages.filter(**{device_field: OuterRef("pk")})
        .order_by()
        .values(device_field)
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted), 0)


def with_queue(devices: QuerySet[Device]) -> QuerySet[Device]:
    """Devices annotated with their queue: ``queue_waiting`` (NEW, for this device) and
    ``queue_with_phone`` (TAKEN: leased or confirmed, not yet reported)."""
    return devices.annotate(
        queue_waiting=_per_device(Message.objects.filter(status=Status.NEW)),
        queue_with_phone=_per_device(Message.objects.filter(status=Status.TAKEN)),
    )


def with_sent_since(devices: QuerySet[Device], since: datetime) -> QuerySet[Device]:
    """Devices annotated with ``sent_since``: their messages that moved to SENT since then."""
    moves = MessageStatusChange.objects.filter(changed_at__gte=since, to_status=Status.SENT)
    return devices.annotate(sent_since=_per_device(moves, "message__device"))


def queue_depth(device: Device) -> dict[str, int]:
    """Messages of the device waiting in the queue, and held by the phone (see with_queue)."""
    if not hasattr(device, "queue_waiting"):
        device = with_queue(Device.objects.filter(pk=device.pk)).get()
    return {
        "waiting": device.queue_waiting,  # type: ignore[attr-defined]
        "with_phone": device.queue_with_phone,  # type: ignore[attr-defined]
    }


def app_device(device_id: object) -> Device | None:
    """The SMSGate-app device with this id (as the app writes it: a string), or None."""
    text = str(device_id)
    if not text.isdigit() or len(text) > 18:
        return None
    return (
        Device.objects.select_related("account")
        .filter(pk=int(text), protocol=Device.Protocol.SMSGATE)
        .first()
    )


def identified_sim_slots(device: Device) -> set[int]:
    """The device's SIM slots the phone reported a SIM card for (not just a default slot)."""
    return set(
        SimSlot.objects.filter(device=device)
        .exclude(iccid="", number="", carrier_name="")
        .values_list("slot", flat=True)
    )
