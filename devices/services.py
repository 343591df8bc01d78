"""Devices: lookups scoped to an account, and their online state."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from devices.models import Device, SimSlot
from gateway.models import Account

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
