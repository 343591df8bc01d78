"""An account's settings for its phones in SMSGate's shape (snake_case keys in sections),
as SMSGate's integration API reads and writes them (``GET``/``PUT``/``PATCH /settings``).

The server paces and caps the sends itself, so the keys it can enforce are applied to the
account's devices and SIMs rather than handed to the phones: ``messages.send_interval_min``
becomes every device's delay between SMS (the server paces at that fixed interval; the
random spread up to ``send_interval_max`` is not reproduced), and a ``limit_value`` per
hour or per day becomes every SIM's hourly or daily cap. Everything else stored (work
hours, ping interval, log lifetimes, a per-minute or per-30-minutes limit, ...) is served
to the SMSGate app phones on their ``GET /settings`` and announced on their event streams.

``webhooks.signing_key`` is write-only: once set, the phones sign their webhooks to this
server with it and this server signs its SMSGate-format webhooks with it. The encryption
passphrase is refused: an end-to-end passphrase belongs on the phones, never on the server.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from devices import wake
from devices.models import Device, PhoneSettings, SimSlot
from gateway.models import Account
from messaging import webhooks

LIMIT_PERIODS = ("Disabled", "PerMinute", "Per30Minutes", "PerHour", "PerDay")
SIM_MODES = ("OSDefault", "RoundRobin", "Random")
CHANNELS = ("AUTO", "SSE_ONLY")
MOST = 2_147_483_647
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


class InvalidSettings(ValueError):
    pass


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MOST:
        raise InvalidSettings("must be a whole number of at least 1")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidSettings("must be true or false")
    return value


def _clock(value: Any) -> str:
    if not isinstance(value, str) or not _CLOCK.fullmatch(value):
        raise InvalidSettings("must be a time of day as HH:mm")
    return value


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise InvalidSettings(f"must be one of {', '.join(options)}")
        return str(value)

    return check


def _key(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not value.isprintable():
        raise InvalidSettings("must be a text of 1 to 64 printable characters")
    return value


def _refused(why: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in (None, ""):
            raise InvalidSettings(why)
        return ""

    return check


SIGNING_KEY = ("webhooks", "signing_key")
# section -> key -> check; keys not listed are dropped, as SMSGate's server does.
SCHEMA: dict[str, dict[str, Callable[[Any], Any]]] = {
    "messages": {
        "send_interval_min": _count,
        "send_interval_max": _count,
        "limit_period": _choice(*LIMIT_PERIODS),
        "limit_value": _count,
        "sim_selection_mode": _choice(*SIM_MODES),
        "log_lifetime_days": _count,
        "work_hours_enabled": _flag,
        "work_hours_start": _clock,
        "work_hours_end": _clock,
        # Checked, then dropped: the server hands messages out in its own order.
        "processing_order": _choice("FIFO", "LIFO"),
    },
    "ping": {"interval_seconds": _count},
    "logs": {"lifetime_days": _count},
    "webhooks": {"internet_required": _flag, "retry_count": _count, "signing_key": _key},
    "encryption": {
        "passphrase": _refused("is set on the phones themselves; this server never holds it")
    },
    "gateway": {
        "notification_channel": _choice(*CHANNELS),
        "cloud_url": _refused("is this server's own address; it cannot be set"),
        "private_token": _refused("is not used by this server"),
    },
    "receiver": {"content_provider_enabled": _flag},
}
DROPPED = {("messages", "processing_order"), ("encryption", "passphrase")}
DROPPED |= {("gateway", "cloud_url"), ("gateway", "private_token")}
# Keys the server enforces itself (never served to the phones).
PACED = {("messages", "send_interval_min"), ("messages", "send_interval_max")}
CAPPED_PERIODS = {"PerHour": "max_per_hour", "PerDay": "max_per_day"}


def parse(data: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """The accepted keys of a settings body: ``{(section, key): value}``, ``None`` to reset
    a key (a ``null`` section resets all its keys). Raises InvalidSettings."""
    found: dict[tuple[str, str], Any] = {}
    for section, keys in SCHEMA.items():
        if section not in data:
            continue
        given = data[section]
        if given is None:
            found.update({(section, key): None for key in keys})
            continue
        if not isinstance(given, dict):
            raise InvalidSettings(f"{section} must be an object")
        for key, check in keys.items():
            if key not in given:
                continue
            try:
                value = None if given[key] is None else check(given[key])
            except InvalidSettings as exc:
                raise InvalidSettings(f"{section}.{key} {exc}") from None
            if (section, key) not in DROPPED:
                found[(section, key)] = value
    return found


def _enforced(values: dict[str, Any]) -> dict[str, int | None]:
    messages = values.get("messages", {})
    period, limit = messages.get("limit_period"), messages.get("limit_value")
    enforced: dict[str, int | None] = {"delay_between_sms": messages.get("send_interval_min")}
    for name, cap in CAPPED_PERIODS.items():
        enforced[cap] = limit if period == name else None
    return enforced


def read(account: Account) -> dict[str, Any]:
    """The settings as the API reads them back (the signing key never)."""
    stored = PhoneSettings.objects.filter(account=account).values_list("values", flat=True)
    return copy.deepcopy(stored.first() or {})


def write(account: Account, data: dict[str, Any], *, replace: bool) -> dict[str, Any]:
    """PATCH (merge key by key) or PUT (``replace``: unsent keys go back to their defaults);
    apply what the server enforces to the account's devices and SIMs, and tell the SMSGate
    app phones to fetch their settings again. Returns the readable view."""
    changes = parse(data)
    with transaction.atomic():
        stored, _ = PhoneSettings.objects.select_for_update().get_or_create(account=account)
        old = stored.values
        new: dict[str, Any] = {} if replace else copy.deepcopy(old)
        key = "" if replace else stored.signing_key
        for (section, name), value in changes.items():
            if (section, name) == SIGNING_KEY:
                key = value or ""
            elif value is None:
                new.get(section, {}).pop(name, None)
            else:
                new.setdefault(section, {})[name] = value
        new = {section: keys for section, keys in new.items() if keys}
        interval = new.get("messages", {})
        if interval.get("send_interval_max", MOST) < interval.get("send_interval_min", 1):
            raise InvalidSettings("messages.send_interval_max must not be below send_interval_min")
        if interval.get("limit_period") not in (None, "Disabled") and not interval.get(
            "limit_value"
        ):
            raise InvalidSettings("messages.limit_value is required with a limit_period")
        key_changed = key != stored.signing_key
        stored.values, stored.signing_key, stored.updated_at = new, key, timezone.now()
        stored.save()
        _apply(account, _enforced(old), _enforced(new))
        if key_changed:
            webhooks.set_smsgate_signing_key(account, key)
        phones = list(
            Device.objects.for_account(account)
            .filter(protocol=Device.Protocol.SMSGATE, enabled=True)
            .values_list("pk", flat=True)
        )
        transaction.on_commit(lambda: wake.signal(phones, wake.SETTINGS))
    return copy.deepcopy(new)


def _apply(account: Account, before: dict[str, int | None], after: dict[str, int | None]) -> None:
    """Write what changed in the enforced settings to every device and SIM of the account."""
    if before["delay_between_sms"] != after["delay_between_sms"]:
        Device.objects.for_account(account).update(delay_between_sms=after["delay_between_sms"])
    caps = {cap: after[cap] for cap in CAPPED_PERIODS.values() if before[cap] != after[cap]}
    if caps:
        SimSlot.objects.filter(device__account=account).update(**caps)


def apply_to_new(device: Device) -> None:
    """A phone added to the account takes the enforced settings set through the API."""
    values = PhoneSettings.objects.filter(account_id=device.account_id).values_list(
        "values", flat=True
    )
    stored = values.first()
    if not stored:
        return
    enforced = _enforced(stored)
    if enforced["delay_between_sms"] is not None:
        Device.objects.filter(pk=device.pk).update(delay_between_sms=enforced["delay_between_sms"])
    caps = {cap: enforced[cap] for cap in CAPPED_PERIODS.values() if enforced[cap] is not None}
    if caps:
        SimSlot.objects.filter(device=device).update(**caps)


def for_phone(device: Device) -> tuple[dict[str, Any], str]:
    """What an SMSGate app phone is given: the stored settings but those the server
    enforces, and the account's signing key ("" when none is set)."""
    stored = PhoneSettings.objects.filter(account_id=device.account_id).first()
    if stored is None:
        return {}, ""
    served = copy.deepcopy(stored.values)
    messages = served.get("messages", {})
    for section, key in PACED:
        served.get(section, {}).pop(key, None)
    if messages.get("limit_period") in CAPPED_PERIODS:
        messages.pop("limit_period")
        messages.pop("limit_value", None)
    return {section: keys for section, keys in served.items() if keys}, stored.signing_key


def signing_keys(device: Device) -> list[str]:
    """The keys a phone's webhook may be signed with: its own, and the account's once set
    (a phone that has not fetched its settings since still signs with its own)."""
    keys = [device.webhook_key] if device.webhook_key else []
    account_key = (
        PhoneSettings.objects.filter(account_id=device.account_id)
        .values_list("signing_key", flat=True)
        .first()
    )
    if account_key:
        keys.append(account_key)
    return keys
