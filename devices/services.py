"""Devices: pairing and registration, heartbeats, operator settings, online announcements.

The hand-off of messages to a paired device (poll, confirm, report, incoming) is
``devices.handoff``; read-side lookups (scoped devices, SIM slots, online state) are
``devices.queries``.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import segno
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from devices import phone_settings, wake
from devices.models import Device, PairingCode, PoolMember, SimSlot
from devices.queries import DeviceNotFound, get_device, is_online
from gateway.models import Account
from gateway.services import hash_token
from messaging import lifecycle, webhooks
from messaging import services as messaging
from messaging.models import UNCONFIRMED, Message, Status

log = logging.getLogger(__name__)


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


def create_pairing_code(account: Account, *, digits: bool = False) -> tuple[PairingCode, str]:
    """A new single-use code for pairing one phone with the account, valid 15 minutes.

    The code itself (``ABCD-EFGH``, 40 bits; with ``digits``, 8 digits for the SMSGate
    app's "sign in by code", 26.6 bits, guarded by the pairing failure limit) is returned
    once; only its hash is stored.
    """
    if digits:
        code = "".join(secrets.choice("0123456789") for _ in range(8))
    else:
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))
    pairing = PairingCode.objects.create(
        account=account,
        code_hash=hash_token(code),
        expires_at=timezone.now() + PAIRING_CODE_TTL,
    )
    return pairing, code if digits else f"{code[:4]}-{code[4:]}"


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
    if is_new:
        phone_settings.apply_to_new(device)
    unconfirmed = Message.objects.filter(UNCONFIRMED, device=device).values_list("id", flat=True)
    lifecycle.return_unconfirmed(list(unconfirmed), device=device, source="re-pair")
    log.info("account %s: device %s paired", account.pk, device.pk)
    return device, token


def _with_code(code: str, register: Callable[[Account], tuple[Device, str]]) -> tuple[Device, str]:
    """Register a phone for the account of a pairing code; the code works once."""
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
        device, token = register(pairing.account)
        pairing.used_at = now
        pairing.device = device
        pairing.save(update_fields=["used_at", "device"])
    return device, token


def pair_with_code(code: str, details: DeviceDetails) -> tuple[Device, str]:
    """Trade a pairing code for a device and its token. The code works once."""
    return _with_code(code, lambda account: _pair(account, details))


def pair_with_login(account: Account, details: DeviceDetails) -> tuple[Device, str]:
    """Pair a phone whose user logged in with the account's email and password."""
    with transaction.atomic():
        return _pair(account, details)


def authenticate_device(token: str, protocol: str = Device.Protocol.AGENT) -> Device | None:
    """The device whose token this is, or None. A token works only on the API of the
    protocol its device registered with."""
    if not token.startswith(DEVICE_TOKEN_PREFIX) or len(token) > 200:
        return None
    # Every request of a phone starts here, so the row is read with plain SQL and made a
    # model instance the way the ORM does (its fields' converters, Model.from_db), without
    # building a query each time. The account is loaded when used; few requests need it.
    with connection.cursor() as cursor:
        cursor.execute(_DEVICE_BY_TOKEN, [hash_token(token), protocol])
        row = cursor.fetchone()
    if row is None:
        return None
    values = [
        _convert(value, converters)
        for value, converters in zip(row, _device_converters(), strict=True)
    ]
    return Device.from_db(connection.alias, _DEVICE_ATTNAMES, values)


_DEVICE_FIELDS = Device._meta.concrete_fields
_DEVICE_ATTNAMES = [f.attname for f in _DEVICE_FIELDS]
_DEVICE_BY_TOKEN = (
    f"SELECT {', '.join(str(f.column) for f in _DEVICE_FIELDS)} "  # noqa: S608 - model names
    f"FROM {Device._meta.db_table} WHERE token_hash = %s AND protocol = %s LIMIT 1"
)
_CONVERTERS: dict[str, list[tuple[list[Any], Any]]] = {}


def _device_converters() -> list[tuple[list[Any], Any]]:
    """Per column of _DEVICE_BY_TOKEN: (the converters the ORM applies, their expression),
    for this database (computed once per connection alias)."""
    plan = _CONVERTERS.get(connection.alias)
    if plan is None:
        plan = []
        for field in _DEVICE_FIELDS:
            column = field.get_col(Device._meta.db_table)
            found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            plan.append((found, column))
        _CONVERTERS[connection.alias] = plan
    return plan


def _convert(value: Any, plan: tuple[list[Any], Any]) -> Any:
    converters, expression = plan
    for converter in converters:
        value = converter(value, expression, connection)
    return value


# --- The SMSGate app ------------------------------------------------------------------------


def _sim_identity(sims: tuple[SimInfo, ...]) -> set[tuple[int, str, str]]:
    return {(s.slot, s.iccid, s.number) for s in sims if s.iccid or s.number}


def register_app(account: Account, name: str, sims: tuple[SimInfo, ...]) -> tuple[Device, str]:
    """Register a phone running the SMSGate app: always a new device (the app expects a new
    id at every registration) with a new token, a webhook signing key, and its SIM cards.

    When the account has an SMSGate device of the same name whose SIM cards (ICCID or number,
    as the app shows them) are the same, this is that phone registering again (its token was
    revoked, or the app's data was cleared): the new device takes its place. Its waiting
    messages move to the new device; the old one is disabled and keeps what it was served
    (the phone may have sent those: they settle by their deadlines, and its state reports
    are still accepted from the new token). Without SIM identities no guess is made.
    """
    now = timezone.now()
    with transaction.atomic():
        identity = _sim_identity(sims)
        previous = None
        if identity:
            for candidate in (
                Device.objects.for_account(account)
                .filter(protocol=Device.Protocol.SMSGATE, title=name[:150] or "Phone")
                .filter(replaced_by__isnull=True)
                .prefetch_related("sims")
                .order_by("-pk")
            ):
                known = {
                    (s.slot, s.iccid, s.number) for s in candidate.sims.all() if s.iccid or s.number
                }
                if known == identity:
                    previous = candidate
                    break
        token = DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)
        device = Device.objects.create(
            account=account,
            title=name[:150] or "Phone",
            protocol=Device.Protocol.SMSGATE,
            token_hash=hash_token(token),
            webhook_key=secrets.token_urlsafe(24),
            needs_sync=True,
            paired_at=now,
            last_seen_at=now,
            replaces=previous,
        )
        _apply_sims(device, sims or (SimInfo(slot=0),))
        if previous is not None:
            for field in SETTABLE:
                if field not in ("title", "enabled"):
                    setattr(device, field, getattr(previous, field))
            device.save()
            new_slots = {s.slot: s for s in SimSlot.objects.filter(device=device)}
            # The SIMs are the same: their caps and pool memberships come along.
            for old in SimSlot.objects.filter(device=previous):
                if old.slot in new_slots:
                    same = new_slots[old.slot]
                    for cap in SimSlot.CAPS:
                        setattr(same, cap, getattr(old, cap))
                    same.save(update_fields=list(SimSlot.CAPS))
                    PoolMember.objects.filter(sim=old).update(sim=same)
            slots = set(new_slots)
            waiting: dict[int, list[int]] = {}
            for message_id, sim in Message.objects.filter(
                device=previous, status=Status.NEW
            ).values_list("id", "sim"):
                waiting.setdefault(sim if sim in slots else min(slots), []).append(message_id)
            for sim, ids in waiting.items():
                messaging.reassign(account, ids, device.pk, sim, keep_pool=True)
            Device.objects.filter(pk=previous.pk).update(enabled=False)
            log.info("account %s: device %s replaces %s", account.pk, device.pk, previous.pk)
        else:
            phone_settings.apply_to_new(device)
        transaction.on_commit(lambda: wake.ring([device.pk]))
    log.info("account %s: SMSGate device %s registered", account.pk, device.pk)
    return device, token


def register_app_with_code(code: str, name: str, sims: tuple[SimInfo, ...]) -> tuple[Device, str]:
    """register_app for the account of a pairing code; the code works once."""
    return _with_code(code, lambda account: register_app(account, name, sims))


def app_synced(device: Device) -> bool:
    """Clear the device's "fetch settings and webhooks again" flag; True if it was set."""
    return bool(Device.objects.filter(pk=device.pk, needs_sync=True).update(needs_sync=False))


def request_app_sync(account: Account, device_ids: list[int]) -> int:
    """Ask the account's SMSGate phones among ``device_ids`` to fetch their settings and
    webhooks again (after PUBLIC_URL or SMSGATE_PING_SECONDS changed): their open streams
    are told now, the others on their next stream. Returns how many."""
    ids = list(
        Device.objects.for_account(account)
        .filter(pk__in=device_ids, protocol=Device.Protocol.SMSGATE)
        .values_list("pk", flat=True)
    )
    Device.objects.filter(pk__in=ids).update(needs_sync=True)

    def tell() -> None:
        wake.signal(ids, wake.SETTINGS)
        wake.signal(ids, wake.WEBHOOKS)

    transaction.on_commit(tell)
    return len(ids)


def record_health(device: Device, checks: dict[str, Any], status: str) -> None:
    """A phone's health report (SMSGate: system:ping) for the operator: battery and
    charging into their own fields, the whole report into ``health``."""

    def value(name: str) -> Any:
        check = checks.get(name)
        return check.get("observedValue") if isinstance(check, dict) else None

    level, charging = value("battery:level"), value("battery:charging")
    beat = Heartbeat(
        battery_percent=int(level)
        if isinstance(level, int | float) and 0 <= level <= 100
        else None,
        charging=bool(charging) if isinstance(charging, int | float | bool) else None,
    )
    Device.objects.filter(pk=device.pk).update(
        health={"status": status, "checks": checks, "at": timezone.now().isoformat()}
    )
    heartbeat(device, beat)


def replace_sims(device: Device, sims: tuple[SimInfo, ...]) -> None:
    """The phone's SIM cards as it reports them now (SMSGate: PATCH /device, app:started)."""
    if sims:
        _apply_sims(device, sims)


def record_phone_webhook(device: Device, event_id: str) -> bool:
    """Note a webhook call of the phone by its envelope id; False if it came before (a
    retry). Call inside the transaction that applies it, so a failure notes nothing."""
    from devices.models import PhoneWebhookReceipt

    try:
        with transaction.atomic():
            PhoneWebhookReceipt.objects.create(device=device, event_id=event_id[:64])
    except IntegrityError:
        return False
    return True


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


def announce_device_states(now: datetime | None = None) -> int:
    """Devices whose online state changed since last announced get a webhook event.

    Run by beat. The comparison is per device (each has its own poll interval); the
    announced state is updated with a compare-and-set, so two sweeps never announce twice.
    Returns how many changed.
    """
    now = now or timezone.now()
    changes = []
    with transaction.atomic():
        for device in Device.objects.only(
            "pk",
            "account_id",
            "title",
            "last_seen_at",
            "delay_between_requests",
            "protocol",
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
    server = server.rstrip("/")
    uri = "smsgw://pair?" + urlencode({"server": server, "code": code})
    command = (
        f"curl -fsSLo sms_agent.py {server}/api/device/v1/agent.py && "
        f"python3 sms_agent.py pair --server {server} --code {code} && "
        "python3 sms_agent.py run --sender termux"
    )
    svg = segno.make(uri, error="m").svg_inline(scale=5, dark="#111", light="#fff")
    return PairingInstructions(code, pairing.expires_at, uri, command, svg)


@dataclass(frozen=True)
class AppInstructions:
    """What to type into the SMSGate app (Settings > Cloud server) to register a phone."""

    server_url: str
    code: str
    expires_at: datetime
    enrollment_token: str
    warning: str  # empty when the URL is one a phone can use


def app_instructions(account: Account, public_url: str) -> AppInstructions:
    """A fresh one-time numeric code, the account's enrollment token and the server URL for
    the SMSGate app; a warning when a phone could not use that URL (server_warning)."""
    from gateway.services import enrollment_token

    pairing, code = create_pairing_code(account, digits=True)
    url = public_url.rstrip("/") + "/api/mobile/v1"
    warning = server_warning(public_url)
    return AppInstructions(url, code, pairing.expires_at, enrollment_token(account), warning)


def server_warning(public_url: str) -> str:
    """Why phones could not (or should not) use the server at ``public_url`` ("" when
    they can): a phone's 127.0.0.1 or localhost is the phone itself; over plain http the
    SMSGate app does not connect at all, and our agent's token and SMS cross the network
    readable."""
    from urllib.parse import urlsplit

    parts = urlsplit(public_url)
    host = (parts.hostname or "").lower()
    if host in ("localhost", "::1") or host.startswith("127."):
        return (
            f"{host} is this computer, not reachable from a phone: set PUBLIC_URL to the "
            "address phones use (behind the HTTPS front)."
        )
    if parts.scheme != "https":
        return (
            "Plain http: the SMSGate app connects only over HTTPS, and a phone's token and "
            "its SMS would cross the network readable. Put the HTTPS front before the "
            "gateway and set PUBLIC_URL to its https:// address (docs/android-app.md)."
        )
    return ""


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


def remove_device(account: Account, device_id: int) -> bool:
    """Take one of the account's phones out of service for good: disabled, its token no
    longer works (the phone must pair again), its history kept. False: no such phone."""
    removed = (
        Device.objects.for_account(account)
        .filter(pk=device_id)
        .exclude(enabled=False, token_hash__isnull=True)
        .update(enabled=False, token_hash=None)
    )
    if removed:
        log.info("account %s: device %s removed", account.pk, device_id)
    return bool(removed)


def request_inbox_export(
    account: Account,
    device_id: int | None,
    since: datetime,
    until: datetime,
    message_types: str = "SMS",
) -> int:
    """Ask the account's SMSGate app phones (or the one ``device_id``) to scan their inbox
    between ``since`` and ``until`` again and upload what they never reported (each SMS
    arrives as an ``sms:received`` webhook and is stored once). Returns how many phones
    were asked; raises DeviceNotFound for a device not the account's. Phones of our own
    protocol upload every SMS as it arrives and have nothing to scan."""

    def date(value: datetime) -> str:  # the app's own format: UTC, milliseconds, Z
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    phones = Device.objects.for_account(account).filter(enabled=True)
    if device_id is not None:
        phones = phones.filter(pk=device_id)
        if not phones.exists():
            raise DeviceNotFound(device_id)
    ids = list(phones.filter(protocol=Device.Protocol.SMSGATE).values_list("pk", flat=True))
    request = {"since": date(since), "until": date(until), "messageTypes": message_types}
    wake.signal(ids, wake.EXPORT, json.dumps(request, separators=(",", ":")))
    return len(ids)
