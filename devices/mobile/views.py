"""The SMSGate Android app's phone protocol, ``/api/mobile/v1/`` (docs/android-app.md).

A second device-protocol adapter beside ``devices/api/``: it authenticates the phone, maps
the app's wire format (``devices.mobile.wire``) and calls the same services and hand-off
verbs (``devices.services``, ``devices.handoff``). The event stream (``GET /events``) is
served by the ASGI process (``devices.mobile.events``).

Every answer is JSON (``application/json``); errors are ``{"message": ...}`` with a
meaningful status. 401 on ``PATCH /device`` means exactly "register again".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from devices import handoff, phone_settings, pools, queries, services
from devices.mobile import wire
from devices.models import Device
from gateway import inputs
from gateway import services as accounts
from gateway.clients import client_address, public_url
from gateway.models import Account, User
from messaging import services as messaging
from messaging.lifecycle import Outcome
from messaging.models import Status, served_pk
from messaging.services import IncomingSms

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
MAX_STATE_REPORTS = 100
PREFIX = "/api/mobile/v1"


def _json(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> HttpResponse:
    return _json({"message": message}, status)


def _no_content() -> HttpResponse:
    return HttpResponse(status=204)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.response = _error(status, message)


def _body(request: HttpRequest) -> Any:
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        raise _Refused(413, f"Request body is larger than {MAX_BODY_BYTES // 1024} KB")
    try:
        return inputs.load_json(request.body.decode() or "null", allow_nan=False)
    except inputs.InvalidInput:
        raise
    except ValueError:  # malformed JSON, or not UTF-8
        raise _Refused(400, "Request body is not JSON") from None


def _object(request: HttpRequest, what: str) -> dict[str, Any]:
    """The request body, which must be a JSON object (``what`` names it in the error)."""
    data = _body(request)
    if not isinstance(data, dict):
        raise wire.WireError(f"Send {what} as a JSON object")
    return data


def _credentials(request: HttpRequest) -> tuple[str, str]:
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return scheme.lower(), value.strip()


def _phone(request: HttpRequest) -> Device:
    """The calling phone, by its device token; 401 when the token is unknown or revoked."""
    scheme, token = _credentials(request)
    device = (
        services.authenticate_device(token, Device.Protocol.SMSGATE)
        if scheme == "bearer" and token
        else None
    )
    if device is None:
        raise _Refused(401, "Device token is unknown or was revoked: register again")
    return device


def _basic_user(request: HttpRequest, value: str) -> User:
    try:
        login, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise _Refused(401, "Basic credentials are malformed") from None
    try:
        # The app's login field capitalises the first letter: emails match in any case.
        user = accounts.login_with_limits(login.strip().lower(), password, client_address(request))
    except accounts.TooManyFailures:
        raise _Refused(429, "Too many failed attempts; retry in 15 minutes") from None
    if user is None:
        raise _Refused(401, "Login or password incorrect")
    return user


def _protocol(handler: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Method dispatch by the handler's keyword-only methods, errors as JSON."""

    @csrf_exempt
    def view(request: HttpRequest) -> HttpResponse:
        try:
            return handler(request)
        except _Refused as refused:
            return refused.response
        except (wire.WireError, inputs.InvalidInput) as exc:
            return _error(400, str(exc))

    view.__name__ = handler.__name__
    return view


def _method_not_allowed(*allowed: str) -> HttpResponse:
    response = _error(405, f"Use {' or '.join(allowed)}")
    response["Allow"] = ", ".join(allowed)
    return response


# --- /device --------------------------------------------------------------------------------


@_protocol
def device(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _register(request)
    if request.method == "PATCH":
        return _refresh(request)
    if request.method == "GET":
        # The app asks this only for its local server's status screen.
        return _json({"externalIp": client_address(request)})
    return _method_not_allowed("GET", "POST", "PATCH")


def _register(request: HttpRequest) -> HttpResponse:
    data = _object(request, "the device")
    name = data.get("name")
    name = inputs.check_text(name.strip()[:150], "name") if isinstance(name, str) else ""
    sims = wire.sims(data.get("simCards"))
    scheme, value = _credentials(request)
    account: Account
    login = ""
    if scheme == "basic":
        user = _basic_user(request, value)
        account, login = user.account, user.email
        phone, token = services.register_app(account, name, sims)
    elif scheme == "code" and value:
        limiter = accounts.FailureLimiter("pair", "ip:" + client_address(request))
        try:
            with limiter.attempt(services.PairingRefused):
                phone, token = services.register_app_with_code(value, name, sims)
        except accounts.TooManyFailures:
            raise _Refused(429, "Too many failed attempts; retry in 15 minutes") from None
        except services.PairingRefused:
            raise _Refused(401, "The code is unknown, used or expired") from None
        account = phone.account
    elif scheme == "bearer" and value:
        found = accounts.account_for_enrollment_token(value)
        if found is None:
            raise _Refused(401, "The private token is not this server's enrollment token")
        account = found
        phone, token = services.register_app(account, name, sims)
    else:
        raise _Refused(
            401,
            "Sign in with the account's login, a code from the admin, or set the server's "
            "enrollment token as the app's private token",
        )
    return _json(
        {"id": str(phone.pk), "token": token, "login": login or accounts.account_login(account)},
        201,
    )


def _refresh(request: HttpRequest) -> HttpResponse:
    phone = _phone(request)
    data = _object(request, "the device")
    if "id" in data and str(data["id"]) != str(phone.pk):
        raise _Refused(403, "The id is not this token's device")
    services.replace_sims(phone, wire.sims(data.get("simCards")))
    services.heartbeat(phone)
    return _no_content()


# --- /message -------------------------------------------------------------------------------


@_protocol
def message(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _pending(request)
    if request.method == "PATCH":
        return _states(request)
    return _method_not_allowed("GET", "PATCH")


def _pending(request: HttpRequest) -> HttpResponse:
    phone = _phone(request)
    services.heartbeat(phone)
    now = timezone.now()
    known = queries.identified_sim_slots(phone)
    items = [
        wire.element(lease, state=wire.CANCELLING, sim_known=lease.sim in known, now=now)
        for lease in handoff.cancelling(phone, now)
    ]
    if phone.enabled:
        result = handoff.poll(phone, now=now, fenced=True)
        items += [
            wire.element(lease, state=wire.PENDING, sim_known=lease.sim in known, now=now)
            for lease in result.messages
        ]
    return _json(items)


def _states(request: HttpRequest) -> HttpResponse:
    phone = _phone(request)
    data = _body(request)
    if not isinstance(data, list) or len(data) > MAX_STATE_REPORTS:
        raise wire.WireError(f"Send a list of at most {MAX_STATE_REPORTS} state reports")
    reports = [wire.state_report(item) for item in data]
    _apply_states(phone, reports)
    services.heartbeat(phone)
    return _no_content()


def _apply_states(phone: Device, reports: list[tuple[str, str, str | None, str]]) -> None:
    """Merge the phone's reports into the lifecycle: every report means "the phone has it"
    (confirmation); Sent/Delivered/Failed are outcomes (monotonic: a late "Sent" after
    "Delivered" changes nothing); Cancelled answers a cancellation. Unknown ids are
    skipped: the app is answered 2xx, as it expects."""
    pks = [pk for served, *_ in reports if (pk := served_pk(served)) is not None]
    owners = {phone.pk: phone}
    if phone.replaces_id:
        owners[phone.replaces_id] = phone.replaces  # type: ignore[assignment]
    # One transaction: the rows are read under lock once, and the usual report (an outcome
    # of a leased message, reported once) moves them without reading them again.
    with transaction.atomic():
        found = handoff.find_served(phone, pks)
        once = {pk for pk, n in Counter(pks).items() if n == 1}
        given_back: set[int] = set()  # no longer this phone's: later items are stale
        for served, state, recipient_state, error in reports:
            pk = served_pk(served)
            row = found.get(pk) if pk is not None else None
            if row is None or row.served_id != served or row.id in given_back:
                continue
            owner = owners[row.device_id]
            outcome = wire.OUTCOME_OF.get(recipient_state or state)
            if state == wire.CANCELLED or recipient_state == wire.CANCELLED:
                # A pooled message it was asked to give back goes back to its pool.
                if row.status == Status.TAKEN and pools.take_back(owner, [row.id]).moved:
                    given_back.add(row.id)
                    continue
                if row.status != Status.CANCELLED:
                    messaging.cancel(owner.account, [row.id], source=f"device {owner.pk}")
                handoff.acknowledge_cancel(owner, [row.id])
                continue
            as_read = row.id in once
            # An outcome from a lease is legal whether or not it was confirmed: only a
            # message that went back to waiting needs taking back first.
            if row.status == Status.NEW or (outcome is None and row.status == Status.TAKEN):
                handoff.confirm_held(owner, [row.id])
                as_read = False
            if outcome is not None:
                reason = error if outcome == Status.GENERIC_FAILURE else ""
                handoff.record(
                    owner, [Outcome(row.id, outcome, reason)], locked=[row] if as_read else None
                )


# --- /webhooks, /settings -------------------------------------------------------------------


def _receiver(request: HttpRequest) -> str:
    return public_url(request) + PREFIX + "/hook"


@_protocol
def webhooks(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed("GET")
    _phone(request)
    url = _receiver(request)
    return _json([{"id": f"gateway-{event}", "url": url, "event": event}
                  for event in wire.RECEIVED_EVENTS])  # fmt: skip


@_protocol
def settings_view(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed("GET")
    phone = _phone(request)
    # What the account set through SMSGate's integration API, with this server's own
    # keys over it: it paces (the phone keeps its order and sends when told), it has no
    # push service (events come over the stream), and it is the phone's server.
    stored, account_key = phone_settings.for_phone(phone)
    base = public_url(request)
    gateway: dict[str, Any] = {**stored.pop("gateway", {}), "notification_channel": "SSE_ONLY"}
    if base.startswith("https://"):
        gateway["cloud_url"] = base + PREFIX
    served = {
        "messages": {**stored.pop("messages", {}), "processing_order": "FIFO"},
        "webhooks": {
            "retry_count": 15,
            **stored.pop("webhooks", {}),
            "signing_key": account_key or phone.webhook_key,
        },
        "ping": {"interval_seconds": settings.SMSGATE_PING_SECONDS, **stored.pop("ping", {})},
        "gateway": gateway,
    }
    return _json({**served, **stored})


# --- /user ----------------------------------------------------------------------------------


@_protocol
def user_code(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed("GET")
    scheme, value = _credentials(request)
    if scheme != "basic":
        raise _Refused(401, "Sign in with the account's login and password")
    user = _basic_user(request, value)
    pairing, code = services.create_pairing_code(user.account, digits=True)
    return _json({"code": code, "validUntil": wire.date(pairing.expires_at)})


@_protocol
def user_password(request: HttpRequest) -> HttpResponse:
    if request.method != "PATCH":
        return _method_not_allowed("PATCH")
    phone = _phone(request)
    data = _object(request, "currentPassword and newPassword")
    current, new = data.get("currentPassword"), data.get("newPassword")
    if not isinstance(current, str) or not isinstance(new, str) or len(new) > 4096:
        raise wire.WireError("Send currentPassword and newPassword as strings")
    owner = accounts.account_owner(phone.account)
    if owner is None:
        raise _Refused(403, "The account has no login to change")
    try:
        accounts.change_password(owner, current, new, client_address(request))
    except accounts.TooManyFailures:
        raise _Refused(429, "Too many failed attempts; retry in 15 minutes") from None
    except PermissionError as exc:
        raise _Refused(403, str(exc)) from None
    except ValidationError as exc:
        raise _Refused(400, " ".join(exc.messages)) from None
    return _no_content()


# --- The phone's webhooks (our receiver) ----------------------------------------------------


@_protocol
def hook(request: HttpRequest) -> HttpResponse:
    """A webhook call of the phone: HMAC-SHA256 with its signing key over the raw body and
    ``X-Timestamp``, fresh within SMSGATE_WEBHOOK_SKEW_SECONDS; a retry (same envelope id)
    is answered 200 and applied once."""
    if request.method != "POST":
        return _method_not_allowed("POST")
    envelope = _body(request)
    raw = request.body
    if not isinstance(envelope, dict):
        raise wire.WireError("Send the webhook envelope")
    phone = queries.app_device(envelope.get("deviceId"))
    stamp = request.META.get("HTTP_X_TIMESTAMP", "")
    signature = request.META.get("HTTP_X_SIGNATURE", "").lower()
    keys = phone_settings.signing_keys(phone) if phone is not None else []
    if phone is None or not keys or not stamp or not signature:
        raise _Refused(401, "Unsigned, or not from a registered phone")
    expected = [hmac.new(k.encode(), raw + stamp.encode(), hashlib.sha256) for k in keys]
    if not any(hmac.compare_digest(e.hexdigest(), signature) for e in expected):
        raise _Refused(401, "Signature does not match")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > settings.SMSGATE_WEBHOOK_SKEW_SECONDS:
        raise _Refused(401, "X-Timestamp is stale")
    event_id, event = envelope.get("id"), envelope.get("event")
    payload = envelope.get("payload")
    if not isinstance(event_id, str) or not event_id or not isinstance(payload, dict):
        raise wire.WireError("The envelope needs an id and a payload")
    with transaction.atomic():
        if services.record_phone_webhook(phone, event_id):
            _apply_hook(phone, str(event), payload)
    return _json({})


def _apply_hook(phone: Device, event: str, payload: dict[str, Any]) -> None:
    if event == "sms:received":
        sender, text = payload.get("sender") or payload.get("phoneNumber"), payload.get("message")
        if not isinstance(sender, str) or not isinstance(text, str) or not sender.strip():
            raise wire.WireError("sms:received needs sender and message")
        inputs.check_text(sender, "sender")
        inputs.check_text(text, "message")
        sim = payload.get("simNumber")
        external = payload.get("messageId")
        handoff.receive(
            phone,
            [
                IncomingSms(
                    external_id=inputs.check_text(
                        external if isinstance(external, str) else "", "messageId"
                    )[:64],
                    sender=sender[:64],
                    body=text[:10_000],
                    sim=sim - 1 if isinstance(sim, int) and 1 <= sim <= wire.MAX_SIMS else 0,
                    received_at=wire.stored_date(payload.get("receivedAt")),
                )
            ],
        )
    elif event in ("sms:sent", "sms:delivered", "sms:failed"):
        state = {"sms:sent": wire.SENT, "sms:delivered": wire.DELIVERED}.get(event, wire.FAILED)
        served = payload.get("messageId")
        reason = payload.get("reason")
        error = inputs.check_text(reason[:500], "reason") if isinstance(reason, str) else ""
        if isinstance(served, str):
            _apply_states(phone, [(served, state, state, error)])
    elif event == "system:ping":
        health = payload.get("health")
        if isinstance(health, dict):
            status = health.get("status")
            services.record_health(
                phone,
                wire.health_checks(health.get("checks")),
                inputs.check_text(status[:8], "status") if isinstance(status, str) else "",
            )
    elif event == "app:started":
        services.replace_sims(phone, wire.sims(payload.get("simCards")))
        services.heartbeat(phone)
    # Other events (data SMS, MMS) are not subscribed to; a stray one is acknowledged.
