"""Wire formats of /api/v1/: plain serializers, so renaming a model field changes no API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from contacts.models import Newsletter, Tag
from devices import queries
from devices.models import Device
from gateway import inputs
from gateway.api_fields import Int64Field, TimeField, check_text
from gateway.models import ApiToken
from gateway.phones import InvalidPhone, normalize_phone
from messaging.encoding import encoding_of
from messaging.models import Message, Problem, Status, WebhookEndpoint, WebhookEvent
from messaging.services import MAX_BATCH, MAX_BODY_CHARS, MAX_RECIPIENTS, MessageFilter


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "maxItems": MAX_RECIPIENTS},
        ]
    }
)
class RecipientsField(serializers.Field):
    """One number, a comma-separated list, or a JSON list of numbers."""

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, list):
            if not data or not all(isinstance(item, str) for item in data):
                raise serializers.ValidationError("a number or a list of numbers")
            if len(data) > MAX_RECIPIENTS:
                raise serializers.ValidationError(f"at most {MAX_RECIPIENTS} recipients")
            return check_text(",".join(data), "to")
        if isinstance(data, str) and data.strip():
            return check_text(data, "to")
        raise serializers.ValidationError("a number or a list of numbers")

    def to_representation(self, value: Any) -> Any:
        return value


class MessageCreateSerializer(serializers.Serializer):
    to = RecipientsField(help_text="A number, or a list of numbers (one message each).")
    body = serializers.CharField(max_length=MAX_BODY_CHARS, trim_whitespace=False)
    device_id = Int64Field(
        required=False,
        allow_null=True,
        default=None,
        help_text="A device (or a pool's id). Neither this nor pool: the default pool.",
    )
    pool = Int64Field(
        required=False, allow_null=True, default=None, help_text="A pool: it picks the SIM."
    )
    sim = serializers.IntegerField(
        min_value=0, max_value=7, default=0, help_text="SIM slot, 0-based (not for pools)."
    )
    send_at = TimeField(
        schedule=True,
        required=False,
        allow_null=True,
        default=None,
        help_text="When to send (at most 10 years ahead); empty or past: now.",
    )
    urgent = serializers.BooleanField(default=False)
    customer_id = Int64Field(required=False, allow_null=True, default=None)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("pool") is not None and data.get("device_id") is not None:
            raise serializers.ValidationError({"pool": "give a device_id or a pool, not both"})
        return data


class MessageBatchSerializer(serializers.Serializer):
    messages = MessageCreateSerializer(many=True, min_length=1, max_length=MAX_BATCH)  # type: ignore[call-arg]


@extend_schema_field(OpenApiTypes.INT)
class QueryInt(serializers.Field):
    """An integer query parameter: digits only, within 64 bits."""

    def to_internal_value(self, data: Any) -> int:
        number = inputs.integer_text(str(data))
        if number is None:
            raise serializers.ValidationError("an integer")
        try:
            return inputs.check_int(number, self.field_name or "value")
        except inputs.InvalidInput as exc:
            raise serializers.ValidationError(str(exc)) from None


@extend_schema_field(OpenApiTypes.DATETIME)
class QueryTime(serializers.Field):
    """An ISO 8601 query parameter, in UTC (naive: UTC); any time that exists in UTC."""

    def to_internal_value(self, data: Any) -> datetime:
        try:
            moment = parse_datetime(str(data).strip())
        except ValueError:  # well formed, but no such time (2024-02-30)
            moment = None
        if moment is None:
            raise serializers.ValidationError("an ISO 8601 date-time")
        try:
            return inputs.to_utc(moment, self.field_name or "time")
        except inputs.InvalidInput as exc:
            raise serializers.ValidationError(str(exc)) from None


class MessageFilterSerializer(serializers.Serializer):
    """The query parameters of the message list, as a messaging.services.MessageFilter."""

    status = QueryInt(required=False, help_text="status code")
    device = QueryInt(required=False, help_text="device id")
    sim = QueryInt(required=False, help_text="SIM slot")
    customer_id = QueryInt(required=False, help_text="your customer id")
    newsletter = QueryInt(required=False, help_text="newsletter id")
    created_after = QueryTime(required=False)
    created_before = QueryTime(required=False)
    phone = serializers.CharField(required=False)
    direction = serializers.ChoiceField(choices=["incoming", "outgoing"], required=False)

    def validate_phone(self, value: str) -> str:
        try:
            return normalize_phone(value)
        except InvalidPhone as exc:
            raise serializers.ValidationError(str(exc)) from None

    def message_filter(self) -> MessageFilter:
        data = self.validated_data
        direction = data.get("direction")
        return MessageFilter(
            status=data.get("status"),
            device_id=data.get("device"),
            sim=data.get("sim"),
            customer_id=data.get("customer_id"),
            newsletter_id=data.get("newsletter"),
            created_from=data.get("created_after"),
            created_before=data.get("created_before"),
            phone=data.get("phone"),
            incoming=None if direction is None else direction == "incoming",
        )


class ContactFilterSerializer(serializers.Serializer):
    tag = QueryInt(required=False, help_text="tag id")


class StatusChangeSerializer(serializers.Serializer):
    at = serializers.DateTimeField(source="changed_at")
    from_status = serializers.IntegerField()
    to_status = serializers.IntegerField()
    by = serializers.CharField(source="source", help_text="Who made the move.")
    detail = serializers.CharField()


def status_name(code: int) -> str:
    return Status(code).name.lower()


class MessageSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    direction = serializers.SerializerMethodField()
    to = serializers.CharField(source="phone", help_text="Recipient (sender, for incoming).")
    body = serializers.CharField()
    device_id = serializers.IntegerField(
        allow_null=True, help_text="The device it went (or, waiting, is routed) to."
    )
    sim = serializers.IntegerField()
    pool_id = serializers.IntegerField(allow_null=True, help_text="The pool it was sent through.")
    hold_reason = serializers.CharField(
        help_text="Pooled and waiting with no SIM yet: why (caps, quiet hours, offline)."
    )
    status = serializers.IntegerField()
    status_name = serializers.SerializerMethodField()
    urgent = serializers.BooleanField()
    customer_id = serializers.IntegerField(allow_null=True)
    newsletter_id = serializers.IntegerField(allow_null=True)
    encoding = serializers.SerializerMethodField()
    segments = serializers.IntegerField()
    send_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()
    sent_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)
    error_detail = serializers.CharField()

    @classmethod
    def columns(cls) -> list[str]:
        """The model fields the rendering reads (its method fields read status and body)."""
        declared = cls._declared_fields.items()
        method = serializers.SerializerMethodField
        return [f.source or name for name, f in declared if not isinstance(f, method)]

    def get_direction(self, message: Message) -> str:
        return "incoming" if message.status == Status.INCOMING else "outgoing"

    def get_status_name(self, message: Message) -> str:
        return status_name(message.status)

    def get_encoding(self, message: Message) -> str:
        return encoding_of(message.body).name

    def to_representation(self, instance: Message) -> dict[str, Any]:
        """What the fields above give, built directly: DRF's field-by-field way took a
        fifth of a single create's time in a profile (bench/single_create.py). The fields stay the
        schema and the reference; a test holds the two equal, key order included."""
        if type(self) is not MessageSerializer:  # a subclass's fields: DRF's own way
            return super().to_representation(instance)
        m = instance
        return {
            "id": int(m.id),
            "direction": self.get_direction(m),
            "to": str(m.phone),
            "body": str(m.body),
            "device_id": m.device_id,
            "sim": int(m.sim),
            "pool_id": m.pool_id,
            "hold_reason": str(m.hold_reason),
            "status": int(m.status),
            "status_name": status_name(m.status),
            "urgent": bool(m.urgent),
            "customer_id": m.customer_id,
            "newsletter_id": m.newsletter_id,
            "encoding": self.get_encoding(m),
            "segments": int(m.segments),
            "send_at": _time(m.send_at),
            "created_at": _time(m.created_at),
            "sent_at": _time(m.sent_at),
            "delivered_at": _time(m.delivered_at),
            "error_detail": str(m.error_detail),
        }


def _time(value: datetime | None) -> str | None:
    """A DateTimeField's rendering (ISO 8601 in UTC, the settings' zone, "Z" for +00:00)
    without its two zone lookups per value: a 50-item page has 200 times."""
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class MessageDetailSerializer(MessageSerializer):
    history = StatusChangeSerializer(many=True, read_only=True)


class SimSerializer(serializers.Serializer):
    slot = serializers.IntegerField()
    number = serializers.CharField()
    carrier_name = serializers.CharField()
    country_iso = serializers.CharField()
    roaming = serializers.BooleanField()


def _seconds(low: int, high: int, value: int | None) -> int | None:
    if value is not None and not low <= value <= high:
        raise serializers.ValidationError(
            f"at most {high} seconds" if low == 0 else f"between {low} and {high} seconds"
        )
    return value


class PoolMemberSerializer(serializers.Serializer):
    device_id = serializers.IntegerField(source="device.pk")
    sim = serializers.IntegerField(source="slot.slot", help_text="SIM slot, 0-based.")
    weight = serializers.IntegerField(source="member.weight")
    draining = serializers.BooleanField(source="member.draining")
    eligible = serializers.SerializerMethodField()
    reason = serializers.CharField(
        allow_null=True, help_text="Why it may take no SMS now (null: it may)."
    )
    waiting = serializers.IntegerField(help_text="SMS waiting for this SIM.")

    def get_eligible(self, candidate: Any) -> bool:
        return candidate.reason is None


class PoolSerializer(serializers.Serializer):
    """A pool as pools.status() sees it now (read-only: pools are set up in the admin)."""

    id = serializers.IntegerField(
        source="pool.pk", help_text="Send to it as device_id (or as pool)."
    )
    name = serializers.CharField(source="pool.name")
    strategy = serializers.CharField(source="pool.strategy")
    is_default = serializers.BooleanField(source="pool.is_default")
    online = serializers.BooleanField(help_text="Whether any of its SIMs may send now.")
    waiting = serializers.IntegerField(help_text="Its SMS waiting, held ones included.")
    held = serializers.IntegerField(help_text="Its SMS no SIM may take yet.")
    last_seen_at = serializers.DateTimeField(allow_null=True)
    members = PoolMemberSerializer(many=True)


class DeviceSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    title = serializers.CharField(
        max_length=150, required=False, help_text="Model name or a label."
    )
    number = serializers.CharField(max_length=32, allow_blank=True, required=False)
    enabled = serializers.BooleanField(required=False)
    online = serializers.SerializerMethodField()
    last_seen_at = serializers.DateTimeField(read_only=True, allow_null=True)
    app_version = serializers.CharField(read_only=True)
    battery_percent = serializers.IntegerField(read_only=True, allow_null=True)
    charging = serializers.BooleanField(read_only=True, allow_null=True)
    signal_dbm = serializers.IntegerField(read_only=True, allow_null=True)
    sims = SimSerializer(many=True, read_only=True)
    queue = serializers.SerializerMethodField()
    delay_between_sms = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    delay_between_requests = serializers.IntegerField(min_value=0, required=False)
    batch_size = serializers.IntegerField(min_value=0, required=False)
    segments_per_minute = serializers.IntegerField(
        read_only=True, help_text="The phone's limit per SIM and minute, as it reported it."
    )
    created_at = serializers.DateTimeField(read_only=True)

    def get_online(self, device: Device) -> bool:
        return queries.is_online(device)

    @extend_schema_field(
        {
            "type": "object",
            "properties": {"waiting": {"type": "integer"}, "with_phone": {"type": "integer"}},
        }
    )
    def get_queue(self, device: Device) -> dict[str, int]:
        return queries.queue_depth(device)

    def validate_delay_between_requests(self, value: int) -> int:
        _seconds(1, 3600, value)
        return value

    def validate_delay_between_sms(self, value: int | None) -> int | None:
        return _seconds(0, 3600, value)

    def validate_batch_size(self, value: int) -> int:
        if not 1 <= value <= 100:
            raise serializers.ValidationError("between 1 and 100")
        return value


class TagSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    title = serializers.CharField(max_length=150)
    created_at = serializers.DateTimeField(read_only=True)


@extend_schema_field(OpenApiTypes.INT)
class _AccountTags(serializers.PrimaryKeyRelatedField):
    """Ids of the caller's tags (another account's id is "does not exist")."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("queryset", Tag.objects.none())
        super().__init__(**kwargs)

    def get_queryset(self) -> Any:
        account = self.context.get("account")
        return Tag.objects.filter(account=account) if account is not None else Tag.objects.none()


class ContactSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    phone = serializers.CharField(max_length=32, help_text="Normalized phone number.")
    name = serializers.CharField(max_length=150, allow_blank=True, required=False)
    tags = _AccountTags(many=True, required=False)
    opted_out = serializers.BooleanField(required=False, help_text="Receives no newsletters.")
    opted_out_at = serializers.DateTimeField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)


class ContactImportSerializer(serializers.Serializer):
    contacts = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField(allow_blank=True)),
        max_length=50_000,
        help_text='Rows like {"phone": "+4915...", "name": "Anna", "tags": "vip;news"}.',
    )


class NewsletterSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    title = serializers.CharField(max_length=150)
    device_id = Int64Field()
    sim = serializers.IntegerField(min_value=0, max_value=32767, required=False)
    body = serializers.CharField(max_length=MAX_BODY_CHARS)
    tags = _AccountTags(many=True)
    send_at = TimeField(
        schedule=True, required=False, help_text="At most 10 years ahead; empty or past: now."
    )
    state = serializers.ChoiceField(choices=Newsletter.State.choices, read_only=True)
    queued_count = serializers.IntegerField(read_only=True)
    sent_count = serializers.IntegerField(read_only=True)
    delivered_count = serializers.IntegerField(read_only=True)
    failed_count = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class WebhookEndpointSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    # SMSGate-format webhooks are made through SMSGate's API (they need its event).
    kind = serializers.ChoiceField(
        choices=[c for c in WebhookEndpoint.Kind.choices if c[0] != WebhookEndpoint.Kind.SMSGATE]
    )
    url = serializers.URLField(max_length=500)
    device_id = Int64Field(required=False, allow_null=True, default=None)
    secret = serializers.CharField(read_only=True)
    enabled = serializers.BooleanField(required=False)
    created_at = serializers.DateTimeField(read_only=True)


class WebhookEventSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    event_id = serializers.UUIDField(read_only=True)
    kind = serializers.CharField(read_only=True)
    payload = serializers.JSONField(read_only=True)
    state = serializers.ChoiceField(choices=WebhookEvent.State.choices, read_only=True)
    attempts = serializers.IntegerField(read_only=True)
    next_attempt_at = serializers.DateTimeField(read_only=True)
    delivered_at = serializers.DateTimeField(read_only=True, allow_null=True)
    last_status_code = serializers.IntegerField(read_only=True, allow_null=True)
    last_error = serializers.CharField(read_only=True)
    log = serializers.JSONField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class TokenSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=ApiToken.Kind.choices, read_only=True)
    prefix = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    last_used_at = serializers.DateTimeField(read_only=True, allow_null=True)
    revoked_at = serializers.DateTimeField(read_only=True, allow_null=True)


class PairingCodeSerializer(serializers.Serializer):
    code = serializers.CharField()
    expires_at = serializers.DateTimeField()
    uri = serializers.CharField()
    command = serializers.CharField()


class ProblemFilterSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=["open", "resolved"], required=False)
    kind = serializers.ChoiceField(choices=Problem.Kind.choices, required=False)


class ProblemSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    kind = serializers.ChoiceField(choices=Problem.Kind.choices, read_only=True)
    title = serializers.CharField(source="get_kind_display", read_only=True)
    state = serializers.SerializerMethodField()
    detail = serializers.CharField(read_only=True)
    count = serializers.IntegerField(
        read_only=True, help_text="The SMS (or webhook events) concerned when last found."
    )
    device_id = serializers.IntegerField(read_only=True, allow_null=True)
    sim = serializers.IntegerField(read_only=True, allow_null=True)
    webhook_id = serializers.IntegerField(source="endpoint_id", read_only=True, allow_null=True)
    newsletter_id = serializers.IntegerField(read_only=True, allow_null=True)
    opened_at = serializers.DateTimeField(read_only=True)
    seen_at = serializers.DateTimeField(read_only=True)
    resolved_at = serializers.DateTimeField(read_only=True, allow_null=True)

    def get_state(self, problem: Problem) -> str:
        return "open" if problem.resolved_at is None else "resolved"
