"""REST API v1 (``/api/v1/``): thin views over the same services as every other face.

One base (``AccountViewSet``) lists and shows each resource of the caller's account with
cursor pages; each resource adds only what it writes, and every write is one service
call. Wire formats are the plain serializers of ``serializers.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db.models import QuerySet
from django.http import Http404
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
from devices import pools
from devices import queries as devices
from devices import services as device_services
from devices.models import Device, Pool
from gateway import services as accounts
from gateway.api_fields import JSONParser
from gateway.models import ApiToken
from messaging import services as messaging
from messaging import webhooks
from messaging.api.v1 import serializers as wire
from messaging.api.v1.base import PayloadTooLarge, Unprocessable, account_of
from messaging.api.v1.idempotency import idempotent
from messaging.models import Message, Problem, Status, WebhookEndpoint, WebhookEvent

MAX_CSV_BYTES = 10 * 1024 * 1024
T = TypeVar("T")


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


# List (cursor pages) and show one of the caller's objects of ``model``; every resource
# below adds what it writes. (A comment, not a docstring: the schema shows docstrings.)
class AccountViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    model: Any = None
    pagination_class = Cursor
    lookup_value_regex = r"\d+"

    def account(self) -> Any:
        return account_of(self.request)

    def get_queryset(self) -> QuerySet[Any]:
        """The account's objects of ``model`` (none while the schema is generated)."""
        if getattr(self, "swagger_fake_view", False):
            return self.model.objects.none()
        return self.model.objects.for_account(self.account())

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        account = getattr(self.request.user, "account", None) if self.request else None
        if account is not None:
            context["account"] = account
        return context

    def payload(self, serializer_class: Any, **kwargs: Any) -> dict[str, Any]:
        """The request body checked by ``serializer_class``: its validated data, or a 400."""
        checked = serializer_class(
            data=self.request.data, context=self.get_serializer_context(), **kwargs
        )
        checked.is_valid(raise_exception=True)
        return dict(checked.validated_data)

    def show(self, instance: Any, *, code: int = status.HTTP_200_OK) -> Response:
        return Response(self.get_serializer(instance).data, status=code)

    def page(self, queryset: QuerySet[Any], serializer_class: Any) -> Response:
        items = self.paginate_queryset(queryset)
        return self.get_paginated_response(
            serializer_class(items, many=True, context=self.get_serializer_context()).data
        )


def _invalid(errors: list[tuple[int, str]]) -> Unprocessable:
    listed = "; ".join(f"item {i}: {m}" for i, m in errors[:20])
    return Unprocessable(f"Nothing was stored; {listed}")


def _outgoing(data: dict[str, Any]) -> messaging.OutgoingSms:
    return messaging.OutgoingSms(
        data["pool"] if data["pool"] is not None else data["device_id"],
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


@extend_schema_view(
    list=extend_schema(parameters=[wire.MessageFilterSerializer]),
    retrieve=extend_schema(responses=wire.MessageDetailSerializer),
)
class MessageViewSet(AccountViewSet):
    """Outgoing and incoming SMS (incoming: ``direction=incoming``)."""

    model = Message
    serializer_class = wire.MessageSerializer

    def get_serializer_class(self) -> Any:
        if self.action in ("retrieve", "cancel"):
            return wire.MessageDetailSerializer
        return wire.MessageSerializer

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False) or self.action != "list":
            return super().get_queryset()
        query = wire.MessageFilterSerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        # Only the columns a listed message shows: the table has twice as many (times
        # most of them), and reading and converting them was a third of a page's time.
        return messaging.filtered_messages(self.account(), query.message_filter()).only(
            *wire.MessageSerializer.columns()
        )

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

    def _check_pools(self, items: Sequence[dict[str, Any]]) -> None:
        asked = {item["pool"] for item in items if item["pool"] is not None}
        missing = asked - pools.pools_by_id(self.account(), asked).keys()
        if missing:
            raise serializers.ValidationError({"pool": f"no such pool: {min(missing)}"})

    @extend_schema(
        request=wire.MessageCreateSerializer,
        responses={
            201: inline_serializer("Created", {"messages": wire.MessageSerializer(many=True)})
        },
        examples=[CREATE_EXAMPLE],
        parameters=[OpenApiParameter("Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER)],
    )
    def create(self, request: Request) -> Response:
        data = self.payload(wire.MessageCreateSerializer)
        self._check_pools([data])
        return idempotent(request, lambda: self._create([_outgoing(data)]))

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
        if isinstance(items, list) and len(items) > messaging.MAX_BATCH:
            raise PayloadTooLarge(f"At most {messaging.MAX_BATCH:,} messages per batch")
        data = self.payload(wire.MessageBatchSerializer)
        self._check_pools(data["messages"])
        return idempotent(request, lambda: self._create([_outgoing(m) for m in data["messages"]]))

    @extend_schema(request=None, responses=wire.MessageDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        message = self.get_object()
        result = messaging.cancel(self.account(), [message.pk], source="api")
        if result.rejected:
            raise Unprocessable(
                f"A message in status {Status(message.status).label!r} cannot be cancelled"
            )
        return self.show(Message.objects.get(pk=message.pk))


@extend_schema_view(
    partial_update=extend_schema(
        examples=[
            OpenApiExample(
                "Slower sending",
                value={"delay_between_sms": 5, "batch_size": 10},
                request_only=True,
            )
        ],
    )
)
class DeviceViewSet(AccountViewSet):
    model = Device
    serializer_class = wire.DeviceSerializer

    def get_queryset(self) -> QuerySet[Any]:
        # The queue of every listed device in the same query (no query per device).
        return devices.with_queue(super().get_queryset().prefetch_related("sims"))

    def partial_update(self, request: Request, pk: str) -> Response:
        device = self.get_object()
        changes = self.payload(wire.DeviceSerializer, partial=True)
        device_services.update_settings(self.account(), device.pk, **changes)
        return self.show(self.get_object())

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def disable(self, request: Request, pk: str) -> Response:
        device_services.update_settings(self.account(), self.get_object().pk, enabled=False)
        return self.show(self.get_object())

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


class PoolCursor(Cursor):
    ordering = "-pk"  # a pool's primary key is its handle (the id clients send to)

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> tuple[str, ...]:
        return (self.ordering,)


class PoolViewSet(AccountViewSet):
    """The account's pools, each with which of its SIMs may send now and why not."""

    model = Pool
    serializer_class = wire.PoolSerializer
    pagination_class = PoolCursor

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        statuses = pools.status(page or [])
        return self.get_paginated_response(wire.PoolSerializer(statuses, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        (found,) = pools.status([self.get_object()])
        return Response(wire.PoolSerializer(found).data)


@extend_schema_view(
    create=extend_schema(
        examples=[OpenApiExample("A tag", value={"title": "customers"}, request_only=True)]
    )
)
class TagViewSet(AccountViewSet):
    model = Tag
    serializer_class = wire.TagSerializer

    def create(self, request: Request) -> Response:
        tag = contacts.save_tag(self.account(), self.payload(wire.TagSerializer)["title"])
        return self.show(tag, code=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        tag = self.get_object()
        data = self.payload(wire.TagSerializer, partial=True)
        if "title" in data:
            tag = contacts.rename_tag(self.account(), tag.pk, data["title"])
        return self.show(tag)

    def destroy(self, request: Request, pk: str) -> Response:
        contacts.delete_tag(self.account(), self.get_object().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(parameters=[wire.ContactFilterSerializer]),
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
class ContactViewSet(AccountViewSet):
    model = Contact
    serializer_class = wire.ContactSerializer
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_queryset(self) -> QuerySet[Any]:
        contacts_ = super().get_queryset().prefetch_related("tags")
        if self.action == "list" and not getattr(self, "swagger_fake_view", False):
            query = wire.ContactFilterSerializer(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            if "tag" in query.validated_data:
                contacts_ = contacts_.filter(tags__id=query.validated_data["tag"])
        return contacts_

    def create(self, request: Request) -> Response:
        data = self.payload(wire.ContactSerializer)
        try:
            contact = contacts.save_contact(
                self.account(),
                data["phone"],
                name=data.get("name", ""),
                tag_ids=[t.pk for t in data.get("tags", [])],
            )
        except contacts.InvalidContact as exc:
            raise serializers.ValidationError({"phone": str(exc)}) from None
        return self.show(contact, code=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        contact = self.get_object()
        data = self.payload(wire.ContactSerializer, partial=True)
        if "phone" in data and data["phone"] != contact.phone:
            raise serializers.ValidationError(
                {"phone": "a contact's number cannot change; create a new contact"}
            )
        updated = contacts.update_contact(
            self.account(),
            contact.pk,
            name=data.get("name"),
            opted_out=data.get("opted_out"),
            tag_ids=[t.pk for t in data["tags"]] if "tags" in data else None,
            reason="changed through the API",
        )
        return self.show(updated)

    def destroy(self, request: Request, pk: str) -> Response:
        contacts.delete_contact(self.account(), self.get_object().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

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
                "duplicates": serializers.DictField(),
            },
        ),
    )
    @action(detail=False, methods=["post"], url_path="import")
    def import_(self, request: Request) -> Response:
        """JSON rows or a CSV upload (field ``file``: phone,name,tags). Per-row errors."""
        upload = request.FILES.get("file")
        if upload is not None:
            if upload.size > MAX_CSV_BYTES:
                raise PayloadTooLarge("The file is larger than 10 MB")
            try:
                result = contacts.import_csv(self.account(), upload.file)
            except contacts.InvalidImport as exc:
                raise serializers.ValidationError({"file": str(exc)}) from None
        else:
            rows = self.payload(wire.ContactImportSerializer)["contacts"]
            result = contacts.import_contacts(self.account(), rows)
        return Response(
            {
                "created": result.created,
                "updated": result.updated,
                "errors": {str(line): m for line, m in result.errors},
                "duplicates": {str(line): m for line, m in result.duplicates},
            }
        )


def _newsletter_errors(change: Callable[[], T]) -> T:
    """Run a newsletter change, its refusals as field errors (400) or a 422."""
    try:
        return change()
    except devices.DeviceNotFound:
        raise serializers.ValidationError({"device_id": "no such device"}) from None
    except contacts.TagNotFound:
        raise serializers.ValidationError({"tags": "at least one tag of yours"}) from None
    except messaging.InvalidMessage as exc:
        raise serializers.ValidationError({exc.field: str(exc)}) from None
    except contacts.IllegalNewsletterChange as exc:
        raise Unprocessable(str(exc)) from None


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
    model = Newsletter
    serializer_class = wire.NewsletterSerializer

    def get_queryset(self) -> QuerySet[Any]:
        return super().get_queryset().prefetch_related("tags")

    def create(self, request: Request) -> Response:
        data = self.payload(wire.NewsletterSerializer)
        newsletter = _newsletter_errors(
            lambda: contacts.create_newsletter(
                self.account(),
                title=data["title"],
                device_id=data["device_id"],
                sim=data.get("sim", 0),
                body=data["body"],
                tag_ids=[t.pk for t in data["tags"]],
                send_at=data.get("send_at"),
            )
        )
        return self.show(newsletter, code=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        """Change what a newsletter sends and when: only while it is still scheduled."""
        newsletter = self.get_object()
        if newsletter.state != Newsletter.State.SCHEDULED:
            raise Unprocessable("Only a scheduled newsletter can be changed")
        data = self.payload(wire.NewsletterSerializer, partial=True)
        tags = data.pop("tags", None)
        updated = _newsletter_errors(
            lambda: contacts.update_newsletter(
                self.account(),
                newsletter.pk,
                tag_ids=[t.pk for t in tags] if tags is not None else None,
                **data,
            )
        )
        return self.show(updated)

    def destroy(self, request: Request, pk: str) -> Response:
        """Delete a newsletter that was never sent; one that was is cancelled instead."""
        newsletter = self.get_object()
        _newsletter_errors(lambda: contacts.delete_newsletter(self.account(), newsletter.pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _change(self, change: Callable[[Any, int], Any]) -> Response:
        newsletter = self.get_object()
        try:
            change(self.account(), newsletter.pk)
        except contacts.IllegalNewsletterChange as exc:
            raise Unprocessable(str(exc)) from None
        return self.show(self.get_object())

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str) -> Response:
        return self._change(contacts.start_newsletter)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        return self._change(contacts.pause_newsletter)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        return self._change(contacts.resume_newsletter)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        return self._change(contacts.cancel_newsletter)


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
class WebhookViewSet(AccountViewSet):
    model = WebhookEndpoint
    serializer_class = wire.WebhookEndpointSerializer

    def create(self, request: Request) -> Response:
        data = self.payload(wire.WebhookEndpointSerializer)
        try:
            endpoint = webhooks.add_endpoint(
                self.account(), data["kind"], data["url"], device_id=data.get("device_id")
            )
        except webhooks.TargetRefused as exc:
            raise serializers.ValidationError({"url": str(exc)}) from None
        except devices.DeviceNotFound:
            raise serializers.ValidationError({"device_id": "no such device"}) from None
        return self.show(endpoint, code=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        endpoint = self.get_object()
        data = self.payload(wire.WebhookEndpointSerializer, partial=True)
        try:
            updated = webhooks.update_endpoint(
                self.account(),
                endpoint.pk,
                url=data.get("url"),
                kind=data.get("kind"),
                enabled=data.get("enabled"),
            )
        except webhooks.TargetRefused as exc:
            raise serializers.ValidationError({"url": str(exc)}) from None
        return self.show(updated)

    def destroy(self, request: Request, pk: str) -> Response:
        webhooks.delete_endpoint(self.account(), self.get_object().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

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


@extend_schema_view(list=extend_schema(parameters=[wire.ProblemFilterSerializer]))
class ProblemViewSet(AccountViewSet):
    """What beat's problem sweep found wrong with the account's phones, SIMs, webhook
    endpoints and newsletters (open, or resolved once it is no longer found), newest first."""

    model = Problem
    serializer_class = wire.ProblemSerializer

    def get_queryset(self) -> QuerySet[Any]:
        queryset = super().get_queryset()
        if getattr(self, "swagger_fake_view", False) or self.action != "list":
            return queryset
        query = wire.ProblemFilterSerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        state, kind = query.validated_data.get("state"), query.validated_data.get("kind")
        if state is not None:
            queryset = queryset.filter(resolved_at__isnull=state == "open")
        return queryset.filter(kind=kind) if kind is not None else queryset


class TokenViewSet(AccountViewSet):
    model = ApiToken
    serializer_class = wire.TokenSerializer

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
        name = self.payload(wire.TokenSerializer)["name"]
        token, secret = accounts.create_api_token(self.account(), name)
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
        return self.show(ApiToken.objects.get(pk=token.pk))
