from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.widgets import AdminSplitDateTime
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from contacts.models import Newsletter
from devices.admin import SenderChoiceField, senders
from devices.models import Device
from devices.queries import sim_slots_by_device
from gateway import inputs
from gateway.admin_base import (
    SIM_CHOICES,
    AccountScopedAdmin,
    ScopedInline,
    account_of,
    sim_label,
)
from messaging import encoding, problems, services, webhooks
from messaging.models import (
    Message,
    MessageStatusChange,
    Problem,
    Status,
    WebhookEndpoint,
    WebhookEvent,
)


class StatusChangeInline(ScopedInline):
    model = MessageStatusChange
    fields = ("changed_at", "from_status", "to_status", "source", "detail")
    readonly_fields = fields
    ordering = ("changed_at", "id")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _filter_value(filter_: admin.SimpleListFilter, maximum: int) -> int | None:
    """A list filter's value as an integer id or slot; a value that is none (``?device=abc``)
    is a bad lookup, which the changelist answers as Django does (a redirect with ?e=1)."""
    value = filter_.value()
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and int(value) <= maximum):
        raise IncorrectLookupParameters(f"{filter_.parameter_name} must be a number")
    return int(value)


class AccountObjectFilter(admin.SimpleListFilter):
    """Choices are the account's own objects (a related-only filter would scan every
    message to find them)."""

    model: Any = None

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[Any, str]]:
        objects = self.model.objects.all()
        account = account_of(request)
        if account is not None:
            objects = objects.filter(account=account)
        return [(obj.pk, str(obj)) for obj in objects.order_by("-pk")[:200]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = _filter_value(self, inputs.INT64_MAX)
        if value is not None:
            return queryset.filter(**{f"{self.parameter_name}_id": value})
        return queryset


class DeviceFilter(AccountObjectFilter):
    title = "device"
    parameter_name = "device"
    model = Device


class NewsletterFilter(AccountObjectFilter):
    title = "newsletter"
    parameter_name = "newsletter"
    model = Newsletter


class SimFilter(admin.SimpleListFilter):
    title = "SIM"
    parameter_name = "sim"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(slot), label) for slot, label in SIM_CHOICES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = _filter_value(self, 32767)  # the column is a PositiveSmallIntegerField
        return queryset.filter(sim=value) if value is not None else queryset


class ProblemFilter(admin.SimpleListFilter):
    """The messages an open problem is about (the links of the dashboard and problems)."""

    title = "open problem"
    parameter_name = "problem"

    def _problems(self, request: HttpRequest) -> QuerySet[Problem]:
        found = Problem.objects.all()
        account = account_of(request)
        return found if account is None else found.filter(account=account)

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[Any, str]]:
        found = (
            self._problems(request)
            .filter(resolved_at=None)
            .exclude(kind=Problem.Kind.WEBHOOK_FAILING)
            .order_by("-id")
            .values_list("pk", "kind")[:50]
        )
        return [(pk, f"{Problem.Kind(kind).label} #{pk}") for pk, kind in found]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = _filter_value(self, inputs.INT64_MAX)
        if value is None:
            return queryset
        problem = self._problems(request).filter(pk=value).first()
        concerned = problems.concerned(problem) if problem is not None else None
        return queryset.filter(concerned) if concerned is not None else queryset.none()


class EndpointFilter(AccountObjectFilter):
    title = "endpoint"
    parameter_name = "endpoint"
    model = WebhookEndpoint


def check_slot(form: forms.Form, device_field: str = "device") -> None:
    """A form's chosen SIM must be one the chosen phone has, said as the admin numbers SIMs
    (the services' own message counts slots from 0). A pool picks its SIMs itself."""
    device, sim = form.cleaned_data.get(device_field), form.cleaned_data.get("sim")
    if device is None or sim is None or device.protocol == Device.Protocol.POOL:
        return
    if sim not in sim_slots_by_device(device.account, [device.pk]).get(device.pk, set()):
        form.add_error("sim", f"This device has no {sim_label(sim)}.")


class MoveForm(forms.Form):
    device = forms.ModelChoiceField(queryset=Device.objects.none())
    sim = forms.TypedChoiceField(label="SIM", choices=SIM_CHOICES, coerce=int)

    def __init__(self, *args: Any, devices: QuerySet[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["device"].queryset = devices  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        check_slot(self)
        return data


class SendForm(forms.Form):
    device = SenderChoiceField(
        queryset=Device.all_rows.none(), label="Device or pool", help_text="A pool picks the SIM."
    )
    sim = forms.TypedChoiceField(label="SIM", choices=SIM_CHOICES, coerce=int)
    to = forms.CharField(label="To", max_length=20_000, help_text="Numbers, comma-separated.")
    body = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "class": "sms-body"}),
        max_length=services.MAX_BODY_CHARS,
        help_text="Counted as the server counts it: GSM-7 or UCS-2, and SMS parts.",
    )
    send_at = forms.SplitDateTimeField(
        label="Send at",
        required=False,
        widget=AdminSplitDateTime,
        help_text="Empty: now. A time in the past also means now.",
    )
    customer_id = forms.IntegerField(
        label="Customer ID",
        required=False,
        min_value=-(2**63),
        max_value=2**63 - 1,
        help_text="Your own reference, returned in listings and webhooks.",
    )
    urgent = forms.BooleanField(required=False, help_text="Sent first, without the delay.")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        check_slot(self)
        return data

    def __init__(self, *args: Any, devices: QuerySet[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["device"].queryset = devices  # type: ignore[attr-defined]
        choices = list(devices[:2])
        if len(choices) == 1:  # the only phone (or pool) is the one to use
            self.fields["device"].initial = choices[0].pk


# A search term that can be (part of) a phone number as people type one.
_PHONE_LIKE = re.compile(r"\+?[\d\s().\-/]+")
# What an SMS a phone received never has.
_OUTGOING_ONLY = frozenset(
    {
        "pool",
        "hold_reason",
        "send_at",
        "urgent",
        "customer_id",
        "newsletter",
        "delivered_at",
        "lease_expires_at",
        "confirmed_at",
        "not_before_at",
        "outcome_deadline_at",
        "parts_sent",
        "error_detail",
    }
)


def _clock(value: Any) -> str:
    """A time as the operator reads it: to the second, in the active zone, named."""
    if value is None:
        return "-"
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


@admin.register(Message)
class MessageAdmin(AccountScopedAdmin):
    list_display = (
        "id",
        "phone",
        "short_body",
        "status_badge",
        "device",
        "sim_card",
        "urgent",
        "send_time",
        "created_time",
    )
    list_filter = (
        "status",
        DeviceFilter,
        SimFilter,
        ("created_at", admin.DateFieldListFilter),
        "urgent",
        NewsletterFilter,
        ProblemFilter,
    )
    # Searched by get_search_results: any part of a number as people type it, a customer
    # id, or words of the body (trigram indexes on PostgreSQL, migration 0015).
    search_fields = ("phone", "body")
    search_help_text = (
        "Any part of a phone number (with or without +, spaces, a leading 0), a customer ID, "
        "or words of the text."
    )
    list_select_related = ("device",)
    # Everything about a message's life is written by messaging.lifecycle: shown, never edited.
    readonly_fields = (
        "account",
        "device",
        "sim_card",
        "pool",
        "hold_reason",
        "phone",
        "phone_raw",
        "body",
        "status",
        "send_at",
        "urgent",
        "customer_id",
        "newsletter",
        "segments",
        "error_detail",
        "created_at",
        "status_changed_at",
        "sent_at",
        "delivered_at",
        "lease_expires_at",
        "confirmed_at",
        "not_before_at",
        "outcome_deadline_at",
        "parts_sent",
    )
    fields = readonly_fields
    inlines = [StatusChangeInline]
    actions = ["cancel", "resend", "move", "mark_failed"]
    change_list_template = "admin/messaging/message/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # sending goes through the "Send SMS" page, which uses the services

    @admin.display(description="SIM", ordering="sim")
    def sim_card(self, message: Message) -> str:
        return sim_label(message.sim)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a message's record stays; cancel it instead

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> Any:
        term = search_term.strip()[:200]
        if not term:
            return queryset, False
        try:
            inputs.check_text(term, "q")
        except inputs.InvalidInput:
            return queryset.none(), False
        found = queryset.filter(body__icontains=term)
        if _PHONE_LIKE.fullmatch(term):
            # Stored numbers are +<country><number>: a typed "+49 157 ...", "0049 157" or
            # national "0157 ..." all contain the same digits once the prefix zeros go.
            typed = re.sub(r"\D", "", term)
            digits = typed.lstrip("0")
            if len(digits) >= 3:
                found = found | queryset.filter(phone__contains=digits)
            if typed and len(typed) <= 18:
                found = found | queryset.filter(customer_id=int(typed))
        return found, False

    @admin.display(description="Text")
    def short_body(self, message: Message) -> str:
        body = message.body.replace("\n", " ")
        return body if len(body) <= 40 else body[:39] + "\u2026"

    @admin.display(description="Send at", ordering="send_at")
    def send_time(self, message: Message) -> str:
        return _clock(message.send_at)

    @admin.display(description="Created", ordering="created_at")
    def created_time(self, message: Message) -> str:
        return _clock(message.created_at)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = super().get_fields(request, obj)
        if obj is not None and obj.status == Status.INCOMING:
            return [f for f in fields if f not in _OUTGOING_ONLY]
        return fields

    @admin.display(description="Status", ordering="status")
    def status_badge(self, message: Message) -> str:
        status = Status(message.status)
        return format_html(
            '<span title="{}">{} {}</span>', status.label, status.value, status.short_title
        )

    def _account(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        return account_of(request) or queryset.first().account  # type: ignore[union-attr]

    def _by_account(
        self, request: HttpRequest, queryset: QuerySet[Any]
    ) -> list[tuple[Any, list[int]]]:
        """The selected ids grouped by account: a superuser may select several accounts'
        messages, and every service call is scoped to one account."""
        from gateway.models import Account

        rows = list(queryset.values_list("account_id", "id"))
        accounts = Account.objects.in_bulk({account_id for account_id, _ in rows})
        return [
            (account, [i for a, i in rows if a == account_id])
            for account_id, account in accounts.items()
        ]

    @admin.action(description="Cancel (if no phone sent them yet)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        moved = rejected = 0
        for account, ids in self._by_account(request, queryset):
            result = services.cancel(account, ids)
            moved, rejected = moved + len(result.moved), rejected + len(result.rejected)
        self.message_user(request, f"{moved} cancelled, {rejected} could not be.")

    @admin.action(description="Resend (as new messages)")
    def resend(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        created = 0
        for account, ids in self._by_account(request, queryset):
            try:
                created += len(services.resend(account, ids))
            except services.InvalidBatch as exc:
                self.message_user(request, f"Some not resent: {exc}", messages.ERROR)
        self.message_user(request, f"{created} new messages queued.")

    @admin.action(description="Mark as failed (9)")
    def mark_failed(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        moved = rejected = 0
        for account, ids in self._by_account(request, queryset):
            result = services.mark_failed(account, ids, "marked failed by operator")
            moved, rejected = moved + len(result.moved), rejected + len(result.rejected)
        self.message_user(request, f"{moved} marked failed, {rejected} could not be.")

    @admin.action(description="Move to another device or SIM")
    def move(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        if not queryset.exists():
            return None
        if queryset.values("account_id").distinct().count() > 1:
            self.message_user(
                request, "Select messages of one account to move them.", messages.ERROR
            )
            return None
        account = self._account(request, queryset)
        devices = Device.objects.filter(account=account)
        if "apply" in request.POST:
            form = MoveForm(request.POST, devices=devices)
            if form.is_valid():
                try:
                    moved = services.reassign(
                        account,
                        queryset.values_list("id", flat=True),
                        form.cleaned_data["device"].pk,
                        form.cleaned_data["sim"],
                    )
                except services.InvalidMessage as exc:
                    self.message_user(request, str(exc), messages.ERROR)
                    return None
                self.message_user(request, f"{moved} moved (messages a phone already holds stay).")
                return None
        else:
            form = MoveForm(devices=devices)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "form": form,
            "queryset": queryset,
            "action": "move",
            "title": "Move messages to another device or SIM",
        }
        return TemplateResponse(request, "admin/messaging/message/move.html", context)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "send/", self.admin_site.admin_view(self.send_view), name="messaging_message_send"
            ),
            *super().get_urls(),
        ]

    def send_view(self, request: HttpRequest) -> HttpResponse:
        """Send an SMS (or a test SMS to one device) from the admin, through the services."""
        account = account_of(request) or request.user.account  # type: ignore[union-attr]
        form = SendForm(request.POST or None, devices=senders(account))
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                ids = services.submit(
                    account,
                    [
                        services.OutgoingSms(
                            data["device"].pk,
                            data["to"],
                            data["body"],
                            data["sim"],
                            data["send_at"],
                            data["urgent"],
                            data["customer_id"],
                        )
                    ],
                )
            except services.InvalidBatch as exc:
                form.add_error(None, exc.errors[0][1])
            else:
                self.message_user(request, f"Queued: {len(ids)} SMS.")
                if len(ids) == 1:
                    return HttpResponseRedirect(
                        reverse("admin:messaging_message_change", args=[ids[0]])
                    )
                return HttpResponseRedirect(reverse("admin:messaging_message_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "form": form,
            "media": self.media + form.media,
            "title": "Send SMS",
            # The counter in the page uses the server's own alphabet and sizes.
            "sms_alphabet": {
                "basic": "".join(sorted(encoding.GSM7_BASIC)),
                "extended": "".join(sorted(encoding.GSM7_EXTENDED)),
                "gsm": [encoding.GSM7_SINGLE, encoding.GSM7_PART],
                "ucs2": [encoding.UCS2_SINGLE, encoding.UCS2_PART],
            },
        }
        return TemplateResponse(request, "admin/messaging/message/send.html", context)


class WebhookEndpointForm(forms.ModelForm):
    class Meta:
        model = WebhookEndpoint
        fields = ("account", "device", "kind", "event", "url", "secret", "enabled")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("kind") == WebhookEndpoint.Kind.SMSGATE and (
            data.get("event") not in webhooks.SMSGATE_EVENTS
        ):
            self.add_error("event", f"One of {', '.join(webhooks.SMSGATE_EVENTS)}")
        return data

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        # The same check as every delivery: no private or loopback targets unless allowed.
        try:
            webhooks.resolve_target(url)
        except webhooks.TargetRefused as exc:
            raise forms.ValidationError(str(exc)) from None
        return str(url)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(AccountScopedAdmin):
    form = WebhookEndpointForm
    list_display = ("id", "kind", "event", "url", "device", "enabled", "created_at")
    list_filter = ("kind", "enabled")


@admin.register(WebhookEvent)
class WebhookEventAdmin(AccountScopedAdmin):
    account_path = "endpoint__account"
    list_display = (
        "event_id",
        "kind",
        "endpoint",
        "state",
        "attempts",
        "last_status_code",
        "created_at",
    )
    list_filter = ("state", "kind", EndpointFilter)
    readonly_fields = (
        "endpoint",
        "event_id",
        "kind",
        "body",
        "state",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "last_status_code",
        "last_error",
        "delivery_log",
        "created_at",
    )
    fields = readonly_fields
    actions = ["retry"]

    @admin.display(description="Delivery log")
    def delivery_log(self, event: WebhookEvent) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td></tr>",
            (
                (
                    entry.get("at", ""),
                    entry.get("status") or "-",
                    entry.get("error") or "ok",
                    entry.get("ms", ""),
                )
                for entry in event.log
            ),
        )
        return format_html(
            "<table><tr><th>at</th><th>HTTP</th><th>result</th><th>took</th></tr>{}</table>", rows
        )

    @admin.action(description="Deliver again now")
    def retry(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for event in queryset.select_related("endpoint"):
            webhooks.redeliver(event.endpoint.account, event.pk)
        self.message_user(request, f"{queryset.count()} events queued for delivery.")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Open"), ("resolved", "Resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "open":
            return queryset.filter(resolved_at=None)
        if self.value() == "resolved":
            return queryset.exclude(resolved_at=None)
        return queryset


def problem_subject(problem: Problem) -> str:
    """What a problem is about, linked to its admin page."""
    if problem.endpoint_id is not None:
        url = reverse("admin:messaging_webhookendpoint_change", args=[problem.endpoint_id])
        return format_html('<a href="{}">{}</a>', url, problem.endpoint)
    if problem.newsletter_id is not None:
        url = reverse("admin:contacts_newsletter_change", args=[problem.newsletter_id])
        return format_html('<a href="{}">{}</a>', url, problem.newsletter)
    if problem.device_id is not None:
        url = reverse("admin:devices_device_change", args=[problem.device_id])
        sim = f", {sim_label(problem.sim)}" if problem.sim is not None else ""
        return format_html('<a href="{}">{}</a>{}', url, problem.device, sim)
    return "-"


def problem_link(problem: Problem) -> str:
    """Where to see the messages (or webhook events) a problem is about."""
    if problem.kind == Problem.Kind.WEBHOOK_FAILING:
        url = reverse("admin:messaging_webhookevent_changelist")
        query = f"?endpoint={problem.endpoint_id}&state__exact=pending"
        return format_html('<a href="{}{}">{} events</a>', url, query, problem.count)
    if problem.resolved_at is not None:
        return str(problem.count)
    url = reverse("admin:messaging_message_changelist")
    return format_html('<a href="{}?problem={}">{} SMS</a>', url, problem.pk, problem.count)


@admin.register(Problem)
class ProblemAdmin(AccountScopedAdmin):
    """Found and resolved by beat's problem sweep (messaging.problems): read-only here."""

    list_display = ("kind", "about", "detail", "concerned", "opened", "seen", "resolved")
    list_filter = (OpenFilter, "kind")
    list_select_related = ("device", "endpoint", "newsletter")
    ordering = ("-opened_at", "-id")
    fields = ("kind", "about", "detail", "concerned", "opened", "seen", "resolved")
    readonly_fields = fields

    @admin.display(description="About")
    def about(self, problem: Problem) -> str:
        return problem_subject(problem)

    @admin.display(description="Concerned")
    def concerned(self, problem: Problem) -> str:
        return problem_link(problem)

    @admin.display(description="Opened", ordering="opened_at")
    def opened(self, problem: Problem) -> str:
        return _clock(problem.opened_at)

    @admin.display(description="Last found")
    def seen(self, problem: Problem) -> str:
        return _clock(problem.seen_at)

    @admin.display(description="Resolved", ordering="resolved_at")
    def resolved(self, problem: Problem) -> str:
        return _clock(problem.resolved_at)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
