"""REST API v1 (``/api/v1/``): thin views over the same services as every other face."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from django.db.models import QuerySet
from django.http import Http404, QueryDict
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, pagination, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from contacts import services as contacts
from contacts.models import Contact, Newsletter, Tag
from devices import queries as devices
from devices import services as device_services
from devices.models import Device
from gateway import inputs
from gateway import services as accounts
from gateway.api_fields import JSONParser
from gateway.models import ApiToken
from gateway.phones import InvalidPhone, normalize_phone
from messaging import services as messaging
from messaging import webhooks
from messaging.api.v1 import serializers as wire
from messaging.api.v1.base import PayloadTooLarge, Unprocessable, account_of
from messaging.api.v1.idempotency import idempotent
from messaging.models import Message, Status, WebhookEndpoint, WebhookEvent

_INTEGER = re.compile(r"-?[0-9]{1,30}")


def int_param(params: QueryDict, name: str) -> int | None:
    """An integer query filter, or a 400 naming it; None when absent."""
    if name not in params:
        return None
    value = str(params[name]).strip()
    if not _INTEGER.fullmatch(value):
        raise serializers.ValidationError({name: "an integer"})
    try:
        return inputs.check_int(int(value), name)
    except inputs.InvalidInput as exc:
        raise serializers.ValidationError({name: str(exc)}) from None


def time_param(params: QueryDict, name: str) -> Any:
    """An ISO 8601 query filter in UTC (naive: UTC), or a 400 naming it; None when absent."""
    if name not in params:
        return None
    try:
        moment = parse_datetime(str(params[name]).strip())
    except ValueError:  # well formed, but no such time (2024-02-30)
        moment = None
    if moment is None:
        raise serializers.ValidationError({name: "an ISO 8601 date-time"})
    try:
        return inputs.to_utc(moment, name)
    except inputs.InvalidInput as exc:
        raise serializers.ValidationError({name: str(exc)}) from None


class Cursor(pagination.CursorPagination):
    """Newest first; opaque cursors, so any page depth costs the same and nothing is counted."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> tuple[str, ...]:
        # A creation-time window is read from the (account, created_at, id) index; walking
        # the id index instead would skip every newer row first.
        if {"created_after", "created_before"} & set(request.query_params):
            return ("-created_at", "-id")
        return (self.ordering,)


class AccountViewSet(viewsets.GenericViewSet):
    pagination_class = Cursor

    lookup_value_regex = r"\d+"

    def account(self) -> Any:
        return account_of(self.request)

    def scoped(self, model: Any) -> QuerySet[Any]:
        """The account's objects of ``model`` (none while the schema is generated)."""
        if getattr(self, "swagger_fake_view", False):
            return model.objects.none()
        return model.objects.for_account(self.account())

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        account = getattr(self.request.user, "account", None) if self.request else None
        if account is not None:
            context["account"] = account
        return context

    def page(self, queryset: QuerySet[Any], serializer_class: Any) -> Response:
        items = self.paginate_queryset(queryset)
        return self.get_paginated_response(
            serializer_class(items, many=True, context=self.get_serializer_context()).data
        )


def _invalid(errors: list[tuple[int, str]], key: str = "messages") -> Unprocessable:
    listed = "; ".join(f"item {i}: {m}" for i, m in errors[:20])
    return Unprocessable(f"Nothing was stored; {listed}")


def _outgoing(data: dict[str, Any]) -> messaging.OutgoingSms:
    return messaging.OutgoingSms(
        data["device_id"],
        data["to"],
        data["body"],
        data["sim"],
        data["send_at"],
        data["urgent"],
        data["customer_id"],
    )


CREATE_EXAMPLE = OpenApiExample(
    "Two recipients",
    value={
        "to": ["+4915752982212", "+436641234567"],
        "body": "Your code is 4711",
        "device_id": 1,
        "urgent": True,
    },
    request_only=True,
)


class MessageViewSet(AccountViewSet):
    """Outgoing and incoming SMS (incoming: ``direction=incoming``)."""

    serializer_class = wire.MessageSerializer

    def get_queryset(self) -> QuerySet[Any]:
        messages = self.scoped(Message)
        if getattr(self, "swagger_fake_view", False):
            return messages
        params = self.request.query_params
        for name, column in (
            ("status", "status"),
            ("device", "device_id"),
            ("sim", "sim"),
            ("customer_id", "customer_id"),
            ("newsletter", "newsletter_id"),
        ):
            value = int_param(params, name)
            if value is not None:
                messages = messages.filter(**{column: value})
        for name, lookup in (
            ("created_after", "created_at__gte"),
            ("created_before", "created_at__lt"),
        ):
            moment = time_param(params, name)
            if moment is not None:
                messages = messages.filter(**{lookup: moment})
        if "phone" in params:
            try:
                messages = messages.filter(phone=normalize_phone(params["phone"]))
            except InvalidPhone as exc:
                raise serializers.ValidationError({"phone": str(exc)}) from None
        direction = params.get("direction")
        if direction == "incoming":
            messages = messages.filter(status=Status.INCOMING)
        elif direction == "outgoing":
            messages = messages.exclude(status=Status.INCOMING)
        elif direction is not None:
            raise serializers.ValidationError({"direction": "incoming or outgoing"})
        return messages

    @extend_schema(
        parameters=[
            OpenApiParameter(name, OpenApiTypes.INT, description=text)
            for name, text in (
                ("status", "status code"),
                ("device", "device id"),
                ("sim", "SIM slot"),
                ("customer_id", "your customer id"),
                ("newsletter", "newsletter id"),
            )
        ]
        + [
            OpenApiParameter("created_after", OpenApiTypes.DATETIME),
            OpenApiParameter("created_before", OpenApiTypes.DATETIME),
            OpenApiParameter("phone", OpenApiTypes.STR),
            OpenApiParameter("direction", OpenApiTypes.STR, enum=["incoming", "outgoing"]),
        ]
    )
    def list(self, request: Request) -> Response:
        return self.page(self.get_queryset(), wire.MessageSerializer)

    @extend_schema(responses=wire.MessageDetailSerializer)
    def retrieve(self, request: Request, pk: str) -> Response:
        message = self._message(pk)
        return Response(wire.MessageDetailSerializer(message).data)

    def _message(self, pk: str) -> Message:
        try:
            return messaging.get_message(self.account(), int(pk))
        except (messaging.MessageNotFound, ValueError):
            raise Http404 from None

    def _create(self, requests: Sequence[messaging.OutgoingSms]) -> Response:
        try:
            ids = messaging.submit(self.account(), requests)
        except messaging.InvalidBatch as exc:
            raise _invalid(exc.errors) from None
        created = Message.objects.filter(id__in=ids).order_by("id")
        return Response(
            {"messages": wire.MessageSerializer(created, many=True).data},
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        request=wire.MessageCreateSerializer,
        responses={
            201: inline_serializer("Created", {"messages": wire.MessageSerializer(many=True)})
        },
        examples=[CREATE_EXAMPLE],
        parameters=[OpenApiParameter("Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER)],
    )
    def create(self, request: Request) -> Response:
        payload = wire.MessageCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        return idempotent(request, lambda: self._create([_outgoing(payload.validated_data)]))

    @extend_schema(
        request=wire.MessageBatchSerializer,
        responses={
            201: inline_serializer("BatchCreated", {"messages": wire.MessageSerializer(many=True)})
        },
        parameters=[OpenApiParameter("Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER)],
    )
    @action(detail=False, methods=["post"])
    def batch(self, request: Request) -> Response:
        items = request.data.get("messages") if isinstance(request.data, dict) else None
        if isinstance(items, list) and len(items) > 10_000:
            raise PayloadTooLarge("At most 10,000 messages per batch")
        payload = wire.MessageBatchSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        return idempotent(
            request,
            lambda: self._create([_outgoing(m) for m in payload.validated_data["messages"]]),
        )

    @extend_schema(request=None, responses=wire.MessageDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        message = self._message(pk)
        result = messaging.cancel(self.account(), [message.pk], source="api")
        if result.rejected:
            raise Unprocessable(
                f"A message in status {Status(message.status).label!r} cannot be cancelled"
            )
        return Response(wire.MessageDetailSerializer(Message.objects.get(pk=message.pk)).data)


class DeviceViewSet(AccountViewSet):
    serializer_class = wire.DeviceSerializer

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped(Device).prefetch_related("sims")

    def list(self, request: Request) -> Response:
        return self.page(self.get_queryset(), wire.DeviceSerializer)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(wire.DeviceSerializer(self._device(pk)).data)

    def _device(self, pk: str) -> Device:
        try:
            return devices.get_device(self.account(), int(pk))
        except (devices.DeviceNotFound, ValueError):
            raise Http404 from None

    @extend_schema(
        request=wire.DeviceSerializer,
        examples=[
            OpenApiExample(
                "Slower sending",
                value={"delay_between_sms": 5, "batch_size": 10},
                request_only=True,
            )
        ],
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        device = self._device(pk)
        payload = wire.DeviceSerializer(device, data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        changes = {k: v for k, v in payload.validated_data.items() if k in device_services.SETTABLE}
        updated = device_services.update_settings(self.account(), device.pk, **changes)
        return Response(wire.DeviceSerializer(updated).data)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def disable(self, request: Request, pk: str) -> Response:
        device = device_services.update_settings(self.account(), self._device(pk).pk, enabled=False)
        return Response(wire.DeviceSerializer(device).data)

    @extend_schema(request=None, responses={201: wire.PairingCodeSerializer})
    @action(detail=False, methods=["post"], url_path="pairing-codes")
    def pairing_codes(self, request: Request) -> Response:
        pairing, code = device_services.create_pairing_code(self.account())
        how = device_services.pairing_instructions(pairing, code, request.build_absolute_uri("/"))
        return Response(
            wire.PairingCodeSerializer(
                {
                    "code": how.code,
                    "expires_at": how.expires_at,
                    "uri": how.uri,
                    "command": how.command,
                }
            ).data,
            status=status.HTTP_201_CREATED,
        )


@extend_schema_view(
    create=extend_schema(
        examples=[OpenApiExample("A tag", value={"title": "customers"}, request_only=True)]
    )
)
class TagViewSet(AccountViewSet, mixins.DestroyModelMixin):
    serializer_class = wire.TagSerializer

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped(Tag)

    def list(self, request: Request) -> Response:
        return self.page(self.get_queryset(), wire.TagSerializer)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(wire.TagSerializer(self.get_object()).data)

    def create(self, request: Request) -> Response:
        payload = wire.TagSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        tag = contacts.save_tag(self.account(), payload.validated_data["title"])
        return Response(wire.TagSerializer(tag).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        tag = self.get_object()
        payload = wire.TagSerializer(tag, data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        payload.save()
        return Response(payload.data)


@extend_schema_view(
    create=extend_schema(
        examples=[
            OpenApiExample(
                "A contact",
                value={"phone": "+4915752982212", "name": "Anna", "tags": [1]},
                request_only=True,
            )
        ]
    ),
    partial_update=extend_schema(
        examples=[OpenApiExample("Opt out", value={"opted_out": True}, request_only=True)]
    ),
)
class ContactViewSet(AccountViewSet, mixins.DestroyModelMixin):
    serializer_class = wire.ContactSerializer
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_queryset(self) -> QuerySet[Any]:
        contacts_ = self.scoped(Contact).prefetch_related("tags")
        tag = int_param(self.request.query_params, "tag") if self.request else None
        if tag is not None:
            contacts_ = contacts_.filter(tags__id=tag)
        return contacts_

    @extend_schema(parameters=[OpenApiParameter("tag", OpenApiTypes.INT, description="tag id")])
    def list(self, request: Request) -> Response:
        return self.page(self.get_queryset(), wire.ContactSerializer)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(wire.ContactSerializer(self.get_object()).data)

    def create(self, request: Request) -> Response:
        payload = wire.ContactSerializer(data=request.data, context=self.get_serializer_context())
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            contact = contacts.save_contact(
                self.account(),
                data["phone"],
                name=data.get("name", ""),
                tag_ids=[t.pk for t in data.get("tags", [])],
            )
        except contacts.InvalidContact as exc:
            raise serializers.ValidationError({"phone": str(exc)}) from None
        return Response(wire.ContactSerializer(contact).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        contact = self.get_object()
        payload = wire.ContactSerializer(
            contact, data=request.data, partial=True, context=self.get_serializer_context()
        )
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        if "phone" in data and data["phone"] != contact.phone:
            raise serializers.ValidationError(
                {"phone": "a contact's number cannot change; create a new contact"}
            )
        if "name" in data:
            contact.name = data["name"]
        if "opted_out" in data and data["opted_out"] != contact.opted_out:
            contacts.set_opt_out(contact, data["opted_out"], reason="changed through the API")
        contact.save(update_fields=["name"])
        if "tags" in data:
            contact.tags.set(data["tags"])
        return Response(wire.ContactSerializer(Contact.objects.get(pk=contact.pk)).data)

    @extend_schema(
        request={
            "application/json": wire.ContactImportSerializer,
            "multipart/form-data": OpenApiTypes.OBJECT,
        },
        responses=inline_serializer(
            "ImportResult",
            {
                "created": serializers.IntegerField(),
                "updated": serializers.IntegerField(),
                "errors": serializers.DictField(),
            },
        ),
    )
    @action(detail=False, methods=["post"], url_path="import")
    def import_(self, request: Request) -> Response:
        """JSON rows or a CSV upload (field ``file``: phone,name,tags). Per-row errors."""
        upload = request.FILES.get("file")
        if upload is not None:
            if upload.size > 10 * 1024 * 1024:
                raise PayloadTooLarge("The file is larger than 10 MB")
            try:
                result = contacts.import_csv(self.account(), upload.file)
            except contacts.InvalidImport as exc:
                raise serializers.ValidationError({"file": str(exc)}) from None
        else:
            payload = wire.ContactImportSerializer(data=request.data)
            payload.is_valid(raise_exception=True)
            result = contacts.import_contacts(self.account(), payload.validated_data["contacts"])
        return Response(
            {
                "created": result.created,
                "updated": result.updated,
                "errors": {str(line): m for line, m in result.errors},
            }
        )


@extend_schema_view(
    create=extend_schema(
        examples=[
            OpenApiExample(
                "Sale",
                value={
                    "title": "Sale",
                    "device_id": 1,
                    "sim": 0,
                    "body": "30% off until Sunday",
                    "tags": [1],
                    "send_at": "2026-12-01T09:00:00Z",
                },
                request_only=True,
            )
        ]
    )
)
class NewsletterViewSet(AccountViewSet):
    serializer_class = wire.NewsletterSerializer

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped(Newsletter).prefetch_related("tags")

    def list(self, request: Request) -> Response:
        return self.page(self.get_queryset(), wire.NewsletterSerializer)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(wire.NewsletterSerializer(self.get_object()).data)

    def create(self, request: Request) -> Response:
        payload = wire.NewsletterSerializer(
            data=request.data, context=self.get_serializer_context()
        )
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            newsletter = contacts.create_newsletter(
                self.account(),
                title=data["title"],
                device_id=data["device_id"],
                sim=data.get("sim", 0),
                body=data["body"],
                tag_ids=[t.pk for t in data["tags"]],
                send_at=data.get("send_at"),
            )
        except devices.DeviceNotFound:
            raise serializers.ValidationError({"device_id": "no such device"}) from None
        except contacts.TagNotFound:
            raise serializers.ValidationError({"tags": "at least one tag of yours"}) from None
        except messaging.InvalidMessage as exc:
            raise serializers.ValidationError({exc.field: str(exc)}) from None
        return Response(wire.NewsletterSerializer(newsletter).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        """Change what a newsletter sends and when: only while it is still scheduled."""
        newsletter = self.get_object()
        if newsletter.state != Newsletter.State.SCHEDULED:
            raise Unprocessable("Only a scheduled newsletter can be changed")
        payload = wire.NewsletterSerializer(
            newsletter, data=request.data, partial=True, context=self.get_serializer_context()
        )
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        if "device_id" in data or "sim" in data:
            try:
                contacts.check_sender(
                    self.account(),
                    data.get("device_id", newsletter.device_id),
                    data.get("sim", newsletter.sim),
                )
            except devices.DeviceNotFound:
                raise serializers.ValidationError({"device_id": "no such device"}) from None
            except messaging.InvalidMessage as exc:
                raise serializers.ValidationError({exc.field: str(exc)}) from None
        if "body" in data:
            try:
                messaging.check_body(data["body"])
            except messaging.InvalidMessage as exc:
                raise serializers.ValidationError({"body": str(exc)}) from None
        updated = Newsletter.objects.filter(
            pk=newsletter.pk, state=Newsletter.State.SCHEDULED
        ).update(
            **{
                k: v
                for k, v in data.items()
                if k in ("title", "device_id", "sim", "body", "send_at")
            }
        )
        if not updated:
            raise Unprocessable("Only a scheduled newsletter can be changed")
        if "tags" in data:
            newsletter.tags.set(data["tags"])
        return Response(wire.NewsletterSerializer(Newsletter.objects.get(pk=newsletter.pk)).data)

    def destroy(self, request: Request, pk: str) -> Response:
        """Delete a newsletter that was never sent; one that was is cancelled instead."""
        newsletter = self.get_object()
        if newsletter.fanned_out_at is None and newsletter.state in (
            Newsletter.State.SCHEDULED,
            Newsletter.State.PAUSED,
            Newsletter.State.CANCELLED,
        ):
            newsletter.delete()
            return Response(status=status.HTTP_204_NO_CONTENT)
        raise Unprocessable("This newsletter was sent; cancel it instead of deleting it")

    def _change(self, pk: str, change: Any) -> Response:
        newsletter = self.get_object()
        try:
            change(self.account(), newsletter.pk)
        except contacts.IllegalNewsletterChange as exc:
            raise Unprocessable(str(exc)) from None
        return Response(wire.NewsletterSerializer(Newsletter.objects.get(pk=newsletter.pk)).data)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str) -> Response:
        return self._change(pk, contacts.start_newsletter)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        return self._change(pk, contacts.pause_newsletter)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        return self._change(pk, contacts.resume_newsletter)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        return self._change(pk, contacts.cancel_newsletter)


@extend_schema_view(
    create=extend_schema(
        examples=[
            OpenApiExample(
                "Delivery statuses",
                value={"kind": "status", "url": "https://example.com/sms-status"},
                request_only=True,
            )
        ]
    )
)
class WebhookViewSet(AccountViewSet, mixins.DestroyModelMixin):
    serializer_class = wire.WebhookEndpointSerializer

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped(WebhookEndpoint)

    def list(self, request: Request) -> Response:
        return self.page(self.get_queryset(), wire.WebhookEndpointSerializer)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(wire.WebhookEndpointSerializer(self.get_object()).data)

    def create(self, request: Request) -> Response:
        payload = wire.WebhookEndpointSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            endpoint = webhooks.add_endpoint(
                self.account(), data["kind"], data["url"], device_id=data.get("device_id")
            )
        except webhooks.TargetRefused as exc:
            raise serializers.ValidationError({"url": str(exc)}) from None
        except devices.DeviceNotFound:
            raise serializers.ValidationError({"device_id": "no such device"}) from None
        return Response(
            wire.WebhookEndpointSerializer(endpoint).data, status=status.HTTP_201_CREATED
        )

    def partial_update(self, request: Request, pk: str) -> Response:
        endpoint = self.get_object()
        payload = wire.WebhookEndpointSerializer(endpoint, data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        if "url" in payload.validated_data:
            try:
                webhooks.resolve_target(payload.validated_data["url"])
            except webhooks.TargetRefused as exc:
                raise serializers.ValidationError({"url": str(exc)}) from None
        for field in ("url", "enabled", "kind"):
            if field in payload.validated_data:
                setattr(endpoint, field, payload.validated_data[field])
        endpoint.save()
        return Response(wire.WebhookEndpointSerializer(endpoint).data)

    @extend_schema(request=None, responses=wire.WebhookEventSerializer)
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str) -> Response:
        """Send a test event to this endpoint now and answer with its delivery record."""
        event = webhooks.test_event(self.get_object())
        webhooks.deliver(event.pk)
        return Response(wire.WebhookEventSerializer(WebhookEvent.objects.get(pk=event.pk)).data)

    @extend_schema(responses=wire.WebhookEventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str) -> Response:
        return self.page(
            WebhookEvent.objects.filter(endpoint=self.get_object()), wire.WebhookEventSerializer
        )

    @extend_schema(request=None, responses=wire.WebhookEventSerializer)
    @action(detail=True, methods=["post"], url_path=r"events/(?P<event_pk>\d+)/redeliver")
    def redeliver(self, request: Request, pk: str, event_pk: str) -> Response:
        event = WebhookEvent.objects.filter(endpoint=self.get_object(), pk=int(event_pk)).first()
        if event is None:
            raise Http404
        webhooks.redeliver(self.account(), event.pk)
        return Response(wire.WebhookEventSerializer(WebhookEvent.objects.get(pk=event.pk)).data)


class TokenViewSet(AccountViewSet):
    serializer_class = wire.TokenSerializer

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped(ApiToken)

    def list(self, request: Request) -> Response:
        return self.page(self.get_queryset(), wire.TokenSerializer)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(wire.TokenSerializer(self.get_object()).data)

    @extend_schema(
        request=wire.TokenSerializer,
        examples=[OpenApiExample("For the shop", value={"name": "shop"}, request_only=True)],
        responses={
            201: inline_serializer(
                "TokenCreated", {"token": wire.TokenSerializer(), "secret": serializers.CharField()}
            )
        },
    )
    def create(self, request: Request) -> Response:
        payload = wire.TokenSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        token, secret = accounts.create_api_token(self.account(), payload.validated_data["name"])
        # The secret is in this answer only.
        return Response(
            {"token": wire.TokenSerializer(token).data, "secret": secret},
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(request=None, responses=wire.TokenSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str) -> Response:
        token = self.get_object()
        accounts.revoke_token(self.account(), token.pk)
        return Response(wire.TokenSerializer(ApiToken.objects.get(pk=token.pk)).data)
