"""Wire formats of /api/v1/: plain serializers, so renaming a model field changes no API."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from contacts.models import Contact, Newsletter, Tag
from devices import queries
from devices.models import Device
from gateway.api_fields import Int64Field, TimeField, check_text
from gateway.models import ApiToken
from messaging.encoding import encoding_of
from messaging.models import Message, Status, WebhookEndpoint, WebhookEvent

MAX_RECIPIENTS = 1000


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
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
    body = serializers.CharField(max_length=1600, trim_whitespace=False)
    device_id = Int64Field()
    sim = serializers.IntegerField(min_value=0, max_value=7, default=0)
    send_at = TimeField(
        schedule=True,
        required=False,
        allow_null=True,
        default=None,
        help_text="When to send (at most 10 years ahead); empty or past: now.",
    )
    urgent = serializers.BooleanField(default=False)
    customer_id = Int64Field(required=False, allow_null=True, default=None)


class MessageBatchSerializer(serializers.Serializer):
    messages = MessageCreateSerializer(many=True, min_length=1, max_length=10_000)  # type: ignore[call-arg]


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
    device_id = serializers.IntegerField(allow_null=True)
    sim = serializers.IntegerField()
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

    def get_direction(self, message: Message) -> str:
        return "incoming" if message.status == Status.INCOMING else "outgoing"

    def get_status_name(self, message: Message) -> str:
        return status_name(message.status)

    def get_encoding(self, message: Message) -> str:
        return encoding_of(message.body).name


class MessageDetailSerializer(MessageSerializer):
    history = StatusChangeSerializer(many=True, read_only=True)


class SimSerializer(serializers.Serializer):
    slot = serializers.IntegerField()
    number = serializers.CharField()
    carrier_name = serializers.CharField()
    country_iso = serializers.CharField()
    roaming = serializers.BooleanField()


class DeviceSerializer(serializers.ModelSerializer):
    sims = SimSerializer(many=True, read_only=True)
    online = serializers.SerializerMethodField()
    queue = serializers.SerializerMethodField()

    class Meta:
        model = Device
        fields = (
            "id",
            "title",
            "number",
            "enabled",
            "online",
            "last_seen_at",
            "app_version",
            "battery_percent",
            "charging",
            "signal_dbm",
            "sims",
            "queue",
            "delay_between_sms",
            "delay_between_requests",
            "batch_size",
            "segments_per_minute",
            "created_at",
        )
        read_only_fields = (
            "id",
            "online",
            "last_seen_at",
            "app_version",
            "battery_percent",
            "charging",
            "signal_dbm",
            "sims",
            "queue",
            "segments_per_minute",
            "created_at",
        )

    def get_online(self, device: Device) -> bool:
        return queries.is_online(device)

    def get_queue(self, device: Device) -> dict[str, int]:
        return queries.queue_depth(device)

    def validate_delay_between_requests(self, value: int) -> int:
        if not 1 <= value <= 3600:
            raise serializers.ValidationError("between 1 and 3600 seconds")
        return value

    def validate_delay_between_sms(self, value: int | None) -> int | None:
        if value is not None and value > 3600:
            raise serializers.ValidationError("at most 3600 seconds")
        return value

    def validate_batch_size(self, value: int) -> int:
        if not 1 <= value <= 100:
            raise serializers.ValidationError("between 1 and 100")
        return value


class TagSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tag
        fields = ("id", "title", "created_at")
        read_only_fields = ("id", "created_at")


class ContactSerializer(serializers.ModelSerializer):
    tags = serializers.PrimaryKeyRelatedField(
        many=True, queryset=Tag.objects.none(), required=False
    )

    class Meta:
        model = Contact
        fields = ("id", "phone", "name", "tags", "opted_out", "opted_out_at", "created_at")
        read_only_fields = ("id", "opted_out_at", "created_at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        account = self.context.get("account")
        if account is not None:
            self.fields["tags"].child_relation.queryset = Tag.objects.filter(account=account)  # type: ignore[attr-defined]


class ContactImportSerializer(serializers.Serializer):
    contacts = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField(allow_blank=True)),
        max_length=50_000,
        help_text='Rows like {"phone": "+4915...", "name": "Anna", "tags": "vip;news"}.',
    )


class NewsletterSerializer(serializers.ModelSerializer):
    tags = serializers.PrimaryKeyRelatedField(many=True, queryset=Tag.objects.none())
    device_id = Int64Field()
    send_at = TimeField(
        schedule=True, required=False, help_text="At most 10 years ahead; empty or past: now."
    )

    class Meta:
        model = Newsletter
        fields = (
            "id",
            "title",
            "device_id",
            "sim",
            "body",
            "tags",
            "send_at",
            "state",
            "queued_count",
            "sent_count",
            "delivered_count",
            "failed_count",
            "created_at",
        )
        read_only_fields = (
            "id",
            "state",
            "queued_count",
            "sent_count",
            "delivered_count",
            "failed_count",
            "created_at",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        account = self.context.get("account")
        if account is not None:
            self.fields["tags"].child_relation.queryset = Tag.objects.filter(account=account)  # type: ignore[attr-defined]


class WebhookEndpointSerializer(serializers.ModelSerializer):
    device_id = Int64Field(required=False, allow_null=True, default=None)

    class Meta:
        model = WebhookEndpoint
        fields = ("id", "kind", "url", "device_id", "secret", "enabled", "created_at")
        read_only_fields = ("id", "secret", "created_at")


class WebhookEventSerializer(serializers.ModelSerializer):
    payload = serializers.JSONField()

    class Meta:
        model = WebhookEvent
        fields = (
            "id",
            "event_id",
            "kind",
            "payload",
            "state",
            "attempts",
            "next_attempt_at",
            "delivered_at",
            "last_status_code",
            "last_error",
            "log",
            "created_at",
        )
        read_only_fields = fields


class TokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ("id", "name", "kind", "prefix", "created_at", "last_used_at", "revoked_at")
        read_only_fields = ("id", "kind", "prefix", "created_at", "last_used_at", "revoked_at")


class PairingCodeSerializer(serializers.Serializer):
    code = serializers.CharField()
    expires_at = serializers.DateTimeField()
    uri = serializers.CharField()
    command = serializers.CharField()
