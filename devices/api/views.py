"""The device protocol, ``/api/device/v1/``: what phones (and the reference agent) call.

Views translate JSON to service calls and back; the rules live in ``devices.services``
(pairing, heartbeat) and ``devices.handoff`` (poll, confirm, report, incoming).
Every error is ``{"error": {"code": ..., "message": ...}}`` with a meaningful HTTP status.
docs/device-protocol.md is the reference for app writers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.http import FileResponse, HttpRequest
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from devices import handoff, services
from devices.models import Device
from gateway import services as accounts
from gateway.api_fields import Int64Field, TimeField
from gateway.clients import client_address
from messaging.lifecycle import Outcome
from messaging.models import OUTCOMES, Status
from messaging.services import IncomingSms

AGENT_FILE = Path(__file__).resolve().parent.parent / "agent" / "sms_agent.py"


# --- Errors and authentication --------------------------------------------------------------


def _error(code: str, message: str, http_status: int, **extra: Any) -> Response:
    return Response({"error": {"code": code, "message": message, **extra}}, status=http_status)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, exceptions.ValidationError):
        return _error("invalid", "Request is not valid", 400, fields=exc.detail)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return _error("unauthorized", str(exc.detail), 401)
    if isinstance(exc, exceptions.PermissionDenied):
        return _error("forbidden", str(exc.detail), 403)
    if isinstance(exc, exceptions.ParseError):
        return _error("malformed", str(exc.detail), 400)
    if isinstance(exc, exceptions.APIException):
        return _error(exc.default_code, str(exc.detail), exc.status_code)
    return None


class RequestTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "Request body is larger than 1 MB; send at most 1000 items per call"
    default_code = "too_large"


class DeviceTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer dev_...``: the token the device got when it paired."""

    def authenticate(self, request: Request) -> tuple[Any, Device] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        device = services.authenticate_device(token.strip())
        if device is None:
            raise exceptions.AuthenticationFailed("Device token is invalid or was replaced")
        return (None, device)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="device"'


class IsEnabledDevice(permissions.BasePermission):
    message = "This device is disabled by the operator"

    def has_permission(self, request: Request, view: Any) -> bool:
        device = request.auth
        if not isinstance(device, Device):
            raise exceptions.NotAuthenticated("Send the device token as Authorization: Bearer")
        return device.enabled


MAX_DEVICE_BODY_BYTES = 1024 * 1024


class DeviceView(APIView):
    authentication_classes = [DeviceTokenAuthentication]
    permission_classes = [IsEnabledDevice]
    throttle_classes: list[Any] = []
    schema = None  # the device protocol is documented in docs/device-protocol.md

    def get_exception_handler(self):  # type: ignore[no-untyped-def]
        return exception_handler

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        length = request.META.get("CONTENT_LENGTH") or "0"
        if not length.isdigit() or int(length) > MAX_DEVICE_BODY_BYTES:
            raise RequestTooLarge()
        super().initial(request, *args, **kwargs)

    def device(self, request: Request) -> Device:
        assert isinstance(request.auth, Device)
        return request.auth


# --- Serializers (the wire format) ----------------------------------------------------------


class SimSerializer(serializers.Serializer):
    slot = serializers.IntegerField(min_value=0, max_value=7)
    iccid = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    number = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    roaming = serializers.BooleanField(required=False, default=False)
    country_iso = serializers.CharField(max_length=8, required=False, allow_blank=True, default="")
    carrier_name = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default=""
    )


def _sims(data: list[dict[str, Any]] | None) -> tuple[services.SimInfo, ...] | None:
    if data is None:
        return None
    return tuple(services.SimInfo(**sim) for sim in data)


class DeviceDetailsSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")
    imei = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    serial_number = serializers.CharField(
        max_length=64, required=False, allow_blank=True, default=""
    )
    app_version = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    sims = SimSerializer(many=True, required=False, max_length=8)  # type: ignore[call-arg]
    segments_per_minute = serializers.IntegerField(
        min_value=1, max_value=1000, required=False, allow_null=True, default=None
    )


class PairSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=20, required=False)
    email = serializers.CharField(max_length=254, required=False)
    password = serializers.CharField(max_length=4096, required=False, trim_whitespace=False)
    device = DeviceDetailsSerializer(required=False, default=dict)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("code") and not (attrs.get("email") and attrs.get("password")):
            raise serializers.ValidationError("Send a pairing code, or email and password")
        return attrs


class HeartbeatSerializer(serializers.Serializer):
    app_version = serializers.CharField(max_length=32, required=False)
    sims = SimSerializer(many=True, required=False, max_length=8)  # type: ignore[call-arg]
    battery_percent = serializers.IntegerField(min_value=0, max_value=100, required=False)
    charging = serializers.BooleanField(required=False)
    signal_dbm = serializers.IntegerField(min_value=-200, max_value=0, required=False)

    def beat(self) -> services.Heartbeat:
        data = self.validated_data
        return services.Heartbeat(
            app_version=data.get("app_version"),
            sims=_sims(data.get("sims")),
            battery_percent=data.get("battery_percent"),
            charging=data.get("charging"),
            signal_dbm=data.get("signal_dbm"),
        )


class PollSerializer(HeartbeatSerializer):
    # SIM slots to poll for (default: all); "sims" is the heartbeat's SIM inventory.
    slots = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=7), required=False, max_length=8
    )
    wait = serializers.IntegerField(min_value=0, max_value=handoff.MAX_WAIT_SECONDS, default=0)


class ConfirmSerializer(serializers.Serializer):
    ids = serializers.ListField(child=Int64Field(min_value=1), max_length=1000)
    # The poll answer's "lease": only the poll holding the lease may confirm.
    lease = serializers.UUIDField()


# The outcome names of the wire; the codes are the lifecycle's (messaging.models).
OUTCOME_NAMES = {
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "not_delivered": Status.NOT_DELIVERED,
    "failed": Status.GENERIC_FAILURE,
    "generic_failure": Status.GENERIC_FAILURE,
    "no_service": Status.NO_SERVICE,
    "null_pdu": Status.NULL_PDU,
    "radio_off": Status.RADIO_OFF,
    "not_allowed": Status.NOT_ALLOWED,
    "not_allowed_at_all": Status.NOT_ALLOWED_AT_ALL,
}
assert set(OUTCOME_NAMES.values()) == OUTCOMES


class OutcomeField(serializers.Field):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and data.lower() == "revoked":
            return handoff.REVOKED  # not an outcome: the phone gives the message back
        if isinstance(data, str) and data.lower() in OUTCOME_NAMES:
            return OUTCOME_NAMES[data.lower()]
        if isinstance(data, int) and not isinstance(data, bool) and data in OUTCOME_NAMES.values():
            return data
        raise serializers.ValidationError(
            f"status must be one of {sorted([*OUTCOME_NAMES, 'revoked'])} or codes 6-12, 100, 101"
        )

    def to_representation(self, value: int) -> int:
        return value


class ReportItemSerializer(serializers.Serializer):
    id = Int64Field(min_value=1)
    status = OutcomeField()
    error = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    parts = serializers.IntegerField(min_value=0, max_value=255, required=False, allow_null=True)


class ReportSerializer(serializers.Serializer):
    reports = ReportItemSerializer(many=True, max_length=1000)  # type: ignore[call-arg]


class IncomingItemSerializer(serializers.Serializer):
    id = serializers.CharField(max_length=64)
    sender = serializers.CharField(max_length=64)
    body = serializers.CharField(max_length=10_000, allow_blank=True, trim_whitespace=False)
    sim = serializers.IntegerField(min_value=0, max_value=7, default=0)
    received_at = TimeField(required=False, allow_null=True, default=None)


class IncomingSerializer(serializers.Serializer):
    messages = IncomingItemSerializer(many=True, max_length=1000)  # type: ignore[call-arg]


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- Views ----------------------------------------------------------------------------------


class PairView(APIView):
    """Trade a pairing code (or the account's email + password) for a device token."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes: list[Any] = []
    schema = None

    def get_exception_handler(self):  # type: ignore[no-untyped-def]
        return exception_handler

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Bounded like every device call, before the body is read: pairing needs no token.
        length = request.META.get("CONTENT_LENGTH") or "0"
        if not length.isdigit() or int(length) > MAX_DEVICE_BODY_BYTES:
            raise RequestTooLarge()
        super().initial(request, *args, **kwargs)

    def post(self, request: Request) -> Response:
        payload = PairSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        device_data = dict(data["device"])
        details = services.DeviceDetails(**{**device_data, "sims": _sims(device_data.get("sims"))})
        address = client_address(request._request)
        limiter = accounts.FailureLimiter("pair", "ip:" + address)
        try:
            if data.get("code"):
                # Counted before the code is looked up, so parallel guesses cannot overrun it;
                # given back when the code pairs.
                with limiter.attempt(services.PairingRefused):
                    device, token = services.pair_with_code(data["code"], details)
            else:
                limiter.check()
                user = accounts.login_with_limits(data["email"], data["password"], address)
                if user is None:
                    return _error("login_failed", "Login or password incorrect", 401)
                device, token = services.pair_with_login(user.account, details)
        except accounts.TooManyFailures:
            return _error("too_many_attempts", "Too many failed attempts; retry in 15 minutes", 429)
        except services.PairingRefused:
            return _error("pairing_refused", "Pairing code is unknown, used or expired", 403)
        return Response(
            {
                "device_id": device.pk,
                "token": token,
                "poll_interval": device.delay_between_requests,
                "batch_size": device.batch_size,
                "delay_between_sms": device.delay_between_sms,
                "segments_per_minute": device.segments_per_minute,
            },
            status=status.HTTP_201_CREATED,
        )


class HeartbeatView(DeviceView):
    def post(self, request: Request) -> Response:
        payload = HeartbeatSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        device = self.device(request)
        services.heartbeat(device, payload.beat())
        return Response({"poll_interval": device.delay_between_requests})


class PollView(DeviceView):
    def post(self, request: Request) -> Response:
        payload = PollSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        device = self.device(request)
        services.heartbeat(device, payload.beat())
        slots = payload.validated_data.get("slots")
        wait = payload.validated_data["wait"]
        result = handoff.poll_or_wait(device, slots, wait)
        return Response(
            {
                "messages": [
                    {
                        "id": lease.id,
                        "to": lease.phone,
                        "body": lease.body,
                        "sim": lease.sim,
                        "urgent": lease.urgent,
                        "segments": lease.segments,
                        "not_before": _time(lease.not_before_at),
                        "lease_expires": _time(lease.lease_expires_at),
                    }
                    for lease in result.messages
                ],
                "lease": str(result.lease_id) if result.lease_id else None,
                "cancelled": result.cancelled,
                "revoke": result.revoke,
                "poll_interval": result.next_poll_seconds,
                "delay_between_sms": device.delay_between_sms,
                "server_time": _time(timezone.now()),
            }
        )


class ConfirmView(DeviceView):
    def post(self, request: Request) -> Response:
        payload = ConfirmSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        result = handoff.confirm(self.device(request), data["ids"], data["lease"])
        return Response(
            {
                "confirmed": result.confirmed,
                "refused": result.refused,
                "superseded": result.superseded,
            }
        )


class ReportView(DeviceView):
    def post(self, request: Request) -> Response:
        payload = ReportSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        reports = [
            Outcome(
                message_id=item["id"],
                status=item["status"],
                error=item.get("error", ""),
                parts=item.get("parts"),
            )
            for item in payload.validated_data["reports"]
        ]
        results = handoff.report(self.device(request), reports)
        return Response(
            {
                "results": [
                    {"id": r.message_id, "result": r.result, "status": r.status} for r in results
                ]
            }
        )


class IncomingView(DeviceView):
    def post(self, request: Request) -> Response:
        payload = IncomingSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        items = [
            IncomingSms(
                external_id=item["id"],
                sender=item["sender"],
                body=item["body"],
                sim=item["sim"],
                received_at=item["received_at"],
            )
            for item in payload.validated_data["messages"]
        ]
        stored = handoff.receive(self.device(request), items)
        return Response({"stored": [{"id": k, "sms_id": v} for k, v in stored.items()]})


def agent_download(request: HttpRequest) -> FileResponse:
    """The reference device agent, a single Python file (standard library only)."""
    return FileResponse(
        AGENT_FILE.open("rb"),
        as_attachment=True,
        filename="sms_agent.py",
        content_type="text/x-python",
    )
