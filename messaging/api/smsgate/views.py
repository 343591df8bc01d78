"""SMSGate's integration API (``/api/3rdparty/v1/``, also ``/3rdparty/v1/``): code written
with SMSGate's SDKs works with this server by changing its base URL (docs/smsgate-api.md).

One more interface over the same services as ``/getdata/`` and ``/api/v1/``: it checks
the caller, maps SMSGate's wire names (``messaging.api.smsgate.wire``) and calls
``messaging.services`` and ``devices.services``. Every answer is JSON; errors are
``{"message": ...}`` with SMSGate's status codes.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.conf import settings as django_settings
from django.db import IntegrityError
from django.db.models import Case, CharField, F, Max, Min, Q, QuerySet, When
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from devices import phone_settings, pools
from devices import services as device_services
from devices.models import Device
from gateway import health, inputs, jwt_tokens
from gateway import services as accounts
from gateway.clients import client_address
from gateway.models import Account
from gateway.phones import InvalidPhone, normalize_phone
from messaging import services as messaging
from messaging import webhooks
from messaging.api.smsgate import openapi, wire
from messaging.models import Message, MessageStatusChange, Problem, Status, WebhookEndpoint

MAX_BODY_BYTES = 256 * 1024
MAX_RECIPIENTS = 100
MAX_TEXT = 65_535


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.code = status


def _json(data: Any, status: int = 200, **headers: str) -> HttpResponse:
    response = HttpResponse(orjson.dumps(data), status=status, content_type="application/json")
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _error(status: int, message: str) -> HttpResponse:
    return _json({"message": message}, status)


def _body(request: HttpRequest) -> dict[str, Any]:
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        raise Refused(413, f"request body is larger than {MAX_BODY_BYTES // 1024} KB")
    try:
        data = inputs.load_json(request.body.decode() or "null", allow_nan=False)
    except inputs.InvalidInput:
        raise
    except ValueError:
        raise Refused(400, "request body is not JSON") from None
    if not isinstance(data, dict):
        raise Refused(400, "request body must be a JSON object")
    return data


# --- Authentication -------------------------------------------------------------------------


def _basic(value: str, request: HttpRequest) -> Account:
    """Basic with a login of the account (what the SMSGate app showed at registration),
    under the same login limits as every password path."""
    try:
        login, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Refused(401, "malformed Basic credentials") from None
    if not sep:
        raise Refused(401, "malformed Basic credentials")
    try:
        user = accounts.login_with_limits(login.strip().lower(), password, client_address(request))
    except accounts.TooManyFailures:
        raise Refused(429, "too many failed attempts; retry in 15 minutes") from None
    if user is None or user.account is None:
        raise Refused(401, "login or password incorrect")
    return user.account


def _caller(request: HttpRequest) -> jwt_tokens.Caller:
    """Who calls: a Basic login holds every scope; a JWT of this API its own."""
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "basic" and value:
        return jwt_tokens.Caller(_basic(value, request), frozenset({jwt_tokens.ALL}), False)
    if scheme == "bearer" and value:
        try:
            return jwt_tokens.authenticate(value)
        except jwt_tokens.InvalidToken as exc:
            raise Refused(401, str(exc)) from None
    raise Refused(401, "authorization required: Basic <login:password> or Bearer <token>")


def _allowed(caller: jwt_tokens.Caller, scope: str) -> bool:
    if scope == jwt_tokens.REFRESH:  # only a refresh token, never the wildcard
        return scope in caller.scopes
    return scope in caller.scopes or jwt_tokens.ALL in caller.scopes


Handler = Callable[..., HttpResponse]


def api(**methods: tuple[Handler, str]) -> Handler:
    """A route: dispatch by method to ``(handler, scope)``, as ``handler(request, account,
    **kwargs)`` once the caller holds the scope; every error as SMSGate's JSON."""

    @csrf_exempt
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        if request.method not in methods:
            response = _error(405, f"use {' or '.join(methods)}")
            response["Allow"] = ", ".join(methods)
            return response
        handler, scope = methods[request.method]
        try:
            caller = _caller(request)
            if not _allowed(caller, scope):
                raise Refused(403, f"scope required: {scope}")
            return handler(request, caller.account, **kwargs)
        except Refused as refused:
            return _error(refused.code, str(refused))
        except inputs.InvalidInput as exc:
            return _error(400, str(exc))

    view.scopes = {method: scope for method, (_, scope) in methods.items()}  # type: ignore[attr-defined]
    return view


# --- Parsing --------------------------------------------------------------------------------


def _text(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise Refused(400, f"{key} must be a string of at most {limit} characters")
    return inputs.check_text(value, key)


def _int(data: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Refused(400, f"{key} must be an integer from {low} to {high}")
    return value


def _bool(data: dict[str, Any], key: str) -> bool | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise Refused(400, f"{key} must be true or false")


def _time(value: object, key: str) -> datetime:
    """RFC 3339 (an offset, ``Z``, or none: UTC), as every SDK writes it."""
    if not isinstance(value, str) or len(value) > 40:
        raise Refused(400, f"{key} must be an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Refused(400, f"{key} must be an RFC 3339 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return inputs.stored_time(parsed, key)


def _flag(request: HttpRequest, key: str) -> bool:
    value = request.GET.get(key, "").lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise Refused(400, f"{key} must be true or false")


def _device_id(value: object, key: str = "deviceId") -> int:
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 18:
        raise Refused(400, f"{key}: no such device")
    return int(value)


def _recipients(data: dict[str, Any], skip_validation: bool, encrypted: bool) -> list[str]:
    """The recipients, normalized unless ``skip_validation`` (kept as given when they are not
    numbers) or ``encrypted`` (ciphertext, stored as it came)."""
    numbers = data.get("phoneNumbers")
    if not isinstance(numbers, list) or not 1 <= len(numbers) <= MAX_RECIPIENTS:
        raise Refused(400, f"phoneNumbers must be a list of 1 to {MAX_RECIPIENTS} numbers")
    found: list[str] = []
    for row, number in enumerate(numbers, start=1):
        if not isinstance(number, str) or not 1 <= len(number.strip()) <= 128:
            raise Refused(400, f"failed to use phone in row {row}: not a phone number")
        if encrypted:
            found.append(inputs.check_text(number.strip(), "phoneNumbers"))
            continue
        try:
            found.append(normalize_phone(number))
        except InvalidPhone as exc:
            if not skip_validation:
                raise Refused(400, f"failed to use phone in row {row}: {exc}") from None
            digits = "".join(c for c in number if c.isdigit() or c == "+")
            if not 3 <= len(digits) <= 32:
                raise Refused(400, f"failed to use phone in row {row}: {exc}") from None
            found.append(digits)
    if len(set(found)) != len(found):
        raise Refused(400, "phone numbers must be unique")
    return found


def _content(data: dict[str, Any]) -> tuple[str, int | None]:
    """The message's text, or a data SMS's base64 payload and its port."""
    given = [key for key in ("message", "textMessage", "dataMessage") if data.get(key) is not None]
    if data.get("mmsMessage") is not None and not given:
        raise Refused(400, "MMS are not supported by this server")
    if len(given) != 1:
        raise Refused(400, "exactly one of textMessage, dataMessage or message is required")
    if given[0] == "dataMessage":
        content = data["dataMessage"]
        if not isinstance(content, dict):
            raise Refused(400, "dataMessage must be an object with its data and port")
        payload = _text(content, "data", MAX_TEXT)
        port = _int(content, "port", 1, 65_535)
        if not payload or len(payload) < 4 or port is None:
            raise Refused(400, "dataMessage needs data (base64) and a port from 1 to 65535")
        return payload, port
    if given[0] == "message":
        text = _text(data, "message", MAX_TEXT)
    else:
        content = data["textMessage"]
        if not isinstance(content, dict):
            raise Refused(400, "textMessage must be an object with its text")
        text = _text(content, "text", MAX_TEXT)
    if not text:
        raise Refused(400, "the message text is empty")
    return text, None


MAX_TTL = 366 * 24 * 3600


def _validity(data: dict[str, Any], now: datetime) -> datetime | None:
    """The last moment the message may be sent: ``ttl`` seconds from now, or ``validUntil``
    (not both); None: the server's own expiry."""
    ttl = _int(data, "ttl", 5, MAX_TTL)
    if data.get("validUntil") is not None:
        if ttl is not None:
            raise Refused(400, "ttl and validUntil must not be used together")
        until = _time(data["validUntil"], "validUntil")
        if until <= now:
            raise Refused(400, "validUntil must be in the future")
        return until
    return None if ttl is None else now + timedelta(seconds=ttl)


def _sender(
    account: Account, data: dict[str, Any], active_within: int, app_only: bool
) -> int | None:
    """The device (or pool) asked for; else the account's default pool; else the phone
    heard from last (within ``active_within`` hours when given; an SMSGate app phone when
    ``app_only``: data and encrypted SMS); None: the default pool."""
    if data.get("deviceId") not in (None, ""):
        return _device_id(data["deviceId"])
    if not app_only and pools.default_pool(account) is not None:
        return None
    phones = Device.objects.for_account(account).filter(enabled=True)
    if app_only:
        phones = phones.filter(protocol=Device.Protocol.SMSGATE)
    if active_within:
        phones = phones.filter(last_seen_at__gte=timezone.now() - timedelta(hours=active_within))
    phone = phones.order_by(F("last_seen_at").desc(nulls_last=True), "-id").first()
    if phone is None:
        if app_only:
            raise Refused(400, "data and encrypted SMS need an SMSGate app phone: pair one first")
        raise Refused(400, "no device to send from: register a phone first")
    return phone.pk


# --- Messages -------------------------------------------------------------------------------


def _outgoing(account: Account) -> QuerySet[Message]:
    return Message.objects.for_account(account).exclude(status=Status.INCOMING)


def _rows_of(account: Account, key: str) -> list[dict[str, Any]]:
    """The rows of the account's message ``key`` (its client id, else a row id)."""
    if not key or len(key) > 64:
        return []
    rows = list(_outgoing(account).filter(external_id=key).order_by("id").values(*wire.COLUMNS))
    if not rows and key.isascii() and key.isdigit() and len(key) <= 18:
        rows = list(_outgoing(account).filter(pk=int(key), external_id="").values(*wire.COLUMNS))
    return rows


def send(request: HttpRequest, account: Account) -> HttpResponse:
    data = _body(request)
    skip = _flag(request, "skipPhoneValidation")
    within = request.GET.get("deviceActiveWithin", "0")
    if not within.isascii() or not within.isdigit() or int(within) > 100_000:
        raise Refused(400, "deviceActiveWithin must be a number of hours")
    text, port = _content(data)
    encrypted = bool(_bool(data, "isEncrypted"))
    numbers = _recipients(data, skip, encrypted)
    key = _text(data, "id", 36) or wire.new_id()
    sim = _int(data, "simNumber", 1, 3)
    priority = _int(data, "priority", -128, 127) or 0
    report = _bool(data, "withDeliveryReport") is not False
    now = timezone.now()
    send_at = None
    if data.get("scheduleAt") is not None:
        send_at = _time(data["scheduleAt"], "scheduleAt")
        if send_at <= now:
            raise Refused(400, "scheduleAt must be in the future")
    until = _validity(data, now)
    if until is not None and send_at is not None and send_at > until:
        raise Refused(400, "scheduleAt must not be after validUntil")
    device_id = _sender(account, data, int(within), port is not None or encrypted)
    if _outgoing(account).filter(external_id=key).exists():
        raise Refused(409, "message with the same ID already exists")
    requests = [
        messaging.OutgoingSms(
            device_id,
            number,
            text,
            (sim or 1) - 1,
            send_at,
            priority >= wire.EXPEDITED,
            external_id=key,
            valid_until=until,
            data_port=port,
            encrypted=encrypted,
            keep_phone=skip,
            delivery_report=report,
        )
        for number in numbers
    ]
    try:
        messaging.submit(account, requests)
    except messaging.InvalidBatch as exc:
        _, problem = exc.errors[0]
        if problem.startswith("Device has no SIM slot"):
            problem = f"the device has no SIM {sim}"
        raise Refused(400, problem) from None
    except IntegrityError:  # the same id, sent twice at once
        raise Refused(409, "message with the same ID already exists") from None
    state = wire.state_object(_rows_of(account, key), content=True)
    location = request.build_absolute_uri(f"{request.path.rstrip('/')}/{key}")
    return _json(state, 202, Location=location)


def get_state(request: HttpRequest, account: Account, key: str) -> HttpResponse:
    rows = _rows_of(account, key)
    if not rows:
        raise Refused(404, "message not found")
    return _json(wire.state_object(rows, content=True))


def cancel(request: HttpRequest, account: Account, key: str) -> HttpResponse:
    rows = _rows_of(account, key)
    if not rows:
        raise Refused(404, "message not found")
    if wire.message_state([wire.row_state(row) for row in rows]) != wire.PENDING:
        raise Refused(409, "message is not pending")
    messaging.cancel(account, [row["id"] for row in rows], source="smsgate-api")
    return _json(wire.state_object(_rows_of(account, key), content=True))


def _list_limit(request: HttpRequest, default: int, most: int) -> tuple[int, int]:
    limit, offset = request.GET.get("limit", str(default)), request.GET.get("offset", "0")
    if not (limit.isascii() and limit.isdigit() and offset.isascii() and offset.isdigit()):
        raise Refused(400, "limit and offset must be whole numbers")
    if int(offset) > 10_000_000:
        raise Refused(400, "offset is too large")
    return min(max(int(limit), 1), most), int(offset)


def list_messages(request: HttpRequest, account: Account) -> HttpResponse:
    limit, offset = _list_limit(request, 50, 100)
    rows = _outgoing(account)
    for name, lookup in (("from", "created_at__gte"), ("to", "created_at__lt")):
        if request.GET.get(name):
            rows = rows.filter(**{lookup: _time(request.GET[name], name)})
    state = request.GET.get("state")
    if state:
        if state not in wire.STATES:
            raise Refused(400, f"state must be one of {', '.join(wire.STATES)}")
        rows = rows.filter(status__in=wire.STATUSES_OF[state])
    if request.GET.get("deviceId"):
        rows = rows.filter(device_id=_device_id(request.GET["deviceId"]))
    order = request.GET.get("sort", "-created_at")
    if order not in ("created_at", "-created_at"):
        raise Refused(400, "sort must be created_at or -created_at")
    content = _flag(request, "includeContent")
    # One SMSGate message per client id (its recipients' rows), or per row without one.
    keyed = rows.annotate(
        key=Case(
            When(external_id="", then=Cast("id", CharField())),
            default=F("external_id"),
            output_field=CharField(),
        )
    )
    groups = keyed.values("key").annotate(first=Min("created_at"), last_id=Max("id"))
    total = groups.count()
    ordering = ("first", "last_id") if order == "created_at" else ("-first", "-last_id")
    page = [g["key"] for g in groups.order_by(*ordering)[offset : offset + limit]]
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    numeric = [int(k) for k in page if k.isdigit()]
    for row in (
        _outgoing(account)
        .filter(Q(external_id__in=page) | Q(pk__in=numeric, external_id=""))
        .order_by("id")
        .values(*wire.COLUMNS)
    ):
        found[wire.key_of(row)].append(row)
    states = [wire.state_object(found[key], content=content) for key in page if key in found]
    return _json(states, X_Total_Count=str(total))


# --- Inbox ----------------------------------------------------------------------------------

INBOX_TYPES = ("SMS", "DATA_SMS", "MMS", "MMS_DOWNLOADED")


def list_inbox(request: HttpRequest, account: Account) -> HttpResponse:
    """The SMS the account's phones received (SMSGate's own server answers 501 here)."""
    limit, offset = _list_limit(request, 50, 500)
    kind = request.GET.get("type") or "SMS"
    if kind not in INBOX_TYPES:
        raise Refused(400, f"type must be one of {', '.join(INBOX_TYPES)}")
    rows = Message.objects.for_account(account).filter(status=Status.INCOMING)
    if kind != "SMS":  # only text SMS are stored
        rows = rows.none()
    for name, lookup in (("from", "created_at__gte"), ("to", "created_at__lt")):
        if request.GET.get(name):
            rows = rows.filter(**{lookup: _time(request.GET[name], name)})
    if request.GET.get("deviceId"):
        rows = rows.filter(device_id=_device_id(request.GET["deviceId"]))
    total = rows.count()
    page = rows.order_by("-created_at", "-id").values(
        "id", "phone", "sim", "body", "created_at", "sent_at", "device__number"
    )[offset : offset + limit]
    return _json([wire.incoming(row) for row in page], X_Total_Count=str(total))


def _window(data: dict[str, Any]) -> tuple[datetime, datetime]:
    since, until = _time(data.get("since"), "since"), _time(data.get("until"), "until")
    if since > until:
        raise Refused(400, "since must not be after until")
    return since, until


def _export(account: Account, device: object, since: datetime, until: datetime, types: str) -> None:
    try:
        device_services.request_inbox_export(
            account, None if device in (None, "") else _device_id(device), since, until, types
        )
    except device_services.DeviceNotFound:
        raise Refused(400, "deviceId: no such device") from None


def refresh_inbox(request: HttpRequest, account: Account) -> HttpResponse:
    """Ask the phones to scan their inbox for the window again: what they never reported
    arrives (and is stored) as it does when received."""
    data = _body(request)
    since, until = _window(data)
    types = data.get("messageTypes") or ["SMS"]
    if not isinstance(types, list) or not all(t in ("SMS", "MMS") for t in types):
        raise Refused(400, "messageTypes must be a list of SMS and MMS")
    delivery = data.get("webhookDelivery")
    if delivery is not None and delivery not in ("Disabled", "Individual", "Batch"):
        raise Refused(400, "webhookDelivery must be Disabled, Individual or Batch")
    _export(account, data.get("deviceId"), since, until, ",".join(types))
    return _json({}, 202)


def export_inbox(request: HttpRequest, account: Account) -> HttpResponse:
    """The older spelling of refresh_inbox (SMS only)."""
    data = _body(request)
    since, until = _window(data)
    _export(account, data.get("deviceId"), since, until, "SMS")
    return _json({}, 202, Deprecation="true")


# --- Logs -----------------------------------------------------------------------------------

MAX_LOG_ENTRIES = 1000


def logs(request: HttpRequest, account: Account) -> HttpResponse:
    """The server's own record of what happened to the account's SMS (each status change,
    who made it and why) and to its phones, SIMs and webhooks (the fleet problems found and
    resolved) between ``from`` and ``to`` (default: the last 24 hours), newest first, at
    most MAX_LOG_ENTRIES. SMSGate's own server answers 501 here."""
    until = _time(request.GET["to"], "to") if request.GET.get("to") else timezone.now()
    since = (
        _time(request.GET["from"], "from")
        if request.GET.get("from")
        else until - timedelta(hours=24)
    )
    changes = (
        MessageStatusChange.objects.filter(
            message__account=account, changed_at__gte=since, changed_at__lte=until
        )
        .order_by("-changed_at", "-id")
        .values(
            "id",
            "changed_at",
            "from_status",
            "to_status",
            "source",
            "detail",
            "message_id",
            "message__external_id",
            "message__device_id",
            "message__phone",
        )[:MAX_LOG_ENTRIES]
    )
    entries = [wire.log_entry(change) for change in changes]
    problems = Problem.objects.for_account(account).filter(
        Q(opened_at__gte=since, opened_at__lte=until)
        | Q(resolved_at__gte=since, resolved_at__lte=until)
    )
    for problem in problems.order_by("-id")[:MAX_LOG_ENTRIES]:
        entries += wire.problem_entries(problem, since, until)
    entries.sort(key=lambda entry: entry["createdAt"], reverse=True)
    return _json(entries[:MAX_LOG_ENTRIES])


# --- Webhooks -------------------------------------------------------------------------------


def _webhook(endpoint: WebhookEndpoint) -> dict[str, Any]:
    device = str(endpoint.device_id) if endpoint.device_id is not None else None
    return {
        "id": endpoint.client_id,
        "deviceId": device,
        "url": endpoint.url,
        "event": endpoint.event,
    }


def list_webhooks(request: HttpRequest, account: Account) -> HttpResponse:
    endpoints = WebhookEndpoint.objects.for_account(account).filter(kind="smsgate")
    return _json([_webhook(e) for e in endpoints.order_by("id")])


def create_webhook(request: HttpRequest, account: Account) -> HttpResponse:
    """Create a webhook, or replace the one with the same id. Its events are sent by this
    server, signed with the endpoint's secret (docs/smsgate-api.md)."""
    data = _body(request)
    client_id = _text(data, "id", 36) or wire.new_id()
    url = _text(data, "url", 500)
    schemes = (
        ("https://", "http://") if django_settings.WEBHOOK_ALLOW_PRIVATE_TARGETS else ("https://",)
    )
    if not url or not url.startswith(schemes):
        raise Refused(400, "url must be an https:// URL")
    event = data.get("event")
    if event not in webhooks.SMSGATE_EVENTS:
        raise Refused(400, f"event must be one of {', '.join(webhooks.SMSGATE_EVENTS)}")
    device = data.get("deviceId")
    try:
        endpoint = webhooks.save_smsgate_endpoint(
            account, client_id, url, event, None if device in (None, "") else _device_id(device)
        )
    except webhooks.TargetRefused as exc:
        raise Refused(400, f"url: {exc}") from None
    except device_services.DeviceNotFound:
        raise Refused(400, "deviceId: no such device") from None
    return _json(_webhook(endpoint), 201)


def delete_webhook(request: HttpRequest, account: Account, client_id: str) -> HttpResponse:
    webhooks.delete_smsgate_endpoint(account, client_id)
    return HttpResponse(status=204)


# --- Devices --------------------------------------------------------------------------------


def _phones(account: Account) -> QuerySet[Device]:
    # A removed device (DELETE /devices/{id}) is disabled and has no token left.
    return Device.objects.for_account(account).exclude(enabled=False, token_hash__isnull=True)


def list_devices(request: HttpRequest, account: Account) -> HttpResponse:
    phones = _phones(account).prefetch_related("sims").order_by("id")
    return _json(
        [wire.device(phone, sorted(phone.sims.all(), key=lambda s: s.slot)) for phone in phones]
    )


def remove_device(request: HttpRequest, account: Account, device_id: str) -> HttpResponse:
    if not device_id.isdigit() or len(device_id) > 18:
        raise Refused(404, "device not found")
    if not device_services.remove_device(account, int(device_id)):
        raise Refused(404, "device not found")
    return HttpResponse(status=204)


# --- Settings -------------------------------------------------------------------------------


def get_settings(request: HttpRequest, account: Account) -> HttpResponse:
    return _json(phone_settings.read(account))


def _write_settings(request: HttpRequest, account: Account, *, replace: bool) -> HttpResponse:
    try:
        stored = phone_settings.write(account, wire.settings_keys(_body(request)), replace=replace)
    except phone_settings.InvalidSettings as exc:
        raise Refused(400, str(exc)) from None
    return _json(stored)


def replace_settings(request: HttpRequest, account: Account) -> HttpResponse:
    return _write_settings(request, account, replace=True)


def patch_settings(request: HttpRequest, account: Account) -> HttpResponse:
    return _write_settings(request, account, replace=False)


# --- Tokens ---------------------------------------------------------------------------------


def _pair(pair: jwt_tokens.Pair) -> HttpResponse:
    # SMSGate's server writes snake_case; its Python SDK reads camelCase: both.
    expires = wire.date(pair.expires_at)
    return _json(
        {
            "id": pair.jti,
            "token_type": "Bearer",
            "access_token": pair.access,
            "refresh_token": pair.refresh,
            "expires_at": expires,
            "tokenType": "Bearer",
            "accessToken": pair.access,
            "refreshToken": pair.refresh,
            "expiresAt": expires,
        },
        201,
    )


def issue_token(request: HttpRequest, account: Account) -> HttpResponse:
    data = _body(request)
    try:
        scopes = jwt_tokens.check_scopes(data.get("scopes"))
    except jwt_tokens.InvalidRequest as exc:
        raise Refused(400, str(exc)) from None
    ttl = _int(data, "ttl", 0, 10**9)
    return _pair(jwt_tokens.issue(account, scopes, ttl))


def refresh_token(request: HttpRequest, account: Account) -> HttpResponse:
    _, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    try:
        return _pair(jwt_tokens.refresh(token.strip()))
    except jwt_tokens.InvalidToken as exc:
        raise Refused(401, str(exc)) from None


def revoke_token(request: HttpRequest, account: Account, jti: str) -> HttpResponse:
    jwt_tokens.revoke(account, jti)
    return HttpResponse(status=204)


# --- Health ---------------------------------------------------------------------------------


@csrf_exempt
def health_view(request: HttpRequest, probe: str = "ready") -> HttpResponse:
    """``/health`` (readiness), ``/health/live``, ``/health/ready``, ``/health/startup``:
    SMSGate's shape, no authentication (the SDKs send theirs anyway)."""
    if probe == "live":
        return _json({"status": "pass", "checks": {}})
    ready, report = health.readiness()
    checks = {
        f"{name}:ping": {
            "description": f"{name} answers",
            "observedUnit": "",
            "observedValue": 0 if report[name] == "ok" else 1,
            "status": "pass" if report[name] == "ok" else "fail",
        }
        for name in ("database", "broker")
    }
    status = "pass" if ready else "fail"
    return _json({"status": status, "checks": checks}, 200 if ready else 503)


@csrf_exempt
def openapi_view(request: HttpRequest) -> HttpResponse:
    """This API's OpenAPI document (no authentication: it says nothing of an account)."""
    if request.method != "GET":
        response = _error(405, "use GET")
        response["Allow"] = "GET"
        return response
    return _json(openapi.document())


@csrf_exempt
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return _error(404, "not found")
