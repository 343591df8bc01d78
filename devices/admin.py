from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince

from devices import pools, queries, services
from devices.models import Device, PairingCode, PhoneSettings, Pool, PoolMember, SimSlot
from gateway.admin_base import AccountScopedAdmin, ScopedInline, account_of, sim_label
from gateway.clients import public_url
from gateway.models import Account


class SimSlotInline(ScopedInline):
    model = SimSlot
    readonly_fields = ("slot", "number", "carrier_name", "iccid")  # what the phone reports
    fields = (*readonly_fields, *SimSlot.CAPS)
    verbose_name = "SIM card"
    verbose_name_plural = "SIM cards and their caps (days and quiet hours: the account's zone)"

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # the phone reports its SIM cards

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class PoolMemberInline(ScopedInline):
    model = PoolMember
    fields = ("sim", "weight", "draining")
    verbose_name = "SIM"
    verbose_name_plural = "SIMs of the pool"

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        account = obj.account_id if obj is not None else getattr(account_of(request), "pk", None)
        field: Any = formset.form.base_fields["sim"]
        field.queryset = (
            SimSlot.objects.filter(device__in=Device.objects.filter(account_id=account))
            .select_related("device")
            .order_by("device_id", "slot")
        )
        field.label_from_instance = lambda slot: (
            f"{sim_label(slot.slot)} of {slot.device.title} (#{slot.device_id})"
            + (f", {slot.number}" if slot.number else "")
            + (f", {slot.carrier_name}" if slot.carrier_name else "")
        )
        return formset


@admin.register(Pool)
class PoolAdmin(AccountScopedAdmin):
    list_display = ("name", "pool_id", "strategy", "is_default", "sims_eligible", "waiting")
    fields = ("account", "name", "strategy", "is_default", "pool_id", "eligibility")
    readonly_fields = ("pool_id", "eligibility")
    inlines = [PoolMemberInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return (*self.readonly_fields, "account") if obj is not None else self.readonly_fields

    @admin.display(description="Pool id (its device_id in the SMSGateway24 API)")
    def pool_id(self, obj: Pool) -> Any:
        return obj.pk or "-"

    def _status(self, obj: Pool) -> pools.PoolStatus:
        cached = getattr(obj, "_pool_status", None)
        if cached is None:
            (cached,) = pools.status([obj])
            obj._pool_status = cached  # type: ignore[attr-defined]
        return cached

    @admin.display(description="SIMs eligible now")
    def sims_eligible(self, obj: Pool) -> str:
        state = self._status(obj)
        return f"{sum(c.reason is None for c in state.members)} of {len(state.members)}"

    @admin.display(description="Waiting (no SIM yet)")
    def waiting(self, obj: Pool) -> str:
        state = self._status(obj)
        return f"{state.waiting} ({state.held})"

    @admin.display(description="Which SIMs may send now, and why not")
    def eligibility(self, obj: Pool) -> Any:
        if obj.pk is None:
            return "Save the pool, then add its SIMs."
        state = self._status(obj)
        if not state.members:
            return "No SIMs yet."
        return format_html(
            "<table><tr><th>SIM</th><th>Weight</th><th>Waiting for it</th><th>Now</th></tr>"
            "{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (c.label, c.member.weight, c.waiting, c.reason or "eligible")
                    for c in state.members
                ),
            ),
        )

    def save_model(self, request: HttpRequest, obj: Pool, form: Any, change: bool) -> None:
        account = account_of(request)
        if account is not None and not change:
            obj.account = account
        saved = pools.save_pool(obj)
        obj.pk = saved.pk
        obj.handle_id = saved.handle_id
        obj._state.adding = False

    def delete_model(self, request: HttpRequest, obj: Pool) -> None:
        pools.delete_pool(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for pool in queryset:
            pools.delete_pool(pool)


def _since(value: Any) -> str:
    return f"{timesince(value)} ago" if value else "never"


@admin.register(Device)
class DeviceAdmin(AccountScopedAdmin):
    list_display = (
        "title",
        "online_badge",
        "last_seen",
        "app_version",
        "sim_cards",
        "queue",
        "sent_today",
        "protocol",
        "enabled",
    )
    list_filter = ("enabled", "protocol")
    actions = ["resync_app"]
    search_fields = ("title", "imei", "serial_number", "number")
    inlines = [SimSlotInline]
    fieldsets = (
        (None, {"fields": ("account", "title", "number", "enabled")}),
        (
            "Sending",
            {
                "fields": (
                    "delay_between_sms",
                    "delay_between_requests",
                    "batch_size",
                    "segments_per_minute",
                )
            },
        ),
        (
            "Reported by the phone",
            {
                "fields": (
                    "protocol",
                    "replaces",
                    "imei",
                    "serial_number",
                    "app_version",
                    "battery_percent",
                    "charging",
                    "signal_dbm",
                    "health_report",
                    "last_seen_at",
                    "paired_at",
                )
            },
        ),
    )
    readonly_fields = (
        "protocol",
        "replaces",
        # The phone reports its platform limit; the operator does not set it.
        "segments_per_minute",
        "imei",
        "serial_number",
        "app_version",
        "battery_percent",
        "charging",
        "signal_dbm",
        "health_report",
        "last_seen_at",
        "paired_at",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A device stays in the account it was paired with: its history is that account's.
        return (*self.readonly_fields, "account") if obj is not None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: Device, form: Any, change: bool) -> None:
        if not change:  # devices are added by pairing (add_view), never by this form
            raise PermissionDenied
        changes = {f: form.cleaned_data[f] for f in form.changed_data if f in services.SETTABLE}
        services.update_settings(obj.account, obj.pk, **changes)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
        devices = super().get_queryset(request).prefetch_related("sims")
        return queries.with_sent_since(queries.with_queue(devices), midnight)

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> Any:
        # A device is added by pairing a phone: show a pairing code, its QR code and command.
        return PairingCodeAdmin(PairingCode, self.admin_site).add_view(request)

    @admin.action(description="SMSGate app: fetch settings and webhooks again")
    def resync_app(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        told = 0
        for account_id in set(queryset.values_list("account_id", flat=True)):
            ids = list(queryset.filter(account_id=account_id).values_list("pk", flat=True))
            told += services.request_app_sync(Account.objects.get(pk=account_id), ids)
        self.message_user(request, f"{told} phone(s) asked to fetch their settings again.")

    @admin.display(description="Health (the phone's last report)")
    def health_report(self, device: Device) -> str:
        report = device.health or {}
        checks = report.get("checks") or {}
        if not isinstance(checks, dict) or not checks:
            return "-"
        rows = (
            (
                name,
                check.get("status", ""),
                check.get("observedValue", ""),
                check.get("observedUnit", ""),
            )
            for name, check in sorted(checks.items())
            if isinstance(check, dict)
        )
        return format_html(
            "{} at {}<br>{}",
            report.get("status", "?"),
            str(report.get("at", ""))[:19],
            format_html_join(format_html("<br>"), "{}: {} ({} {})", rows),
        )

    @admin.display(description="Online")
    def online_badge(self, device: Device) -> str:
        online = queries.is_online(device)
        color, text = ("#2e7d32", "online") if online else ("#9e9e9e", "offline")
        return format_html(
            '<span style="color:#fff;background:{};padding:1px 6px;border-radius:8px">{}</span>',
            color,
            text,
        )

    @admin.display(description="Last seen", ordering="last_seen_at")
    def last_seen(self, device: Device) -> str:
        return _since(device.last_seen_at)

    @admin.display(description="SIM cards")
    def sim_cards(self, device: Device) -> str:
        return format_html_join(
            ", ",
            "SIM {}: {}",
            ((sim.slot + 1, sim.carrier_name or "?") for sim in device.sims.all()),
        )

    @admin.display(description="Queue (waiting / with phone)")
    def queue(self, device: Any) -> str:
        return f"{device.queue_waiting} / {device.queue_with_phone}"

    @admin.display(description="Sent today")
    def sent_today(self, device: Any) -> int:
        return int(device.sent_since)


@admin.register(PairingCode)
class PairingCodeAdmin(AccountScopedAdmin):
    """Adding a pairing code shows it once, with its QR code and the agent command."""

    list_display = ("id", "created_at", "expires_at", "used_at", "device")
    readonly_fields = ("account", "created_at", "expires_at", "used_at", "device")

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> Any:
        """GET: what pairing takes, and a button; each POST (a click) makes one set of codes,
        so reloading or prefetching the page spends none."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        server = public_url(request)
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Pair a phone",
            "lifetime_minutes": int(services.PAIRING_CODE_TTL.total_seconds() // 60),
            "server": server,
            "server_warning": services.server_warning(server),
        }
        if request.method == "POST":
            account = account_of(request) or getattr(request.user, "account", None)
            pairing, code = services.create_pairing_code(account)  # type: ignore[arg-type]
            context["how"] = services.pairing_instructions(pairing, code, server)
            context["app"] = services.app_instructions(account, server)  # type: ignore[arg-type]
        return TemplateResponse(request, "admin/devices/pairingcode/created.html", context)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(PhoneSettings)
class PhoneSettingsAdmin(AccountScopedAdmin):
    """The settings an integration set through SMSGate's API (``PATCH``/``PUT /settings``),
    read-only here: what the server enforces shows on each device and SIM, which stay
    editable (docs/smsgate-api.md, "Settings")."""

    list_display = ("account", "sections", "has_signing_key", "updated_at")
    fields = ("account", "shown", "has_signing_key", "updated_at")
    readonly_fields = fields

    @admin.display(description="Sections")
    def sections(self, obj: PhoneSettings) -> str:
        return ", ".join(sorted(obj.values)) or "-"

    @admin.display(description="Settings")
    def shown(self, obj: PhoneSettings) -> str:
        return (
            format_html_join(
                "\n",
                "<div><strong>{}</strong>: {}</div>",
                (
                    (section, ", ".join(f"{key} = {value}" for key, value in sorted(keys.items())))
                    for section, keys in sorted(obj.values.items())
                ),
            )
            or "-"
        )

    @admin.display(description="Webhook signing key set", boolean=True)
    def has_signing_key(self, obj: PhoneSettings) -> bool:
        return bool(obj.signing_key)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SenderChoiceField(forms.ModelChoiceField):
    """A phone or a pool to send from, for the admin's send forms (a pool picks each
    message's SIM, so the form's SIM is ignored for it)."""

    def label_from_instance(self, obj: Device) -> str:
        if obj.protocol == Device.Protocol.POOL:
            return f"Pool: {obj.title} (#{obj.pk})"
        return str(obj)


def senders(account: Account | None) -> QuerySet[Device]:
    """The account's phones, then its pools (every account's for a superuser)."""
    rows = Device.all_rows.all() if account is None else Device.all_rows.filter(account=account)
    pool = Device.Protocol.POOL
    return rows.order_by(models.Case(models.When(protocol=pool, then=1), default=0), "id")
